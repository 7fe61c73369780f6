"""Numbers for the angle and structure metrics (SCIENCE.md sections 2 and 5)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from rna_predict.evaluate import metrics as m
from rna_predict.model.alignment import weighted_kabsch

#: US-align reference scores (README.md there), the repository's sibling ``../shared``
USALIGN_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "usalign"


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


def test_kabsch_is_the_torch_weighted_kabsch(monkeypatch):
    """One Kabsch in the package: metrics.kabsch/rmsd/tm_score go through weighted_kabsch."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(20, 3)) * 5
    y = x @ _rotation(13).T + 2.0 + rng.normal(scale=0.3, size=x.shape)
    w = rng.uniform(size=20)
    rot, t = m.kabsch(x, y, w)
    rot_t, t_t = weighted_kabsch(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w))
    np.testing.assert_allclose(rot, rot_t.numpy(), atol=1e-12)
    np.testing.assert_allclose(t, t_t.numpy(), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    assert not hasattr(m, "_batched_kabsch")
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[2].shape)
        return weighted_kabsch(*args, **kwargs)

    monkeypatch.setattr(m, "weighted_kabsch", counting)
    m.rmsd(x, y)
    assert len(calls) == 1
    m.tm_score(x, y)
    assert len(calls) > 1 and any(len(shape) == 2 and shape[0] > 1 for shape in calls[1:])


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


def _read_c1(path: Path) -> np.ndarray:
    """C1' coordinates [N, 3] of a PDB file, in file order (fixed PDB columns)."""
    rows = [
        (float(line[30:38]), float(line[38:46]), float(line[46:54]))
        for line in path.read_text().splitlines()
        if line.startswith(("ATOM  ", "HETATM")) and line[12:16].strip() == "C1'"
    ]
    return np.array(rows, dtype=np.float64)


def test_tm_score_matches_usalign_fixture():
    """Every pair of the US-align fixture: ours vs ``USalign -TMscore 1 -mol RNA`` (the
    sequence-dependent TM-score normalised by the native) within 0.01."""
    pairs = json.loads((USALIGN_DIR / "usalign_scores.json").read_text())["pairs"]
    assert len(pairs) == 28
    diff = {}
    for pair in pairs:
        model = _read_c1(USALIGN_DIR / pair["model"])
        native = _read_c1(USALIGN_DIR / pair["native"])
        assert len(model) == len(native) == pair["n_residues"]
        ours = m.tm_score(model, native)
        diff[pair["model"]] = ours - pair["sequence_dependent"]["tm_norm_native"]
    worst = max(diff, key=lambda k: abs(diff[k]))
    mean_abs = float(np.mean(np.abs(list(diff.values()))))
    print(f"TM-score vs US-align over {len(diff)} pairs: worst {worst} {diff[worst]:+.5f}, "
          f"mean |diff| {mean_abs:.5f}")
    assert abs(diff[worst]) <= 0.01, f"{worst}: off by {diff[worst]:+.4f}"
    assert mean_abs <= 1e-3  # US-align prints 4 decimals; the search is the same


def test_tm_score_fixture_search_matters():
    """The fixture discriminates: one superposition on all residues misses US-align's score
    on the hinge pairs, so agreement above is the search's doing."""
    pairs = json.loads((USALIGN_DIR / "usalign_scores.json").read_text())["pairs"]
    gaps = []
    for pair in pairs:
        if "hinge40" not in pair["model"]:
            continue
        x, y = _read_c1(USALIGN_DIR / pair["model"]), _read_c1(USALIGN_DIR / pair["native"])
        rot, t = m.kabsch(x, y)
        d = np.linalg.norm(x @ rot.T + t - y, axis=1)
        one_shot = np.mean(1.0 / (1.0 + (d / m.tm_d0_rna(len(y))) ** 2))
        gaps.append(pair["sequence_dependent"]["tm_norm_native"] - one_shot)
    assert max(gaps) > 0.05


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


# ------------------------------------------------------------------------- lDDT
def _line(xs: list[float]) -> np.ndarray:
    return np.stack([np.asarray(xs, dtype=np.float64), np.zeros(len(xs)), np.zeros(len(xs))], axis=1)


def test_lddt_hand_computed_per_atom_average():
    """3 residues x 2 atoms on a line. Truth: a0 0, a1 1 | b0 5, b1 6 | c0 10, c1 11.
    Prediction: b1 at 7.2, c1 at 13.5 (the rest unchanged); R0 = 10.5 A.

    Inter-residue pairs with d_true < 10.5 (d_true -> d_pred, error, score = fraction of
    the thresholds 0.5/1/2/4 that the error is below):
      a0-b0 5->5 0 1;  a0-b1 6->7.2 1.2 .5;  a0-c0 10->10 0 1;  (a0-c1 11: out)
      a1-b0 4->4 0 1;  a1-b1 5->6.2 1.2 .5;  a1-c0 9->9 0 1;  a1-c1 10->12.5 2.5 .25
      b0-c0 5->5 0 1;  b0-c1 6->8.5 2.5 .25; b1-c0 4->2.8 1.2 .5;  b1-c1 5->6.3 1.3 .5
    (c0-c1 goes 1 -> 3.5 but is intra-residue: not scored.)
    Per atom: a0 (1+.5+1)/3 = 5/6; a1 (1+.5+1+.25)/4 = 11/16; b0 (1+1+1+.25)/4 = 13/16;
    b1 (.5+.5+.5+.5)/4 = 1/2; c0 (1+1+1+.5)/4 = 7/8; c1 (.25+.25+.5)/3 = 1/3.
    lDDT = mean = (5/6 + 11/16 + 13/16 + 1/2 + 7/8 + 1/3) / 6 = 97/144 = 0.67361.
    (Pooling the 11 pairs instead would give 7.5/11 = 0.68182.)
    """
    true = _line([0, 1, 5, 6, 10, 11])
    pred = _line([0, 1, 5, 7.2, 10, 13.5])
    res = [0, 0, 1, 1, 2, 2]
    assert m.lddt(pred, true, cutoff=10.5, residue_index=res) == pytest.approx(97 / 144)
    # as [L, atoms, 3] with the row as residue, as structure_metrics passes it
    assert m.lddt(pred.reshape(3, 2, 3), true.reshape(3, 2, 3), cutoff=10.5,
                  residue_index=np.repeat(np.arange(3), 2).reshape(3, 2)) == pytest.approx(97 / 144)
    # the masked-out atom takes its pairs with it: without c1, per atom
    # a0 5/6, a1 (1+.5+1)/3 = 5/6, b0 1, b1 .5, c0 7/8 -> (5/6+5/6+1+1/2+7/8)/5
    mask = np.array([True, True, True, True, True, False])
    assert m.lddt(pred, true, mask, cutoff=10.5, residue_index=res) == pytest.approx(
        (5 / 6 + 5 / 6 + 1 + 1 / 2 + 7 / 8) / 5)


def test_lddt_intra_residue_pairs_do_not_count():
    """Every other atom lies in the plane z = 0; reflecting atom 0 through that plane keeps
    all its distances to them and changes only the distance to atom 1 of its own residue."""
    rng = np.random.default_rng(14)
    plane = np.concatenate([rng.uniform(-8, 8, size=(12, 2)), np.zeros((12, 1))], axis=1)
    true = np.concatenate([[[0.5, 0.2, 1.0], [0.5, 0.2, 3.0]], plane])
    pred = true.copy()
    pred[0, 2] = -1.0  # |a0 - a1|: 2 A -> 4 A
    res = np.concatenate([[0, 0], np.arange(1, 13)])
    assert m.lddt(pred, true, residue_index=res) == pytest.approx(1.0)
    assert m.lddt(pred, true) < 1.0  # each point its own residue: the pair counts


def test_lddt_inclusion_radius():
    # 3 points on a line, truth 0 / 10 / 29, prediction 0 / 10 / 35. Default R0 = 30 A:
    # 0-1 10 -> 10 (score 1); 0-2 29 -> 35 (error 6, score 0, 29 < 30 so scored);
    # 1-2 19 -> 25 (error 6, score 0). Atoms: (1 + 0)/2, (1 + 0)/2, (0 + 0)/2.
    true = _line([0, 10, 29])
    pred = _line([0, 10, 35])
    assert m.lddt(pred, true) == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # R0 = 15 A (Mariani et al. 2013): only 0-1 is in range and perfect; atom 2 has no
    # pair and is left out
    assert m.lddt(pred, true, cutoff=15.0) == pytest.approx(1.0)
    # truth 0 / 10 / 31: 0-2 (31 A) is out of R0 = 30 A whatever the prediction does;
    # with 2 at 90: atom 0 has 0-1 only (1), atom 1 (1 + 0)/2, atom 2 has 1-2 only (0)
    far = _line([0, 10, 31])
    far_pred = _line([0, 10, 90])
    assert m.lddt(far_pred, far) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert np.isnan(m.lddt(_line([0, 40]), _line([0, 40])))  # no pair at all


def test_structure_metrics_all_atom_lddt_is_inter_residue():
    rng = np.random.default_rng(15)
    true = rng.normal(scale=8.0, size=(12, 23, 3))
    mask = np.ones((12, 23), dtype=bool)
    pred = true + rng.normal(scale=0.8, size=true.shape)
    out = m.structure_metrics(pred, true, mask)
    rows = np.repeat(np.arange(12), 23).reshape(12, 23)
    assert out["lddt_all"] == pytest.approx(m.lddt(pred, true, mask, residue_index=rows))
    assert out["lddt_all"] != pytest.approx(m.lddt(pred, true, mask))


def test_lddt_large_input_is_chunked():
    """8000 points: a dense [N, N] float64 matrix would be 512 MB; the blocks stay small."""
    rng = np.random.default_rng(16)
    n = 8000
    true = rng.uniform(0, 60, size=(n, 3))
    pred = true + rng.normal(scale=0.7, size=true.shape)
    res = np.arange(n) // 20
    tracemalloc.start()
    try:
        val = m.lddt(pred, true, residue_index=res)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0.5 < val < 1.0
    assert peak < 200e6, f"peak {peak / 1e6:.0f} MB"
    small = slice(0, 600)
    assert m.lddt(pred[small], true[small], residue_index=res[small], chunk=7) == pytest.approx(
        m.lddt(pred[small], true[small], residue_index=res[small], chunk=10_000))
