"""The command line: `torsions` output contract and start-up, config overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rna_predict.cli import main
from rna_predict.config import ConfigError, load_config


def test_torsions_json_matches_dssr_keys(capsys, dssr_fixture_dir):
    path = dssr_fixture_dir / "1A4D_1_A-B.cif"
    assert main(["torsions", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    dssr = json.loads((dssr_fixture_dir / "1A4D_1_A-B-dssr.json").read_text())["nts"]
    assert len(rows) == len(dssr) == 41
    for row, nt in zip(rows, dssr):
        assert (row["chain"], row["resnum"], row["resname"]) == (nt["chain_name"], nt["nt_resnum"], nt["nt_name"])
        for key in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "chi", "eta", "theta"):
            if nt[key] is None:
                assert row[key] is None, (nt["nt_id"], key)
            else:
                d = abs(row[key] - nt[key]) % 360
                assert min(d, 360 - d) < 0.01, (nt["nt_id"], key)
                assert -180 < row[key] <= 180


def test_torsions_does_not_import_torch(dssr_fixture_dir):
    code = ("import sys; from rna_predict.cli import main; "
            f"main(['torsions', {str(dssr_fixture_dir / '1A4D_1_A-B.cif')!r}, '--json']); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'hydra' not in sys.modules, 'hydra imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_missing_file_is_a_clear_error(caplog, tmp_path):
    assert main(["torsions", str(tmp_path / "nope.pdb")]) == 2
    assert "nope.pdb: no such file" in caplog.text


def test_overrides_use_dvc_grammar_and_typos_fail(tmp_path):
    from omegaconf import OmegaConf

    from rna_predict.config import Config

    params = tmp_path / "params.yaml"
    params.write_text(OmegaConf.to_yaml(OmegaConf.structured(Config)))
    cfg = load_config(["training.w_angle=0.2", "model.c_s=32"], params=params)
    assert cfg.training.w_angle == 0.2 and cfg.model.c_s == 32
    with pytest.raises(ConfigError, match="w_angel"):
        load_config(["training.w_angel=0.2"], params=params)
    with pytest.raises(ConfigError, match="c_s"):
        load_config(["model.c_s=wide"], params=params)
    params.write_text(params.read_text().replace("w_angle:", "w_angel:"))
    with pytest.raises(ConfigError, match="w_angel"):
        load_config([], params=params)


def test_repository_params_yaml_is_valid():
    from pathlib import Path

    cfg = load_config([], params=Path(__file__).resolve().parents[1] / "params.yaml")
    assert cfg.data.source == "demo" and cfg.angles.backend == "mdanalysis"
