"""DVC stage ``sweep``: an Optuna study over the loss weights (``sweep.space``).

TPE sampler seeded by ``seed``, median pruner, ``sweep.n_trials`` trials of
``sweep.max_epochs`` epochs each (see :mod:`rna_predict.sweep.objective` for the score),
run by ``sweep.workers`` processes (and any other ``rna-predict sweep`` started on the
same study, which joins it); one worker runs them in sequence and reproduces byte for
byte. The study lives in ``sweep.storage`` (:func:`open_storage`: an Optuna journal file
under the ignored ``.optuna/`` by default, an SQLite file, or any RDB URL for workers on
several machines), named after ``sweep.study_name``
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
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

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
    from rna_predict.data.split_files import read_split_ids

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


#: study user attribute naming the live session (MLflow parent run, first worker, worker count)
SESSION_ATTR = "sweep_session"
#: trial user attribute naming the worker (``host:pid``) running the trial
WORKER_ATTR = "worker"
#: seconds between polls while the first worker waits for the other workers' trials
POLL_S = 2.0


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def open_storage(url: str):
    """``sweep.storage`` -> an Optuna storage safe for several processes, and a lock path.

    - a path (no ``://``): Optuna's journal file (``JournalStorage`` over
      ``JournalFileBackend``, appends under a file lock), the default on one machine;
    - ``sqlite:///file``: ``RDBStorage`` with SQLite's busy ``timeout`` at 60 s, so
      concurrent writers wait for the database lock instead of failing;
    - any other RDB URL (``postgresql://``, ``mysql://``): ``RDBStorage`` with heartbeats
      (a trial whose worker stops beating for 180 s is failed), for workers on several
      machines.

    The lock path serialises "count the trials, reserve one" between workers
    (:func:`_reserve_trial`): ``<file>.reserve.lock`` for file storages (not
    ``<file>.lock``, the journal backend's own symlink lock), under ``.optuna/`` (this
    machine only) for a server.
    """
    import optuna

    sqlite = _sqlite_path(url)
    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.journal.JournalStorage(backend), path.with_name(path.name + ".reserve.lock")
    if sqlite is not None:
        sqlite.parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return storage, sqlite.with_name(sqlite.name + ".reserve.lock")
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    lock = Path(".optuna") / (hashlib.sha256(url.encode()).hexdigest()[:12] + ".reserve.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    return storage, lock


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (``fcntl.flock``) on ``path``; released if the process dies."""
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str | None) -> bool:
    """False only for a worker on this host whose process is gone (others: assume alive)."""
    if not worker or ":" not in worker:
        return True
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _counted(study: Any) -> list[Any]:
    """Trials that use the budget: finished or pruned, running, or reserved (waiting)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                    TrialState.RUNNING, TrialState.WAITING))


def _reserve_trial(study: Any, n_trials: int, lock: Path) -> bool:
    """Under ``lock``: if fewer than ``n_trials`` trials are complete, pruned, running or
    reserved, reserve one (``enqueue_trial({})``: a WAITING trial with no fixed parameter,
    which the next ``study.optimize`` pops atomically and the sampler fills in) and return
    True; else False. Counting and reserving under one lock makes the budget exact however
    many workers share the study (on one machine; on several, per machine)."""
    with _locked(lock):
        if len(_counted(study)) >= n_trials:
            return False
        study.enqueue_trial({})
        return True


def _fail_dead_trials(study: Any, storage: Any, everyone: bool) -> int:
    """Mark as FAIL the RUNNING/WAITING trials of workers that are gone (``everyone``:
    all of them, used when no session is live, i.e. they are left over from a crash)."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if everyone or (t.state == TrialState.RUNNING and not _alive(t.user_attrs.get(WORKER_ATTR))):
            try:
                storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
                n += 1
            except Exception:  # finished meanwhile  # noqa: BLE001
                continue
    if n:
        log.warning("sweep: marked %d trial(s) of stopped workers as FAIL", n)
    return n


def _make_study(cfg: Config, name: str, storage: Any, worker: int):
    import optuna

    return optuna.create_study(
        study_name=name, storage=storage, direction="minimize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed + worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )


def _run_worker(cfg: Config, name: str, worker: int, parent_run_id: str | None) -> int:
    """One worker: reserve and run trials until the study holds ``sweep.n_trials``.

    Worker ``i`` seeds its TPE sampler with ``seed + i`` (worker 0 is the seeded
    single-worker sweep; the others must not propose the same weights). Each trial is an
    MLflow run nested under ``parent_run_id``. Returns the number of trials run here.
    """
    import optuna

    from rna_predict.sweep.objective import run_trial
    from rna_predict.tracking import activate_experiment, track_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, lock = open_storage(cfg.sweep.storage)
    study = _make_study(cfg, name, storage, worker)
    work_root = Path(".optuna") / name
    me = _worker_id()

    def body(trial: Any) -> float:
        trial.set_user_attr(WORKER_ATTR, me)
        return run_trial(trial, cfg, work_root)

    if activate_experiment(cfg) is not None:
        body = track_trials(cfg, body, parent_run_id=parent_run_id)
    done = 0
    while _reserve_trial(study, int(cfg.sweep.n_trials), lock):
        study.optimize(body, n_trials=1, gc_after_trial=True)
        done += 1
    log.info("sweep: worker %d (%s) ran %d trial(s)", worker, me, done)
    return done


def _spawned_worker(cfg: Config, name: str, worker: int, parent_run_id: str | None) -> None:
    """Entry point of a worker process started by ``sweep.workers`` (multiprocessing spawn)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _run_worker(cfg, name, worker, parent_run_id)


def _join_or_start_session(cfg: Config, study: Any, storage: Any, lock: Path, name: str,
                           started_at: float) -> tuple[bool, int, str | None]:
    """Under ``lock``: join the live session of this study (a worker started by
    ``sweep.workers`` or another ``rna-predict sweep``), or start one.

    A session is the study user attribute :data:`SESSION_ATTR` ``{parent_run, worker,
    workers}``, live while its first worker's process is (:func:`_alive`). Starting one
    fails the trials a crashed session left RUNNING or WAITING and creates the MLflow
    parent run (when there are trials to run). Returns (first worker?, worker index,
    parent run id).
    """
    from rna_predict.tracking import activate_experiment, create_stage_run

    with _locked(lock):
        session = study.user_attrs.get(SESSION_ATTR)
        if session and _alive(session.get("worker")):
            index = int(session["workers"])
            study.set_user_attr(SESSION_ATTR, {**session, "workers": index + 1})
            return False, index, session.get("parent_run")
        _fail_dead_trials(study, storage, everyone=True)
        remaining = int(cfg.sweep.n_trials) - len(_counted(study))
        parent = None
        if remaining > 0 and activate_experiment(cfg) is not None:
            parent = create_stage_run(cfg, "sweep", run_name=name, tags={"study": name},
                                      started_at=started_at)
        study.set_user_attr(SESSION_ATTR, {"parent_run": parent, "worker": _worker_id(), "workers": 1})
        return True, 0, parent


def run_sweep(cfg: Config) -> Path:
    """Run (or resume, or join) the study; write the reports; return the trials.csv path.

    The first worker of a session starts ``sweep.workers - 1`` more worker processes,
    runs trials itself, waits until every trial of the study has ended, then writes the
    reports and ends the MLflow parent run. Another ``rna-predict sweep`` started on the
    same study meanwhile joins the session: it runs trials under the same budget and
    parent run and leaves the reports to the first worker.
    """
    import multiprocessing
    import time

    import optuna

    from rna_predict.sweep.report import write_reports

    started_at = time.time()  # the parent MLflow run spans the whole stage
    s = cfg.sweep
    if int(s.workers) < 1:
        raise ValueError(f"sweep.workers must be >= 1, got {s.workers}")
    name = f"{s.study_name}-{study_key(cfg)}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, lock = open_storage(s.storage)
    study = _make_study(cfg, name, storage, 0)
    first, index, parent = _join_or_start_session(cfg, study, storage, lock, name, started_at)
    finished = [t for t in study.trials if t.state.is_finished()]
    log.info("sweep: study %s, %d finished trial(s), budget %d, %s worker %d", name, len(finished),
             s.n_trials, "first" if first else "joining as", index)
    if not first:
        _run_worker(cfg, name, index, parent)
        log.info("sweep: joined session done; its first worker writes the reports")
        return Path(s.out_dir) / "trials.csv"

    status = "FAILED"
    procs = []
    try:
        if parent is not None:
            from mlflow.entities import Param

            from rna_predict.tracking import mlflow_client, tracking_store_uri

            mlflow_client(tracking_store_uri(cfg)).log_batch(
                parent, params=[Param(f"sweep.{k}", str(v)) for k, v in asdict(s).items()])
        if len(_counted(study)) < int(s.n_trials):
            ctx = multiprocessing.get_context("spawn")
            for i in range(1, int(s.workers)):
                with _locked(lock):
                    session = study.user_attrs[SESSION_ATTR]
                    study.set_user_attr(SESSION_ATTR, {**session, "workers": session["workers"] + 1})
                    worker = session["workers"]
                proc = ctx.Process(target=_spawned_worker, args=(cfg, name, worker, parent),
                                   name=f"sweep-worker-{worker}")
                proc.start()
                procs.append(proc)
            _run_worker(cfg, name, 0, parent)
        for proc in procs:
            proc.join()
        failed = [p.name for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"sweep: worker process(es) {', '.join(failed)} failed")
        # trials of workers that joined from outside: wait for them (or their death)
        from optuna.trial import TrialState

        while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if isinstance(storage, optuna.storages.RDBStorage) and storage.is_heartbeat_enabled():
                optuna.storages.fail_stale_trials(study)
            _fail_dead_trials(study, storage, everyone=False)
            time.sleep(POLL_S)
        status = "FINISHED"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
        with _locked(lock):
            study.set_user_attr(SESSION_ATTR, None)
        if parent is not None:
            from rna_predict.tracking import mlflow_client, tracking_store_uri

            mlflow_client(tracking_store_uri(cfg)).set_terminated(parent, status)
    trials_csv = write_reports(study, cfg)
    log.info("sweep: wrote %s", trials_csv)
    return trials_csv
