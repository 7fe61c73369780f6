"""Angle and structure metrics (SCIENCE.md sections 2 and 5), numpy (+ the torch Kabsch).

Angles are passed in radians (the storage convention of ``data/angles``); every angle
metric returns degrees, the unit the literature reports. Coordinates are Angstrom.

- :func:`circular_difference`: min(|a - b| mod P, P - |a - b| mod P).
- :func:`angle_mae`: per-angle mean circular difference over defined positions.
- :func:`mcq`: Mean of Circular Quantities (Zok et al. 2014): per residue and angle
  type D = 0 if both undefined, 180 if exactly one undefined, else the circular
  difference; MCQ = atan2(sum sin D, sum cos D).
- :func:`kabsch` / :func:`rmsd`: optimal superposition with the det sign fix (no
  reflections), by the package's one Kabsch,
  :func:`rna_predict.model.alignment.weighted_kabsch`.
- :func:`tm_score`: TM-score with the US-align RNA d0, maximised over superpositions
  with the search of the TM-score/US-align programs (TMscore8_search: seed fragments
  L, L/2, ..., 4 at every start, iterative extension on the residues within
  d0_search -/+ 1), batched over seeds; agrees with ``USalign -TMscore 1 -mol RNA``
  (checked against ``shared/fixtures/usalign`` by the tests).
- :func:`lddt`: superposition-free lDDT over pairs of atoms in different residues
  within 30 A in the truth, thresholds 0.5/1/2/4 A, per-atom scores averaged.
"""

from __future__ import annotations

import numpy as np
import torch

from rna_predict.data.atom_layout import BB
from rna_predict.model.alignment import weighted_kabsch
from rna_predict.model.angles import circular_difference

C1_SLOT = BB["C1'"]
LDDT_THRESHOLDS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
#: what :func:`lddt` computes, written into evaluate's metrics.json
LDDT_DEFINITION = ("pairs of atoms in different residues within 30 A in the reference (AF3's "
                   "radius for nucleotides; Mariani et al. 2013 used 15 A), thresholds 0.5/1/2/4 A, "
                   "per-atom scores averaged over atoms with a pair")


# --------------------------------------------------------------------------- angles
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


def mcq_terms(
    pred: np.ndarray,
    true: np.ndarray,
    pred_mask: np.ndarray | None = None,
    true_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Per-entry D (radians, [L, K]) of MCQ (Zok et al.): 0 when both are undefined, pi
    when exactly one is, else the circular difference. A value is undefined where its
    mask is False or it is NaN."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    pdef = np.isfinite(pred) if pred_mask is None else np.asarray(pred_mask, bool) & np.isfinite(pred)
    tdef = np.isfinite(true) if true_mask is None else np.asarray(true_mask, bool) & np.isfinite(true)
    d = circular_difference(np.nan_to_num(pred), np.nan_to_num(true))
    return np.where(pdef & tdef, d, np.where(pdef ^ tdef, np.pi, 0.0))


def mcq(
    pred: np.ndarray,
    true: np.ndarray,
    pred_mask: np.ndarray | None = None,
    true_mask: np.ndarray | None = None,
) -> float:
    """Mean of Circular Quantities in degrees (Zok et al.), inputs in radians [L, K]:
    atan2(sum sin D, sum cos D) over the :func:`mcq_terms` D."""
    d = mcq_terms(pred, true, pred_mask, true_mask)
    if d.size == 0:
        return float("nan")
    return float(np.degrees(np.arctan2(np.sin(d).sum(), np.cos(d).sum())))


# ----------------------------------------------------------------- superposition
# Element budget of one batch of [S, N, 3] work arrays (about 16 MB of float64 each).
_BATCH_ELEMENTS = 1 << 21


def _kabsch_np(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`weighted_kabsch` on numpy input: ``x``, ``y`` [N, 3], ``w`` [S, N] ->
    R [S, 3, 3], t [S, 3] (float64) with ``x @ R[s].T + t[s]`` the fit of ``y``."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None]
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64))[None]
    wt = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))
    rot, t = weighted_kabsch(xt, yt, wt)
    return rot.numpy(), t.numpy()


def kabsch(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal proper rotation ``R`` [3, 3] and translation ``t`` [3] with x @ R.T + t ~ y.

    Thin numpy wrapper of :func:`rna_predict.model.alignment.weighted_kabsch`, the one
    Kabsch implementation of the package (det sign fix, float64).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
    y = np.asarray(y, dtype=np.float64).reshape(-1, 3)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    rot, t = _kabsch_np(x, y, w[None])
    return rot[0], t[0]


def _valid_pairs(
    pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to [N, 3] and keep the points present (mask) and finite in both."""
    ok = _valid_points(pred, true, mask)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    return pred[ok], true[ok]


def _valid_points(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """[N] bool over the flattened points: present (mask) and finite in both."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    ok = np.isfinite(pred).all(axis=1) & np.isfinite(true).all(axis=1)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool).reshape(-1)
    return ok


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


def _fragment_seeds(n: int, step: int = 1) -> np.ndarray:
    """[S, n] bool seed fragments of the TM-score search (TMscore8_search).

    Fragment lengths n, n/2, n/4, n/8, n/16 (integer division), stopping at the first
    that is <= 4 (replaced by 4, or n when n < 4), with 4 appended when the list runs
    out first; every length slides over start positions 0, step, 2 step, ... and the
    last start n - length.
    """
    min_len = min(4, n)
    lengths: list[int] = []
    for level in range(5):
        length = n >> level
        if length <= min_len:
            lengths.append(min_len)
            break
        lengths.append(length)
    else:
        lengths.append(min_len)
    idx = np.arange(n)
    rows = []
    for length in lengths:
        last = n - length
        starts = np.unique(np.append(np.arange(0, last, max(1, step)), last))
        rows.append((idx >= starts[:, None]) & (idx < starts[:, None] + length))
    return np.concatenate(rows)


def _select_close(d2: np.ndarray, cut: float, relax: bool) -> np.ndarray:
    """Residues with distance < ``cut`` (``d2`` squared distances [S, n]); where fewer
    than 3 are selected (and ``relax``), the cutoff grows in 0.5 A steps until 3 are."""
    sel = d2 < cut * cut
    if relax:
        short = np.flatnonzero(sel.sum(axis=1) < 3)
        if len(short):
            third = np.sqrt(np.partition(d2[short], 2, axis=1)[:, 2])
            steps = np.floor((third - cut) / 0.5) + 1.0
            new_cut = cut + 0.5 * steps
            rows = d2[short] < (new_cut * new_cut)[:, None]
            again = rows.sum(axis=1) < 3  # float rounding at a step boundary
            if again.any():
                new_cut[again] += 0.5
                rows[again] = d2[short][again] < (new_cut[again] ** 2)[:, None]
            sel[short] = rows
    return sel


def _unique_rows(sel: np.ndarray) -> np.ndarray:
    """Distinct rows of a bool matrix, in order of first occurrence."""
    _, first = np.unique(np.packbits(sel, axis=1), axis=0, return_index=True)
    return sel[np.sort(first)]


def _tm_search(
    x: np.ndarray,
    y: np.ndarray,
    d0: float,
    d0_search: float,
    lnorm: float,
    n_iter: int = 20,
    step: int = 1,
    chunk: int | None = None,
) -> float:
    """Best (1/lnorm) sum_i 1/(1 + (d_i/d0)^2) over the superpositions of the search.

    Every seed fragment (:func:`_fragment_seeds`) gives a superposition; the residues
    closer than d0_search - 1 under it form the first set; then up to ``n_iter`` times:
    superpose on the set, score, and take the residues closer than d0_search + 1 as the
    next set, stopping when the set no longer changes (TMscore8_search of the TM-score
    and US-align programs). The state of a seed is its set, so seeds reaching the same
    set at the same iteration are merged (exact), and all seeds advance in batches.
    """
    n = len(x)
    relax = n > 3
    rows = chunk if chunk is not None else max(1, _BATCH_ELEMENTS // (3 * n))
    inv_d02 = 1.0 / (d0 * d0)
    best = -np.inf
    sel = _fragment_seeds(n, step)
    for it in range(n_iter + 1):
        sel = _unique_rows(sel)
        sel = sel[sel.any(axis=1)]
        if not len(sel):
            break
        nxt = []
        for lo in range(0, len(sel), rows):
            cur = sel[lo:lo + rows]
            rot, t = _kabsch_np(x, y, cur.astype(np.float64))
            moved = np.matmul(x[None], np.swapaxes(rot, 1, 2)) + t[:, None]
            d2 = np.sum((moved - y[None]) ** 2, axis=2)  # [S, n]
            score = np.sum(1.0 / (1.0 + d2 * inv_d02), axis=1) / lnorm
            best = max(best, float(score.max()))
            if it == n_iter:
                continue
            new = _select_close(d2, d0_search - 1.0 if it == 0 else d0_search + 1.0, relax)
            if it > 0:
                new = new[(new != cur).any(axis=1)]  # converged seeds stop
            nxt.append(new)
        if not nxt:
            break
        sel = np.concatenate(nxt)
    return best


def tm_score(
    pred: np.ndarray,
    true: np.ndarray,
    mask: np.ndarray | None = None,
    d0: float | None = None,
    n_iter: int = 20,
    chunk: int | None = None,
    step: int = 1,
) -> float:
    """TM-score of ``pred`` against ``true`` ([L, 3], residue i matched to residue i).

    What US-align prints with ``-TMscore 1 -mol RNA`` (sequence-dependent mode), its
    TM-score normalised by the reference: L_ref = the reference residues present
    (``mask`` & finite), d0 = :func:`tm_d0_rna` (L_ref) unless ``d0`` is given, and
    d0_search = clip(d0, 4.5, 8). Residues missing from ``pred`` count 0. The
    superposition maximising the score is searched as in TMscore8_search: seed
    fragments of lengths L, L/2, L/4, L/8, L/16 and 4 at every start (``step`` > 1
    thins the starts, the last start is always kept), residues within d0_search - 1
    after the seed superposition, then up to ``n_iter`` rounds of superposition on the
    set and reselection within d0_search + 1 (cutoffs raised by 0.5 A until 3 residues
    are selected) until the set is stable; every superposition is scored. Seeds run as
    batches of ``chunk`` (default by a memory budget); the superposition is
    :func:`rna_predict.model.alignment.weighted_kabsch`.
    """
    true_ok = np.isfinite(np.asarray(true, dtype=np.float64).reshape(-1, 3)).all(axis=1)
    if mask is not None:
        true_ok &= np.asarray(mask, dtype=bool).reshape(-1)
    lnorm = int(true_ok.sum())
    x, y = _valid_pairs(pred, true, mask)
    if len(x) == 0 or lnorm == 0:
        return float("nan")
    d0 = tm_d0_rna(lnorm) if d0 is None else float(d0)
    d0_search = float(np.clip(d0, 4.5, 8.0))
    return _tm_search(x, y, d0, d0_search, float(lnorm), n_iter=n_iter, step=step, chunk=chunk)


# -------------------------------------------------------------------------- lDDT
def _block_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] Euclidean distances from coordinate differences (exact, no
    |a|^2 + |b|^2 - 2ab cancellation), one axis at a time to keep temporaries 2-D."""
    d2 = np.subtract.outer(a[:, 0], b[:, 0])
    d2 *= d2
    for k in (1, 2):
        diff = np.subtract.outer(a[:, k], b[:, k])
        diff *= diff
        d2 += diff
    return np.sqrt(d2, out=d2)


def lddt(
    pred: np.ndarray,
    true: np.ndarray,
    mask: np.ndarray | None = None,
    cutoff: float = 30.0,
    thresholds: tuple[float, ...] = LDDT_THRESHOLDS,
    chunk: int = 1024,
    residue_index: np.ndarray | None = None,
) -> float:
    """Global lDDT (superposition-free), per-atom scores averaged over atoms.

    Points are ``pred``/``true`` [..., 3] flattened; ``mask`` (same leading shape)
    marks the present ones (non-finite points are dropped too). ``residue_index``
    (same leading shape, e.g. the row index of an [L, 23, 3] array) names the residue
    of every point; without it each point is its own residue.

    The pairs scored are the ordered pairs (i, j) of points in DIFFERENT residues whose
    distance in ``true`` is < ``cutoff`` (R0 = 30 A for nucleotides, the convention AF3
    reports; the original lDDT of Mariani et al. 2013 uses 15 A). A pair scores
    (1/4) sum over t in ``thresholds`` (0.5, 1, 2, 4 A) of [|d_pred - d_true| < t]. The
    score of atom i is the mean over its pairs; the lDDT is the mean of the per-atom
    scores over the atoms having at least one pair (atoms with none are excluded); NaN
    when no atom has a pair. (Pooling all pairs instead weights atoms by their number
    of neighbours.) Computed in row blocks of at most ``chunk`` rows and a bounded
    number of pair elements, so all-atom lDDT of large RNAs stays in memory.
    """
    ok = _valid_points(pred, true, mask)
    x = np.asarray(pred, dtype=np.float64).reshape(-1, 3)[ok]
    y = np.asarray(true, dtype=np.float64).reshape(-1, 3)[ok]
    if residue_index is None:
        res = np.arange(len(ok))[ok]
    else:
        res = np.asarray(residue_index).reshape(-1)[ok]
    n = len(x)
    thr = np.asarray(thresholds, dtype=np.float64)
    num = np.zeros(n)  # per atom: sum over its pairs of the pair score
    cnt = np.zeros(n, dtype=np.int64)  # per atom: number of pairs
    rows = max(1, min(int(chunk), _BATCH_ELEMENTS // max(n, 1)))
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        dt = _block_distances(y[lo:hi], y)
        err = _block_distances(x[lo:hi], x)
        err -= dt
        np.abs(err, out=err)
        pair = dt < cutoff
        pair &= res[lo:hi, None] != res[None]
        err[~pair] = np.inf  # pairs not scored preserve nothing
        num[lo:hi] = sum(np.count_nonzero(err < t, axis=1) for t in thr) / len(thr)
        cnt[lo:hi] = np.count_nonzero(pair, axis=1)
    has = cnt > 0
    if not has.any():
        return float("nan")
    return float(np.mean(num[has] / cnt[has]))


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
    residue_index = np.broadcast_to(np.arange(atom_mask.shape[0])[:, None], atom_mask.shape)
    return {
        "rmsd_c1": rmsd(pc1, tc1, c1_mask),
        "rmsd_all": rmsd(pred, true, atom_mask),
        "tm_c1": tm_score(pc1, tc1, c1_mask),
        "lddt_c1": lddt(pc1, tc1, c1_mask),
        "lddt_all": lddt(pred, true, atom_mask, residue_index=residue_index),
    }


__all__ = [
    "C1_SLOT",
    "LDDT_DEFINITION",
    "LDDT_THRESHOLDS",
    "angle_mae",
    "circular_difference",
    "kabsch",
    "lddt",
    "mcq",
    "mcq_terms",
    "rmsd",
    "structure_metrics",
    "tm_d0_rna",
    "tm_score",
]
