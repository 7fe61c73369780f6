"""Paired bootstrap intervals for model-versus-baseline differences (Efron & Tibshirani 1993).

Every comparison resamples the SAME units for the model and the baseline (paired), with
replacement, ``n_boot`` times from a generator seeded by ``seed``, recomputes the
statistic of both on the resample and reports the percentile 95% interval of the
difference (model minus baseline) and whether it excludes zero.

- :func:`paired_mean_interval`: per-unit values (one per target), statistic = mean.
- :func:`pooled_mae_interval`: torsion errors, statistic = mean over the 7 angle types of
  the MAE pooled over defined positions; units are residues or targets (a cluster
  bootstrap: a resampled target brings all of its residues).
- :func:`pooled_mcq_interval`: MCQ (atan2 of summed sin/cos of the per-entry D values),
  same units.

With few units the interval is wide and coarse: with 2 test targets a bootstrap over
targets has only three distinct resamples (A A, A B, B B), so its interval is the range
of the two per-target differences, and it "excludes zero" whenever both targets agree
in sign. Every interval therefore carries ``informative``: False below
:data:`MIN_INFORMATIVE_UNITS` units (percentile intervals from so few units have poor
coverage), and reports never present such an interval as evidence.

Resampling counts are drawn in blocks of :data:`BLOCK` resamples (multinomial, the same
stream for any block size), so memory is O(BLOCK x units), not O(n_boot x units).
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95


#: below this many resampled units an interval is reported but flagged not informative
MIN_INFORMATIVE_UNITS = 10
#: resamples drawn at once
BLOCK = 500


def _boot(n_units: int, n_boot: int, seed: int, stat) -> np.ndarray:
    """``stat(counts)`` over ``n_boot`` multinomial resamples of ``n_units`` equal-weight
    units; ``counts`` is a [block, n_units] array of resampling counts (rows sum to
    n_units). Returns the concatenated [n_boot] statistics."""
    rng = np.random.default_rng(seed)
    p = np.full(n_units, 1.0 / n_units)
    out = []
    for lo in range(0, n_boot, BLOCK):
        counts = rng.multinomial(n_units, p, size=min(BLOCK, n_boot - lo)).astype(np.float64)
        out.append(np.asarray(stat(counts), dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def _summary(point: float, boot: np.ndarray, n_units: int, unit: str) -> dict:
    boot = boot[np.isfinite(boot)]
    alpha = (1.0 - CONFIDENCE) / 2
    if boot.size == 0 or not np.isfinite(point):
        lo = hi = float("nan")
    else:
        lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    return {
        "difference": float(point),
        "ci95": [lo, hi],
        "excludes_zero": bool(np.isfinite(lo) and (lo > 0 or hi < 0)),
        "informative": bool(n_units >= MIN_INFORMATIVE_UNITS),
        "unit": unit,
        "n_units": int(n_units),
    }


def paired_mean_interval(model: np.ndarray, baseline: np.ndarray, n_boot: int, seed: int,
                         unit: str = "target") -> dict:
    """Mean of ``model - baseline`` over units (NaN pairs dropped) with its interval."""
    model = np.asarray(model, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    ok = np.isfinite(model) & np.isfinite(baseline)
    diff = model[ok] - baseline[ok]
    if diff.size == 0:
        return _summary(float("nan"), np.array([]), 0, unit)
    boot = _boot(diff.size, n_boot, seed, lambda c: c @ diff / diff.size)
    return _summary(float(diff.mean()), boot, diff.size, unit)


def _mean_mae(err_sums: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """Mean over angle types (with any defined position) of err_sums / defined; [..., K] -> [...]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = err_sums / defined
    return np.nanmean(np.where(defined > 0, mae, np.nan), axis=-1)


def pooled_mae_interval(err_model: np.ndarray, err_base: np.ndarray, defined: np.ndarray,
                        groups: np.ndarray, n_boot: int, seed: int, unit: str) -> dict:
    """Difference of the mean per-angle MAE (degrees) of two predictions of the same residues.

    ``err_*`` [R, K] absolute circular errors (degrees, any value where undefined),
    ``defined`` [R, K] bool (the same mask for both), ``groups`` [R] the unit each residue
    belongs to (``np.arange(R)`` for a residue bootstrap, the target index for a cluster
    bootstrap over targets).
    """
    d = np.asarray(defined, dtype=np.float64)
    em = np.where(d > 0, err_model, 0.0)
    eb = np.where(d > 0, err_base, 0.0)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n = int(g.max()) + 1 if g.size else 0
    if n == 0:
        return _summary(float("nan"), np.array([]), 0, unit)
    # per-unit sums [n, K], then bootstrap sums = counts @ per-unit sums
    sm, sb, sd = (np.zeros((n, d.shape[1])) for _ in range(3))
    np.add.at(sm, g, em)
    np.add.at(sb, g, eb)
    np.add.at(sd, g, d)
    point = float(_mean_mae(sm.sum(0), sd.sum(0)) - _mean_mae(sb.sum(0), sd.sum(0)))
    boot = _boot(n, n_boot, seed,
                 lambda c: _mean_mae(c @ sm, c @ sd) - _mean_mae(c @ sb, c @ sd))
    return _summary(point, boot, n, unit)


def pooled_mcq_interval(d_model: np.ndarray, d_base: np.ndarray, groups: np.ndarray,
                        n_boot: int, seed: int, unit: str) -> dict:
    """Difference of MCQ (degrees) from per-entry D values (radians, [R, K], SCIENCE.md 2)."""
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n = int(g.max()) + 1 if g.size else 0
    if n == 0:
        return _summary(float("nan"), np.array([]), 0, unit)

    def unit_sums(d: np.ndarray) -> np.ndarray:
        out = np.zeros((n, 2))
        np.add.at(out, g, np.stack([np.sin(d).sum(1), np.cos(d).sum(1)], axis=1))
        return out

    um, ub = unit_sums(np.asarray(d_model)), unit_sums(np.asarray(d_base))

    def mcq(s: np.ndarray) -> np.ndarray:
        return np.degrees(np.arctan2(s[..., 0], s[..., 1]))

    point = float(mcq(um.sum(0)) - mcq(ub.sum(0)))
    boot = _boot(n, n_boot, seed, lambda c: mcq(c @ um) - mcq(c @ ub))
    return _summary(point, boot, n, unit)


__all__ = [
    "BLOCK",
    "CONFIDENCE",
    "MIN_INFORMATIVE_UNITS",
    "paired_mean_interval",
    "pooled_mae_interval",
    "pooled_mcq_interval",
]
