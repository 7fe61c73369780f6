"""``rna-predict``: one subcommand per DVC stage, plus ``torsions`` and ``predict``.

Stage subcommands take Hydra-style overrides (``key=value``, the grammar of
``dvc exp run -S``) applied to ``params.yaml``. Heavy modules (torch, Lightning) are
imported inside the subcommand that needs them, so ``rna-predict torsions`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("rna_predict")

STAGES = ("fetch", "angles", "features", "split", "train", "evaluate", "sweep")


def _stage(name: str, cfg) -> Path:
    if name == "fetch":
        from .data.fetch import run_fetch as run
    elif name == "angles":
        from .data.angles_stage import run_angles as run
    elif name == "features":
        from .data.features import run_features as run
    elif name == "split":
        from .data.split import run_split as run
    elif name == "train":
        from .train.run_train import run_train as run
    elif name == "evaluate":
        from .evaluate.run_evaluate import run_evaluate as run
    else:
        from .sweep.run_sweep import run_sweep as run
    return run(cfg)


def _fmt(value: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


def _torsion_rows(files: list[str]) -> list[dict]:
    import numpy as np

    from .data.structure import read_structure
    from .data.torsions import compute_torsions

    rows: list[dict] = []
    for file in files:
        structure = read_structure(file)
        deg = compute_torsions(structure).degrees()
        for i in range(len(structure)):
            row = {"file": file, "chain": structure.chain_ids[i], "resnum": structure.resnums[i],
                   "icode": structure.icodes[i], "resname": structure.resnames[i],
                   "parent": structure.sequence[i]}
            for name, values in deg.items():
                key = {"phase": "phase_angle"}.get(name, name)
                key = f"v{name[2]}" if name.startswith("nu") else key
                v = float(values[i])
                row[key] = None if not np.isfinite(v) else round(v, 3)
            rows.append(row)
    return rows


def cmd_torsions(args: argparse.Namespace) -> int:
    rows = _torsion_rows(args.files)
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return 0
    cols = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "chi", "eta", "theta", "phase_angle"]
    print(f"{'chain':>5} {'resnum':>6} {'res':>4} " + " ".join(f"{c[:8]:>8}" for c in cols))
    for r in rows:
        print(f"{r['chain']:>5} {str(r['resnum']) + r['icode']:>6} {r['resname']:>4} "
              + " ".join(_fmt(r[c]) for c in cols))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .train.predict import read_fasta, run_predict

    if args.fasta:
        entries = read_fasta(args.fasta)
        if len(entries) != 1:
            raise SystemExit(f"{args.fasta}: expected one sequence, found {len(entries)}")
        sequence = entries[0][1]
    else:
        sequence = args.sequence
    paths = run_predict(Path(args.model_dir), sequence, Path(args.out), samples=args.samples,
                        steps=args.steps, seed=args.seed, refine_steps=args.refine_steps)
    for p in paths:
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rna-predict", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        p = sub.add_parser(name, help=f"run DVC stage {name!r}")
        p.add_argument("overrides", nargs="*", help="key=value overrides of params.yaml")
        p.add_argument("--params", default="params.yaml", help="parameter file (default params.yaml)")
    t = sub.add_parser("torsions", help="torsion angles of PDB/mmCIF files (degrees)")
    t.add_argument("files", nargs="+")
    t.add_argument("--json", action="store_true", help="one JSON array, DSSR `nts` keys")
    pr = sub.add_parser("predict", help="predict all-atom structures for a sequence")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence")
    src.add_argument("--fasta")
    pr.add_argument("--out", required=True, help="output PDB path")
    pr.add_argument("--samples", type=int, default=1)
    pr.add_argument("--steps", type=int, default=200, help="sampler steps (AF3 uses 200)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--refine-steps", type=int, default=200,
                    help="torsion-space refinement steps per sample (0: raw diffusion output)")
    pr.add_argument("--model-dir", default="models")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("MDAnalysis").setLevel(logging.ERROR)  # optional-dependency chatter
    from .data.structure import StructureError

    try:
        if args.command == "torsions":  # kept free of torch/Hydra imports: start-up matters
            return cmd_torsions(args)
        if args.command == "predict":
            return cmd_predict(args)
        from .config import load_config

        cfg = load_config(args.overrides, params=args.params)
        out = _stage(args.command, cfg)
        log.info("%s: wrote %s", args.command, out)
        return 0
    except (StructureError, ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        log.error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
