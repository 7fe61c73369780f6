"""Sweep reports: ``trials.csv``, ``best_params.yaml`` and a PNG of score vs the weights.

Only deterministic fields are written (trial number, state, parameters, score and its
parts), never Optuna's timestamps, so a seeded sweep reproduces byte for byte.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from rna_predict.config import Config
from rna_predict.data.atomic import atomic_path, write_text

ATTRS = ("score", "val_lddt_c1", "val_mcq", "epochs")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per finished trial, in trial order."""
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        if not t.state.is_finished():
            continue
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        row.update({f"training.{k}": round(v, 6) for k, v in sorted(t.params.items())})
        row.update({k: t.user_attrs.get(k) for k in ATTRS})
        if t.state.name == "COMPLETE" and t.value is not None:  # a pruned trial's value is its last intermediate
            row["score"] = round(float(t.value), 6)
        rows.append(row)
    return rows


def write_reports(study: Any, cfg: Config) -> Path:
    out = Path(cfg.sweep.out_dir)
    rows = trial_rows(study)
    columns = ["number", "state"] + sorted({k for r in rows for k in r if k.startswith("training.")}) + list(ATTRS)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: _fmt(r.get(c)) for c in columns})
    trials_csv = out / "trials.csv"
    write_text(trials_csv, buf.getvalue())

    complete = [r for r in rows if r["state"] == "COMPLETE" and r.get("score") is not None]
    best = min(complete, key=lambda r: (r["score"], r["number"])) if complete else None
    doc: dict[str, Any] = {"study": study.study_name, "n_trials": len(rows)}
    if best is not None:
        doc["best_trial"] = best["number"]
        doc["score"] = best["score"]
        doc["val_lddt_c1"] = best["val_lddt_c1"]
        doc["val_mcq"] = best["val_mcq"]
        doc["params"] = {k: v for k, v in best.items() if k.startswith("training.")}
        doc["promote"] = "dvc exp run " + " ".join(f"-S {k}={v}" for k, v in doc["params"].items())
    write_text(out / "best_params.yaml", yaml.safe_dump(doc, sort_keys=True))
    _plot(rows, out / "score.png")
    return trials_csv


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    done = [r for r in rows if r.get("score") is not None]
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    if done:
        sc = ax.scatter([r["training.w_angle"] for r in done], [r["training.w_diffusion"] for r in done],
                        c=[r["score"] for r in done], cmap="viridis_r", s=60, edgecolors="k")
        fig.colorbar(sc, ax=ax, label="score = 1 - val C1' lDDT (+ MCQ tie-break); lower is better")
        for r in done:
            ax.annotate(str(r["number"]), (r["training.w_angle"], r["training.w_diffusion"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    if pruned:
        ax.scatter([r["training.w_angle"] for r in pruned], [r["training.w_diffusion"] for r in pruned],
                   marker="x", c="red", label="pruned")
        ax.legend(loc="best")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training.w_angle")
    ax.set_ylabel("training.w_diffusion")
    ax.set_title("Optuna sweep (TPE)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
