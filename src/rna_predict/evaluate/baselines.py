"""Baselines scored in the same evaluate run as the model.

(a) ``mean_torsion``: for each nucleotide type the circular mean of every torsion over
    the training split, atan2(sum sin, sum cos) over defined positions; an angle never
    observed for a base falls back to its mean over all bases, then to the A-form
    reference value below.
(b) ``aform``: the structure that Stage C (NeRF with ideal geometry) builds from those
    mean torsions: an idealised, A-form-like single strand that knows nothing but the
    sequence.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rna_predict.data.atom_layout import BASES, TORSIONS, base_type_index
from rna_predict.model.geometry import IDEAL_A_FORM

#: A-form torsions (degrees, TORSIONS order) used only as a last resort: the one table of
#: the package, :data:`rna_predict.model.geometry.IDEAL_A_FORM`
AFORM_DEG: tuple[float, ...] = tuple(IDEAL_A_FORM[t] for t in TORSIONS)


def fit_mean_torsions(records: Iterable[dict]) -> np.ndarray:
    """[4, 7] radians: per base (A, C, G, U) circular mean of every torsion.

    ``records`` are ``data/angles`` dicts (``sequence``, ``angles`` [L, 7] radians,
    ``angle_mask`` [L, 7]).
    """
    k = len(TORSIONS)
    sin = np.zeros((len(BASES), k))
    cos = np.zeros((len(BASES), k))
    cnt = np.zeros((len(BASES), k))
    for rec in records:
        bt = base_type_index(str(rec["sequence"]))
        ang = np.asarray(rec["angles"], dtype=np.float64)
        ok = np.asarray(rec["angle_mask"], dtype=bool) & np.isfinite(ang)
        a = np.where(ok, ang, 0.0)
        np.add.at(sin, bt, np.where(ok, np.sin(a), 0.0))
        np.add.at(cos, bt, np.where(ok, np.cos(a), 0.0))
        np.add.at(cnt, bt, ok.astype(np.float64))
    table = np.arctan2(sin, cos)
    pooled = np.arctan2(sin.sum(0), cos.sum(0))
    pooled = np.where(cnt.sum(0) > 0, pooled, np.radians(AFORM_DEG))
    return np.where(cnt > 0, table, pooled[None, :])


def mean_torsion_angles(table: np.ndarray, sequence: str) -> np.ndarray:
    """[L, 7] radians: the baseline torsions of every residue of ``sequence``."""
    return np.asarray(table)[base_type_index(sequence)]


def aform_structure(table: np.ndarray, sequence: str) -> np.ndarray:
    """[L, 23, 3] coordinates that Stage C builds from the mean torsions."""
    import torch

    from rna_predict.model.nerf import build_from_angles

    angles = torch.as_tensor(mean_torsion_angles(table, sequence), dtype=torch.float32)[None]
    bt = torch.as_tensor(base_type_index(sequence))[None]
    with torch.no_grad():
        xyz = build_from_angles(angles, bt)
    return xyz[0].double().numpy()


def load_angles_record(angles_dir: str | Path, rid: str) -> dict:
    """``<angles_dir>/<rid>.pt`` loaded with ``weights_only=True`` (no code execution)."""
    import torch

    return torch.load(Path(angles_dir) / f"{rid}.pt", weights_only=True, map_location="cpu")


def fit_from_split(angles_dir: str | Path, ids: Iterable[str]) -> np.ndarray:
    """:func:`fit_mean_torsions` over the records ``ids`` of ``angles_dir``."""
    return fit_mean_torsions(load_angles_record(angles_dir, rid) for rid in ids)


def table_degrees(table: np.ndarray) -> dict[str, dict[str, float]]:
    """``{"A": {"alpha": deg, ...}, ...}`` rounded to 3 decimals (for metrics.json)."""
    deg = np.degrees(np.asarray(table))
    return {b: {t: round(float(deg[i, j]), 3) for j, t in enumerate(TORSIONS)}
            for i, b in enumerate(BASES)}


__all__ = [
    "AFORM_DEG",
    "aform_structure",
    "fit_from_split",
    "fit_mean_torsions",
    "load_angles_record",
    "mean_torsion_angles",
    "table_degrees",
]
