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

    # from scratch (fresh storage) with the same params: identical reports
    cfg2 = demo_cfg(TINY + [f"sweep.storage=sqlite:///{tmp_path / 'fresh.db'}",
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
