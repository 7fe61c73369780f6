"""Stage `sweep`: seeded Optuna study over the loss weights, reproducible reports, MLflow nesting."""

from __future__ import annotations

import csv

import yaml

TINY = [
    "model.c_s=16", "model.c_z=8", "model.c_token=16", "model.c_atom=8", "model.c_atompair=4",
    "model.pairformer_blocks=1", "model.diffusion_blocks=1", "model.torsion_layers=1",
    "training.crop=16", "training.noise_copies=1", "training.batch_size=4",
    "sweep.n_trials=3", "sweep.max_epochs=1", "sweep.eval_steps=4", "sweep.eval_samples=1",
]


def _run(cfg):
    from rna_predict.sweep.run_sweep import run_sweep

    return run_sweep(cfg)


def test_sweep_reproduces_and_nests_trials_in_mlflow(demo_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # trial work dirs go under ./.optuna
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = demo_cfg(TINY)
    trials = _run(cfg)
    rows = list(csv.DictReader(open(trials)))
    assert len(rows) == 3
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    for r in rows:
        assert 0.1 <= float(r["training.w_angle"]) <= 2.0
        assert 0.1 <= float(r["training.w_diffusion"]) <= 2.0
        if r["state"] == "COMPLETE":
            lddt = float(r["val_lddt_c1"])
            assert 0.0 <= lddt <= 1.0
            assert abs(float(r["score"]) - ((1 - lddt) + 1e-3 * float(r["val_mcq"]) / 180)) < 1e-5
    best = yaml.safe_load(open(trials.parent / "best_params.yaml"))
    assert best["n_trials"] == 3 and set(best["params"]) == {"training.w_angle", "training.w_diffusion"}
    assert (trials.parent / "score.png").read_bytes()[:4] == b"\x89PNG"
    first = {p: (trials.parent / p).read_bytes() for p in ("trials.csv", "best_params.yaml")}

    # from scratch (fresh storage, a journal file this time) with the same params: identical reports
    cfg2 = demo_cfg(TINY + [f"sweep.storage={tmp_path / 'fresh.journal'}",
                            f"sweep.out_dir={tmp_path / 'again'}"])
    again = _run(cfg2).parent
    for name, data in first.items():
        assert (again / name).read_bytes() == data, name

    # MLflow: one parent run per sweep, one nested child per trial
    import mlflow

    client = mlflow.MlflowClient(cfg.training.tracking_uri)
    exp = client.get_experiment_by_name(cfg.training.experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert len(parents) == 2
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 3
        assert all("w_angle" in c.data.params for c in children)


# --- study key: a changed dataset or code never reloads old trials (unit level, no trials run)

def test_reserved_trials_sample_like_plain_optimize(tmp_path):
    """One worker's reserve-then-optimize loop proposes, prunes and scores exactly what a
    plain ``study.optimize(n_trials)`` does (TPE past its 10 random start-up trials)."""
    import math

    import optuna

    from rna_predict.sweep.run_sweep import _reserve_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        x = trial.suggest_float("w_angle", 0.1, 2.0, log=True)
        y = trial.suggest_float("w_diffusion", 0.1, 2.0, log=True)
        for step in range(3):
            trial.report(math.log(x) ** 2 + (y - 0.5) ** 2 + 0.1 / (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return math.log(x) ** 2 + (y - 0.5) ** 2

    def study():
        return optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0),
                                   pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))

    plain = study()
    plain.optimize(objective, n_trials=14)
    looped = study()
    while _reserve_trial(looped, 14, tmp_path / "lock"):
        looped.optimize(objective, n_trials=1)
    assert [(t.state, t.params, t.value) for t in looped.trials] == [
        (t.state, t.params, t.value) for t in plain.trials]
    assert {t.state.name for t in plain.trials} == {"COMPLETE", "PRUNED"}


def test_two_workers_share_one_study(demo_cfg, tmp_path, monkeypatch):
    """sweep.workers=2: two processes, one journal-file study, exactly n_trials trials."""
    import optuna

    from rna_predict.sweep.run_sweep import WORKER_ATTR, open_storage

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    n = 4
    cfg = demo_cfg([o for o in TINY if not o.startswith("sweep.n_trials")]
                   + [f"sweep.n_trials={n}", "sweep.workers=2", f"sweep.storage={tmp_path / 'study.journal'}"])
    trials = _run(cfg)

    rows = list(csv.DictReader(open(trials)))
    assert [r["number"] for r in rows] == [str(i) for i in range(n)]
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    weights = {(r["training.w_angle"], r["training.w_diffusion"]) for r in rows}
    assert len(weights) == n  # the workers' samplers are seeded apart: no trial proposed twice
    best = yaml.safe_load(open(trials.parent / "best_params.yaml"))
    assert best["n_trials"] == n and best["best_trial"] in range(n)
    assert sorted(p.name for p in (tmp_path / "reports/sweep").iterdir()) == [
        "best_params.yaml", "score.png", "trials.csv"]

    # the study itself: n trials, none left running or failed, run by two processes
    storage, _ = open_storage(cfg.sweep.storage)
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(study.trials) == n
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    workers = {t.user_attrs[WORKER_ATTR] for t in study.trials}
    assert len(workers) == 2, workers
    # each trial trained once, in its own work dir
    assert sorted(p.name for p in (tmp_path / ".optuna" / summary.study_name).iterdir()) == [
        f"trial_{i:03d}" for i in range(n)]

    # MLflow: one parent run, one child per trial (numbers 0..n-1 once each), all ended
    import mlflow

    client = mlflow.MlflowClient(cfg.training.tracking_uri)
    exp = client.get_experiment_by_name(cfg.training.experiment)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(c.data.tags["number"]) for c in children) == list(range(n))
    assert all(c.info.status == "FINISHED" for c in children)
    assert len(runs) == n + 1


def _key_fixture(tmp_path):
    """A Config over tiny split/record files under tmp_path and a copy of the package."""
    import shutil
    from pathlib import Path

    from rna_predict.config import AnglesConfig, Config, FeaturesConfig, SplitConfig
    from rna_predict.sweep.run_sweep import PACKAGE_DIR

    splits = {"train": ["1AAA", "2BBB"], "val": ["3CCC"], "test": ["4DDD"]}
    for folder in ("splits", "angles", "features"):
        (tmp_path / folder).mkdir()
    for name, ids in splits.items():
        (tmp_path / "splits" / f"{name}.csv").write_text("id\n" + "".join(f"{i}\n" for i in ids))
        for rid in ids:
            (tmp_path / "angles" / f"{rid}.pt").write_bytes(f"angles {rid}".encode())
            (tmp_path / "features" / f"{rid}.pt").write_bytes(f"features {rid}".encode())
    pkg = tmp_path / "src" / "rna_predict"
    shutil.copytree(PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cfg = Config(split=SplitConfig(out_dir=str(tmp_path / "splits")),
                 angles=AnglesConfig(out_dir=str(tmp_path / "angles")),
                 features=FeaturesConfig(out_dir=str(tmp_path / "features")))
    return cfg, Path(pkg)


def test_study_key_follows_data_and_code(tmp_path):
    from rna_predict.sweep.run_sweep import study_key

    cfg, pkg = _key_fixture(tmp_path)
    key = study_key(cfg, pkg)
    assert study_key(cfg, pkg) == key

    def changed(path, data: bytes) -> bool:
        """Does the key differ with ``path`` holding ``data``? (the file is restored after)"""
        old = path.read_bytes()
        path.write_bytes(data)
        try:
            return study_key(cfg, pkg) != key
        finally:
            path.write_bytes(old)

    # data the trials read: train/val records, the split files
    assert changed(tmp_path / "angles" / "1AAA.pt", b"other angles")
    assert changed(tmp_path / "features" / "3CCC.pt", b"other features")
    assert changed(tmp_path / "splits" / "val.csv", b"id\n3CCC\n2BBB\n")
    assert changed(tmp_path / "splits" / "test.csv", b"id\n4DDD\n9ZZZ\n")
    # code in the sweep's import closure (a lazy import of train/evaluate/model modules)
    assert changed(pkg / "model" / "alignment.py", (pkg / "model" / "alignment.py").read_bytes() + b"# x\n")
    assert changed(pkg / "train" / "run_train.py", (pkg / "train" / "run_train.py").read_bytes() + b"# x\n")
    assert changed(pkg / "sweep" / "objective.py", (pkg / "sweep" / "objective.py").read_bytes() + b"# x\n")
    # not read by trials: a test-only record, code outside the closure, byte-code caches
    assert not changed(tmp_path / "angles" / "4DDD.pt", b"other test record")
    assert not changed(pkg / "data" / "fetch.py", (pkg / "data" / "fetch.py").read_bytes() + b"# x\n")
    assert not changed(pkg / "cli.py", (pkg / "cli.py").read_bytes() + b"# x\n")
    assert study_key(cfg, pkg) == key  # every file restored: the same study again
    (pkg / "model" / "__pycache__").mkdir(exist_ok=True)
    (pkg / "model" / "__pycache__" / "alignment.cpython-312.pyc").write_bytes(b"junk")
    assert study_key(cfg, pkg) == key
    # parameters still count; output paths and storage do not
    cfg.training.w_angle = 0.5
    assert study_key(cfg, pkg) != key
    cfg.training.w_angle = 1.0
    cfg.sweep.storage = "sqlite:///elsewhere.db"
    cfg.sweep.out_dir = str(tmp_path / "elsewhere")
    assert study_key(cfg, pkg) == key


def test_study_key_code_files_are_the_sweep_import_closure():
    """run_sweep's runtime closure equals the one the dvc.yaml deps test derives."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from import_graph import REPO, closure_files, module_closure

    from rna_predict.sweep.run_sweep import ENTRY, PACKAGE_DIR, code_files

    expected = [f for f in closure_files(module_closure([ENTRY])) if f.endswith(".py")]
    assert [p.relative_to(REPO).as_posix() for p in code_files()] == expected
    assert PACKAGE_DIR == REPO / "src" / "rna_predict"
