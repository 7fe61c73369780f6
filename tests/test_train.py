"""Train stage on the real demo records: outputs, determinism, resume, MLflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rna_predict.data.atomic import sha256_file

#: a tiny model so that a few optimiser steps take seconds on 2 CPU cores
TINY = [
    "model.c_s=16", "model.c_z=8", "model.c_atom=8", "model.c_atompair=4", "model.c_token=16",
    "model.torsion_layers=1", "model.torsion_heads=2", "model.pairformer_blocks=1",
    "model.pairformer_heads=2", "model.diffusion_blocks=1", "model.diffusion_heads=2",
    "model.atom_heads=1", "training.crop=16", "training.batch_size=2",
    "training.noise_copies=2", "training.max_epochs=2", "training.max_steps=3",
    "training.num_threads=2",
]


@pytest.fixture
def no_env_tracking(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the cwd


def test_train_writes_outputs_deterministically(demo_cfg, tmp_path, no_env_tracking, monkeypatch):
    from rna_predict.train.run_train import run_train

    monkeypatch.setenv("DVC_EXP_NAME", "unit-exp")
    cfg = demo_cfg(TINY)
    weights = run_train(cfg)
    assert weights == tmp_path / "models" / "model.safetensors" and weights.is_file()
    conf = json.loads((tmp_path / "models" / "model_config.json").read_text())
    assert conf["model"]["c_s"] == 16

    metrics = json.loads((tmp_path / "reports/train/metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["epochs"] >= 1 and metrics["n_parameters"] > 0
    assert {"total", "L_angle", "L_diffusion"} <= set(metrics["train"])
    assert {"loss", "angle_mae", "mae_alpha", "mae_chi"} <= set(metrics["val"])
    assert 0.0 <= metrics["val"]["angle_mae"] <= 180.0
    with open(tmp_path / "reports/train/history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == metrics["epochs"]
    assert {"epoch", "step", "train_total", "val_angle_mae"} <= set(rows[0])
    text = (tmp_path / "reports/train/metrics.json").read_text() + \
        (tmp_path / "reports/train/history.csv").read_text()
    assert str(tmp_path) not in text

    # a second run from scratch (other output and checkpoint dirs) gives identical bytes
    cfg2 = demo_cfg(TINY)
    cfg2.training.out_dir = str(tmp_path / "models2")
    cfg2.training.report_dir = str(tmp_path / "reports2/train")
    cfg2.training.checkpoint_dir = str(tmp_path / "checkpoints2")
    weights2 = run_train(cfg2)
    assert sha256_file(weights2) == sha256_file(weights)
    for name in ("metrics.json", "history.csv"):
        assert (tmp_path / "reports2/train" / name).read_bytes() == \
            (tmp_path / "reports/train" / name).read_bytes()

    # MLflow run: params, per-step losses, tags, metrics artifact
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.training.tracking_uri)
    exp = client.get_experiment_by_name(cfg.training.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    run = runs[-1]
    assert run.data.tags["stage"] == "train" and run.data.tags["dvc_exp_name"] == "unit-exp"
    assert run.data.params["training.w_angle"] == "1.0"
    assert len(client.get_metric_history(run.info.run_id, "train/L_angle")) == 3
    assert "val/angle_mae" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "metrics.json" in arts


def test_train_resumes_from_matching_checkpoint(demo_cfg, tmp_path, no_env_tracking):
    from rna_predict.train.run_train import run_train

    cfg = demo_cfg(TINY + ["training.max_steps=2", "training.max_epochs=1"])
    cfg.training.tracking_uri = ""  # tracking off
    first = sha256_file(run_train(cfg))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # same config: resumes at the last step, nothing to train, same weights and reports
    history = (tmp_path / "reports/train/history.csv").read_bytes()
    assert sha256_file(run_train(cfg)) == first
    assert (tmp_path / "reports/train/history.csv").read_bytes() == history
    # a changed config discards the stale checkpoint and trains afresh
    cfg.training.lr = 0.01
    assert sha256_file(run_train(cfg)) != first


def test_source_digest_follows_code_not_bytecode(tmp_path):
    """A checkpoint written by other code is never resumed: the source is in the hash."""
    import shutil

    import rna_predict.train.run_train as rt

    pkg = tmp_path / "rna_predict"
    shutil.copytree(Path(rt.__file__).resolve().parents[1], pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = rt.source_digest(pkg)
    (pkg / "train" / "__pycache__").mkdir(exist_ok=True)
    (pkg / "train" / "__pycache__" / "run_train.cpython-311.pyc").write_bytes(b"\0")
    assert rt.source_digest(pkg) == before
    loss = pkg / "train" / "losses.py"
    loss.write_text(loss.read_text().replace("NUCLEOTIDE_ATOM_WEIGHT = 1.0 + 5.0",
                                             "NUCLEOTIDE_ATOM_WEIGHT = 1.0 + 4.0"))
    assert rt.source_digest(pkg) != before


def test_tracking_uri_env_override_and_tags(monkeypatch):
    from rna_predict.config import Config
    from rna_predict.train.tracking import (
        flatten_metrics,
        resolve_tracking_uri,
        run_tags,
    )

    cfg = Config()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(cfg) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri(cfg) == "sqlite:///elsewhere.db"
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    tags = run_tags("train")
    assert tags["stage"] == "train" and tags["dvc_exp_name"] == "exp-1"
    assert flatten_metrics({"a": {"b": 1, "c": None}, "d": 2.5}) == {"a/b": 1.0, "d": 2.5}


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    from rna_predict.train.lightning_module import EpochSampler

    class DS:
        epoch = None

        def set_epoch(self, e):
            self.epoch = e

    ds = DS()
    a, b = EpochSampler(10, 3, ds), EpochSampler(10, 3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b) and sorted(a) == list(range(10)) and ds.epoch == 4
    b.set_epoch(5)
    assert list(a) != list(b)
