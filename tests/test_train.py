"""Train stage on the real demo records: outputs, determinism, resume, MLflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rna_predict.data.atomic import sha256_file

from conftest import TINY_MODEL_OVERRIDES

#: a tiny model so that a few optimiser steps take seconds on 2 CPU cores
TINY = [
    *TINY_MODEL_OVERRIDES, "training.crop=16", "training.batch_size=2",
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
    assert conf["geometry"]["bond_angles_dihedrals_base_templates"] == "fitted on the demo training split"

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
    from rna_predict.tracking import (
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


# ------------------------------------------------------------- tracking and logging
def _tracking_cfg(tmp_path):
    from rna_predict.config import Config

    cfg = Config()
    cfg.training.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg


def test_experiment_is_tagged_as_model_training(tmp_path, no_env_tracking):
    """`mlflow ui` (MLflow 3.x) opens an experiment on its runs table, not the GenAI
    traces overview, when `mlflow.experimentKind` is `custom_model_development`; an
    existing experiment without the tag gets it on first use."""
    from mlflow.tracking import MlflowClient

    from rna_predict.tracking import (
        EXPERIMENT_KIND,
        EXPERIMENT_KIND_TAG,
        ensure_experiment,
        log_stage_run,
    )

    assert (EXPERIMENT_KIND_TAG, EXPERIMENT_KIND) == ("mlflow.experimentKind", "custom_model_development")
    cfg = _tracking_cfg(tmp_path)
    client = MlflowClient(tracking_uri=cfg.training.tracking_uri)
    exp_id = ensure_experiment(client, "fresh")
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert ensure_experiment(client, "fresh") == exp_id

    old = client.create_experiment(cfg.training.experiment)  # as older code created it
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    run_id = log_stage_run(cfg, "evaluate", {"m": 1.0})
    assert client.get_run(run_id).info.experiment_id == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_stage_runs_span_the_stage_wall_time(tmp_path, no_env_tracking):
    """A stage run starts when the stage starts (not when its results are logged)."""
    import time

    from mlflow.tracking import MlflowClient

    from rna_predict.tracking import lightning_logger, log_stage_run

    cfg = _tracking_cfg(tmp_path)
    client = MlflowClient(tracking_uri=cfg.training.tracking_uri)

    started = time.time()
    time.sleep(1.0)  # the stage's work
    run_id = log_stage_run(cfg, "evaluate", {"score": 0.5}, run_name="fake-stage", started_at=started)
    wall = time.time() - started
    info = client.get_run(run_id).info
    assert info.status == "FINISHED" and info.run_name == "fake-stage"
    assert 1000 <= info.end_time - info.start_time <= wall * 1000 + 50
    assert abs(info.start_time - started * 1000) <= 1

    started = time.time()
    time.sleep(0.5)
    logger = lightning_logger(cfg, stage="train", started_at=started)
    logger.log_metrics({"train/total": 1.0}, step=0)
    logger.finalize("success")
    run = client.get_run(logger.run_id)
    assert run.data.tags["stage"] == "train" and run.data.params["training.w_angle"] == "1.0"
    assert run.info.end_time - run.info.start_time >= 500
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_sweep_trial_runs_span_their_trials(tmp_path, no_env_tracking):
    """The tracking helpers the sweep uses: the parent run covers the study, every trial
    run covers its trial (pruned ones too), nested under the parent and tagged."""
    import time

    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    from rna_predict.tracking import activate_experiment, create_stage_run, track_trials

    cfg = _tracking_cfg(tmp_path)
    started = time.time()
    exp_id = activate_experiment(cfg)
    parent_id = create_stage_run(cfg, "sweep", run_name="study", tags={"study": "s"}, started_at=started)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))

    def objective(trial):
        x = trial.suggest_float("w_angle", 0.1, 1.0)
        time.sleep(0.4)
        trial.set_user_attr("val_mcq", 12.5)
        if trial.number == 1:
            raise optuna.TrialPruned()
        return x

    with mlflow.start_run(run_id=parent_id):
        study.optimize(track_trials(cfg, objective), n_trials=2)
    client = MlflowClient(tracking_uri=cfg.training.tracking_uri)
    parent = client.get_run(parent_id)
    assert parent.data.tags["study"] == "s" and parent.data.tags["stage"] == "sweep"
    assert parent.info.end_time - parent.info.start_time >= 800
    trials = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                order_by=["tags.number"])
    assert [r.data.tags["state"] for r in trials] == ["COMPLETE", "PRUNED"]
    for run in trials:
        assert run.data.tags["stage"] == "sweep_trial" and run.info.status == "FINISHED"
        assert "w_angle" in run.data.params and run.data.metrics["val_mcq"] == 12.5
        assert run.info.end_time - run.info.start_time >= 400
    assert trials[0].data.metrics["score"] == study.trials[0].value


@pytest.mark.slow
def test_train_cli_prints_each_log_line_once_without_ads(demo_records, demo_raw_dir, tmp_path,
                                                         no_env_tracking):
    """A real `rna-predict train` process: Lightning's lines appear once (not also through
    its own console handler), no "Tip: ... litmodels/litlogger" advertisement, and the
    MLflow run of the stage is in a model-training experiment."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from conftest import demo_config

    cfg = demo_config(demo_records, demo_raw_dir, TINY + ["training.max_steps=2", "training.max_epochs=1"],
                      out_root=tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    proc = subprocess.run([sys.executable, "-m", "rna_predict.cli", "train", "--params", str(params)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    for ad in ("litmodels", "litlogger", "Tip:", "💡"):
        assert ad not in text, ad
    # log records: "LEVEL name: message" (root handler) or "LEVEL: message" (a library's own)
    messages = []
    for line in proc.stderr.replace("\r", "\n").splitlines():
        head, sep, message = line.partition(": ")
        if sep and head.split(" ")[0] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            messages.append(message)
    repeated = {m for m in messages if messages.count(m) > 1}
    assert not repeated, repeated
    assert sum("GPU available" in m for m in messages) == 1  # Lightning's lines still come through
    assert "not found. Creating it" not in text

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.training.tracking_uri)
    exp = client.get_experiment_by_name(cfg.training.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["stage"] == "train" and run.info.status == "FINISHED"


# ------------------------------------------------------------------ mixed precision
def test_bf16_mixed_trains_on_cpu_with_finite_losses(demo_cfg, no_env_tracking):
    """`training.precision=bf16-mixed`: matmuls run in bfloat16 under autocast (seen on a
    Pairformer linear layer), the weights stay float32 and every logged loss is finite."""
    import math

    import lightning as L
    import torch

    from rna_predict.train.run_train import fit

    class DtypeProbe(L.Callback):
        dtypes: set = set()

        def on_train_start(self, trainer, pl_module):
            layer = pl_module.model.pairformer.blocks[0].tri_mul_out.out
            layer.register_forward_hook(lambda m, i, o: self.dtypes.add(o.dtype))

    probe = DtypeProbe()
    cfg = demo_cfg(TINY + ["training.precision=bf16-mixed", "training.max_steps=2"])
    module, trainer = fit(cfg, callbacks=[probe], enable_progress_bar=False)
    assert trainer.global_step == 2 and probe.dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in module.model.parameters())
    row = module.history[-1]
    for key in ("train/total", "train/L_angle", "train/L_diffusion", "val/loss", "val/angle_mae"):
        assert math.isfinite(row[key]), key
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
