"""Sample ranking by torsion self-consistency (rna_predict.model.ranking)."""

from __future__ import annotations

import math

import torch

from rna_predict.model.ranking import (
    dihedral,
    torsion_consistency,
    torsions_from_coords,
)
from rna_predict.data.dataset import RecordDataset, collate


def test_dihedral_values():
    a, b, c = torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, 0]), torch.tensor([0.0, 1, 0])

    def deg(d: list[float]) -> float:
        return math.degrees(dihedral(a, b, c, torch.tensor(d)).item())

    assert math.isclose(deg([1.0, 1, 0]), 0.0, abs_tol=1e-4)
    assert math.isclose(abs(deg([-1.0, 1, 0])), 180.0, abs_tol=1e-4)
    # the sign convention is checked against the records' (MDAnalysis) torsions below
    assert math.isclose(deg([0.0, 1, 1]), -deg([0.0, 1, -1]), abs_tol=1e-4)
    assert math.isclose(abs(deg([0.0, 1, 1])), 90.0, abs_tol=1e-4)


def test_torsions_from_true_coordinates_match_the_records(demo_records):
    ids = ["434D", "1DQF", "1EHZ", "4QK8"]
    ds = RecordDataset(demo_records / "angles", demo_records / "features", ids, None, 0)
    batch = collate([ds[i] for i in range(len(ids))])
    angles, mask = torsions_from_coords(batch["coords"], batch["base_type"], batch["chain_index"],
                                        batch["residue_mask"])
    both = mask & batch["angle_mask"]
    # modified residues (1EHZ pseudouridines: C-glycosidic chi) aside, torsions agree exactly
    diff = torch.remainder(angles - batch["angles"] + math.pi, 2 * math.pi) - math.pi
    backbone = diff[..., :6][both[..., :6]].abs()
    assert backbone.max() < 1e-3
    chi = diff[..., 6][both[..., 6]].abs()
    assert (chi < 1e-3).float().mean() > 0.99
    assert not (batch["angle_mask"] & ~mask).any()  # every defined record angle is measured


def test_mirror_images_rank_last(demo_records):
    ds = RecordDataset(demo_records / "angles", demo_records / "features", ["1EHZ"], None, 0)
    batch = collate([ds[0]])
    true = batch["coords"]
    sincos = torch.stack([torch.sin(batch["angles"]), torch.cos(batch["angles"])], -1)
    noisy = true + 0.3 * torch.randn(true.shape, generator=torch.Generator().manual_seed(0))
    mirror = true * torch.tensor([-1.0, 1.0, 1.0])
    scores = torsion_consistency(torch.stack([mirror, noisy, true]), sincos, batch)
    assert scores.shape == (3, 1)
    assert scores[2, 0] < 0.01 < scores[1, 0] < 0.5 < scores[0, 0]
