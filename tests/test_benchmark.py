"""`rna-predict benchmark` on demo natives: end to end, leakage guard, and the same numbers
as `evaluate` when given the test split's natives."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from rna_predict.cli import main

from conftest import TINY_MODEL_OVERRIDES

TINY = [
    *TINY_MODEL_OVERRIDES, "eval.samples=2", "eval.steps=2", "eval.refine_steps=5",
    "eval.bootstrap_samples=300",
]


def test_benchmark_reproduces_evaluate_and_guards_leakage(demo_cfg, demo_raw_dir, tmp_path,
                                                          monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    from rna_predict.data.split import read_split_ids
    from rna_predict.evaluate.benchmark import run_benchmark
    from rna_predict.evaluate.run_evaluate import run_evaluate
    from rna_predict.model.rna_model import RNAModel
    from rna_predict.tracking import flatten_metrics
    from rna_predict.train.run_train import save_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = demo_cfg(TINY)
    torch.manual_seed(0)
    save_model(RNAModel(cfg.model), cfg.model, cfg.training.out_dir)
    test_ids = read_split_ids(cfg.split.out_dir, "test")
    train_id = read_split_ids(cfg.split.out_dir, "train")[0]
    natives = tmp_path / "natives"
    natives.mkdir()
    for rid in [*test_ids, train_id]:
        shutil.copy(demo_raw_dir / f"{rid}.pdb", natives / f"{rid}.pdb")
    (natives / "notes.txt").write_text("not a structure")

    metrics = json.loads(run_evaluate(cfg).read_text())
    path = run_benchmark(cfg, natives, tmp_path / "bench")
    summary = json.loads(path.read_text())
    # the training record is 100% identical to itself: flagged and left out of the summary
    leak = summary["leakage"]
    assert leak["identity_to_train"][train_id] == 1.0
    assert all(leak["identity_to_train"][r] <= cfg.split.max_identity for r in test_ids)
    # the real highest identity (every training sequence aligned), not a prefilter's 0
    assert all(0.3 < leak["identity_to_train"][r] for r in test_ids), leak["identity_to_train"]
    assert leak["similar"] == leak["excluded"] == [train_id]
    # what is left is the test split: evaluate's numbers, bootstrap intervals included
    for key in ("n_targets", "targets", "samples", "steps", "refine_steps", "baseline_mean_torsion",
                "baseline_aform", "geometry_fit_overlap"):
        assert summary[key] == metrics[key], key
    assert summary["model"]["angle_mae"] == metrics["model"]["angle_mae"]
    assert summary["model"]["mcq"] == metrics["model"]["mcq"]
    # sampled structures agree to float round-off of the CPU kernels (another target is
    # sampled in between here): 1e-3 relative
    for key in ("model", "comparisons"):
        got, want = flatten_metrics(summary[key]), flatten_metrics(metrics[key])
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-3, abs=1e-3), (key, k)
    assert summary["n_targets"] == len(test_ids) == 2

    out = tmp_path / "bench"
    with open(out / "per_target.csv") as fh:
        bench_rows = {r["id"]: r for r in csv.DictReader(fh)}
    with open(tmp_path / "reports/eval/per_target.csv") as fh:
        eval_rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert sorted(bench_rows) == sorted([*test_ids, train_id])
    for rid, row in eval_rows.items():
        for k, v in row.items():
            if k.startswith(("model_mae", "model_mcq", "mean_torsion", "aform", "id", "length")):
                assert bench_rows[rid][k] == v, (rid, k)
            else:
                assert float(bench_rows[rid][k]) == pytest.approx(float(v), rel=1e-3, abs=1e-3)
    assert bench_rows[train_id]["similar"] == "1" and bench_rows[test_ids[0]]["similar"] == "0"
    for png in ("tm_per_target.png", "tm_vs_length.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdbs = sorted(p.name for p in (out / "structures").iterdir())
    assert pdbs == sorted(f"{i}_s{k}.pdb" for i in [*test_ids, train_id] for k in (1, 2))
    assert str(tmp_path) not in path.read_text() + (out / "per_target.csv").read_text()

    client = MlflowClient(tracking_uri=cfg.training.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.training.experiment).experiment_id])
    bench = [r for r in runs if r.data.tags.get("stage") == "benchmark"]
    assert len(bench) == 1 and "model/tm_c1/best" in bench[0].data.metrics

    # the command line, Hydra-style overrides, --samples and --include-similar
    params = tmp_path / "params.yaml"
    from omegaconf import OmegaConf

    params.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    assert main(["benchmark", "--natives", str(natives), "--samples", "1", "--include-similar",
                 "--out", str(tmp_path / "bench2"), "--params", str(params), "eval.steps=1"]) == 0
    again = json.loads((tmp_path / "bench2/summary.json").read_text())
    assert again["n_targets"] == 3 and again["samples"] == 1 and again["steps"] == 1
    assert again["leakage"]["excluded"] == [] and again["leakage"]["similar"] == [train_id]

    # only training records: stopped by the leakage check before anything is sampled
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    shutil.copy(natives / f"{train_id}.pdb", only_train)
    caplog.clear()
    assert main(["benchmark", "--natives", str(only_train), "--out", str(tmp_path / "bench3"),
                 "--params", str(params)]) == 2
    err = caplog.text
    assert (f"every target is above split.max_identity={cfg.split.max_identity:.2f} to a "
            f"training record ({train_id})") in err
    assert "--include-similar" in err and not (tmp_path / "bench3").exists()
    assert "scored in" not in err  # no target was sampled (each scored one logs it)


def test_benchmark_input_errors(tmp_path):
    from rna_predict.evaluate.benchmark import BenchmarkError, native_files, target_id

    with pytest.raises(BenchmarkError, match="no such directory"):
        native_files(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(BenchmarkError, match="no PDB/mmCIF files"):
        native_files(tmp_path)
    (tmp_path / "1ABC.pdb").write_text("x")
    (tmp_path / "1ABC.cif.gz").write_bytes(b"x")
    with pytest.raises(BenchmarkError, match="target '1ABC' also given by"):
        native_files(tmp_path)
    assert target_id(tmp_path / "1ABC.cif.gz") == "1ABC"
    assert main(["benchmark", "--natives", str(tmp_path / "missing")]) == 2  # no traceback
