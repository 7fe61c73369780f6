"""RecordDataset / collate / batch_from_sequence on the real demo records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rna_predict.data.atom_layout import N_SLOTS, SLOT_MASK
from rna_predict.data.dataset import RecordDataset, batch_from_sequence, collate


@pytest.fixture(scope="module")
def all_ids(demo_records):
    return sorted(p.stem for p in (demo_records / "angles").glob("*.pt"))


def make(demo_records, ids, crop=None, seed=0):
    return RecordDataset(demo_records / "angles", demo_records / "features", ids, crop, seed)


def test_examples_follow_the_data_contract(demo_records, all_ids):
    ds = make(demo_records, all_ids)
    assert len(ds) == len(all_ids) >= 10
    for i, rid in enumerate(all_ids):
        ex = ds[i]
        rec = torch.load(demo_records / "angles" / f"{rid}.pt", weights_only=True)
        n = len(rec["sequence"])
        assert ex["id"] == rid and ex["base_type"].shape == (n,)
        assert ex["coords"].shape == (n, N_SLOTS, 3) and ex["bpp"].shape == (n, n)
        assert torch.isfinite(ex["angles"]).all()
        # NaN angles became 0 only where the mask is False; defined angles kept
        nan = torch.isnan(rec["angles"])
        assert not ex["angle_mask"][nan].any()
        assert torch.equal(ex["angles"][~nan & rec["angle_mask"]], rec["angles"][~nan & rec["angle_mask"]])
        # atoms present only in template slots
        assert not (ex["atom_mask"] & ~torch.as_tensor(SLOT_MASK)[ex["base_type"]]).any()


def test_crops_are_contiguous_and_deterministic(demo_records):
    ids = ["4QK8", "1EHZ", "434D"]
    ds = make(demo_records, ids, crop=32, seed=3)
    full = make(demo_records, ids)
    a = ds[0]
    assert a["base_type"].shape == (32,)
    start = ds.crop_start(0, 120)
    f = full[0]
    assert torch.equal(a["coords"], f["coords"][start:start + 32])
    assert torch.equal(a["bpp"], f["bpp"][start:start + 32, start:start + 32])
    assert torch.equal(a["residue_index"], torch.arange(start, start + 32))
    # same (seed, epoch, index) -> same crop, in a fresh dataset too
    assert torch.equal(make(demo_records, ids, crop=32, seed=3)[0]["coords"], a["coords"])
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        starts.add(ds.crop_start(0, 120))
    assert len(starts) > 1  # crops move between epochs
    ds.set_epoch(0)
    assert ds.crop_start(0, 120) == start
    assert ds[2]["base_type"].shape == (14,)  # short records are not cropped


def test_collate_pads_and_masks(demo_records):
    ds = make(demo_records, ["434D", "1DQF", "1A9N"])
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["ids"] == ["434D", "1DQF", "1A9N"]
    assert batch["base_type"].shape == (3, 24) and batch["bpp"].shape == (3, 24, 24)
    assert batch["residue_mask"].sum(1).tolist() == [14, 19, 24]
    assert not batch["atom_mask"][0, 14:].any() and not batch["angle_mask"][1, 19:].any()
    assert batch["coords"].shape == (3, 24, N_SLOTS, 3) and batch["angles"].shape == (3, 24, 7)
    assert batch["chain_index"][0, :14].tolist() == [0] * 7 + [1] * 7  # the 434D duplex


def test_train_split_loads(demo_records):
    ids = pd.read_csv(demo_records / "splits" / "train.csv")["id"].astype(str).tolist()
    ds = make(demo_records, ids, crop=24)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["residue_mask"].shape[1] <= 24


def test_batch_from_sequence():
    batch = batch_from_sequence("gggaaaccc")
    assert batch["base_type"].tolist() == [[2, 2, 2, 0, 0, 0, 1, 1, 1]]
    assert batch["residue_mask"].all() and "coords" not in batch
    bpp = batch["bpp"][0]
    assert torch.allclose(bpp, bpp.T) and float(bpp.sum(1).max()) <= 1.0 + 1e-5
    duplex = batch_from_sequence("GGGCGC&GCGCCC")
    assert duplex["chain_index"][0].tolist() == [0] * 6 + [1] * 6
    assert float(duplex["bpp"][0, :6, 6:].sum()) > 1.0  # the strands pair
    with pytest.raises(ValueError):
        batch_from_sequence("ACGX")
    t_form, u_form = batch_from_sequence("ACGT")["bpp"], batch_from_sequence("ACGU")["bpp"]
    assert np.isclose(float(t_form.sum()), float(u_form.sum()))
