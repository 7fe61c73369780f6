"""``rna-predict benchmark``: score the trained model on a directory of native structures.

For every PDB/mmCIF file in ``--natives`` (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``,
optionally gzipped; the target id is the file name without its suffixes):

- the record is built as the ``angles`` stage builds it (:func:`rna_predict.data.structure.
  read_structure`: first model, every RNA chain, modified residues mapped to their
  parents; torsions by :func:`rna_predict.data.torsions.compute_torsions`), and the model
  input as the ``features`` stage builds it (ViennaRNA base-pair probabilities of all
  chains folded together, :func:`rna_predict.data.features.featurize`): a multi-chain
  target is predicted as one complex;
- it is scored by the same function as ``evaluate``
  (:func:`rna_predict.evaluate.run_evaluate.score_target`: torsion MAE and MCQ, C1'/all-atom
  RMSD, C1' TM-score (US-align's sequence-dependent mode, RNA d0), C1'/all-atom lDDT,
  best-of-N and mean over ``N`` samples drawn in one batch) against both baselines
  fitted on the TRAIN split only (:mod:`rna_predict.evaluate.baselines`);
- leakage guard: its highest sequence identity to any training record, with the split's
  identity definition (:func:`rna_predict.data.split.sequence_identity`, including
  ``split.min_identity_length``), computed exactly: every target is aligned to every
  distinct training sequence (a benchmark has tens of targets, so no prefilter is needed);
  targets above ``split.max_identity`` are flagged and left out of the summary unless
  ``include_similar``. The check runs on every native before the model is loaded: when
  it would leave no target, :class:`BenchmarkError` says so before anything is sampled.

The summary (``summary.json``) is :func:`rna_predict.evaluate.run_evaluate.aggregate` of
the included targets (paired bootstrap intervals of model minus baseline) plus the
leakage table; given the test split's natives it reproduces ``evaluate``'s metrics.
Also written: ``per_target.csv`` (every target, with ``max_identity_train`` and
``similar``), ``tm_per_target.png``, ``tm_vs_length.png`` and ``structures/<id>_s<k>.pdb``.
The run is recorded in MLflow with stage=benchmark.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rna_predict.config import Config
from rna_predict.data.atomic import write_json
from rna_predict.evaluate import baselines, plots
from rna_predict.evaluate.run_evaluate import (aggregate, eval_device, geometry_fit_overlap,
                                               score_target, write_per_target, write_structures)

log = logging.getLogger(__name__)

NATIVE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class BenchmarkError(ValueError):
    """The natives directory or a benchmark option is unusable."""


def target_id(path: Path) -> str:
    """``1ABC.cif.gz`` -> ``1ABC``: the file name without its structure (and gz) suffix."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return name[: -len(Path(name).suffix)] if Path(name).suffix else name


def native_files(natives: str | Path) -> list[Path]:
    """Structure files of ``natives`` sorted by name; a clear error for an empty or
    missing directory, two files of one target, or an id the outputs cannot carry."""
    natives = Path(natives)
    if not natives.is_dir():
        raise BenchmarkError(f"{natives}: no such directory of native structures")
    files = []
    for p in sorted(natives.iterdir()):
        name = p.name.lower()[:-3] if p.name.lower().endswith(".gz") else p.name.lower()
        if p.is_file() and name.endswith(NATIVE_SUFFIXES):
            files.append(p)
    if not files:
        raise BenchmarkError(f"{natives}: no PDB/mmCIF files ({', '.join(NATIVE_SUFFIXES)}, "
                             "optionally .gz)")
    seen: dict[str, Path] = {}
    for p in files:
        rid = target_id(p)
        if not _ID_RE.match(rid):
            raise BenchmarkError(f"{p}: target id {rid!r} must be letters, digits, '_', '-', '.'")
        if rid in seen:
            raise BenchmarkError(f"{p}: target {rid!r} also given by {seen[rid].name}")
        seen[rid] = p
    return files


def native_record(path: Path, rid: str, cfg: Config) -> dict[str, Any]:
    """The angles record of one native (as the ``angles`` stage builds it)."""
    from rna_predict.data.records import build_record
    from rna_predict.data.structure import read_structure
    from rna_predict.data.torsions import compute_torsions

    structure = read_structure(path, link_cutoff=cfg.angles.link_cutoff)
    if cfg.angles.backend == "dssr":
        from rna_predict.data.dssr import parse_nts, run_dssr

        torsions = parse_nts(run_dssr(path), structure)
    else:
        torsions = compute_torsions(structure)
    return build_record(rid, structure, torsions)


def native_example(rec: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The model input of a native record: its base-pair probabilities computed as the
    ``features`` stage computes them (:func:`rna_predict.data.features.featurize`)."""
    from rna_predict.data.dataset import example_from_record
    from rna_predict.data.features import featurize

    f = cfg.features
    feats, _ = featurize(rec, f.temperature, f.max_global_len, f.window, f.max_bp_span)
    return example_from_record(rec, feats["bpp"])


def _train_table_and_sequences(cfg: Config) -> tuple[np.ndarray, list[str]]:
    """Mean-torsion table fitted on the TRAIN split, and the training sequences."""
    from rna_predict.data.split_files import read_split_ids

    ids = read_split_ids(cfg.split.out_dir, "train")
    seqs: list[str] = []

    def records():
        for rid in ids:
            rec = baselines.load_angles_record(cfg.angles.out_dir, rid)
            seqs.append(str(rec["sequence"]))
            yield rec

    return baselines.fit_mean_torsions(records()), seqs


def write_benchmark_plots(rows: list[dict], out_dir: Path) -> list[Path]:
    """``tm_per_target.png`` (model and baselines per target) and ``tm_vs_length.png``."""
    ids = [r["id"] for r in rows]
    series = {"model (best of samples)": [r["model_tm_c1_best"] for r in rows],
              "model (mean of samples)": [r["model_tm_c1_mean"] for r in rows],
              "A-form baseline": [r["aform_tm_c1"] for r in rows]}
    return [plots.plot_tm_per_target(ids, series, out_dir / "tm_per_target.png"),
            plots.plot_tm_vs_length([r["length"] for r in rows], series,
                                    out_dir / "tm_vs_length.png")]


def run_benchmark(cfg: Config, natives: str | Path, out_dir: str | Path | None = None,
                  samples: int | None = None, include_similar: bool = False) -> Path:
    """Benchmark ``<training.out_dir>`` on the natives in ``natives``; return summary.json.

    ``out_dir`` defaults to ``reports/benchmark/<name of natives>``; ``samples`` to
    ``eval.samples``. Sampler steps, refinement, bootstrap resamples and the seed are
    those of ``eval`` and ``seed``, so the test split's natives reproduce ``evaluate``.
    """
    from rna_predict.data.split import sequence_identity
    from rna_predict.data.structure import StructureError
    from rna_predict.inference.predict import load_model
    from rna_predict.tracking import flatten_metrics, log_stage_run

    started_at = time.time()
    e = cfg.eval
    n_samples = int(e.samples if samples is None else samples)
    if n_samples < 1:
        raise BenchmarkError(f"--samples must be >= 1, got {n_samples}")
    files = native_files(natives)
    out = Path(out_dir) if out_dir else Path("reports/benchmark") / Path(natives).resolve().name
    torch.set_num_threads(int(cfg.training.num_threads))
    torch.manual_seed(cfg.seed)
    table, train_seqs = _train_table_and_sequences(cfg)
    log.info("benchmark: %d natives in %s, %d samples x %d steps, refined %d steps",
             len(files), natives, n_samples, e.steps, e.refine_steps)

    recs, skipped = [], {}
    for path in tqdm(files, desc="benchmark: read natives", unit="target"):
        rid = target_id(path)
        try:
            recs.append(native_record(path, rid, cfg))
        except StructureError as exc:
            log.error("benchmark: skipping %s: %s", path.name, exc)
            skipped[rid] = str(exc).replace(str(path), path.name)
    if not recs:
        raise BenchmarkError(f"{natives}: no native could be read ({len(skipped)} skipped)")

    # The leakage check comes before any prediction: a run whose every target would be
    # excluded stops here, not after hours of sampling.
    threshold = float(cfg.split.max_identity)
    min_length = int(cfg.split.min_identity_length)
    distinct_train = sorted(set(train_seqs))
    identity = [max((sequence_identity(str(r["sequence"]), t, min_length=min_length)
                     for t in distinct_train), default=0.0)
                for r in tqdm(recs, desc="benchmark: identity to train", unit="target")]
    is_similar = [ident > threshold for ident in identity]
    similar = [str(r["id"]) for r, sim in zip(recs, is_similar) if sim]
    if similar:
        log.warning("benchmark: %d target(s) above split.max_identity=%.2f to a training record: "
                    "%s (%s)", len(similar), threshold, ", ".join(similar),
                    "kept: --include-similar" if include_similar else "excluded from the summary")
    if len(similar) == len(recs) and not include_similar:
        raise BenchmarkError(
            f"{natives}: every target is above split.max_identity={threshold:.2f} to a training "
            f"record ({', '.join(similar)}), so none is left for the summary; pass "
            "--include-similar to score them anyway")

    model = load_model(cfg.training.out_dir, device=eval_device(cfg.training.accelerator))
    items = []
    for rec, ident, sim in zip(tqdm(recs, desc="benchmark", unit="target"), identity,
                               is_similar):
        t0 = time.perf_counter()
        item = score_target(model, native_example(rec, cfg), rec, table, n_samples, e.steps,
                            e.refine_steps, cfg.seed, "benchmark")
        item["row"]["max_identity_train"] = float(ident)
        item["row"]["similar"] = bool(sim)
        items.append(item)
        log.info("benchmark: %s L=%d scored in %.1f s", rec["id"], len(rec["sequence"]),
                 time.perf_counter() - t0)
    kept = [it for it in items if include_similar or not it["row"]["similar"]]
    summary = aggregate(kept, n_samples, e.steps, e.refine_steps, e.bootstrap_samples, cfg.seed)
    summary["geometry_fit_overlap"] = geometry_fit_overlap([it["row"]["id"] for it in kept])
    summary["leakage"] = {
        "max_identity": threshold, "include_similar": bool(include_similar),
        "identity_to_train": {it["row"]["id"]: round(it["row"]["max_identity_train"], 6)
                              for it in items},
        "similar": similar, "excluded": [] if include_similar else similar,
    }
    summary["skipped"] = skipped

    rows = [it["row"] for it in items]
    for r in rows:
        r["similar"] = int(r["similar"])
    summary_path = out / "summary.json"
    write_json(summary_path, summary)
    write_per_target(rows, out / "per_target.csv")
    pngs = write_benchmark_plots(rows, out)
    write_structures(items, recs, out / "structures")
    log_stage_run(cfg, "benchmark", flatten_metrics(summary),
                  artifacts=[summary_path, out / "per_target.csv", *pngs], started_at=started_at)
    log.info("benchmark: wrote %s", summary_path)
    return summary_path


__all__ = ["BenchmarkError", "native_example", "native_files", "native_record",
           "run_benchmark", "target_id", "write_benchmark_plots"]
