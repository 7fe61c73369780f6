"""Queued DVC experiments and concurrent MLflow writers land in the one tracking store.

``dvc exp run --queue`` runs each experiment in a temporary copy of the repository; the
stages resolve the relative ``sqlite:///mlflow.db`` against ``$DVC_ROOT`` (the user's
repository), so both runs reach the user's ``mlflow.db``, written concurrently.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from dvc_clone import TINY_TRAIN, clone_with_data, dvc, env

WRITER = """
import sys, time
from pathlib import Path
from rna_predict.config import Config
from rna_predict.tracking import log_stage_run
cfg = Config()
cfg.training.tracking_uri = sys.argv[1]
go = Path(sys.argv[2])
Path(f"{go}.{sys.argv[4]}").touch()  # imported and ready
while not go.exists():
    time.sleep(0.005)
for i in range(int(sys.argv[3])):
    log_stage_run(cfg, "evaluate", {"i": float(i)}, run_name=f"{sys.argv[4]}-{i}")
"""


def test_concurrent_writers_to_a_fresh_sqlite_store(tmp_path):
    """Two processes create the store and log runs at the same moment: none fails."""
    db, go = tmp_path / "mlflow.db", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"sqlite:///{db}", str(go), "8", name],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    deadline = time.time() + 300
    while not all(Path(f"{go}.{n}").exists() for n in "ab"):  # both started: release them together
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    rows = sqlite3.connect(db).execute("select name, status from runs").fetchall()
    assert sorted(n for n, _ in rows) == sorted(f"{w}-{i}" for w in "ab" for i in range(8))
    assert {s for _, s in rows} == {"FINISHED"}


def test_relative_sqlite_uri_resolves_against_dvc_root(tmp_path, monkeypatch):
    from rna_predict.config import Config
    from rna_predict.tracking import tracking_store_uri

    cfg = Config()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_store_uri(cfg) == f"sqlite:///{tmp_path}/mlflow.db?timeout=60"
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.chdir(tmp_path)
    assert tracking_store_uri(cfg) == f"sqlite:///{tmp_path}/mlflow.db?timeout=60"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/x.db?timeout=5")
    assert tracking_store_uri(cfg) == "sqlite:////abs/x.db?timeout=5"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.org:5000")
    assert tracking_store_uri(cfg) == "http://mlflow.example.org:5000"


def _queue_done(repo: Path) -> dict[str, str]:
    """Experiment name -> status from ``dvc queue status`` (table rows)."""
    out = dvc("queue", "status", cwd=repo)
    states = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        status = [p for p in parts if p in ("Queued", "Running", "Success", "Failed")]
        if len(parts) >= 3 and status:
            states[parts[1]] = status[0]
    return states


def test_two_queued_experiments_reach_dvc_and_mlflow(tmp_path):
    repo = clone_with_data(tmp_path / "repo")
    overrides = [a for o in TINY_TRAIN for a in ("-S", o)]
    for _ in range(2):
        dvc("exp", "run", "--queue", "train", "-S", "training.w_angle=0.2", *overrides, cwd=repo)
    dvc("queue", "start", "-j", "2", cwd=repo)
    try:
        deadline = time.time() + 600
        while True:
            states = _queue_done(repo)
            if len(states) == 2 and all(s in ("Success", "Failed") for s in states.values()):
                break
            assert time.time() < deadline, states
            time.sleep(3)
    finally:
        dvc("queue", "stop", "--kill", cwd=repo)
    assert sorted(states.values()) == ["Success", "Success"], (states, dvc("queue", "logs", next(iter(states)), cwd=repo))

    shown = json.loads(dvc("exp", "show", "--json", cwd=repo))
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or [])}
    names = set(states)
    assert names <= set(exps), (names, list(exps))
    for name in names:
        (exp_rev,) = exps[name]["revs"]
        params = exp_rev["data"]["params"]["params.yaml"]["data"]
        assert params["training"]["w_angle"] == 0.2 and params["training"]["max_steps"] == 2
        assert "reports/train/metrics.json" in exp_rev["data"]["metrics"]

    # both runs in the repository's mlflow.db (the temporary copies are gone)
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("tmp*/mlflow.db"))
    db = sqlite3.connect(repo / "mlflow.db")
    runs = db.execute(
        "select r.run_uuid, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
        "and t.key = 'dvc_exp_name' join tags s on s.run_uuid = r.run_uuid "
        "and s.key = 'stage' and s.value = 'train' where r.status = 'FINISHED'").fetchall()
    assert sorted(v for _, v in runs) == sorted(names)
    (location,) = db.execute("select artifact_location from experiments where name = 'rna-predict'").fetchone()
    assert location.startswith((repo / "mlruns").as_uri()), location
    assert os.path.isdir(repo / "mlruns")
