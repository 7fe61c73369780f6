"""Torsion-space refinement (rna_predict.model.refine) on real demo structures.

The refinement must (1) give ideal O3'-P links and no clashes whatever the input cloud
looks like, and (2) keep the fold of the sample it is given: started from torsions 25 deg
off, it must pull a chain that NeRF alone misplaces by many Angstrom back onto the true
structure.
"""

from __future__ import annotations

import numpy as np
import torch

from rna_predict.data.atom_layout import BB, SLOT_MASK, base_type_index
from rna_predict.data.structure import read_structure
from rna_predict.data.torsions import compute_torsions
from rna_predict.evaluate.metrics import rmsd
from rna_predict.evaluate.validity import clash_free_fraction
from rna_predict.model.nerf import build_from_angles
from rna_predict.model.refine import clash_pairs, clash_penalty, refine_structure

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


def test_clash_penalty_sees_overlap_and_has_gradient(demo_raw_dir):
    s, _, coords = _load(demo_raw_dir, "1ZHO")
    bt = torch.as_tensor(base_type_index(s.sequence[:3]))
    mask = torch.as_tensor(SLOT_MASK)[bt]
    weight, d_min = clash_pairs(mask, torch.tensor([0, 0, 0]), torch.zeros_like(mask))
    # the O3'(0)-P(1) bond and its two-bond neighbours are never counted
    o3, p = BB["O3'"], 23 + BB["P"]
    assert weight[o3, p] == 0 and weight[p, o3] == 0
    assert weight[BB["C1'"], 23 + BB["C1'"]] == 0.5 and d_min[BB["C1'"], 23 + BB["C1'"]] == 2.2
    x = coords[:3].clone()
    far = x.clone()
    far[2] += torch.tensor([40.0, 0.0, 0.0])
    # the real 1ZHO neighbours and a distant third residue: nothing to penalise
    assert clash_penalty(far, weight, d_min).item() < 0.05
    overlap = far.clone()
    overlap[2] = x[0] + 0.5
    overlap.requires_grad_(True)
    pen = clash_penalty(overlap, weight, d_min)
    assert pen.item() > 10.0
    pen.backward()
    assert overlap.grad[2].abs().sum() > 0
