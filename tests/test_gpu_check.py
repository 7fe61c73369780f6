"""benchmarks/gpu_check.py and benchmarks/bench_memory.py on CPU: the no-GPU exit and a
smoke run of the same code paths (real training module, demo records tiled to a crop)."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["model.c_s=16", "model.c_z=8", "model.c_atom=8", "model.c_atompair=4", "model.c_token=16",
        "model.pairformer_blocks=1", "model.pairformer_heads=2", "model.diffusion_blocks=1",
        "model.diffusion_heads=2", "model.atom_heads=1", "model.torsion_heads=2",
        "training.noise_copies=2", "training.num_threads=2"]


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def params(tmp_path):
    """params.yaml of the repository with tiny model dims (the scripts read a params file)."""
    from omegaconf import OmegaConf

    from rna_predict.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(TINY, params=root / "params.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_check_without_gpu_exits_cleanly(caplog):
    gpu_check = _load("gpu_check")
    with caplog.at_level(logging.INFO, logger="gpu_check"):
        assert gpu_check.main([]) == 0
    assert "no CUDA device found" in caplog.text


def test_gpu_check_cpu_smoke_trains_and_predicts(demo_records, params, capsys):
    gpu_check = _load("gpu_check")
    rc = gpu_check.main(["--device", "cpu", "--steps", "3", "--warmup", "1", "--crops", "40",
                         "--sample-steps", "2", "--data-dir", str(demo_records), "--params", str(params)])
    out = capsys.readouterr().out
    assert rc == 0
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| run |") and len(lines) == 3  # header, crop 40, predict
    assert lines[1].startswith("| train crop 40 | 3 |") and "steps/s" in lines[1]
    assert lines[2].startswith("| predict 200 nt | 2 sampler steps |")


def test_tiled_batch_and_bench_memory_measure(demo_records, params):
    demo_tiles = _load("demo_tiles")
    batch = demo_tiles.tiled_batch(demo_records, 150, 2)
    assert batch["base_type"].shape == (2, 150) and bool(batch["residue_mask"].all())
    assert int(batch["chain_index"][0].max()) >= 1  # several records side by side
    # chain 1 is the second train record, shifted by CHAIN_SHIFT along x
    from rna_predict.data.dataset import RecordDataset
    from rna_predict.data.split import read_split_ids

    ids = read_split_ids(demo_records / "splits", "train")
    ds = RecordDataset(demo_records / "angles", demo_records / "features", ids, None, 0)
    first, second = ds.example(ids[0]), ds.example(ids[1])
    n0 = len(first["base_type"])
    in1 = batch["chain_index"][0] == 1
    assert int(in1.sum()) == min(len(second["base_type"]), 150 - n0)
    assert torch.equal(batch["base_type"][0, :n0], first["base_type"])
    got = batch["coords"][0][in1]
    want = second["coords"][: got.shape[0]] + torch.tensor([demo_tiles.CHAIN_SHIFT, 0.0, 0.0])
    mask = batch["atom_mask"][0][in1]
    assert torch.allclose(got[mask], want[mask])

    bench = _load("bench_memory")
    rows = [bench.measure(40, mode, 1, 16, "cpu", str(demo_records), str(params))
            for mode in ("plain", "both")]
    assert rows[0]["first_loss"] == pytest.approx(rows[1]["first_loss"], rel=1e-5)
    assert all(r["step_s"] > 0 for r in rows)
    assert "| 40 | both |" in bench.table(rows)
