"""Pipeline stage ``evaluate``: score the trained model and two baselines on the test split.

Per test target (full length, no crop):
- torsions: per-angle MAE (degrees) and MCQ of the predicted (atan2 of sin, cos)
  torsions; a predicted torsion counts as undefined only where the chain topology has
  none (alpha of a chain's first residue, epsilon/zeta of its last);
- structures: ``eval.samples`` samples with ``eval.steps`` sampler steps from a generator
  seeded by (seed, target id); C1' RMSD, all-atom RMSD, C1' TM-score (RNA d0), C1' and
  all-atom lDDT, as best-of (min RMSD, max TM/lDDT) and mean over samples;
- baselines (same run): ``mean_torsion`` (per-nucleotide circular mean torsions of the
  training split) and ``aform`` (the Stage C structure built from them).

Outputs under ``eval.out_dir``: ``metrics.json`` (sorted keys, floats rounded to 6
digits; pooled angle MAE/MCQ, other metrics averaged over targets), ``per_target.csv``,
``angle_mae.png``, ``angle_scatter.png``, ``lddt_per_target.png`` and predicted PDBs
``structures/<id>_s<k>.pdb``. The run is recorded in MLflow with stage=evaluate.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rna_predict.config import Config
from rna_predict.data.atom_layout import TORSIONS, slot_mask_for
from rna_predict.data.atomic import write_json, write_text
from rna_predict.evaluate import baselines, bootstrap, metrics, plots
from rna_predict.model.angles import angles_from_sincos

log = logging.getLogger(__name__)

STRUCT_KEYS = ("rmsd_c1", "rmsd_all", "tm_c1", "lddt_c1", "lddt_all")
_CHAIN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_BEST = {"rmsd_c1": min, "rmsd_all": min, "tm_c1": max, "lddt_c1": max, "lddt_all": max}


def topology_mask(chain_index: np.ndarray) -> np.ndarray:
    """[L, 7] bool: torsions a predicted chain defines (no alpha at a chain start,
    no epsilon/zeta at a chain end)."""
    ci = np.asarray(chain_index).reshape(-1)
    n = len(ci)
    mask = np.ones((n, len(TORSIONS)), dtype=bool)
    if n == 0:
        return mask
    start = np.ones(n, dtype=bool)
    start[1:] = ci[1:] != ci[:-1]
    end = np.ones(n, dtype=bool)
    end[:-1] = ci[1:] != ci[:-1]
    mask[start, TORSIONS.index("alpha")] = False
    mask[end, TORSIONS.index("epsilon")] = False
    mask[end, TORSIONS.index("zeta")] = False
    return mask


def _seed_for(seed: int, rid: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(rid.encode())) % (2**63 - 1)


def _summarise(values: list[dict[str, float]]) -> dict[str, float]:
    """Best-of and mean of each structure metric over samples."""
    out: dict[str, float] = {}
    for key in STRUCT_KEYS:
        vals = [v[key] for v in values if math.isfinite(v[key])]
        out[f"{key}_best"] = _BEST[key](vals) if vals else float("nan")
        out[f"{key}_mean"] = float(np.mean(vals)) if vals else float("nan")
    return out


@torch.no_grad()
def evaluate_target(model: torch.nn.Module, batch: dict, rec: dict, table: np.ndarray,
                    samples: int, steps: int, seed: int, refine_steps: int = 0) -> dict[str, Any]:
    """All metrics of one target; returns per-target row plus arrays for pooling.

    Structures are the sampler's output refined with ``refine_steps`` steps
    (:mod:`rna_predict.model.refine`; 0 scores the raw diffusion samples).
    """
    seq = str(rec["sequence"])
    true_ang = rec["angles"].double().numpy()
    true_mask = rec["angle_mask"].numpy().astype(bool) & np.isfinite(true_ang)
    coords = rec["coords"].double().numpy()
    atom_mask = rec["atom_mask"].numpy().astype(bool)
    topo = topology_mask(rec["chain_index"].numpy())

    sincos = model.trunk(batch)["sincos"][0].float()
    pred_ang = angles_from_sincos(sincos).double().cpu().numpy()
    base_ang = baselines.mean_torsion_angles(table, seq)

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    xyz = model.sample(batch, steps=int(steps), n_samples=int(samples), generator=gen,
                       refine_steps=int(refine_steps))
    xyz = xyz[:, 0].double().cpu().numpy()  # [n, L, 23, 3]
    per_sample = [metrics.structure_metrics(x, coords, atom_mask) for x in xyz]
    aform = baselines.aform_structure(table, seq)

    row: dict[str, Any] = {"id": str(rec["id"]), "length": len(seq)}
    for name, ang in (("model", pred_ang), ("mean_torsion", base_ang)):
        mae = metrics.angle_mae(ang, true_ang, true_mask)
        row.update({f"{name}_mae_{t}": float(v) for t, v in zip(TORSIONS, mae)})
        row[f"{name}_mcq"] = metrics.mcq(ang, true_ang, topo, true_mask)
    row.update({f"model_{k}": v for k, v in _summarise(per_sample).items()})
    row.update({f"aform_{k}": v for k, v in metrics.structure_metrics(aform, coords, atom_mask).items()})
    return {"row": row, "pred": pred_ang, "base": base_ang, "true": true_ang,
            "true_mask": true_mask, "topo": topo, "xyz": xyz}


def score_target(model: torch.nn.Module, example: dict, rec: dict, table: np.ndarray,
                 samples: int, steps: int, refine_steps: int, seed: int,
                 stage: str = "evaluate") -> dict[str, Any]:
    """:func:`evaluate_target` of one record: ``example`` is its model example
    (:func:`rna_predict.data.dataset.example_from_record`), ``rec`` the angles record;
    the sampling generator is seeded by (``seed``, record id). The one per-target scoring
    path of ``evaluate`` and ``benchmark``."""
    from rna_predict.data.dataset import collate

    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
             for k, v in collate([example]).items()}
    rid = str(rec["id"])
    item = evaluate_target(model, batch, rec, table, samples, steps, _seed_for(seed, rid),
                           refine_steps)
    row = item["row"]
    log.info("%s: %s L=%d TM(best)=%.3f lDDT(best)=%.3f MCQ=%.1f", stage, rid, row["length"],
             row["model_tm_c1_best"], row["model_lddt_c1_best"], row["model_mcq"])
    return item


def _pooled_angles(items: list[dict], key: str) -> dict[str, Any]:
    """Pooled per-angle MAE and MCQ of the torsions ``key`` ("pred" or "base").

    The model and the baseline are scored on the same mask: a predicted chain defines the
    torsions its topology has (``topo``: no alpha at a chain start, no epsilon/zeta at an
    end), the truth those it measured (``true_mask``).
    """
    pred = np.concatenate([it[key] for it in items])
    true = np.concatenate([it["true"] for it in items])
    tmask = np.concatenate([it["true_mask"] for it in items])
    pmask = np.concatenate([it["topo"] for it in items])
    mae = metrics.angle_mae(pred, true, tmask)
    per = {t: float(v) for t, v in zip(TORSIONS, mae)}
    finite = [v for v in per.values() if math.isfinite(v)]
    per["mean"] = float(np.mean(finite)) if finite else float("nan")
    return {"angle_mae": per, "mcq": metrics.mcq(pred, true, pmask, tmask)}


def comparisons(items: list[dict], n_boot: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap 95% intervals of every model-minus-baseline difference.

    Torsions (model vs ``mean_torsion``): the mean and each per-angle MAE, and MCQ,
    resampling residues and, separately, whole targets (a cluster bootstrap). Structures (model best-of and
    mean-of samples vs ``aform``): every structure metric, resampling targets.
    Negative differences favour the model for errors (MAE, MCQ, RMSD), positive ones for
    scores (TM, lDDT).
    """
    out: dict[str, Any] = {"n_bootstrap": int(n_boot), "confidence": bootstrap.CONFIDENCE}
    if not items:
        return out
    true = np.concatenate([it["true"] for it in items])
    tmask = np.concatenate([it["true_mask"] for it in items])
    topo = np.concatenate([it["topo"] for it in items])
    err = {k: np.degrees(metrics.circular_difference(np.nan_to_num(
        np.concatenate([it[k] for it in items])), np.nan_to_num(true))) for k in ("pred", "base")}
    dterms = {k: metrics.mcq_terms(np.concatenate([it[k] for it in items]), true, topo, tmask)
              for k in ("pred", "base")}
    target_of = np.concatenate([np.full(len(it["true"]), i) for i, it in enumerate(items)])
    units = {"residue": np.arange(len(true)), "target": target_of}
    tors: dict[str, Any] = {}
    for unit, groups in units.items():
        tors[f"angle_mae_mean/{unit}"] = bootstrap.pooled_mae_interval(
            err["pred"], err["base"], tmask, groups, n_boot, seed, unit)
        tors[f"mcq/{unit}"] = bootstrap.pooled_mcq_interval(
            dterms["pred"], dterms["base"], groups, n_boot, seed, unit)
    for k, name in enumerate(TORSIONS):
        for unit, groups in units.items():
            tors[f"angle_mae_{name}/{unit}"] = bootstrap.pooled_mae_interval(
                err["pred"][:, [k]], err["base"][:, [k]], tmask[:, [k]], groups, n_boot, seed, unit)
    rows = [it["row"] for it in items]
    struct: dict[str, Any] = {}
    for key in STRUCT_KEYS:
        base = np.array([r[f"aform_{key}"] for r in rows])
        for stat in ("best", "mean"):
            model = np.array([r[f"model_{key}_{stat}"] for r in rows])
            struct[f"{key}_{stat}/target"] = bootstrap.paired_mean_interval(
                model, base, n_boot, seed, "target")
    out["model_vs_mean_torsion"] = tors
    out["model_vs_aform"] = struct
    return out


def _mean_of(rows: list[dict], prefix: str, keys: list[str]) -> dict[str, float]:
    out = {}
    for key in keys:
        vals = [r[f"{prefix}{key}"] for r in rows if math.isfinite(r[f"{prefix}{key}"])]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    return out


def _clean(obj: Any) -> Any:
    """Round floats to 6 digits; NaN/inf become None (valid, stable JSON)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    return obj


def aggregate(items: list[dict], samples: int, steps: int, refine_steps: int = 0,
              n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """metrics.json content from the per-target results, with bootstrap intervals."""
    rows = [it["row"] for it in items]
    skeys = [f"{k}_{s}" for k in STRUCT_KEYS for s in ("best", "mean")]
    model = _pooled_angles(items, "pred")
    for k, v in _mean_of(rows, "model_", skeys).items():
        name, stat = k.rsplit("_", 1)
        model.setdefault(name, {})[stat] = v
    return _clean({
        "n_targets": len(items), "samples": int(samples), "steps": int(steps),
        "targets": {r["id"]: r["length"] for r in rows},
        "refine_steps": int(refine_steps),
        "model": model,
        "baseline_mean_torsion": _pooled_angles(items, "base"),
        "baseline_aform": _mean_of(rows, "aform_", list(STRUCT_KEYS)),
        "comparisons": comparisons(items, n_boot, seed),
        "lddt_definition": metrics.LDDT_DEFINITION,
    })


def write_per_target(rows: list[dict], path: Path) -> None:
    """CSV, one row per target, floats with 6 decimals, empty cell for undefined."""
    cols = list(rows[0]) if rows else ["id"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([(f"{v:.6f}" if math.isfinite(v) else "") if isinstance(v, float) else v
                    for v in (r[c] for c in cols)])
    write_text(path, buf.getvalue())


def write_plots(items: list[dict], summary: dict, out_dir: Path) -> list[Path]:
    """The three PNG plots."""
    maes = {"model": summary["model"]["angle_mae"],
            "mean-torsion baseline": summary["baseline_mean_torsion"]["angle_mae"]}
    paths = [plots.plot_angle_mae(maes, out_dir / "angle_mae.png")]
    if items:
        pred = np.degrees(np.concatenate([it["pred"] for it in items]))
        true = np.degrees(np.nan_to_num(np.concatenate([it["true"] for it in items])))
        mask = np.concatenate([it["true_mask"] for it in items])
    else:
        pred = true = np.zeros((0, len(TORSIONS)))
        mask = np.zeros((0, len(TORSIONS)), dtype=bool)
    paths.append(plots.plot_angle_scatter(pred, true, mask, out_dir / "angle_scatter.png"))
    rows = [it["row"] for it in items]
    series = {"model (best of samples)": [r["model_lddt_c1_best"] for r in rows],
              "model (mean of samples)": [r["model_lddt_c1_mean"] for r in rows],
              "A-form baseline": [r["aform_lddt_c1"] for r in rows]}
    paths.append(plots.plot_lddt_per_target([r["id"] for r in rows], series,
                                            out_dir / "lddt_per_target.png"))
    return paths


def write_structures(items: list[dict], recs: list[dict], out_dir: Path) -> list[Path]:
    """Predicted samples as PDB files ``<id>_s<k>.pdb`` (the folder is rewritten)."""
    from rna_predict.data.writer import write_pdb

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    paths = []
    for it, rec in zip(items, recs):
        seq = str(rec["sequence"])
        chains = [str(c) for c in rec["chain_ids"]]
        resnums = [int(r) for r in rec["resnums"]]
        if any(len(c) != 1 for c in chains) or any(not -999 <= r <= 9999 for r in resnums):
            # PDB format limits: renumber, one letter per chain
            ci = [int(c) for c in rec["chain_index"]]
            chains = [_CHAIN_LETTERS[c % len(_CHAIN_LETTERS)] for c in ci]
            resnums = list(range(1, len(seq) + 1))
        for k, xyz in enumerate(it["xyz"], 1):
            path = out_dir / f"{rec['id']}_s{k}.pdb"
            write_pdb(path, seq, xyz, slot_mask_for(seq), chain_ids=chains, resnums=resnums)
            paths.append(path)
    return paths


def geometry_fit_overlap(target_ids: list[str]) -> list[str]:
    """Targets that Stage C's ideal geometry was fitted on (``GEOMETRY_FIT_IDS``, the
    default demo training split); with another split (other seed or identity threshold)
    such targets leak, so they are listed in metrics.json and logged as a warning."""
    from rna_predict.model.geometry import GEOMETRY_FIT_IDS

    overlap = sorted(set(target_ids) & set(GEOMETRY_FIT_IDS))
    if overlap:
        log.warning("evaluate: Stage C geometry was fitted on test target(s) %s "
                    "(model/geometry.py GEOMETRY_FIT_IDS); their structure metrics are not "
                    "held out", ", ".join(overlap))
    return overlap


def eval_device(accelerator: str) -> torch.device:
    """CUDA when ``training.accelerator`` asks for a GPU (gpu/cuda/auto) and one exists."""
    if str(accelerator).lower() in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def run_evaluate(cfg: Config) -> Path:
    """Evaluate ``<training.out_dir>`` on the test split; return the metrics.json path."""
    from rna_predict.data.dataset import RecordDataset
    from rna_predict.inference.predict import load_model
    from rna_predict.data.split_files import read_split_ids
    from rna_predict.tracking import flatten_metrics, log_stage_run

    started_at = time.time()  # the MLflow run spans the whole stage

    torch.set_num_threads(int(cfg.training.num_threads))
    torch.manual_seed(cfg.seed)
    e, out_dir = cfg.eval, Path(cfg.eval.out_dir)
    device = eval_device(cfg.training.accelerator)
    model = load_model(cfg.training.out_dir, device=device)
    test_ids = read_split_ids(cfg.split.out_dir, "test")
    if e.max_targets > 0:
        test_ids = test_ids[: e.max_targets]
    table = baselines.fit_from_split(cfg.angles.out_dir, read_split_ids(cfg.split.out_dir, "train"))
    log.info("evaluate: %d test targets, %d samples x %d steps, refined %d steps",
             len(test_ids), e.samples, e.steps, e.refine_steps)

    dataset = RecordDataset(cfg.angles.out_dir, cfg.features.out_dir, test_ids, 0, cfg.seed)
    items, recs = [], []
    for i, rid in enumerate(tqdm(test_ids, desc="evaluate", unit="target")):
        rec = baselines.load_angles_record(cfg.angles.out_dir, rid)
        items.append(score_target(model, dataset[i], rec, table, e.samples, e.steps,
                                  e.refine_steps, cfg.seed, "evaluate"))
        recs.append(rec)

    summary = aggregate(items, e.samples, e.steps, e.refine_steps, e.bootstrap_samples, cfg.seed)
    summary["geometry_fit_overlap"] = geometry_fit_overlap(test_ids)
    metrics_path = out_dir / "metrics.json"
    write_json(metrics_path, summary)
    write_per_target([it["row"] for it in items], out_dir / "per_target.csv")
    pngs = write_plots(items, summary, out_dir)
    write_structures(items, recs, out_dir / "structures")
    log_stage_run(cfg, "evaluate", flatten_metrics(summary),
                  artifacts=[metrics_path, out_dir / "per_target.csv", *pngs], started_at=started_at)
    log.info("evaluate: wrote %s", metrics_path)
    return metrics_path


__all__ = ["STRUCT_KEYS", "aggregate", "comparisons", "eval_device", "evaluate_target",
           "geometry_fit_overlap", "run_evaluate", "score_target", "topology_mask",
           "write_per_target", "write_structures"]
