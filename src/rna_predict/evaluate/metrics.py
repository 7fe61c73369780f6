"""Angle and structure metrics (SCIENCE.md sections 2 and 5), numpy only.

Angles are passed in radians (the storage convention of ``data/angles``); every angle
metric returns degrees, the unit the literature reports. Coordinates are Angstrom.

- :func:`circular_difference`: min(|a - b| mod P, P - |a - b| mod P).
- :func:`angle_mae`: per-angle mean circular difference over defined positions.
- :func:`mcq`: Mean of Circular Quantities (Zok et al. 2014): per residue and angle
  type D = 0 if both undefined, 180 if exactly one undefined, else the circular
  difference; MCQ = atan2(sum sin D, sum cos D).
- :func:`kabsch` / :func:`rmsd`: optimal superposition with the det sign fix (no
  reflections).
- :func:`tm_score`: TM-score with the US-align RNA d0, maximised over superpositions
  with the TM-score program's heuristic (seed fragments of several lengths, iterative
  refinement on residues within ``d0_search``), batched over seeds.
- :func:`lddt`: superposition-free lDDT over pairs within 30 A in the truth,
  thresholds 0.5/1/2/4 A, no self pairs.
"""

from __future__ import annotations

import numpy as np

from rna_predict.data.atom_layout import BB

C1_SLOT = BB["C1'"]
LDDT_THRESHOLDS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)


# --------------------------------------------------------------------------- angles
def circular_difference(a: np.ndarray, b: np.ndarray, period: float = 2 * np.pi) -> np.ndarray:
    """Shortest distance on the circle between ``a`` and ``b`` (same unit as ``period``)."""
    d = np.mod(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)), period)
    return np.minimum(d, period - d)


def angle_mae(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-angle MAE in degrees over positions defined in both (``pred``/``true`` radians, [L, K]).

    ``mask`` marks the defined true angles; NaNs in either input are also excluded.
    An angle type with no defined position gets NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(true)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    diff = np.where(ok, circular_difference(np.nan_to_num(pred), np.nan_to_num(true)), 0.0)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = diff.sum(axis=0) / count
    return np.degrees(np.where(count > 0, mae, np.nan))


def mcq(
    pred: np.ndarray,
    true: np.ndarray,
    pred_mask: np.ndarray | None = None,
    true_mask: np.ndarray | None = None,
) -> float:
    """Mean of Circular Quantities in degrees (Zok et al.), inputs in radians [L, K].

    A value is undefined where its mask is False or it is NaN. Per entry: D = 0 when
    both are undefined, pi when exactly one is, else the circular difference.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    pdef = np.isfinite(pred) if pred_mask is None else np.asarray(pred_mask, bool) & np.isfinite(pred)
    tdef = np.isfinite(true) if true_mask is None else np.asarray(true_mask, bool) & np.isfinite(true)
    d = circular_difference(np.nan_to_num(pred), np.nan_to_num(true))
    d = np.where(pdef & tdef, d, np.where(pdef ^ tdef, np.pi, 0.0))
    if d.size == 0:
        return float("nan")
    return float(np.degrees(np.arctan2(np.sin(d).sum(), np.cos(d).sum())))


# ----------------------------------------------------------------- superposition
def _batched_kabsch(
    x: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rotations/translations moving ``x`` [N, 3] onto ``y`` [N, 3] for each weight row.

    ``w`` is [S, N] (non-negative). Returns R [S, 3, 3] and t [S, 3] such that
    ``x @ R[s].T + t[s]`` is the weighted least-squares fit of ``y``; reflections are
    excluded by the determinant sign fix.
    """
    wsum = np.maximum(w.sum(axis=1, keepdims=True), 1e-12)  # [S, 1]
    cx = (w @ x) / wsum  # [S, 3]
    cy = (w @ y) / wsum
    xc = x[None] - cx[:, None]  # [S, N, 3]
    yc = y[None] - cy[:, None]
    h = np.einsum("sn,sni,snj->sij", w, xc, yc)
    u, _, vt = np.linalg.svd(h)
    v = np.swapaxes(vt, 1, 2)
    ut = np.swapaxes(u, 1, 2)
    sign = np.sign(np.linalg.det(v @ ut))
    sign = np.where(sign == 0, 1.0, sign)
    d = np.ones((len(w), 3))
    d[:, 2] = sign
    rot = v @ (d[:, :, None] * ut)
    t = cy - np.einsum("sij,sj->si", rot, cx)
    return rot, t


def kabsch(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal proper rotation ``R`` [3, 3] and translation ``t`` [3] with x @ R.T + t ~ y."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    rot, t = _batched_kabsch(x, y, w[None])
    return rot[0], t[0]


def _valid_pairs(
    pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to [N, 3] and keep the points present (mask) and finite in both."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    ok = np.isfinite(pred).all(axis=1) & np.isfinite(true).all(axis=1)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool).reshape(-1)
    return pred[ok], true[ok]


def rmsd(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RMSD (A) after optimal superposition of ``pred`` onto ``true`` ([..., 3] arrays)."""
    x, y = _valid_pairs(pred, true, mask)
    if len(x) == 0:
        return float("nan")
    rot, t = kabsch(x, y)
    return float(np.sqrt(np.mean(np.sum((x @ rot.T + t - y) ** 2, axis=1))))


# ---------------------------------------------------------------------- TM-score
def tm_d0_rna(length: int) -> float:
    """US-align's d0 for RNA, by the reference length (L=76 gives 2.71 A)."""
    if length <= 11:
        return 0.3
    if length <= 15:
        return 0.4
    if length <= 19:
        return 0.5
    if length <= 23:
        return 0.6
    if length < 30:
        return 0.7
    return 0.6 * np.sqrt(length - 0.5) - 2.5


def _seed_masks(n: int, max_levels: int = 6, min_len: int = 4, max_seeds_per_level: int = 200) -> np.ndarray:
    """[S, n] bool seed fragments: lengths n, n/2, n/4, ... (>= min_len) at sliding starts."""
    lengths: list[int] = []
    for level in range(max_levels):
        length = n >> level
        if length <= min(min_len, n):
            lengths.append(min(min_len, n))
            break
        lengths.append(length)
    rows = []
    for length in dict.fromkeys(lengths):
        n_start = n - length + 1
        step = max(1, -(-n_start // max_seeds_per_level))
        for start in range(0, n_start, step):
            row = np.zeros(n, dtype=bool)
            row[start:start + length] = True
            rows.append(row)
    return np.array(rows)


def tm_score(
    pred: np.ndarray,
    true: np.ndarray,
    mask: np.ndarray | None = None,
    d0: float | None = None,
    n_iter: int = 20,
    chunk: int = 256,
) -> float:
    """TM-score of ``pred`` against ``true`` ([L, 3], residue i matched to residue i).

    Normalised by the number of reference residues present (``mask`` & finite), with
    the RNA d0 of that length unless ``d0`` is given. The superposition is searched as
    in the TM-score program: Kabsch on seed fragments (full, 1/2, 1/4, ... down to 4
    residues, sliding starts), then up to ``n_iter`` refinements on the residues
    closer than d0_search = clip(d0, 4.5, 8) (cutoff raised in 0.5 A steps until at
    least 3 are selected); the best score over all seeds and iterations is returned.
    """
    x, y = _valid_pairs(pred, true, mask)
    n = len(x)
    if n == 0:
        return float("nan")
    d0 = tm_d0_rna(n) if d0 is None else float(d0)
    d0_search = float(np.clip(d0, 4.5, 8.0))
    if n < 3:
        rot, t = kabsch(x, y)
        dist = np.linalg.norm(x @ rot.T + t - y, axis=1)
        return float(np.sum(1.0 / (1.0 + (dist / d0) ** 2)) / n)
    seeds = _seed_masks(n)
    best = 0.0
    for lo in range(0, len(seeds), chunk):
        sel = seeds[lo:lo + chunk]
        active = np.ones(len(sel), dtype=bool)
        for _ in range(n_iter):
            rot, t = _batched_kabsch(x, y, sel[active].astype(np.float64))
            moved = np.einsum("nj,sij->sni", x, rot) + t[:, None]
            dist = np.linalg.norm(moved - y[None], axis=2)  # [S_active, n]
            score = (1.0 / (1.0 + (dist / d0) ** 2)).sum(axis=1) / n
            best = max(best, float(score.max()))
            third = np.sort(dist, axis=1)[:, 2]
            steps = np.maximum(0.0, np.floor((third - d0_search) / 0.5) + 1.0)
            cutoff = d0_search + 0.5 * steps
            new_sel = dist < cutoff[:, None]
            changed = (new_sel != sel[active]).any(axis=1)
            idx = np.flatnonzero(active)
            sel[idx] = new_sel
            active[idx[~changed]] = False
            if not active.any():
                break
    return best


# -------------------------------------------------------------------------- lDDT
def lddt(
    pred: np.ndarray,
    true: np.ndarray,
    mask: np.ndarray | None = None,
    cutoff: float = 30.0,
    thresholds: tuple[float, ...] = LDDT_THRESHOLDS,
    chunk: int = 1024,
) -> float:
    """Global lDDT: over ordered pairs (i != j) with true distance < ``cutoff``, the mean of
    (1/4) sum_t [|d_pred - d_true| < t]. Inputs [..., 3] flattened to points; computed in
    row chunks so all-atom lDDT of large RNAs stays in memory. NaN without any pair.
    """
    x, y = _valid_pairs(pred, true, mask)
    n = len(x)
    total, count = 0.0, 0
    thr = np.asarray(thresholds, dtype=np.float64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        dt = np.linalg.norm(y[lo:hi, None] - y[None], axis=2)
        dp = np.linalg.norm(x[lo:hi, None] - x[None], axis=2)
        pair = dt < cutoff
        pair[np.arange(hi - lo), np.arange(lo, hi)] = False
        err = np.abs(dp - dt)[pair]
        total += float((err[:, None] < thr[None]).mean(axis=1).sum())
        count += int(pair.sum())
    return total / count if count else float("nan")


# ----------------------------------------------------------------- per structure
def structure_metrics(
    pred: np.ndarray, true: np.ndarray, atom_mask: np.ndarray
) -> dict[str, float]:
    """C1' RMSD, all-atom RMSD, C1' TM-score (RNA d0), C1' and all-atom lDDT.

    ``pred``/``true`` are [L, 23, 3] in the canonical layout; ``atom_mask`` [L, 23]
    marks the atoms present in the truth (predicted atoms are always present).
    """
    atom_mask = np.asarray(atom_mask, dtype=bool)
    c1_mask = atom_mask[:, C1_SLOT]
    pc1, tc1 = pred[:, C1_SLOT], true[:, C1_SLOT]
    return {
        "rmsd_c1": rmsd(pc1, tc1, c1_mask),
        "rmsd_all": rmsd(pred, true, atom_mask),
        "tm_c1": tm_score(pc1, tc1, c1_mask),
        "lddt_c1": lddt(pc1, tc1, c1_mask),
        "lddt_all": lddt(pred, true, atom_mask),
    }


__all__ = [
    "C1_SLOT",
    "LDDT_THRESHOLDS",
    "angle_mae",
    "circular_difference",
    "kabsch",
    "lddt",
    "mcq",
    "rmsd",
    "structure_metrics",
    "tm_d0_rna",
    "tm_score",
]
