"""Numbers for the angle and structure metrics (SCIENCE.md sections 2 and 5)."""

from __future__ import annotations

import numpy as np
import pytest

from rna_predict.evaluate import metrics as m


def _rotation(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _helix(n: int, rise: float = 2.8, radius: float = 9.0, twist: float = 32.7) -> np.ndarray:
    """A-form-like C1' helix: n points, about 5.5 A apart."""
    t = np.radians(twist) * np.arange(n)
    return np.stack([radius * np.cos(t), radius * np.sin(t), rise * np.arange(n)], axis=1)


# ------------------------------------------------------------------------ angles
def test_circular_difference_wraps():
    assert m.circular_difference(170.0, -170.0, period=360.0) == pytest.approx(20.0)
    assert m.circular_difference(0.0, 180.0, period=360.0) == pytest.approx(180.0)
    assert m.circular_difference(np.radians(350), np.radians(10)) == pytest.approx(np.radians(20))
    assert m.circular_difference(-np.pi, np.pi) == pytest.approx(0.0, abs=1e-12)


def test_angle_mae_per_angle_over_defined_positions():
    true = np.radians([[10.0, 170.0], [20.0, np.nan], [30.0, -170.0]])
    pred = np.radians([[20.0, -170.0], [20.0, 50.0], [0.0, -160.0]])
    mask = np.isfinite(true)
    mae = m.angle_mae(pred, true, mask)
    assert mae[0] == pytest.approx((10 + 0 + 30) / 3)
    assert mae[1] == pytest.approx((20 + 10) / 2)
    assert np.isnan(m.angle_mae(pred[:, :1], np.full((3, 1), np.nan)))[0]


def test_mcq_undefined_rules():
    true = np.radians([[10.0, np.nan], [np.nan, np.nan]])
    pred = np.radians([[30.0, 40.0], [np.nan, np.nan]])
    # D: 20 (both defined), 180 (pred only), 0 (both undefined), 0 (both undefined)
    d = np.radians([20.0, 180.0, 0.0, 0.0])
    expected = np.degrees(np.arctan2(np.sin(d).sum(), np.cos(d).sum()))
    assert m.mcq(pred, true) == pytest.approx(expected)
    # identical torsions and identical undefined pattern -> 0
    assert m.mcq(true, true) == pytest.approx(0.0)
    # masks take precedence over values
    assert m.mcq(pred, pred, pred_mask=[[True, False], [False, False]],
                 true_mask=[[True, True], [False, False]]) == pytest.approx(
        np.degrees(np.arctan2(0.0, 3.0 + np.cos(np.pi))))


def test_mcq_constant_offset_is_offset():
    rng = np.random.default_rng(0)
    true = rng.uniform(-np.pi, np.pi, size=(30, 7))
    assert m.mcq(true + np.radians(15.0), true) == pytest.approx(15.0)


# --------------------------------------------------------------------- structure
def test_rmsd_rotated_copy_is_zero_and_reflection_is_not():
    x = np.random.default_rng(1).normal(size=(40, 3)) * 10
    y = x @ _rotation(2).T + np.array([5.0, -3.0, 12.0])
    assert m.rmsd(x, y) == pytest.approx(0.0, abs=1e-8)
    mirror = x * np.array([1.0, 1.0, -1.0])
    assert m.rmsd(mirror, x) > 1.0  # the det sign fix forbids reflections


def test_rmsd_known_value_and_mask():
    x = np.zeros((4, 3))
    y = np.zeros((4, 3))
    y[:, 0] = [1.0, -1.0, 1.0, -1.0]  # centroid stays; best rotation cannot fix 1-D sign flips
    x[:, 0] = [1.0, -1.0, 1.0, -1.0]
    assert m.rmsd(x, y) == pytest.approx(0.0, abs=1e-12)
    y2 = y.copy()
    y2[3] = [100.0, 100.0, 100.0]
    assert m.rmsd(x, y2, mask=[True, True, True, False]) == pytest.approx(0.0, abs=1e-8)


def test_tm_d0_rna():
    assert m.tm_d0_rna(76) == pytest.approx(2.71, abs=0.005)
    assert [m.tm_d0_rna(n) for n in (5, 11, 12, 15, 16, 19, 20, 23, 24, 29)] == [
        0.3, 0.3, 0.4, 0.4, 0.5, 0.5, 0.6, 0.6, 0.7, 0.7]
    assert m.tm_d0_rna(30) == pytest.approx(0.6 * np.sqrt(29.5) - 2.5)


def test_tm_score_identical_rotated_and_perturbed():
    x = _helix(76)
    assert m.tm_score(x, x) == pytest.approx(1.0)
    y = x @ _rotation(3).T + 40.0
    assert m.tm_score(y, x) == pytest.approx(1.0)
    noisy = x + np.random.default_rng(4).normal(scale=2.0, size=x.shape)
    tm = m.tm_score(noisy, x)
    assert 0.2 < tm < 0.95
    noisier = x + np.random.default_rng(4).normal(scale=6.0, size=x.shape)
    assert m.tm_score(noisier, x) < tm


def test_tm_score_search_beats_global_superposition():
    """Half of the molecule moved as a rigid body: the search finds the half that fits."""
    x = _helix(60)
    y = x.copy()
    y[30:] = y[30:] @ _rotation(5).T + 30.0
    d0 = m.tm_d0_rna(60)
    rot, t = m.kabsch(y, x)
    d = np.linalg.norm(y @ rot.T + t - x, axis=1)
    global_fit = np.mean(1.0 / (1.0 + (d / d0) ** 2))
    tm = m.tm_score(y, x)
    assert tm >= 0.49  # at least the 30 rigid residues, normalised by 60
    assert tm > global_fit + 0.1


def test_tm_score_normalised_by_reference_present():
    x = _helix(40)
    mask = np.ones(40, dtype=bool)
    mask[:10] = False
    assert m.tm_score(x, x, mask) == pytest.approx(1.0)


def test_lddt_identical_and_perturbed():
    x = _helix(50)
    assert m.lddt(x, x) == pytest.approx(1.0)
    assert m.lddt(x @ _rotation(6).T - 7.0, x) == pytest.approx(1.0)
    noisy = x + np.random.default_rng(7).normal(scale=1.0, size=x.shape)
    val = m.lddt(noisy, x)
    assert 0.2 < val < 0.95
    # a single pair: 2 points 10 A apart predicted 11.5 A apart -> thresholds 2 and 4 hold
    a = np.array([[0.0, 0, 0], [10.0, 0, 0]])
    b = np.array([[0.0, 0, 0], [11.5, 0, 0]])
    assert m.lddt(b, a) == pytest.approx(0.5)
    # pairs beyond 30 A in the truth are ignored
    far = np.array([[0.0, 0, 0], [10.0, 0, 0], [100.0, 0, 0]])
    far_pred = far.copy()
    far_pred[2] = [60.0, 0, 0]
    assert m.lddt(far_pred, far) == pytest.approx(1.0)


def test_lddt_chunking_matches_dense():
    x = np.random.default_rng(8).normal(scale=8.0, size=(70, 3))
    y = x + np.random.default_rng(9).normal(scale=1.5, size=x.shape)
    assert m.lddt(y, x, chunk=7) == pytest.approx(m.lddt(y, x, chunk=1000))


def test_structure_metrics_on_layout():
    rng = np.random.default_rng(10)
    true = rng.normal(scale=10.0, size=(30, 23, 3))
    mask = np.ones((30, 23), dtype=bool)
    mask[:, 20:] = False
    true[~mask] = np.nan
    pred = np.nan_to_num(true) @ _rotation(11).T
    out = m.structure_metrics(pred, true, mask)
    assert out["rmsd_c1"] == pytest.approx(0.0, abs=1e-6)
    assert out["rmsd_all"] == pytest.approx(0.0, abs=1e-6)
    assert out["tm_c1"] == pytest.approx(1.0)
    assert out["lddt_c1"] == pytest.approx(1.0)
    assert out["lddt_all"] == pytest.approx(1.0)
