"""DVC stage ``sweep``: an Optuna study over the loss weights (``sweep.space``).

TPE sampler seeded by ``seed``, median pruner, ``sweep.n_trials`` sequential trials of
``sweep.max_epochs`` epochs each (see :mod:`rna_predict.sweep.objective` for the score).
The study lives in ``sweep.storage`` (an SQLite file under the ignored ``.optuna/`` by
default; any RDB URL works for distributed workers), named after ``sweep.study_name``
plus a hash of everything that shapes a trial (:func:`study_key`: the parameters, the
data the trials read and the source code they run), so a re-run with the same
parameters, data and code resumes the same study, and a changed parameter, split, record
or module starts a new one instead of reusing stale trials. Every trial is an
MLflow run nested under one parent run per study, each spanning its trial
(:func:`rna_predict.tracking.track_trials`).

Writes ``reports/sweep/trials.csv``, ``best_params.yaml`` and ``score.png``; no
timestamps.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from rna_predict.config import Config

log = logging.getLogger(__name__)

#: the package directory (``src/rna_predict``)
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: the module whose import closure a sweep (and every trial) runs
ENTRY = "rna_predict.sweep.run_sweep"


def _module_file(src: Path, module: str) -> Path | None:
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _import_nodes(tree: ast.AST):
    """Every ``Import``/``ImportFrom`` statement anywhere in ``tree`` (function bodies, ``if``,
    ``try``... included); only statement lists are searched, imports being statements."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo += [c for c in getattr(node, field, None) or [] if isinstance(c, ast.AST)]


def code_files(package_dir: str | Path | None = None, entry: str = ENTRY) -> list[Path]:
    """Source files of ``entry``'s import closure inside the package, sorted.

    Static (:mod:`ast`): every ``import``/``from ... import`` anywhere in a module counts
    (lazy imports inside functions too), relative imports are resolved, the
    ``__init__.py`` of each package on the way is included, and ``from pkg import name``
    counts as importing the submodule ``pkg.name`` when there is one.
    """
    pkg = Path(package_dir or PACKAGE_DIR).resolve()
    src, top = pkg.parent, pkg.name

    def with_parents(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[: i + 1]) for i in range(len(parts))]

    seen: dict[str, Path] = {}
    missing: set[str] = set()
    todo = with_parents(entry)
    while todo:
        module = todo.pop()
        if module in seen or module in missing:
            continue
        path = _module_file(src, module)
        if path is None:  # a name imported from a module, not a submodule
            missing.add(module)
            continue
        seen[module] = path
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]
            for name in names:
                if name == top or name.startswith(top + "."):
                    todo += with_parents(name)
    return sorted(seen.values())


def code_digest(package_dir: str | Path | None = None, entry: str = ENTRY) -> str:
    """sha256 over the package-relative paths and contents of :func:`code_files`."""
    pkg = Path(package_dir or PACKAGE_DIR).resolve()
    h = hashlib.sha256()
    for path in code_files(pkg, entry):
        h.update(f"{path.relative_to(pkg).as_posix()}\0".encode())
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def data_digest(cfg: Config) -> str:
    """sha256 over the data the trials read: every ``<split dir>/*.csv`` and the angle and
    feature records (``<id>.pt``) of the train and validation ids, in sorted order
    (a missing record hashes as ``-``). Raises FileNotFoundError without train/val splits."""
    from rna_predict.data.atomic import sha256_file
    from rna_predict.data.split import read_split_ids

    split_dir = Path(cfg.split.out_dir)
    ids = sorted(set(read_split_ids(split_dir, "train")) | set(read_split_ids(split_dir, "val")))
    h = hashlib.sha256()
    for path in sorted(split_dir.glob("*.csv")):
        h.update(f"splits/{path.name}:{sha256_file(path)};".encode())
    for tag, folder in (("angles", cfg.angles.out_dir), ("features", cfg.features.out_dir)):
        for rid in ids:
            path = Path(folder) / f"{rid}.pt"
            h.update(f"{tag}/{rid}.pt:{sha256_file(path) if path.is_file() else '-'};".encode())
    return h.hexdigest()


def study_key(cfg: Config, package_dir: str | Path | None = None) -> str:
    """Short hash of what shapes trials: the settings (not output paths or tracking), the
    data they read (:func:`data_digest`) and the code they run (:func:`code_digest`)."""
    shaping = {
        "seed": cfg.seed, "model": asdict(cfg.model),
        "training": {k: v for k, v in asdict(cfg.training).items()
                     if k not in ("checkpoint_dir", "out_dir", "report_dir", "tracking_uri", "experiment")},
        "sweep": {k: v for k, v in asdict(cfg.sweep).items() if k not in ("storage", "out_dir")},
        "split": asdict(cfg.split),
        "data": data_digest(cfg),
        "code": code_digest(package_dir),
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _storage(url: str):
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def run_sweep(cfg: Config) -> Path:
    """Run (or resume) the study; write the reports; return the trials.csv path."""
    import time

    import mlflow
    import optuna

    from rna_predict.sweep.objective import run_trial
    from rna_predict.sweep.report import write_reports
    from rna_predict.tracking import activate_experiment, create_stage_run, track_trials

    started_at = time.time()  # the parent MLflow run spans the whole stage
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

    tracking = activate_experiment(cfg) is not None  # tags the experiment kind; None: off
    if remaining:
        run_id = create_stage_run(cfg, "sweep", run_name=name, tags={"study": name},
                                  started_at=started_at) if tracking else None
        parent = mlflow.start_run(run_id=run_id) if run_id else None
        try:
            if parent is not None:
                mlflow.log_params({f"sweep.{k}": str(v) for k, v in asdict(s).items()})
            objective = track_trials(cfg, lambda trial: run_trial(trial, cfg, work_root))
            study.optimize(objective, n_trials=remaining, gc_after_trial=True)
        finally:
            if parent is not None:
                mlflow.end_run()
    trials_csv = write_reports(study, cfg)
    log.info("sweep: wrote %s", trials_csv)
    return trials_csv
