"""DDP training on CPU (gloo, 2 processes) on the real demo records.

Runs the ``train`` stage through ``tests/ddp_train_worker.py`` (``run_train`` plus a
callback recording the ids each rank sees), the way ``rna-predict train
training.strategy=ddp training.devices=2 training.accelerator=cpu`` runs: Lightning's
launcher re-executes the script for rank 1. Checks: each train record once per epoch
across ranks, each validation record once, validation metrics equal to a one-process
validation of the same weights, one MLflow run, INFO lines from rank 0 only, identical
bytes from two runs and from a run resumed from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rna_predict.data.atomic import sha256_file

from conftest import TINY_MODEL_OVERRIDES

WORKER = Path(__file__).with_name("ddp_train_worker.py")

#: a tiny model; 12 train records / (2 ranks x batch 2) = 3 steps per epoch, 2 epochs
DDP = [
    *TINY_MODEL_OVERRIDES, "training.crop=16", "training.batch_size=2",
    "training.noise_copies=2", "training.max_epochs=2", "training.num_threads=1",
    "training.strategy=ddp", "training.devices=2", "training.accelerator=cpu",
]


def _start(cfg, root: Path) -> tuple[subprocess.Popen, Path]:
    """Start the worker on ``cfg`` in ``root`` (its cwd, output in ``root/log.txt``)."""
    from omegaconf import OmegaConf

    root.mkdir(parents=True, exist_ok=True)
    params = root / "params.yaml"
    params.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "LOCAL_RANK", "RANK", "WORLD_SIZE",
                        "MASTER_PORT", "MASTER_ADDR")}
    out = root / "log.txt"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(WORKER), str(params), str(root / "ids")],
                                cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return proc, out


def _wait(started: tuple[subprocess.Popen, Path]) -> str:
    """The worker's output, after asserting that it succeeded."""
    proc, out = started
    proc.wait(timeout=900)
    text = out.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def _cfg(demo_cfg, root: Path):
    cfg = demo_cfg(DDP)
    cfg.training.out_dir = str(root / "models")
    cfg.training.report_dir = str(root / "reports/train")
    cfg.training.checkpoint_dir = str(root / "checkpoints")
    cfg.training.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    return cfg


def _seen(root: Path) -> dict[int, dict[str, list[str]]]:
    out = {}
    for rank in (0, 1):
        payload = json.loads((root / "ids" / f"rank{rank}.json").read_text())
        assert payload["world_size"] == 2
        out[rank] = payload["seen"]
    return out


def _runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT name, status FROM runs").fetchall()


def test_ddp_two_processes_cover_once_log_once_and_repeat(demo_cfg, demo_records, tmp_path):
    from rna_predict.data.split import read_split_ids

    train_ids = read_split_ids(demo_records / "splits", "train")
    val_ids = read_split_ids(demo_records / "splits", "val")
    assert len(train_ids) == 12 and len(val_ids) == 3

    # two runs from scratch, started together (each is rank 0 + the rank 1 it launches)
    a, b = tmp_path / "a", tmp_path / "b"
    proc_a, proc_b = _start(_cfg(demo_cfg, a), a), _start(_cfg(demo_cfg, b), b)
    stderr, _ = _wait(proc_a), _wait(proc_b)
    # rank 0 logs, rank 1 only trains: each INFO line of the stage once
    assert stderr.count("train: 12 train / 3 val records") == 1
    assert stderr.count("train: wrote ") == 1
    assert _runs(a / "mlflow.db") == [("train", "FINISHED")]

    seen = _seen(a)
    for epoch in ("0", "1"):
        r0, r1 = seen[0][f"train/{epoch}"], seen[1][f"train/{epoch}"]
        assert len(r0) == len(r1) == 6  # same number of steps on both ranks
        assert sorted(r0 + r1) == sorted(train_ids)  # every record once per epoch
    assert seen[0]["train/0"] + seen[1]["train/0"] != seen[0]["train/1"] + seen[1]["train/1"]
    for epoch in ("0", "1"):  # each validation record evaluated by exactly one rank
        assert sorted(seen[0][f"val/{epoch}"] + seen[1][f"val/{epoch}"]) == sorted(val_ids)

    # validation metrics are reduced over ranks: equal to one process validating the weights
    metrics = json.loads((a / "reports/train/metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["epochs"] == 2
    single = _validate_one_process(demo_cfg, a / "models" / "model.safetensors")
    # (per-torsion error sums and counts are summed over ranks, so the MAEs are exact;
    # the losses are per-batch means and depend on how records are batched)
    for key in ("angle_mae", "mae_alpha", "mae_chi"):
        assert metrics["val"][key] == pytest.approx(single[f"val/{key}"], abs=2e-5)

    # the second run from scratch: byte-identical weights and reports, the same ids
    assert sha256_file(b / "models/model.safetensors") == sha256_file(a / "models/model.safetensors")
    assert (b / "reports/train/metrics.json").read_bytes() == (a / "reports/train/metrics.json").read_bytes()
    assert _seen(b) == seen
    assert _runs(b / "mlflow.db") == [("train", "FINISHED")]

    # run again in a's folders: resumes from a's last.ckpt (same configuration), trains no
    # further step, and writes the same weights and history from the restored state
    weights = sha256_file(a / "models/model.safetensors")
    history = (a / "reports/train/history.csv").read_bytes()
    shutil.rmtree(a / "models")
    shutil.rmtree(a / "reports")
    shutil.rmtree(a / "ids")
    (a / "log.txt").unlink()
    stderr = _wait(_start(_cfg(demo_cfg, a), a))
    assert stderr.count("resuming from") == 1
    assert not any(k.startswith("train/") for k in _seen(a)[0])
    assert sha256_file(a / "models/model.safetensors") == weights
    assert (a / "reports/train/history.csv").read_bytes() == history


def _validate_one_process(demo_cfg, weights: Path) -> dict[str, float]:
    """Validation metrics of ``weights`` on one process (the module's own validation loop)."""
    import lightning as L
    from safetensors.torch import load_file

    from rna_predict.data.split import read_split_ids
    from rna_predict.train.lightning_module import RNALightningModule
    from rna_predict.train.run_train import _dataloaders

    cfg = demo_cfg(DDP[:-3])
    module = RNALightningModule(cfg.model, cfg.training, cfg.seed)
    module.model.load_state_dict(load_file(str(weights)))
    _, val = _dataloaders(cfg, read_split_ids(cfg.split.out_dir, "train"),
                          read_split_ids(cfg.split.out_dir, "val"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, dataloaders=val, verbose=False)
    return module._last_val
