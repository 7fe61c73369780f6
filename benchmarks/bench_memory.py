#!/usr/bin/env python3
"""Benchmark: peak memory and step time of one training step with the memory options.

For each crop (default 48, 128, 256 residues) and each of

- ``plain``       the default model (``model.chunk_size=0``, no checkpointing),
- ``chunk``       ``model.chunk_size=N`` (row-chunked triangle attention/multiplication),
- ``checkpoint``  ``training.activation_checkpointing=true`` (Pairformer and diffusion
                  transformer blocks recomputed in backward),
- ``both``        the two together,

one fresh process builds the model of ``params.yaml`` (``--params``: model dims) through
the training module, takes a batch of ``--batch-size`` crops (default 1) tiled from the
demo records (``benchmarks/demo_tiles.py``: real records placed
side by side as chains, since no demo record is longer than 120 nt) and runs ``--steps``
optimiser steps (forward, backward, AdamW) with the training loss and ``--noise-copies``
(default 1) noised copies. (The smooth-lDDT term of the loss is dense over atom pairs:
batch 2 x 4 copies at crop 256 would hold ~1 GB per [8, 5400, 5400] tensor, which the
options here do not touch; one copy keeps the trunk's share visible and the run small.) Reported: peak memory
above the level before the first step (CPU: growth of the process's peak RSS,
``getrusage(RUSAGE_SELF).ru_maxrss``; CUDA: ``torch.cuda.max_memory_allocated`` minus the
allocation before the step) and the time of the last step; both also relative to
``plain`` at the same crop, measured in the same run. One table on stdout.

    python benchmarks/bench_memory.py [--crops 48 128 256] [--steps 2] [--chunk-size 32]
                                      [--batch-size 1] [--noise-copies 1]
                                      [--device cpu|cuda] [--data-dir data]

A fresh process per configuration keeps the peak RSS of one configuration from hiding
another's. Needs the pipeline's ``data/angles``, ``data/features``, ``data/splits``
(``dvc pull`` or ``dvc repro split``).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

MODES = {
    "plain": (False, False),
    "chunk": (True, False),
    "checkpoint": (False, True),
    "both": (True, True),
}

log = logging.getLogger("bench_memory")


def measure(crop: int, mode: str, steps: int, chunk_size: int, device: str, data_dir: str,
            params: str, batch_size: int = 1, noise_copies: int = 1) -> dict:
    """Run ``steps`` training steps of one configuration in this process; return the figures."""
    import resource

    import torch

    from rna_predict.config import load_config
    from rna_predict.train.lightning_module import RNALightningModule
    from rna_predict.train.losses import training_loss

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from demo_tiles import tiled_batch

    chunk, ckpt = MODES[mode]
    cfg = load_config([f"model.chunk_size={chunk_size if chunk else 0}",
                       f"training.activation_checkpointing={str(ckpt).lower()}",
                       f"training.batch_size={batch_size}", f"training.noise_copies={noise_copies}"],
                      params=params)
    t = cfg.training
    torch.set_num_threads(int(t.num_threads))
    torch.manual_seed(cfg.seed)
    module = RNALightningModule(cfg.model, t, cfg.seed).to(device)
    optimiser = module.configure_optimizers()
    batch = {k: (v.to(device) if torch.is_tensor(v) else v)
             for k, v in tiled_batch(data_dir, crop, int(t.batch_size)).items()}
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, losses = [], []
    for step in range(steps):
        generator = torch.Generator(device=device).manual_seed(cfg.seed + step)
        sync()
        start = time.perf_counter()
        out = training_loss(module.model, batch, w_angle=float(t.w_angle), w_diffusion=float(t.w_diffusion),
                            noise_copies=int(t.noise_copies), generator=generator)
        out["total"].backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
        losses.append(float(out["total"].detach()))
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"crop": crop, "mode": mode, "peak_mib": peak / 2**20, "step_s": times[-1],
            "first_loss": losses[0], "threads": torch.get_num_threads(), "device": device}


def table(rows: list[dict]) -> str:
    """Markdown table; ratios against ``plain`` at the same crop."""
    plain = {r["crop"]: r for r in rows if r["mode"] == "plain"}
    lines = ["| crop | mode | peak memory (MiB) | vs plain | step (s) | vs plain | loss (step 1) |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = plain.get(r["crop"])
        mem = f"{r['peak_mib'] / p['peak_mib']:.2f}x" if p and p["peak_mib"] > 0 else "-"
        sec = f"{r['step_s'] / p['step_s']:.2f}x" if p and p["step_s"] > 0 else "-"
        lines.append(f"| {r['crop']} | {r['mode']} | {r['peak_mib']:.0f} | {mem} | "
                     f"{r['step_s']:.2f} | {sec} | {r['first_loss']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=int, nargs="+", default=[48, 128, 256])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--steps", type=int, default=2, help="optimiser steps per configuration (time of the last)")
    ap.add_argument("--chunk-size", type=int, default=32, help="model.chunk_size of the chunk modes")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--noise-copies", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--data-dir", default="data", help="folder with angles/, features/, splits/")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--one", nargs=2, metavar=("CROP", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.one:  # child: one configuration, one JSON line on stdout
        row = measure(int(args.one[0]), args.one[1], args.steps, args.chunk_size, args.device,
                      args.data_dir, args.params, args.batch_size, args.noise_copies)
        sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")
        return 0
    rows = []
    for crop in args.crops:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--one", str(crop), mode, "--steps", str(args.steps),
                   "--chunk-size", str(args.chunk_size), "--device", args.device,
                   "--batch-size", str(args.batch_size), "--noise-copies", str(args.noise_copies),
                   "--data-dir", args.data_dir, "--params", args.params]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                log.error("crop %d %s failed:\n%s", crop, mode, proc.stderr[-3000:])
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            log.info("crop %d %-10s peak %8.0f MiB  step %.2f s", crop, mode, rows[-1]["peak_mib"],
                     rows[-1]["step_s"])
    sys.stdout.write(f"device {rows[0]['device']}, {rows[0]['threads']} threads, "
                     f"{args.steps} steps per configuration, chunk size {args.chunk_size}, "
                     f"batch {args.batch_size}, noise copies {args.noise_copies}\n")
    sys.stdout.write(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
