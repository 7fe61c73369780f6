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
