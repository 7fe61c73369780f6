"""MLflow tracking shared by the train, evaluate (and sweep) stages.

ARCHITECTURE.md section 7: the tracking URI defaults to ``sqlite:///mlflow.db`` (the
file store is gone in MLflow >= 3.13) and is always passed explicitly; the environment
variable ``MLFLOW_TRACKING_URI`` overrides the configured value, and an empty URI turns
tracking off. Every run is tagged with the git commit, the DVC experiment name
(``DVC_EXP_NAME``) and the pipeline stage. Nothing here writes into declared outputs.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rna_predict.config import Config, to_flat_dict

log = logging.getLogger(__name__)


def resolve_tracking_uri(cfg: Config) -> str:
    """``MLFLOW_TRACKING_URI`` from the environment if set, else ``training.tracking_uri``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env if env is not None else cfg.training.tracking_uri


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the working directory, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_tags(stage: str) -> dict[str, str]:
    """Tags for a run: stage, git commit and DVC experiment name where available."""
    tags = {"stage": stage}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        tags["dvc_exp_name"] = exp
    return tags


def flat_params(cfg: Config) -> dict[str, str]:
    """Flattened config as MLflow parameter strings (MLflow caps values at 6000 chars)."""
    return {k: str(v)[:6000] for k, v in to_flat_dict(cfg).items()}


def lightning_logger(cfg: Config, stage: str = "train", run_name: str | None = None):
    """An MLFlowLogger with an explicit tracking URI, flattened params and run tags.

    Returns None when tracking is off (empty URI). Params are logged here, once, so
    Lightning's own hparams logging has nothing to add.
    """
    uri = resolve_tracking_uri(cfg)
    if not uri:
        log.info("MLflow tracking is off (empty tracking URI)")
        return None
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name=cfg.training.experiment,
        run_name=run_name or stage,
        tracking_uri=uri,
        tags=run_tags(stage),
        save_dir=None,
    )
    logger.log_hyperparams(flat_params(cfg))
    return logger


def log_artifacts(logger: Any, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
    """Upload files to the run of a Lightning MLFlowLogger (no-op when ``logger`` is None)."""
    if logger is None:
        return
    for path in paths:
        if Path(path).is_file():
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


def log_stage_run(
    cfg: Config,
    stage: str,
    metrics: Mapping[str, float],
    artifacts: Iterable[str | Path] = (),
    run_name: str | None = None,
) -> str | None:
    """Record one finished non-Lightning stage (evaluate) as an MLflow run.

    Logs flattened params, the finite numeric ``metrics`` and the ``artifacts`` files
    (plots under ``plots/``, other files at the root). Returns the run id, or None when
    tracking is off.
    """
    uri = resolve_tracking_uri(cfg)
    if not uri:
        log.info("MLflow tracking is off (empty tracking URI)")
        return None
    import math

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.training.experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(cfg.training.experiment)
    tags = run_tags(stage)
    tags["mlflow.runName"] = run_name or stage
    run = client.create_run(exp_id, tags=tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        params = [Param(k, v) for k, v in flat_params(cfg).items()]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        import time

        now = int(time.time() * 1000)
        mets = [
            Metric(k, float(v), now, 0)
            for k, v in sorted(metrics.items())
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        for i in range(0, len(mets), 500):
            client.log_batch(run_id, metrics=mets[i:i + 500])
        for path in artifacts:
            path = Path(path)
            if path.is_file():
                sub = "plots" if path.suffix == ".png" else None
                client.log_artifact(run_id, str(path), sub)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    log.info("MLflow run %s (%s) recorded at %s", run_id, stage, uri)
    return run_id


def flatten_metrics(obj: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics dict -> {"a/b/c": value} with numeric leaves only."""
    out: dict[str, float] = {}
    for key in sorted(obj):
        val = obj[key]
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(val, Mapping):
            out.update(flatten_metrics(val, name))
        elif isinstance(val, (int, float)) and not isinstance(val, bool):
            out[name] = float(val)
    return out


__all__ = [
    "flat_params",
    "flatten_metrics",
    "git_commit",
    "lightning_logger",
    "log_artifacts",
    "log_stage_run",
    "resolve_tracking_uri",
    "run_tags",
]
