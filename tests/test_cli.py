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


def _help_sections(capsys, argv: list[str]) -> dict[str, str]:
    """``rna-predict ... --help`` -> {"reads": ..., "params": ..., "writes": ...}."""
    import re

    with pytest.raises(SystemExit) as exc:
        main(argv + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    sections: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^(reads|params|writes|also)\s*: (.*)$", line)
        if m:
            current = m.group(1)
            sections[current] = m.group(2)
        elif current and line.startswith("  ") and line.strip():
            sections[current] += " " + line.strip()
        else:
            current = None
    return sections


def _stage_paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


@pytest.mark.parametrize("stage", ["fetch", "angles", "features", "split", "train", "evaluate", "sweep"])
def test_stage_help_says_what_it_reads_writes_and_takes(capsys, stage):
    """Each stage's --help names every input, params section and output that dvc.yaml
    declares for it (ARCHITECTURE.md section 3)."""
    from pathlib import Path

    import yaml

    dvc = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())
    decl = dvc["stages"][stage]
    help_ = _help_sections(capsys, [stage])
    assert {"reads", "params", "writes"} <= set(help_), help_
    for dep in _stage_paths(decl.get("deps")):
        if not dep.startswith("src/"):
            assert dep in help_["reads"], (stage, dep, help_["reads"])
    for section in _stage_paths(decl.get("params")):
        assert section in help_["params"].replace(",", " ").split(), (stage, section)
    for out in (_stage_paths(decl.get("outs")) + _stage_paths(decl.get("metrics"))
                + _stage_paths(decl.get("plots"))):
        parent, name = out.rsplit("/", 1)
        assert out in help_["writes"] or (f"{parent}/" in help_["writes"] and name in help_["writes"]), \
            (stage, out, help_["writes"])


def test_train_help_matches_the_architecture_table(capsys):
    help_ = _help_sections(capsys, ["train"])
    for path in ("data/angles", "data/features", "data/splits"):
        assert path in help_["reads"]
    assert {"model", "training"} <= set(help_["params"].replace(",", " ").split())
    for path in ("models/model.safetensors", "models/model_config.json", "reports/train/"):
        assert path in help_["writes"]


@pytest.mark.parametrize("command, reads, writes", [
    (["torsions"], "FILE", "stdout"),
    (["predict"], "model.safetensors", ".cif/.mmcif mmCIF"),
])
def test_user_command_help_says_what_it_reads_and_writes(capsys, command, reads, writes):
    help_ = _help_sections(capsys, command)
    assert reads in help_["reads"] and writes in help_["writes"] and "params" in help_
