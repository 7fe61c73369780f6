"""Overfit one short real record: can the whole model (Stages B-D) memorise a structure?

Trains :class:`rna_predict.model.rna_model.RNAModel` (default small dims) on a single
demo record (default: the shortest in ``--angles-dir``, 434D, 14 nt) with the full loss
``w_angle * L_angle + w_diffusion * L_diffusion`` on CPU, printing the curve every
``--log-every`` steps, then samples structures with the AF3 sampler and reports the C1'
RMSD to the truth (after optimal superposition). Success criteria (ARCHITECTURE.md 5 /
the Stage B-D brief): L_angle falls at least 10x and the sampled C1' RMSD is below 3 A
within at most 1000 steps. The samples come back ranked by torsion self-consistency
(:mod:`rna_predict.model.ranking`, no ground truth); the criterion uses the top-1 sample,
and the mean and best over all samples are reported too (an undertrained,
non-equivariant denoiser also produces mirror images, which the ranking demotes).

Optimiser: Adam, gradient clipping at 1, constant learning rate (``--cosine`` adds a
5 % linear warm-up and a cosine decay to 0).

    python benchmarks/overfit_one_record.py [--id 434D] [--steps 1000]

Writes ``<out>/overfit_one_record.png`` (loss curves + RMSD) and ``.json`` (numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from rna_predict.config import ModelConfig
from rna_predict.data.atom_layout import BB
from rna_predict.model.ranking import torsion_consistency
from rna_predict.model.rna_model import RNAModel
from rna_predict.train.losses import training_loss
from rna_predict.model.alignment import aligned_rmsd
from rna_predict.data.dataset import RecordDataset, collate

C1 = BB["C1'"]


def shortest_record(angles_dir: Path) -> str:
    best = None
    for path in sorted(angles_dir.glob("*.pt")):
        rec = torch.load(path, weights_only=True)
        if best is None or len(rec["sequence"]) < best[0]:
            best = (len(rec["sequence"]), str(rec["id"]))
    if best is None:
        raise SystemExit(f"no records in {angles_dir}; run `dvc repro split` first")
    return best[1]


def sample_report(model: RNAModel, samples: torch.Tensor, batch: dict) -> list[dict]:
    """Per sample: C1' RMSD to the truth and to its mirror image, torsion ranking score."""
    mirrored = dict(batch, coords=batch["coords"] * torch.tensor([-1.0, 1.0, 1.0]))
    with torch.no_grad():
        sincos = model.trunk(batch)["sincos"]
    score = torsion_consistency(samples, sincos, batch)[:, 0]
    return [{"rmsd": float(a), "mirror_rmsd": float(b), "torsion_score": float(c)}
            for a, b, c in zip(c1_rmsd(samples, batch), c1_rmsd(samples, mirrored), score)]


def c1_rmsd(samples: torch.Tensor, batch: dict) -> torch.Tensor:
    """C1' RMSD of each sample [n] ([n, 1, L, 23, 3] samples) to the batch's truth."""
    true = batch["coords"][0, :, C1]
    mask = batch["atom_mask"][0, :, C1] & batch["residue_mask"][0]
    pred = samples[:, 0, :, C1]
    return aligned_rmsd(true.expand_as(pred), pred, mask.expand(pred.shape[:-1]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--angles-dir", type=Path, default=Path("data/angles"))
    ap.add_argument("--features-dir", type=Path, default=Path("data/features"))
    ap.add_argument("--id", default=None, help="record id (default: the shortest)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--noise-copies", type=int, default=16)
    ap.add_argument("--cosine", action="store_true", help="warm-up + cosine learning-rate decay")
    ap.add_argument("--w-angle", type=float, default=1.0)
    ap.add_argument("--w-diffusion", type=float, default=1.0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--sample-steps", type=int, default=200)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 avoids OpenMP spin-waits on a shared 2-core box)")
    ap.add_argument("--out", type=Path, default=Path("reports/benchmarks"))
    ap.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE",
                    help="ModelConfig overrides, e.g. c_token=128 diffusion_blocks=4")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rid = args.id or shortest_record(args.angles_dir)
    batch = collate([RecordDataset(args.angles_dir, args.features_dir, [rid], None, args.seed)[0]])
    length = int(batch["residue_mask"].sum())
    defaults = ModelConfig()
    overrides = dict(kv.split("=", 1) for kv in args.model)
    cfg = ModelConfig(**{k: type(getattr(defaults, k))(v) if not isinstance(getattr(defaults, k), bool)
                         else v.lower() in ("1", "true", "yes") for k, v in overrides.items()})
    model = RNAModel(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    warm = max(1, args.steps // 20)

    def lr_factor(i: int) -> float:
        if not args.cosine:
            return 1.0
        return min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, args.steps) / args.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"record {rid}: {length} nt, {int(batch['atom_mask'].sum())} atoms; "
          f"{sum(p.numel() for p in model.parameters())} parameters; cfg {cfg}")

    def evaluate(step: int) -> float:
        g = torch.Generator().manual_seed(args.seed + 1)
        x = model.sample(batch, steps=args.sample_steps, n_samples=args.samples, generator=g)
        rep = sample_report(model, x, batch)
        r = torch.tensor([d["rmsd"] for d in rep])
        print(f"  step {step:5d}  sampled C1' RMSD (A): top-1 {r[0]:.2f}  mean {r.mean():.2f}  "
              f"best {r.min():.2f}  all (ranked) {[round(float(v), 2) for v in r]}  "
              f"mirror {[round(d['mirror_rmsd'], 2) for d in rep]}  "
              f"score {[round(d['torsion_score'], 3) for d in rep]}")
        return float(r[0])

    curve: list[dict] = []
    rmsd_curve: list[tuple[int, float]] = []
    first_angle = None
    t0 = time.time()
    for step in range(1, args.steps + 1):
        opt.zero_grad(set_to_none=True)
        out = training_loss(model, batch, args.w_angle, args.w_diffusion, args.noise_copies, generator=gen)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        row = {"step": step, **{k: float(v.detach()) for k, v in out.items()}}
        curve.append(row)
        first_angle = first_angle if first_angle is not None else row["angle"]
        if step % args.log_every == 0 or step == 1:
            print(f"step {step:5d}  total {row['total']:.4f}  angle {row['angle']:.5f}  "
                  f"diffusion {row['diffusion']:.4f}  mse {row['mse']:.2f}  lddt {row['lddt']:.4f}  "
                  f"({time.time() - t0:.0f} s)")
        if step % args.eval_every == 0 and step != args.steps:
            rmsd_curve.append((step, evaluate(step)))
    train_s = time.time() - t0

    g = torch.Generator().manual_seed(args.seed + 1)
    x = model.sample(batch, steps=args.sample_steps, n_samples=args.samples, generator=g)
    per_sample = sample_report(model, x, batch)
    rmsd = torch.tensor([d["rmsd"] for d in per_sample])
    rmsd_curve.append((args.steps, float(rmsd[0])))
    last = curve[-1]
    window = curve[-args.log_every:]
    final_angle = sum(r["angle"] for r in window) / len(window)
    result = {
        "id": rid, "length": length, "steps": args.steps, "lr": args.lr,
        "noise_copies": args.noise_copies, "sample_steps": args.sample_steps,
        "train_seconds": round(train_s, 1),
        "angle_first": first_angle, "angle_last": last["angle"],
        "angle_final_mean": final_angle, "angle_drop": first_angle / max(final_angle, 1e-12),
        "c1_rmsd_ranked": [float(v) for v in rmsd], "c1_rmsd_top1": float(rmsd[0]),
        "c1_rmsd_mean": float(rmsd.mean()), "c1_rmsd_best": float(rmsd.min()),
        "samples": per_sample,
        "model": {k: getattr(cfg, k) for k in sorted(cfg.__dataclass_fields__)},
        "passed": bool(first_angle / max(final_angle, 1e-12) >= 10 and float(rmsd[0]) < 3.0),
    }
    print(json.dumps(result, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overfit_one_record.json").write_text(
        json.dumps({**result, "curve": [r for r in curve if r["step"] % 10 == 0 or r["step"] == 1],
                    "rmsd_curve": rmsd_curve},
                   indent=1, sort_keys=True) + "\n")
    plot(curve, rmsd_curve, result, args.out / "overfit_one_record.png")
    return result


def plot(curve: list[dict], rmsd_curve: list[tuple[int, float]], result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in curve]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key, ax in (("angle", axes[0]), ("diffusion", axes[1])):
        ax.semilogy(steps, [r[key] for r in curve], lw=0.7)
        ax.set_title(f"L_{key}")
        ax.set_xlabel("step")
    axes[1].semilogy(steps, [r["lddt"] for r in curve], lw=0.7, label="smooth lDDT part")
    axes[1].legend()
    axes[2].plot([s for s, _ in rmsd_curve], [v for _, v in rmsd_curve], "o-")
    axes[2].axhline(3.0, color="grey", ls="--")
    axes[2].set_title("sampled C1' RMSD (A), top-1 by torsion ranking")
    axes[2].set_xlabel("step")
    fig.suptitle(f"overfit {result['id']} ({result['length']} nt): L_angle /{result['angle_drop']:.0f}, "
                 f"C1' RMSD top-1 {result['c1_rmsd_top1']:.2f} A (mean of {len(result['c1_rmsd_ranked'])} "
                 f"samples {result['c1_rmsd_mean']:.2f} A)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
