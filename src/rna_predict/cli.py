"""``rna-predict``: one subcommand per DVC stage, plus ``torsions``, ``predict``,
``benchmark`` and ``score``.

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

#: What each stage reads, which params.yaml sections it takes and what it writes
#: (ARCHITECTURE.md section 3, dvc.yaml). Paths are the defaults of params.yaml; the
#: ``*.out_dir`` / ``*_dir`` keys move them. Shown by ``rna-predict <stage> --help``.
STAGE_HELP: dict[str, dict[str, str]] = {
    "fetch": {
        "summary": "download or collect the raw RNA structures (data.source: demo | local | rcsb)",
        "reads": "nothing from the pipeline; the source named by data.source: demo = the\n"
                 "pinned rna-tools wheel (pip, sha256-checked, cached in $RNA_PREDICT_CACHE),\n"
                 "local = files in data.local_dir, rcsb = data.pdb_ids and the data.id_list\n"
                 "file (BGSU nrlist CSV, or PDBID / PDBID_CHAIN lines; keep it in lists/)\n"
                 "from data.rcsb_url with data.workers concurrent downloads",
        "params": "data.source, data.raw_dir, data.local_dir, data.pdb_ids, data.id_list,\n"
                  "data.rcsb_url, data.file_format, data.timeout_s, data.retries\n"
                  "(data.workers too, outside DVC's params: outputs do not depend on it)",
        "writes": "data/raw/<PDBID>.pdb|.cif|.cif.gz, data/raw/index.csv (one row per record),\n"
                  "data/raw/fetch_report.json",
    },
    "angles": {
        "summary": "parse structures into records: canonical atoms, torsions, chain breaks",
        "reads": "data/raw/ (index.csv and the structures it lists)",
        "params": "angles.backend, angles.out_dir, angles.link_cutoff (angles.workers too,\n"
                  "outside DVC's params: outputs are byte-identical for any count)",
        "writes": "data/angles/<ID>.pt, data/angles/manifest.json",
    },
    "features": {
        "summary": "Stage A: ViennaRNA base-pair probabilities per record",
        "reads": "data/angles/",
        "params": "features.out_dir, features.temperature, features.max_global_len,\n"
                  "features.window, features.max_bp_span (features.workers too, outside\n"
                  "DVC's params: outputs are byte-identical for any count)",
        "writes": "data/features/<ID>.pt, data/features/manifest.json",
    },
    "split": {
        "summary": "train/val/test split by sequence-identity clusters",
        "reads": "data/angles/, data/features/ (manifest.json: records the features\n"
                 "stage skipped are left out)",
        "params": "seed, split",
        "writes": "data/splits/{train,val,test}.csv, data/splits/split_report.json",
    },
    "train": {
        "summary": "train the model with Lightning (resumes from a matching checkpoint)",
        "reads": "data/angles/, data/features/, data/splits/ (train.csv, val.csv),\n"
                 "pretrained/ (training.init_from, model.torsionbert_path checkpoints)",
        "params": "seed, model, training",
        "writes": "models/model.safetensors, models/model_config.json,\n"
                  "models/adapters.safetensors (LoRA adapters; no tensors when LoRA is off),\n"
                  "reports/train/ (metrics.json, history.csv)",
        "also": "checkpoints/ (training.checkpoint_dir; not a DVC output) and an MLflow run\n"
                "(stage=train) in training.tracking_uri (default sqlite:///mlflow.db)",
    },
    "evaluate": {
        "summary": "score the trained model on the test split against two baselines",
        "reads": "models/model.safetensors, models/model_config.json,\n"
                 "models/adapters.safetensors, data/angles/,\n"
                 "data/features/, data/splits/ (test.csv; train.csv for the baselines),\n"
                 "pretrained/ (the model.torsionbert_path checkpoint of a torsionbert model)",
        "params": "seed, eval, training.out_dir (the model), training.num_threads,\n"
                  "training.accelerator",
        "writes": "reports/eval/ (metrics.json, per_target.csv, angle_mae.png,\n"
                  "angle_scatter.png, lddt_per_target.png, structures/ predicted PDBs)",
        "also": "an MLflow run (stage=evaluate) in training.tracking_uri",
    },
    "sweep": {
        "summary": "Optuna study over the loss weights (sweep.space)",
        "reads": "data/angles/, data/features/, data/splits/, pretrained/",
        "params": "seed, model, training, sweep",
        "writes": "reports/sweep/ (trials.csv, best_params.yaml, score.png)",
        "also": "the study in sweep.storage (default .optuna/sweep.journal, an Optuna journal\n"
                "file safe for sweep.workers processes; sqlite:/// or an RDB URL also work),\n"
                "trial work dirs under .optuna/, and an MLflow parent run with one nested run\n"
                "per trial in training.tracking_uri",
    },
}

_STAGE_EXAMPLE = {
    "fetch": "data.source=rcsb 'data.pdb_ids=[1EHZ,6Y2L]'",
    "angles": "angles.link_cutoff=2.0",
    "features": "features.temperature=25",
    "split": "split.max_identity=0.9 seed=1",
    "train": "training.w_angle=0.2 training.max_epochs=10",
    "evaluate": "eval.samples=2 eval.refine_steps=0",
    "sweep": "sweep.n_trials=8",
}

_STAGE_EPILOG = """\
overrides use Hydra's grammar, the same as `dvc exp run -S`:
  rna-predict {name} {example}
A misspelt key or a wrong type fails with a message naming it. Inside the pipeline run
the stage with `dvc repro {name}` or `dvc exp run -S key=value` (environment entered
first: `source .venv/bin/activate`)."""


def _section(label: str, text: str) -> str:
    pad = " " * (len(label) + 2)
    lines = text.split("\n")
    return "\n".join([f"{label}: {lines[0]}"] + [pad + line for line in lines[1:]])


def stage_description(name: str) -> str:
    """The ``--help`` description of stage ``name``: summary, reads, params, writes."""
    h = STAGE_HELP[name]
    parts = [f"DVC stage {name!r}: {h['summary']}.", ""]
    width = 6
    for key in ("reads", "params", "writes", "also"):
        if key in h:
            text = h[key]
            if key == "params":
                first, _, rest = text.partition("\n")
                text = first + " (sections of params.yaml)" + ("\n" + rest if rest else "")
            parts.append(_section(key.ljust(width), text))
    return "\n".join(parts)


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
    from .inference.predict import read_fasta, run_predict

    if args.kaggle:
        from .inference.kaggle import N_PREDICTIONS, predict_kaggle

        if args.samples is not None:
            raise SystemExit(f"--samples: a Kaggle submission always has {N_PREDICTIONS} "
                             "predictions per residue; drop --samples with --kaggle")

        print(predict_kaggle(Path(args.model_dir), Path(args.kaggle), Path(args.out),
                             steps=args.steps, seed=args.seed, refine_steps=args.refine_steps))
        return 0
    if args.fasta:
        entries = read_fasta(args.fasta)
        if len(entries) != 1:
            raise SystemExit(f"{args.fasta}: expected one sequence, found {len(entries)}")
        sequence = entries[0][1]
    else:
        sequence = args.sequence
    samples = 1 if args.samples is None else args.samples
    paths = run_predict(Path(args.model_dir), sequence, Path(args.out), samples=samples,
                        steps=args.steps, seed=args.seed, refine_steps=args.refine_steps)
    for p in paths:
        print(p)
    return 0


_TORSIONS_DESCRIPTION = """\
Torsion angles of PDB/mmCIF files, one row per nucleotide (outside the pipeline).

reads : the FILEs given (.pdb, .ent, .cif, .cif.gz)
params: none (params.yaml is not read)
writes: stdout only: a table in degrees, or with --json one JSON array with DSSR `nts`
        keys (alpha..zeta, chi, eta, theta, v0..v4, phase_angle, amplitude; null where
        undefined)"""

_PREDICT_DESCRIPTION = """\
Predict all-atom structures for one sequence with the trained model (outside the pipeline).

reads : --model-dir (default models/): model.safetensors, model_config.json and
        adapters.safetensors written by `rna-predict train` (a torsionbert model also its
        model.torsionbert_path checkpoint, e.g. in pretrained/); the sequence from
        --sequence or --fasta (one record), or with --kaggle a Kaggle Stanford RNA 3D
        sequences CSV (target_id,sequence,...)
params: none (params.yaml is not read; the options below set sampling)
writes: --out in the format its suffix names: .pdb/.ent PDB, .cif/.mmcif mmCIF (any
        other suffix is an error); with --samples N > 1: OUT_1.<ext> .. OUT_N.<ext>;
        with --kaggle the submission CSV (ID,resname,resid,x_1,y_1,z_1..x_5,y_5,z_5:
        five C1' predictions per residue)"""

_PREDICT_EPILOG = """\
examples:
  rna-predict predict --sequence GGCGAAAGCC --out pred.pdb --samples 5
  rna-predict predict --fasta seq.fa --out pred.cif --refine-steps 200
  rna-predict predict --kaggle test_sequences.csv --out submission.csv"""

_BENCHMARK_DESCRIPTION = """\
Score the trained model and both baselines on a directory of native structures
(outside the pipeline): the metrics of `evaluate`, with a leakage guard.

reads : --natives DIR (.pdb/.ent/.cif/.mmcif, optionally .gz; one target per file, all
        RNA chains predicted as one complex), models/model.safetensors,
        model_config.json and adapters.safetensors (training.out_dir; a torsionbert model
        also its checkpoint in pretrained/), data/angles/ and data/splits/train.csv
        (baselines and identity to the training records)
params: seed, eval (steps, refine_steps, samples unless --samples, bootstrap_samples),
        split.max_identity, angles, features.temperature, training.out_dir
writes: --out (default reports/benchmark/<name of DIR>): summary.json, per_target.csv,
        tm_per_target.png, tm_vs_length.png, structures/<id>_s<k>.pdb
also  : an MLflow run (stage=benchmark) in training.tracking_uri"""

_BENCHMARK_EPILOG = """\
targets more than split.max_identity identical to a training record are flagged in
per_target.csv and left out of summary.json unless --include-similar; when every target
is, the run stops with an error before loading the model or sampling anything.
examples:
  rna-predict benchmark --natives natives/ --samples 5
  rna-predict benchmark --natives natives/ --out reports/benchmark/puzzles eval.steps=50"""

_SCORE_DESCRIPTION = """\
Score a Kaggle Stanford RNA 3D submission against labels (outside the pipeline): per
target the best over the 5 predictions of the best over the reference conformations of
the C1' TM-score (US-align -TMscore 1, RNA d0, normalised by the observed residues).

reads : --labels (ID,resname,resid,x_1,y_1,z_1,... one or more conformations, -1e18 =
        missing) and --submission (ID,resname,resid,x_1,y_1,z_1..x_5,y_5,z_5)
params: none (params.yaml is not read)
writes: --out (default scores.csv: target_id,length,n_references,score) and the
        per-target and mean scores on stdout"""


_DESCRIPTION = """\
rna-predict: one subcommand per DVC stage (fetch, angles, features, split, train,
evaluate, sweep), plus torsions, predict, benchmark and score for users. Stage subcommands read
params.yaml and take overrides in the grammar of `dvc exp run -S` (key=value)."""


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="rna-predict", description=_DESCRIPTION, formatter_class=raw,
        epilog="`rna-predict COMMAND --help` says what each command reads, writes and which "
               "params it takes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        p = sub.add_parser(name, help=f"DVC stage {name!r}: {STAGE_HELP[name]['summary']}",
                           description=stage_description(name),
                           epilog=_STAGE_EPILOG.format(name=name, example=_STAGE_EXAMPLE[name]),
                           formatter_class=raw)
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="overrides of params.yaml (Hydra / `dvc exp run -S` grammar)")
        p.add_argument("--params", default="params.yaml", help="parameter file (default params.yaml)")
    t = sub.add_parser("torsions", help="torsion angles of PDB/mmCIF files (degrees)",
                       description=_TORSIONS_DESCRIPTION, formatter_class=raw)
    t.add_argument("files", nargs="+", metavar="FILE")
    t.add_argument("--json", action="store_true", help="one JSON array, DSSR `nts` keys")
    pr = sub.add_parser("predict", help="predict all-atom structures for a sequence",
                        description=_PREDICT_DESCRIPTION, epilog=_PREDICT_EPILOG,
                        formatter_class=raw)
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence", help="RNA sequence (ACGU, T read as U; '&' between strands)")
    src.add_argument("--fasta", help="FASTA file with one sequence")
    src.add_argument("--kaggle", metavar="CSV",
                     help="Kaggle sequences CSV: write a submission (5 C1' predictions per "
                          "residue) to --out")
    pr.add_argument("--out", required=True,
                    help="output path; .pdb/.ent write PDB, .cif/.mmcif write mmCIF")
    pr.add_argument("--samples", type=int, default=None,
                    help="structures to sample (default 1; not with --kaggle: always 5)")
    pr.add_argument("--steps", type=int, default=200, help="sampler steps (AF3 uses 200)")
    pr.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    pr.add_argument("--refine-steps", type=int, default=200,
                    help="torsion-space refinement steps per sample (0: raw diffusion output)")
    pr.add_argument("--model-dir", default="models",
                    help="directory with model.safetensors and model_config.json (default models)")
    b = sub.add_parser("benchmark", help="score the model on a directory of native structures",
                       description=_BENCHMARK_DESCRIPTION, epilog=_BENCHMARK_EPILOG,
                       formatter_class=raw)
    b.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of params.yaml (Hydra / `dvc exp run -S` grammar)")
    b.add_argument("--natives", required=True, metavar="DIR", help="directory of PDB/mmCIF natives")
    b.add_argument("--samples", type=int, default=None,
                   help="structures sampled per target (default eval.samples)")
    b.add_argument("--out", default=None,
                   help="output directory (default reports/benchmark/<name of DIR>)")
    b.add_argument("--include-similar", action="store_true",
                   help="keep targets above split.max_identity to a training record in the summary")
    b.add_argument("--params", default="params.yaml", help="parameter file (default params.yaml)")
    sc = sub.add_parser("score", help="score a Kaggle submission (best-of-5 C1' TM-score)",
                        description=_SCORE_DESCRIPTION, formatter_class=raw)
    sc.add_argument("--labels", required=True, help="labels CSV (one or more conformations)")
    sc.add_argument("--submission", required=True, help="submission CSV (5 predictions)")
    sc.add_argument("--out", default="scores.csv", help="per-target scores CSV (default scores.csv)")
    return parser


def cmd_score(args: argparse.Namespace) -> int:
    from .evaluate.kaggle_score import run_score

    rows, mean = run_score(Path(args.labels), Path(args.submission), Path(args.out))
    print(f"{'target_id':<16} {'length':>6} {'refs':>4} {'score':>8}")
    for r in rows:
        print(f"{r['target_id']:<16} {r['length']:>6} {r['n_references']:>4} {r['score']:>8.4f}")
    print(f"{'mean':<16} {'':>6} {'':>4} {mean:>8.4f}")
    return 0


def cmd_benchmark(args: argparse.Namespace, cfg) -> int:
    from .evaluate.benchmark import run_benchmark

    out = run_benchmark(cfg, Path(args.natives), args.out, args.samples, args.include_similar)
    log.info("benchmark: wrote %s", out)
    return 0


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
        if args.command == "score":
            return cmd_score(args)
        from .config import load_config

        cfg = load_config(args.overrides, params=args.params)
        if args.command == "benchmark":
            return cmd_benchmark(args, cfg)
        out = _stage(args.command, cfg)
        log.info("%s: wrote %s", args.command, out)
        return 0
    except (StructureError, ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        log.error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
