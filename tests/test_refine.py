"""Torsion-space refinement (rna_predict.model.refine) on real demo structures.

The refinement must (1) give ideal O3'-P links and no clashes whatever the input cloud
looks like, and (2) keep the fold of the sample it is given: started from torsions 25 deg
off, it must pull a chain that NeRF alone misplaces by many Angstrom back onto the true
structure.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rna_predict.data.atom_layout import ATOM_NAMES, BASES, BB, SLOT_MASK, base_type_index
from rna_predict.data.structure import read_structure
from rna_predict.data.torsions import compute_torsions
from rna_predict.evaluate.metrics import rmsd
from rna_predict.evaluate.validity import clash_free_fraction
from rna_predict.model.nerf import build_from_angles
from rna_predict.model.refine import ClashNeighbourList, _polar_slots, clash_rules, refine_structure

IDEAL_O3P = 1.607  # geometry._BONDS["O3'-P+"]


def _load(raw_dir, rid: str):
    s = read_structure(raw_dir / f"{rid}.pdb")
    angles = compute_torsions(s).angles
    coords = s.coords.copy()
    # absent atoms (NaN) sit on their residue's C1', as in a complete diffusion sample
    c1 = coords[:, BB["C1'"]]
    coords = np.where(np.isnan(coords), c1[:, None, :], coords)
    return s, torch.as_tensor(angles, dtype=torch.float32), torch.as_tensor(coords, dtype=torch.float32)


def _sincos(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.sin(angles), torch.cos(angles)], -1)


def _links(x: torch.Tensor, chain: np.ndarray) -> np.ndarray:
    same = chain[1:] == chain[:-1]
    d = (x[1:, BB["P"]] - x[:-1, BB["O3'"]]).norm(dim=-1).numpy()
    return d[same]


def _clash_free_fraction(x: torch.Tensor, sequence: str) -> float:
    mask = SLOT_MASK[base_type_index(sequence)]
    return clash_free_fraction([x[i][torch.as_tensor(mask[i])].numpy() for i in range(len(sequence))])


def _c1_rmsd(x: torch.Tensor, true: np.ndarray, present: np.ndarray) -> float:
    c1 = BB["C1'"]
    return rmsd(x[:, c1].double().numpy()[present[:, c1]], true[:, c1][present[:, c1]])


def test_refinement_restores_the_fold_from_noisy_torsions(demo_raw_dir):
    s, angles, sample = _load(demo_raw_dir, "1ZHO")  # 38 nt, one chain, every atom resolved
    bt = torch.as_tensor(base_type_index(s.sequence))
    chain = torch.as_tensor(s.chain_index)
    gen = torch.Generator().manual_seed(0)
    noisy = torch.nan_to_num(angles, nan=0.0) + torch.deg2rad(torch.tensor(25.0)) * torch.randn(
        angles.shape, generator=gen)
    nerf_only = build_from_angles(noisy[None], bt[None])[0]
    before = _c1_rmsd(nerf_only, s.coords, s.atom_mask)

    refined = refine_structure(sample, _sincos(noisy), bt, chain, steps=200)
    after = _c1_rmsd(refined, s.coords, s.atom_mask)
    assert before > 8.0, before  # NeRF from 25-deg-noisy torsions alone loses the fold
    assert after < 2.0, after  # the sample's restraint brings it back
    links = _links(refined, s.chain_index)
    np.testing.assert_allclose(links, IDEAL_O3P, atol=1e-3)
    assert _clash_free_fraction(refined, s.sequence) >= 0.99


def test_compact_cloud_becomes_valid_geometry_per_strand(demo_raw_dir):
    """A duplex squeezed to half size (what an undertrained denoiser returns)."""
    s, angles, coords = _load(demo_raw_dir, "434D")  # two 7-nt strands
    assert len(set(s.chain_ids)) == 2
    bt = torch.as_tensor(base_type_index(s.sequence))
    chain = torch.as_tensor(s.chain_index)
    centre = coords.reshape(-1, 3).mean(0)
    squeezed = (coords - centre) * 0.5
    raw_links = _links(squeezed, s.chain_index)
    assert np.mean(np.abs(raw_links - 1.6) <= 0.2) < 0.5
    assert _clash_free_fraction(squeezed, s.sequence) < 0.95

    refined = refine_structure(squeezed, _sincos(torch.nan_to_num(angles)), bt, chain, steps=200)
    links = _links(refined, s.chain_index)
    assert len(links) == len(s.sequence) - 2  # no link across the strand break
    np.testing.assert_allclose(links, IDEAL_O3P, atol=1e-3)
    assert _clash_free_fraction(refined, s.sequence) >= 0.95
    # the strands keep their places: each strand's centre stays near the squeezed one's
    for c in (0, 1):
        sel = s.chain_index == c
        shift = (refined[sel, BB["C1'"]].mean(0) - squeezed[sel, BB["C1'"]].mean(0)).norm()
        assert shift < 3.0, (c, float(shift))


#: pairs (atom of residue i, atom of residue i+1) within three bonds across the O3'(i)-P(i+1)
#: link that include O3'(i) or P(i+1): O3'-P 1 bond, O3'-OP1/OP2/O5' 2, O3'-C5' 3 (via
#: P-O5'), P-C3' 2, P-C4'/C2' 3 (via O3'-C3'); the clash term exempts exactly these
_LINK_EXEMPT = {("O3'", "P"), ("O3'", "OP1"), ("O3'", "OP2"), ("O3'", "O5'"), ("O3'", "C5'"),
                ("C3'", "P"), ("C4'", "P"), ("C2'", "P")}


def _dense_clash(x: np.ndarray, sequence: str, chain: np.ndarray) -> tuple[float, np.ndarray]:
    """Clash penalty and its gradient over EVERY atom pair, from the rules written out:
    atoms of different residues; d_min 2.2 A for chain neighbours (minus the link pairs),
    2.6 A between two N/O atoms, else 3.0 A; penalty relu(d_min - d)^2 per pair."""
    names, res, pos = [], [], []
    for r, base in enumerate(sequence):
        for slot, name in enumerate(ATOM_NAMES[base]):
            if name:
                names.append(name)
                res.append(r)
                pos.append(x[r, slot])
    pos = np.asarray(pos, dtype=np.float64)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)  # the full (n_atoms)^2 matrix
    total, grad = 0.0, np.zeros_like(pos)
    for a, b in zip(*np.nonzero(np.triu(d < 3.0, 1))):
        ra, rb = res[a], res[b]
        if ra == rb:
            continue
        if chain[ra] == chain[rb] and abs(ra - rb) == 1:
            first, second = (a, b) if ra < rb else (b, a)
            if (names[first], names[second]) in _LINK_EXEMPT:
                continue
            d_min = 2.2
        elif names[a][0] in "NO" and names[b][0] in "NO":
            d_min = 2.6
        else:
            d_min = 3.0
        if d[a, b] < d_min:
            total += (d_min - d[a, b]) ** 2
            g = -2.0 * (d_min - d[a, b]) * (pos[a] - pos[b]) / max(d[a, b], 1e-12)
            grad[a] += g
            grad[b] -= g
    mask = SLOT_MASK[base_type_index(sequence)]
    full = np.zeros(x.shape)
    full[mask] = grad
    return total, full


def _neighbour_list(sequence: str, chain) -> ClashNeighbourList:
    bt = torch.as_tensor(base_type_index(sequence))
    return ClashNeighbourList(torch.as_tensor(SLOT_MASK)[bt], torch.as_tensor(chain), _polar_slots(bt))


def _penalty_and_grad(term: ClashNeighbourList, x: np.ndarray) -> tuple[float, np.ndarray]:
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    pen = term(xt)
    pen.backward()
    return float(pen.detach()), xt.grad.double().numpy()


def test_neighbour_list_penalty_equals_the_dense_sum(demo_raw_dir):
    """434D squeezed to half size (many clashes, two strands) and 1ZHO with noise."""
    s, _, coords = _load(demo_raw_dir, "434D")
    centre = coords.reshape(-1, 3).mean(0)
    squeezed = ((coords - centre) * 0.5).double().numpy()
    term = _neighbour_list(s.sequence, s.chain_index)
    dense, dense_grad = _dense_clash(squeezed, s.sequence, s.chain_index)
    pen, grad = _penalty_and_grad(term, squeezed)
    assert dense > 50.0  # a real test: hundreds of clashing pairs
    assert pen == pytest.approx(dense, rel=1e-5)
    np.testing.assert_allclose(grad, dense_grad, atol=1e-3)
    n = len(term.atoms)
    assert term.builds == 1 and 0 < len(term.i) < n * (n - 1) // 2

    # Verlet rule: atoms moved < skin / 2 reuse the list and the sum stays exact ...
    rng = np.random.default_rng(0)
    step = rng.normal(size=squeezed.shape)
    step *= 0.45 * term.skin / 2 / np.linalg.norm(step, axis=-1, keepdims=True)
    moved = squeezed + step
    pen, grad = _penalty_and_grad(term, moved)
    dense, dense_grad = _dense_clash(moved, s.sequence, s.chain_index)
    assert term.builds == 1
    assert pen == pytest.approx(dense, rel=1e-5)
    np.testing.assert_allclose(grad, dense_grad, atol=1e-3)
    # ... and a bigger move (squeezed further to 0.4 of the size) rebuilds it
    tighter = moved * 0.8
    pen, grad = _penalty_and_grad(term, tighter)
    dense, _ = _dense_clash(tighter, s.sequence, s.chain_index)
    assert term.builds == 2 and pen == pytest.approx(dense, rel=1e-5)

    s, _, coords = _load(demo_raw_dir, "1ZHO")  # 38 nt, 800 atoms
    noisy = coords.double().numpy() + np.random.default_rng(1).normal(scale=0.7, size=coords.shape)
    dense, dense_grad = _dense_clash(noisy, s.sequence, s.chain_index)
    pen, grad = _penalty_and_grad(_neighbour_list(s.sequence, s.chain_index), noisy)
    assert dense > 1.0 and pen == pytest.approx(dense, rel=1e-5)
    np.testing.assert_allclose(grad, dense_grad, atol=1e-3)


def test_refined_structure_penalty_matches_dense_and_rules(demo_raw_dir):
    s, angles, coords = _load(demo_raw_dir, "434D")
    bt = torch.as_tensor(base_type_index(s.sequence))
    centre = coords.reshape(-1, 3).mean(0)
    refined = refine_structure((coords - centre) * 0.5, _sincos(torch.nan_to_num(angles)), bt,
                               torch.as_tensor(s.chain_index), steps=10)
    dense, _ = _dense_clash(refined.double().numpy(), s.sequence, s.chain_index)
    pen, _ = _penalty_and_grad(_neighbour_list(s.sequence, s.chain_index), refined.double().numpy())
    assert pen == pytest.approx(dense, rel=1e-5, abs=1e-6)
    # the rules on single pairs: O3'(0)-P(1) exempt, C1'-C1' of neighbours 2.2 A, of
    # residues two apart 3.0 A, N-O across a strand break 2.6 A
    t = torch.tensor
    counted, d_min = clash_rules(t([0, 0, 0, 6]), t([BB["O3'"], BB["C1'"], BB["C1'"], 12]),
                                 t([0, 0, 0, 0]), t([True, False, False, True]),
                                 t([1, 1, 2, 7]), t([BB["P"], BB["C1'"], BB["C1'"], 14]),
                                 t([0, 0, 0, 1]), t([True, False, False, True]))
    assert counted.tolist() == [False, True, True, True]
    assert d_min.tolist() == pytest.approx([2.2, 2.2, 3.0, 2.6])
    assert BASES  # atom names come from the one layout table


def test_clash_penalty_sees_overlap_and_has_gradient(demo_raw_dir):
    s, _, coords = _load(demo_raw_dir, "1ZHO")
    term = _neighbour_list(s.sequence[:3], [0, 0, 0])
    x = coords[:3].clone()
    far = x.clone()
    far[2] += torch.tensor([40.0, 0.0, 0.0])
    # the real 1ZHO neighbours and a distant third residue: nothing to penalise
    assert term(far).item() < 0.05
    overlap = far.clone()
    overlap[2] = x[0] + 0.5
    overlap.requires_grad_(True)
    pen = term(overlap)
    assert term.builds == 2  # residue 2 jumped 40 A: the list was rebuilt
    assert pen.item() > 10.0
    pen.backward()
    assert overlap.grad[2].abs().sum() > 0
