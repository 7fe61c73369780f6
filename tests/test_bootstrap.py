"""Paired bootstrap intervals (evaluate/bootstrap.py) against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from rna_predict.evaluate import bootstrap as b
from rna_predict.evaluate import metrics as m


def test_identical_predictions_give_a_zero_interval():
    x = np.array([0.2, 0.5, 0.9])
    c = b.paired_mean_interval(x, x, 2000, 0)
    assert c["difference"] == 0.0 and c["ci95"] == [0.0, 0.0] and not c["excludes_zero"]
    assert c["n_units"] == 3 and c["unit"] == "target"


def test_constant_shift_excludes_zero_and_noise_does_not():
    base = np.linspace(0.1, 0.5, 20)
    c = b.paired_mean_interval(base + 0.1, base, 2000, 0)
    assert c["difference"] == pytest.approx(0.1)
    assert c["ci95"] == pytest.approx([0.1, 0.1]) and c["excludes_zero"]
    rng = np.random.default_rng(1)
    noisy = base + rng.normal(0.0, 0.2, size=base.size) - 0.0
    noisy -= (noisy - base).mean()  # mean difference exactly 0
    c = b.paired_mean_interval(noisy, base, 2000, 0)
    assert c["ci95"][0] < 0 < c["ci95"][1] and not c["excludes_zero"]


def test_two_targets_interval_is_the_range_of_their_differences():
    """With 2 units only three resamples exist: the interval spans the two differences."""
    c = b.paired_mean_interval(np.array([0.30, 0.10]), np.array([0.20, 0.15]), 4000, 0)
    assert c["difference"] == pytest.approx(0.025)
    assert c["ci95"] == pytest.approx([-0.05, 0.10])
    assert not c["excludes_zero"]


def _angles(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    true = rng.uniform(-np.pi, np.pi, size=(n, 7))
    mask = rng.random((n, 7)) > 0.1
    model = true + rng.normal(0, 0.2, size=true.shape)
    base = true + rng.normal(0, 0.4, size=true.shape)
    return true, mask, model, base


def test_pooled_mae_point_is_the_metric_difference():
    true, mask, model, base = _angles(0)
    err = {k: np.degrees(m.circular_difference(v, true)) for k, v in (("m", model), ("b", base))}
    groups = np.repeat([0, 1, 2], 20)
    expected = np.nanmean(m.angle_mae(model, true, mask)) - np.nanmean(m.angle_mae(base, true, mask))
    for g in (np.arange(len(true)), groups):
        c = b.pooled_mae_interval(err["m"], err["b"], mask, g, 2000, 0, "u")
        assert c["difference"] == pytest.approx(expected)
        assert c["ci95"][0] <= c["difference"] <= c["ci95"][1]
    res = b.pooled_mae_interval(err["m"], err["b"], mask, np.arange(len(true)), 2000, 0, "residue")
    assert res["excludes_zero"] and res["ci95"][1] < 0  # sd 0.2 rad against 0.4 rad


def test_pooled_mcq_point_is_the_metric_difference():
    true, mask, model, base = _angles(3)
    dm, db = m.mcq_terms(model, true, None, mask), m.mcq_terms(base, true, None, mask)
    c = b.pooled_mcq_interval(dm, db, np.arange(len(true)), 2000, 0, "residue")
    assert c["difference"] == pytest.approx(m.mcq(model, true, None, mask) - m.mcq(base, true, None, mask))
    assert c["ci95"][0] <= c["difference"] <= c["ci95"][1]


def test_seeded():
    true, mask, model, base = _angles(5)
    err_m, err_b = (np.degrees(m.circular_difference(v, true)) for v in (model, base))
    a = b.pooled_mae_interval(err_m, err_b, mask, np.arange(len(true)), 500, 7, "residue")
    assert a == b.pooled_mae_interval(err_m, err_b, mask, np.arange(len(true)), 500, 7, "residue")


def test_block_size_does_not_change_the_interval(monkeypatch):
    true, mask, model, base = _angles(6)
    err_m, err_b = (np.degrees(m.circular_difference(v, true)) for v in (model, base))
    ref = b.pooled_mae_interval(err_m, err_b, mask, np.arange(len(true)), 1200, 3, "residue")
    monkeypatch.setattr(b, "BLOCK", 7)
    assert b.pooled_mae_interval(err_m, err_b, mask, np.arange(len(true)), 1200, 3, "residue") == ref


def test_few_units_are_flagged_not_informative():
    few = b.paired_mean_interval(np.array([0.3, 0.2]), np.array([0.1, 0.1]), 1000, 0)
    assert few["excludes_zero"] and not few["informative"]  # both targets agree: meaningless
    many = b.paired_mean_interval(np.linspace(0, 1, 12) + 0.1, np.linspace(0, 1, 12), 1000, 0)
    assert many["informative"] and many["n_units"] == b.MIN_INFORMATIVE_UNITS + 2
