"""RecordDataset / collate / batch_from_sequence on the real demo records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rna_predict.data.atom_layout import BB, N_SLOTS, SLOT_MASK
from rna_predict.data.dataset import (DatasetError, RecordDataset, batch_from_sequence, collate,
                                      spatial_crop_indices)


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


def _tensor_bytes(ex) -> int:
    return sum(v.numel() * v.element_size() for v in ex.values() if isinstance(v, torch.Tensor))


def test_records_load_lazily_into_a_bounded_cache(demo_records, all_ids):
    ds = RecordDataset(demo_records / "angles", demo_records / "features", all_ids, None, 0,
                       cache_size=3)
    assert len(ds._cache) == 0  # nothing read at construction
    fresh = RecordDataset(demo_records / "angles", demo_records / "features", all_ids, None, 0,
                          cache_size=0)
    sizes = {rid: _tensor_bytes(fresh[i]) for i, rid in enumerate(all_ids)}
    for _ in range(2):
        for i, rid in enumerate(all_ids):
            ex = ds[i]
            assert torch.equal(ex["coords"], fresh[i]["coords"]) and torch.equal(ex["bpp"], fresh[i]["bpp"])
            assert len(ds._cache) <= 3
            assert list(ds._cache)[-1] == rid  # most recently used last
            held = sum(_tensor_bytes(e) for e in ds._cache.values())
            assert held <= sum(sorted(sizes.values())[-3:]) < sum(sizes.values()) / 2
    assert list(ds._cache) == all_ids[-3:]
    assert len(fresh._cache) == 0  # cache_size=0: every item read from disk


def test_contiguous_default_matches_the_window_formula(demo_records):
    ids = pd.read_csv(demo_records / "splits" / "train.csv")["id"].astype(str).tolist()
    crop, seed = 24, 7
    ds = make(demo_records, ids, crop=crop, seed=seed)  # default crop_mode
    full = make(demo_records, ids)
    assert ds.crop_mode == "contiguous"
    cropped = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ids)):
            f, ex = full[i], ds[i]
            n = f["base_type"].shape[0]
            start = 0
            if n > crop:  # the window start of the contiguous-only dataset
                start = int(np.random.default_rng([seed, epoch, i]).integers(0, n - crop + 1))
                cropped += 1
            end = min(start + crop, n)
            for key in ("base_type", "residue_index", "chain_index", "coords", "atom_mask", "angles"):
                assert torch.equal(ex[key], f[key][start:end]), (ids[i], key)
            assert torch.equal(ex["bpp"], f["bpp"][start:end, start:end])
    assert cropped >= 6


def _c1(ex):
    c1 = ex["coords"][:, BB["C1'"]].double().numpy()
    return c1, ex["atom_mask"][:, BB["C1'"]].numpy()


def test_spatial_crop_keeps_the_residues_nearest_to_the_reference(demo_records):
    ids = ["4QK8", "1EHZ", "434D"]
    crop, seed = 32, 3
    ds = make(demo_records, ids, crop=crop, seed=seed)
    ds.crop_mode = "spatial"
    full = make(demo_records, ids)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(2):  # 4QK8 (120 nt), 1EHZ (76 nt)
            f, ex = full[i], ds[i]
            c1, present = _c1(f)
            # brute force: every C1'-C1' distance, the reference drawn as documented
            d = np.linalg.norm(c1[:, None] - c1[None], axis=-1)
            ref = int(np.random.default_rng([seed, epoch, i, 1]).choice(np.flatnonzero(present)))
            order = sorted(np.flatnonzero(present), key=lambda j: (d[ref, j], j))
            expected = np.sort(order[:crop])
            kept = ex["residue_index"].numpy()
            assert np.array_equal(kept, expected), (ids[i], epoch)
            assert np.all(np.diff(kept) > 0)  # original order
            assert ex["base_type"].shape == (crop,)
            assert d[ref, kept].max() <= np.sort(d[ref][present])[crop - 1] + 1e-9
            assert torch.equal(ex["coords"], f["coords"][kept])
            assert torch.equal(ex["chain_index"], f["chain_index"][kept])
            assert torch.equal(ex["bpp"], f["bpp"][np.ix_(kept, kept)])
            # compact: the spatial crop is tighter around its reference than a window
            assert d[ref, kept].max() < d[ref][present].max()
    assert ds[2]["base_type"].shape == (14,)  # short records are not cropped
    fresh = make(demo_records, ids, crop=crop, seed=seed)
    fresh.crop_mode = "spatial"
    fresh.set_epoch(2)
    assert torch.equal(fresh[0]["residue_index"], ds[0]["residue_index"])  # deterministic


def test_spatial_crop_with_unresolved_atoms(demo_records, tmp_path):
    full = make(demo_records, ["4QK8"])[0]
    c1, present = _c1(full)
    assert present.all()
    # residues whose C1' is missing rank after every resolved one
    mask = full["atom_mask"].clone()
    dropped = np.arange(0, 120, 2)
    mask[dropped, BB["C1'"]] = False
    for s in range(5):
        idx = spatial_crop_indices(full["coords"], mask, 40, np.random.default_rng(s))
        assert len(idx) == 40 and not np.isin(idx, dropped).any()
    idx = spatial_crop_indices(full["coords"], mask, 70, np.random.default_rng(0))
    assert np.isin(dropped, idx).sum() == 10 and np.all(np.diff(idx) > 0)
    # a record without any C1' falls back to the contiguous window
    rec = torch.load(demo_records / "angles" / "4QK8.pt", weights_only=True)
    rec["atom_mask"][:, BB["C1'"]] = False
    (tmp_path / "a").mkdir()
    (tmp_path / "f").mkdir()
    torch.save(rec, tmp_path / "a" / "4QK8.pt")
    feat = torch.load(demo_records / "features" / "4QK8.pt", weights_only=True)
    torch.save(feat, tmp_path / "f" / "4QK8.pt")
    ds = RecordDataset(tmp_path / "a", tmp_path / "f", ["4QK8"], 32, 0, "spatial")
    start = ds.crop_start(0, 120)
    assert torch.equal(ds[0]["residue_index"], torch.arange(start, start + 32))
    assert spatial_crop_indices(full["coords"], torch.zeros_like(mask), 8, np.random.default_rng(0)) is None


def test_mixed_crops_and_bad_settings(demo_records):
    ids = ["4QK8"] * 200
    mixed = make(demo_records, ids, crop=32, seed=5)
    mixed.crop_mode, mixed.spatial_fraction = "mixed", 0.3
    contiguous = make(demo_records, ids, crop=32, seed=5)
    kinds = [mixed.crop_kind(i) for i in range(len(ids))]
    assert 0.2 < kinds.count("spatial") / len(ids) < 0.4
    for i in range(12):
        idx = mixed[i]["residue_index"]
        if kinds[i] == "contiguous":  # the same window as contiguous mode
            assert torch.equal(idx, contiguous[i]["residue_index"])
        else:
            assert (idx.diff() > 1).any() or not torch.equal(idx, contiguous[i]["residue_index"])
    for kwargs in ({"crop_mode": "random"}, {"spatial_fraction": 1.5}, {"cache_size": -1}):
        with pytest.raises(DatasetError, match="crop_mode|spatial_crop_fraction|cache"):
            RecordDataset(demo_records / "angles", demo_records / "features", ids, 32, 0, **kwargs)
