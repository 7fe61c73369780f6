#!/usr/bin/env python3
"""GPU check: bf16 training throughput and memory by crop, and one 200-nt prediction.

For each crop (default 64, 128, 256, 384 residues) a Lightning ``Trainer`` (one device,
``--precision``, default ``bf16-mixed``) fits the training module
(:class:`rna_predict.train.lightning_module.RNALightningModule`, the model of
``params.yaml``) for ``--steps`` optimiser steps (default 50) on batches of
``training.batch_size`` crops tiled from the demo records (``benchmarks/demo_tiles.py``:
real records placed side by side as chains, since no demo record is longer than 120
nt; the data of the pipeline's ``data/`` folder). Reported per crop: steps/s over the
steps after the first ``--warmup`` and peak memory (CUDA: ``torch.cuda.max_memory_allocated``;
CPU: the process's peak RSS). Then the last model predicts one 200-nt sequence (a fixed,
seeded random ACGU string; ViennaRNA features; ``--sample-steps`` diffusion steps under
the same autocast) and its time and peak memory make the last row. One table on stdout.

    python benchmarks/gpu_check.py                       # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --steps 2 --crops 32 --sample-steps 2
                                                         # smoke test of the same code on CPU

Without a CUDA device (and ``--device cuda``, the default) it says so and exits with 0.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

log = logging.getLogger("gpu_check")


def peak_memory_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def random_sequence(length: int, seed: int = 0) -> str:
    import numpy as np

    return "".join(np.random.default_rng(seed).choice(list("ACGU"), size=length))


def train_crop(cfg, crop: int, steps: int, warmup: int, device: str, data_dir: str):
    """Fit the training module for ``steps`` steps at ``crop``; return (module, steps/s, peak MiB, last loss)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from rna_predict.data.dataset import collate
    from rna_predict.train.lightning_module import RNALightningModule, route_lightning_logging

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from demo_tiles import tiled_examples

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.losses: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.losses.append(float(outputs["loss"].detach()))

        def on_train_end(self, trainer, pl_module) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            self.starts.append(time.perf_counter())

    route_lightning_logging()
    t = cfg.training
    examples = tiled_examples(data_dir, crop, int(t.batch_size))
    loader = DataLoader(examples * steps, batch_size=int(t.batch_size), collate_fn=collate, shuffle=False)
    torch.manual_seed(cfg.seed)
    module = RNALightningModule(cfg.model, t, cfg.seed)
    timer = Timer()
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision=t.precision, max_steps=steps, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[timer],
                        gradient_clip_val=float(t.grad_clip) if t.grad_clip > 0 else None)
    reset_peak(device)
    trainer.fit(module, train_dataloaders=loader)
    peak = peak_memory_mib(device)
    skip = min(warmup, len(timer.starts) - 2)
    timed = len(timer.starts) - 1 - skip
    rate = timed / (timer.starts[-1] - timer.starts[skip])
    return module, rate, peak, timer.losses[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--crops", type=int, nargs="+", default=[64, 128, 256, 384])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5, help="first steps left out of steps/s")
    ap.add_argument("--precision", default="bf16-mixed")
    ap.add_argument("--predict-length", type=int, default=200)
    ap.add_argument("--sample-steps", type=int, default=200, help="diffusion steps of the prediction")
    ap.add_argument("--refine-steps", type=int, default=0, help="geometry refinement steps of the prediction")
    ap.add_argument("--data-dir", default="data", help="folder with angles/, features/, splits/")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="params.yaml overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        log.info("gpu_check: no CUDA device found (torch %s, CUDA build: %s); nothing to check. "
                 "Run it on a GPU machine, or smoke-test the code with --device cpu --steps 2.",
                 torch.__version__, torch.version.cuda or "none")
        return 0

    from rna_predict.config import load_config
    from rna_predict.inference.predict import predict_structures

    cfg = load_config([f"training.precision={args.precision}", *args.overrides], params=args.params)
    torch.set_num_threads(int(cfg.training.num_threads))
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = []
    module = None
    for crop in args.crops:
        module, rate, peak, loss = train_crop(cfg, crop, args.steps, args.warmup, args.device, args.data_dir)
        if not torch.isfinite(torch.tensor(loss)):
            log.error("gpu_check: crop %d: loss %s is not finite", crop, loss)
            return 1
        rows.append(f"| train crop {crop} | {args.steps} | {rate:.2f} steps/s | {peak:.0f} | {loss:.3f} |")
        log.info("crop %d: %.2f steps/s, peak %.0f MiB", crop, rate, peak)

    model = module.model.to(args.device).eval()
    seq = random_sequence(args.predict_length)
    reset_peak(args.device)
    start = time.perf_counter()
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float32
    with torch.autocast(device_type=args.device, dtype=dtype, enabled=dtype != torch.float32):
        coords = predict_structures(model, seq, samples=1, steps=args.sample_steps, seed=0,
                                    progress=False, refine_steps=args.refine_steps)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if coords.shape[1] != args.predict_length or not torch.isfinite(coords).all():
        log.error("gpu_check: prediction of %d nt gave shape %s or non-finite coordinates",
                  args.predict_length, tuple(coords.shape))
        return 1
    rows.append(f"| predict {args.predict_length} nt | {args.sample_steps} sampler steps | "
                f"{seconds:.1f} s | {peak_memory_mib(args.device):.0f} | - |")
    mem = "peak GPU memory (MiB)" if args.device == "cuda" else "peak RSS (MiB)"
    sys.stdout.write(f"{name}, precision {args.precision}, batch {cfg.training.batch_size}, "
                     f"noise copies {cfg.training.noise_copies}\n"
                     f"| run | steps | throughput | {mem} | last loss |\n|---|---:|---:|---:|---:|\n"
                     + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
