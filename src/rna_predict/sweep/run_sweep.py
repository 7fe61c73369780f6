"""DVC stage ``sweep``: an Optuna study over the loss weights (``sweep.space``).

TPE sampler seeded by ``seed``, median pruner, ``sweep.n_trials`` sequential trials of
``sweep.max_epochs`` epochs each (see :mod:`rna_predict.sweep.objective` for the score).
The study lives in ``sweep.storage`` (an SQLite file under the ignored ``.optuna/`` by
default; any RDB URL works for distributed workers), named after ``sweep.study_name``
plus a hash of everything that shapes a trial, so a re-run with the same parameters
resumes the same study and a changed parameter starts a new one. Every trial is an
MLflow run nested under one parent run per study (optuna-integration's
``MLflowCallback``).

Writes ``reports/sweep/trials.csv``, ``best_params.yaml`` and ``score.png``; no
timestamps.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from rna_predict.config import Config

log = logging.getLogger(__name__)


def study_key(cfg: Config) -> str:
    """Short hash of the settings that shape trials (not output paths or tracking)."""
    shaping = {
        "seed": cfg.seed, "model": asdict(cfg.model),
        "training": {k: v for k, v in asdict(cfg.training).items()
                     if k not in ("checkpoint_dir", "out_dir", "report_dir", "tracking_uri", "experiment")},
        "sweep": {k: v for k, v in asdict(cfg.sweep).items() if k not in ("storage", "out_dir")},
        "split": asdict(cfg.split),
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _storage(url: str):
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def run_sweep(cfg: Config) -> Path:
    """Run (or resume) the study; write the reports; return the trials.csv path."""
    import mlflow
    import optuna
    from optuna_integration import MLflowCallback

    from rna_predict.sweep.objective import run_trial
    from rna_predict.sweep.report import write_reports
    from rna_predict.train.tracking import resolve_tracking_uri, run_tags

    s = cfg.sweep
    name = f"{s.study_name}-{study_key(cfg)}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=_storage(s.storage), direction="minimize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    finished = [t for t in study.trials if t.state.is_finished()]
    remaining = max(int(s.n_trials) - len(finished), 0)
    log.info("sweep: study %s, %d finished trial(s), %d to run", name, len(finished), remaining)
    work_root = Path(".optuna") / name

    uri = resolve_tracking_uri(cfg)
    callbacks = []
    if uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(cfg.training.experiment)
    if remaining:
        parent = mlflow.start_run(run_name=name, tags={**run_tags("sweep"), "study": name}) if uri else None
        try:
            if parent is not None:
                mlflow.log_params({f"sweep.{k}": str(v) for k, v in asdict(s).items()})
                callbacks.append(MLflowCallback(tracking_uri=uri, metric_name="score",
                                                create_experiment=False,
                                                mlflow_kwargs={"nested": True, "tags": run_tags("sweep_trial")}))
            study.optimize(lambda trial: run_trial(trial, cfg, work_root), n_trials=remaining,
                           callbacks=callbacks, gc_after_trial=True)
        finally:
            if parent is not None:
                mlflow.end_run()
    trials_csv = write_reports(study, cfg)
    log.info("sweep: wrote %s", trials_csv)
    return trials_csv
