"""PNG plots of the evaluate stage and ``benchmark``, with reproducible bytes.

Matplotlib's Agg backend with fixed size and dpi; PNG metadata is cleared
(``metadata={"Software": None}``), so the same data gives the same file on the same
machine (fonts are rasterised locally, so bytes can differ across machines). Each file is
written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rna_predict.data.atom_layout import TORSIONS
from rna_predict.data.atomic import atomic_path

#: RNA-TorsionBERT MAE (degrees) on RNA-Puzzles + CASP-RNA (SCIENCE.md section 2)
TORSIONBERT_MAE: dict[str, float] = {
    "alpha": 37.3, "beta": 19.6, "gamma": 29.4, "delta": 13.6, "epsilon": 16.6,
    "zeta": 26.6, "chi": 14.7,
}
_PNG_META = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "rna-predict", "font.size": 9})
    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata=_PNG_META)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_angle_mae(maes: Mapping[str, Mapping[str, float]], path: str | Path,
                   reference: Mapping[str, float] | None = TORSIONBERT_MAE) -> Path:
    """Grouped bars: per-torsion MAE (degrees) of each method (``{method: {angle: mae}}``).

    ``reference`` (published RNA-TorsionBERT numbers on another test set) is drawn as a
    hatched bar for scale only.
    """
    plt = _pyplot()
    series = dict(maes)
    if reference:
        series["RNA-TorsionBERT (published, other test set)"] = dict(reference)
    x = np.arange(len(TORSIONS))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (name, vals) in enumerate(series.items()):
        h = [vals.get(t, np.nan) if vals.get(t) is not None else np.nan for t in TORSIONS]
        hatch = "//" if name.startswith("RNA-TorsionBERT") else None
        ax.bar(x + (i - (len(series) - 1) / 2) * width, h, width, label=name, hatch=hatch)
    ax.set_xticks(x, TORSIONS)
    ax.set_ylabel("MAE (degrees)")
    ax.set_title("Torsion angle MAE on the test split")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_angle_scatter(pred_deg: np.ndarray, true_deg: np.ndarray, mask: np.ndarray,
                       path: str | Path) -> Path:
    """Predicted vs true torsion (degrees), one panel per torsion, defined positions only."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(10, 5))
    for j, ax in enumerate(axes.flat):
        if j >= len(TORSIONS):
            ax.axis("off")
            continue
        ok = mask[:, j] if len(mask) else np.zeros(0, dtype=bool)
        ax.scatter(true_deg[ok, j], pred_deg[ok, j], s=4, alpha=0.6)
        ax.plot([-180, 180], [-180, 180], color="grey", lw=0.8)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_title(f"{TORSIONS[j]} (n={int(ok.sum())})")
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    fig.tight_layout()
    return _save(fig, path)


def _grouped_bars(ids: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str,
                  title: str, path: str | Path) -> Path:
    """Grouped bars in [0, 1]: one group per target, one bar per series."""
    plt = _pyplot()
    x = np.arange(len(ids))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(ids) + 3), 4))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.asarray(vals, dtype=float), width,
               label=name)
    ax.set_xticks(x, list(ids), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_lddt_per_target(ids: Sequence[str], series: Mapping[str, Sequence[float]],
                         path: str | Path) -> Path:
    """Bars of C1' lDDT per test target for each series (model best/mean, baseline)."""
    return _grouped_bars(ids, series, "lDDT (C1')", "lDDT per test target", path)


def plot_tm_per_target(ids: Sequence[str], series: Mapping[str, Sequence[float]],
                       path: str | Path, title: str = "TM-score per benchmark target") -> Path:
    """Bars of C1' TM-score per target for each series (model best/mean, baselines)."""
    return _grouped_bars(ids, series, "TM-score (C1', RNA d0)", title, path)


def plot_tm_vs_length(lengths: Sequence[int], series: Mapping[str, Sequence[float]],
                      path: str | Path) -> Path:
    """Scatter of C1' TM-score against target length (nucleotides), one marker per series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for marker, (name, vals) in zip("os^vD", series.items()):
        ax.scatter(np.asarray(lengths, dtype=float), np.asarray(vals, dtype=float), s=22,
                   marker=marker, label=name, alpha=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("length (nt)")
    ax.set_ylabel("TM-score (C1', RNA d0)")
    ax.set_title("TM-score against length")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["TORSIONBERT_MAE", "plot_angle_mae", "plot_angle_scatter", "plot_lddt_per_target",
           "plot_tm_per_target", "plot_tm_vs_length"]
