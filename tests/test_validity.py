"""Clash check of ``evaluate/validity.py``: the neighbour search gives the brute-force
answer (SCIENCE.md validity definitions: residue pairs, neighbours included, whose closest
atoms are >= 1.5 A apart, out of L (L - 1) / 2)."""

from __future__ import annotations


import numpy as np
import pytest

from rna_predict.evaluate.validity import CLASH_DISTANCE, clash_free_fraction, link_and_clash_stats


def _brute_force(positions: list[np.ndarray]) -> float:
    """Every residue pair, closest atoms by a full distance matrix (the old definition)."""
    ok = total = 0
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            d = np.linalg.norm(positions[i][:, None] - positions[j][None], axis=-1)
            ok += int(d.min() >= CLASH_DISTANCE)
            total += 1
    return ok / max(total, 1)


def _chain(n_res: int, rng: np.random.Generator, spacing: float = 6.0) -> list[np.ndarray]:
    """Residues of 8-22 atoms spread about 2 A around centres on a random walk."""
    steps = rng.normal(size=(n_res, 3))
    steps *= spacing / np.linalg.norm(steps, axis=1, keepdims=True)
    centres = np.cumsum(steps, axis=0)
    return [c + rng.normal(scale=1.2, size=(int(rng.integers(8, 23)), 3)) for c in centres]


def test_clash_free_fraction_matches_brute_force_with_planted_clashes():
    rng = np.random.default_rng(0)
    pos = _chain(60, rng, spacing=9.0)
    assert clash_free_fraction(pos) == pytest.approx(_brute_force(pos))
    planted = [p.copy() for p in pos]
    # far residues brought into contact: an atom of 40 placed 1.0 A from an atom of 3,
    # an atom of 55 exactly on an atom of 10 (distance 0), one of 20 at 1.499 A from 50
    planted[40][0] = planted[3][5] + np.array([1.0, 0.0, 0.0])
    planted[55][2] = planted[10][1]
    planted[20][4] = planted[50][0] + np.array([0.0, 1.499, 0.0])
    # and 1.5 A exactly is not a clash (closest atoms >= 1.5 A)
    planted[30][0] = planted[0][0] + np.array([0.0, 0.0, CLASH_DISTANCE])
    expected = _brute_force(planted)
    assert clash_free_fraction(planted) == pytest.approx(expected, abs=0)
    assert expected < clash_free_fraction(pos)
    for seed in (1, 2, 3):  # denser chains: many neighbour clashes
        dense = _chain(40, np.random.default_rng(seed), spacing=3.0)
        assert clash_free_fraction(dense) == pytest.approx(_brute_force(dense), abs=0)


def test_clash_free_fraction_small_cases():
    a = np.zeros((2, 3))
    b = np.array([[1.0, 0.0, 0.0]])
    c = np.array([[10.0, 0.0, 0.0]])
    assert clash_free_fraction([a, b, c]) == pytest.approx(2 / 3)  # a-b clash; atoms within a do not
    assert clash_free_fraction([a, c]) == 1.0
    assert clash_free_fraction([a]) == 0.0  # no pair: as before
    assert clash_free_fraction([]) == 0.0


def test_clash_free_fraction_large_input():
    rng = np.random.default_rng(4)
    pos = _chain(3000, rng)
    n_atoms = sum(len(p) for p in pos)
    frac = clash_free_fraction(pos)  # a neighbour search: seconds, not the O(L^2) loop's minutes
    assert n_atoms > 40_000
    assert 0.99 < frac <= 1.0
    # the answer on a window agrees with brute force
    window = pos[1000:1080]
    assert clash_free_fraction(window) == pytest.approx(_brute_force(window), abs=0)


def _stats_per_residue(path) -> dict[str, float]:
    """The statistics from one MDAnalysis AtomGroup per residue (the former loop)."""
    import warnings

    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(path))
    links = []
    res = list(u.residues)
    for a, b in zip(res, res[1:]):
        if a.segid != b.segid or a.atoms.chainIDs[0] != b.atoms.chainIDs[0]:
            continue
        o3, p = a.atoms.select_atoms("name O3'"), b.atoms.select_atoms("name P")
        if len(o3) and len(p):
            links.append(float(np.linalg.norm(o3.positions[0] - p.positions[0])))
    links = np.asarray(links)
    return {"residues": float(len(res)), "links": float(len(links)),
            "links_ok_fraction": float((np.abs(links - 1.6) <= 0.2).mean()),
            "link_median_A": float(np.median(links)),
            "pairs_without_clash_fraction": _brute_force([r.atoms.positions for r in res])}


@pytest.mark.parametrize("rid", ["434D", "1EHZ", "1KXK", "6Y2L"])
def test_link_and_clash_stats_match_the_per_residue_computation(demo_raw_dir, rid):
    path = demo_raw_dir / f"{rid}.pdb"
    got, expected = link_and_clash_stats(path), _stats_per_residue(path)
    # counts and fractions identical; distances now in float64 (were float32)
    assert got == pytest.approx(expected, rel=1e-6, abs=0)
    exact = ("residues", "links", "links_ok_fraction", "pairs_without_clash_fraction")
    assert {k: got[k] for k in exact} == {k: expected[k] for k in exact}
    if rid == "434D":
        assert got["links"] == got["residues"] - 2  # no link across the strand break
