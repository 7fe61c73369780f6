"""Evaluate stage on the real demo test split: metrics, baselines, plots, PDBs, MLflow."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from rna_predict.evaluate.run_evaluate import topology_mask

from conftest import TINY_MODEL_OVERRIDES

TINY = [
    *TINY_MODEL_OVERRIDES, "eval.samples=2", "eval.steps=2", "eval.max_targets=2",
]


def test_topology_mask():
    m = topology_mask(np.array([0, 0, 0, 1, 1]))
    assert m[:, 0].tolist() == [False, True, True, False, True]  # alpha
    assert m[:, 4].tolist() == [True, True, False, True, False]  # epsilon
    assert m[:, 5].tolist() == [True, True, False, True, False]  # zeta
    assert m[:, [1, 2, 3, 6]].all()


def test_evaluate_writes_metrics_plots_structures(demo_cfg, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from rna_predict.evaluate.run_evaluate import run_evaluate
    from rna_predict.model.rna_model import RNAModel
    from rna_predict.data.split import read_split_ids
    from rna_predict.train.run_train import save_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = demo_cfg(TINY)
    torch.manual_seed(0)
    save_model(RNAModel(cfg.model), cfg.model, cfg.training.out_dir)

    path = run_evaluate(cfg)
    out = tmp_path / "reports/eval"
    assert path == out / "metrics.json"
    summary = json.loads(path.read_text())
    assert summary["n_targets"] == 2 and summary["samples"] == 2 and summary["steps"] == 2
    for key in ("rmsd_c1", "rmsd_all", "tm_c1", "lddt_c1", "lddt_all"):
        assert set(summary["model"][key]) == {"best", "mean"}
        assert summary["model"][key]["best"] is not None
        assert summary["baseline_aform"][key] is not None
    assert 0 < summary["model"]["tm_c1"]["best"] <= 1
    assert summary["model"]["tm_c1"]["best"] >= summary["model"]["tm_c1"]["mean"]
    assert summary["model"]["rmsd_c1"]["best"] <= summary["model"]["rmsd_c1"]["mean"]
    for name in ("model", "baseline_mean_torsion"):
        assert set(summary[name]["angle_mae"]) == {
            "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "chi", "mean"}
        assert 0 <= summary[name]["mcq"] <= 180
    comp = summary["comparisons"]
    assert comp["n_bootstrap"] == cfg.eval.bootstrap_samples
    assert {"angle_mae_mean/residue", "angle_mae_mean/target", "mcq/residue", "mcq/target"} <= \
        set(comp["model_vs_mean_torsion"])
    assert len(comp["model_vs_aform"]) == 10
    assert summary["targets"] == {r: n for r, n in summary["targets"].items()} and len(summary["targets"]) == 2
    assert "different residues" in summary["lddt_definition"]
    assert summary["geometry_fit_overlap"] == []  # the demo test targets are held out of Stage C's fit
    # the trained-split mean torsions are a real baseline: far better than chance (90 deg)
    assert summary["baseline_mean_torsion"]["angle_mae"]["mean"] < 40

    with open(out / "per_target.csv") as fh:
        rows = list(csv.DictReader(fh))
    ids = read_split_ids(cfg.split.out_dir, "test")[:2]
    assert [r["id"] for r in rows] == ids
    assert {"model_tm_c1_best", "model_mcq", "mean_torsion_mcq", "aform_lddt_c1"} <= set(rows[0])
    for png in ("angle_mae.png", "angle_scatter.png", "lddt_per_target.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdbs = sorted(p.name for p in (out / "structures").iterdir())
    assert pdbs == sorted(f"{i}_s{k}.pdb" for i in ids for k in (1, 2))
    assert str(tmp_path) not in path.read_text() + (out / "per_target.csv").read_text()

    client = MlflowClient(tracking_uri=cfg.training.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name(cfg.training.experiment).experiment_id])[0]
    assert run.data.tags["stage"] == "evaluate"
    assert "model/tm_c1/best" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "per_target.csv", "plots"} <= arts

    # a second run gives the same bytes
    before = {p: (out / p).read_bytes() for p in
              ("metrics.json", "per_target.csv", "angle_mae.png", "lddt_per_target.png")}
    run_evaluate(cfg)
    assert {p: (out / p).read_bytes() for p in before} == before


def _item(true: np.ndarray, pred: np.ndarray, base: np.ndarray, chain_index: np.ndarray, rid: str) -> dict:
    from rna_predict.evaluate.run_evaluate import STRUCT_KEYS

    row = {"id": rid, "length": len(true)}
    for k in STRUCT_KEYS:
        row.update({f"model_{k}_best": 0.5, f"model_{k}_mean": 0.4, f"aform_{k}": 0.3})
    return {"row": row, "pred": pred, "base": base, "true": true,
            "true_mask": np.isfinite(true), "topo": topology_mask(chain_index)}


def test_model_and_baseline_share_the_mask():
    """A baseline that is exact wherever the truth is defined scores MCQ 0, like the model:
    chain-end torsions the topology lacks are no 180-degree penalty for either row."""
    from rna_predict.evaluate.run_evaluate import aggregate

    rng = np.random.default_rng(0)
    items = []
    for i, n in enumerate((12, 9)):
        ci = np.zeros(n, dtype=int)
        true = rng.uniform(-np.pi, np.pi, size=(n, 7))
        true[0, 0] = np.nan  # no alpha at the chain start
        true[-1, 4:6] = np.nan  # no epsilon/zeta at the end
        filled = np.where(np.isfinite(true), true, 1.0)  # predictions are defined everywhere
        items.append(_item(true, filled, filled.copy(), ci, f"T{i}"))
    summary = aggregate(items, samples=1, steps=1, n_boot=200, seed=0)
    assert summary["model"]["mcq"] == 0.0
    assert summary["baseline_mean_torsion"]["mcq"] == 0.0
    c = summary["comparisons"]["model_vs_mean_torsion"]["mcq/residue"]
    assert c["difference"] == 0.0 and c["n_units"] == 21
    assert summary["comparisons"]["model_vs_mean_torsion"]["mcq/target"]["n_units"] == 2


def test_every_model_vs_baseline_difference_has_an_interval():
    from rna_predict.evaluate.run_evaluate import STRUCT_KEYS, aggregate

    rng = np.random.default_rng(1)
    items = []
    for i in range(3):
        true = rng.uniform(-np.pi, np.pi, size=(10, 7))
        items.append(_item(true, true + 0.1, true + 0.3, np.zeros(10, dtype=int), f"T{i}"))
    comp = aggregate(items, samples=1, steps=1, n_boot=500, seed=0)["comparisons"]
    tors = comp["model_vs_mean_torsion"]
    for key in ("angle_mae_mean/residue", "angle_mae_mean/target", "mcq/residue", "mcq/target",
                "angle_mae_chi/residue"):
        lo, hi = tors[key]["ci95"]
        assert lo <= tors[key]["difference"] <= hi and isinstance(tors[key]["excludes_zero"], bool)
    assert tors["angle_mae_mean/residue"]["difference"] == pytest.approx(-np.degrees(0.2), abs=1e-4)
    assert tors["angle_mae_mean/residue"]["excludes_zero"]
    for k in STRUCT_KEYS:
        for stat, diff in (("best", 0.2), ("mean", 0.1)):
            c = comp["model_vs_aform"][f"{k}_{stat}/target"]
            assert c["difference"] == pytest.approx(diff) and c["ci95"] == pytest.approx([diff, diff])


def test_geometry_fit_overlap_names_leaking_targets(caplog):
    from rna_predict.evaluate.run_evaluate import geometry_fit_overlap

    assert geometry_fit_overlap(["1A51", "1XJR"]) == []
    with caplog.at_level("WARNING"):
        assert geometry_fit_overlap(["6Y2L", "1A51", "434D"]) == ["434D", "6Y2L"]
    assert "434D, 6Y2L" in caplog.text
