"""MLflow tracking shared by the train, evaluate (and sweep) stages.

ARCHITECTURE.md section 7: the tracking URI defaults to ``sqlite:///mlflow.db`` (the
file store is gone in MLflow >= 3.13) and is always passed explicitly; the environment
variable ``MLFLOW_TRACKING_URI`` overrides the configured value, and an empty URI turns
tracking off. Every run is tagged with the git commit, the DVC experiment name
(``DVC_EXP_NAME``) and the pipeline stage. Nothing here writes into declared outputs.

The experiment carries the tag ``mlflow.experimentKind = custom_model_development``
(:func:`ensure_experiment`), so that ``mlflow ui`` (MLflow 3.x) opens it as a model
training experiment on its runs table rather than on the GenAI traces overview; an
existing experiment without the tag gets it the next time a stage uses it.

Every stage run spans the stage: callers measure ``started_at = time.time()`` when the
stage begins and pass it on (:func:`lightning_logger`, :func:`create_stage_run`,
:func:`log_stage_run`); the run's ``start_time`` is that moment and its ``end_time`` the
moment the run is closed, so the MLflow duration is the stage's wall time. Sweep trials
get one nested run each that spans the trial (:func:`track_trials`).
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rna_predict.config import Config, to_flat_dict

log = logging.getLogger(__name__)

#: experiment tag MLflow 3.x reads to choose the experiment's UI (runs table vs GenAI)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: MLflow's value for traditional / custom model training (``genai_development`` is GenAI)
EXPERIMENT_KIND = "custom_model_development"


#: SQLite busy timeout (s) added to local ``sqlite:///`` tracking URIs: a writer waits this
#: long for another process's write lock instead of failing with "database is locked"
SQLITE_TIMEOUT_S = 60


def tracking_root() -> Path:
    """The directory relative tracking paths are resolved against: ``$DVC_ROOT`` when set,
    else the working directory.

    DVC sets ``DVC_ROOT`` for every stage command; for ``dvc exp run --queue`` / ``--temp``
    it is the root of the user's repository, not the temporary copy the stage runs in
    (``dvc/repo/experiments/queue/base.py``), so a run there still reaches the user's
    ``mlflow.db`` instead of one deleted with the copy.
    """
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def _sqlite_uri(uri: str) -> tuple[str, str] | None:
    """(path, query) of a local ``sqlite:///`` URI (path relative unless it starts with /)."""
    if not uri.startswith("sqlite:///"):
        return None
    path, _, query = uri[len("sqlite:///"):].partition("?")
    return path, query


def resolve_tracking_uri(cfg: Config) -> str:
    """The configured tracking URI: ``MLFLOW_TRACKING_URI`` from the environment if set,
    else ``training.tracking_uri``; empty means tracking is off. Connect with
    :func:`tracking_store_uri`, which makes a local SQLite path absolute."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env if env is not None else cfg.training.tracking_uri


def tracking_store_uri(cfg: Config) -> str:
    """The URI every run is written to: :func:`resolve_tracking_uri`, with a local SQLite
    URI made absolute and given a busy timeout.

    A relative path (``sqlite:///mlflow.db``) is resolved against :func:`tracking_root`
    (the user's repository, even inside a DVC experiment's temporary copy), and
    ``?timeout=60`` is added unless the URI sets one, so concurrent writers (queued
    experiments, sweep workers) wait for SQLite's write lock instead of failing
    (SQLAlchemy's pysqlite dialect passes the parameter to ``sqlite3.connect``). Other
    URIs (a tracking server, another database) are returned unchanged.
    """
    uri = resolve_tracking_uri(cfg)
    parts = _sqlite_uri(uri)
    if parts is None or parts[0] in ("", ":memory:"):
        return uri
    path, query = parts
    if not path.startswith("/"):
        path = (tracking_root() / path).as_posix()
    if "timeout=" not in query:
        query = "&".join(q for q in (query, f"timeout={SQLITE_TIMEOUT_S}") if q)
    return f"sqlite:///{path}?{query}"


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a local SQLite store: an exclusive ``fcntl.flock`` on a lock file named after the
    database (in the system temp dir), held while a process opens the store. MLflow creates
    and migrates the tables on first use; two processes doing it at once fail ("duplicate
    column name"), which the busy timeout does not prevent. Other stores: no lock."""
    parts = _sqlite_uri(uri)
    if parts is None or not parts[0].startswith("/"):
        yield
        return
    import fcntl
    import hashlib
    import tempfile

    digest = hashlib.sha256(parts[0].encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"rna-predict-mlflow-{digest}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mlflow_client(uri: str):
    """``MlflowClient(tracking_uri=uri)``, built under :func:`_store_lock`: the client opens
    the store at once, and a new SQLite store creates its tables then."""
    from mlflow.tracking import MlflowClient

    with _store_lock(uri):
        return MlflowClient(tracking_uri=uri)


def _artifact_location(uri: str, name: str) -> str | None:
    """Artifact folder of a new experiment in a local SQLite store: ``mlruns/<name>`` next
    to the database (MLflow's default, ``./mlruns`` of the creating process, would be the
    temporary copy of a queued DVC experiment); None (MLflow's default) for other stores."""
    parts = _sqlite_uri(uri)
    if parts is None or not parts[0].startswith("/"):
        return None
    from urllib.parse import quote

    return (Path(parts[0]).parent / "mlruns" / quote(name, safe="")).as_uri()


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


def _ms(started_at: float | None) -> int:
    """Seconds since the epoch (``time.time()``; None = now) -> MLflow milliseconds."""
    return int(round((time.time() if started_at is None else float(started_at)) * 1000))


def ensure_experiment(client: Any, name: str) -> str:
    """Id of experiment ``name`` (created if missing, restored if deleted), tagged
    ``mlflow.experimentKind = custom_model_development``.

    ``client`` is an ``MlflowClient``. The tag is added to an existing experiment that
    lacks it (or carries another kind), so experiments created by older code, by
    ``mlflow.set_experiment`` or by Lightning's ``MLFlowLogger`` open on the runs table.
    """
    from mlflow.exceptions import MlflowException

    # under the lock: one process creates the experiment
    with _store_lock(client.tracking_uri):
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(
                    name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                    artifact_location=_artifact_location(client.tracking_uri, name))
            except MlflowException:  # created meanwhile by a process on another machine
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
    if exp.lifecycle_stage == "deleted":
        log.warning("MLflow experiment %r was deleted; restoring it", name)
        client.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def activate_experiment(cfg: Config) -> str | None:
    """Point MLflow's fluent API (``mlflow.start_run`` ...) at ``training.experiment``.

    Sets the tracking URI and the experiment (via :func:`ensure_experiment`, so it has
    the experiment-kind tag); returns its id, or None when tracking is off. Use it
    instead of ``mlflow.set_experiment(name)``, which creates the experiment untagged.
    """
    uri = tracking_store_uri(cfg)
    if not uri:
        return None
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp_id = ensure_experiment(mlflow_client(uri), cfg.training.experiment)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def create_stage_run(
    cfg: Config,
    stage: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    started_at: float | None = None,
) -> str | None:
    """Create (not end) an MLflow run for ``stage`` that starts at ``started_at``.

    ``started_at`` is ``time.time()`` taken when the stage began (None: now). The run
    has :func:`run_tags` plus ``tags``, MLflow's context tags (user, source) and the
    name ``run_name or stage``, in ``training.experiment`` (:func:`ensure_experiment`).
    Returns its id (None when tracking is off); end it with ``MlflowClient.set_terminated``
    or resume it with ``mlflow.start_run(run_id=...)`` and ``mlflow.end_run()``.
    """
    uri = tracking_store_uri(cfg)
    if not uri:
        log.info("MLflow tracking is off (empty tracking URI)")
        return None
    from mlflow.tracking.context.registry import resolve_tags

    client = mlflow_client(uri)
    exp_id = ensure_experiment(client, cfg.training.experiment)
    all_tags = {**run_tags(stage), **dict(tags or {})}
    run = client.create_run(exp_id, start_time=_ms(started_at), tags=resolve_tags(all_tags),
                            run_name=run_name or stage)
    return run.info.run_id


def lightning_logger(cfg: Config, stage: str = "train", run_name: str | None = None,
                     started_at: float | None = None):
    """An MLFlowLogger with an explicit tracking URI, flattened params and run tags.

    The run is created here (:func:`create_stage_run`) with ``start_time`` =
    ``started_at`` (``time.time()`` when the stage began; None: now) and handed to the
    logger by id; ``logger.finalize(...)`` ends it. Returns None when tracking is off
    (empty URI). Params are logged here, once, so Lightning's own hparams logging has
    nothing to add.
    """
    run_id = create_stage_run(cfg, stage, run_name=run_name, started_at=started_at)
    if run_id is None:
        return None
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name=cfg.training.experiment,
        run_name=run_name or stage,
        tracking_uri=tracking_store_uri(cfg),
        tags=run_tags(stage),
        save_dir=None,
        run_id=run_id,
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
    started_at: float | None = None,
) -> str | None:
    """Record one finished non-Lightning stage (evaluate) as an MLflow run.

    Logs flattened params, the finite numeric ``metrics`` and the ``artifacts`` files
    (plots under ``plots/``, other files at the root). ``started_at`` is ``time.time()``
    taken when the stage began: the run starts then and ends now, so its MLflow duration
    is the stage's wall time (None: the run spans only this call). Returns the run id,
    or None when tracking is off.
    """
    run_id = create_stage_run(cfg, stage, run_name=run_name, started_at=started_at)
    if run_id is None:
        return None
    from mlflow.entities import Metric, Param

    client = mlflow_client(tracking_store_uri(cfg))
    status = "FAILED"
    try:
        params = [Param(k, v) for k, v in flat_params(cfg).items()]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        now = _ms(None)
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
        client.set_terminated(run_id, status, end_time=_ms(None))
    log.info("MLflow run %s (%s) recorded at %s", run_id, stage, tracking_store_uri(cfg))
    return run_id


def track_trials(cfg: Config, objective: Callable[[Any], float], metric_name: str = "score",
                 stage: str = "sweep_trial", parent_run_id: str | None = None) -> Callable[[Any], float]:
    """``objective`` wrapped so that every Optuna trial is one MLflow run spanning the trial.

    The run opens when the trial starts, nested under ``parent_run_id`` (the sweep's
    parent run from :func:`create_stage_run`, shared by worker processes) or else under
    the active run, is
    named after the trial number and tagged :func:`run_tags` (``stage``) plus ``number``
    and ``state`` (COMPLETE, PRUNED or FAIL); it gets the trial's params, the objective's
    value as ``metric_name`` and the trial's numeric user attributes as metrics, and
    ends when the trial ends. It replaces optuna-integration's ``MLflowCallback``, which
    creates the run after the trial (a duration of milliseconds) and is deprecated.
    Call :func:`activate_experiment` first. Tracking off: ``objective`` unchanged.
    """
    if not tracking_store_uri(cfg):
        return objective

    def tracked(trial: Any) -> float:
        import mlflow
        import optuna

        mlflow.start_run(run_name=str(trial.number), nested=parent_run_id is None,
                         parent_run_id=parent_run_id,
                         tags={**run_tags(stage), "number": str(trial.number)})
        state, status = "FAIL", "FAILED"
        try:
            value = objective(trial)
            mlflow.log_metric(metric_name, float(value))
            state, status = "COMPLETE", "FINISHED"
            return value
        except optuna.TrialPruned:
            state, status = "PRUNED", "FINISHED"
            raise
        finally:
            try:
                mlflow.log_params({k: str(v) for k, v in trial.params.items()})
                attrs = {k: float(v) for k, v in trial.user_attrs.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(float(v))}
                if attrs:
                    mlflow.log_metrics(attrs)
                mlflow.set_tag("state", state)
            finally:
                mlflow.end_run(status)

    return tracked


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
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "activate_experiment",
    "create_stage_run",
    "ensure_experiment",
    "flat_params",
    "flatten_metrics",
    "git_commit",
    "lightning_logger",
    "log_artifacts",
    "log_stage_run",
    "mlflow_client",
    "resolve_tracking_uri",
    "run_tags",
    "track_trials",
    "tracking_root",
    "tracking_store_uri",
]
