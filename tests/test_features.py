"""Stage `features`: ViennaRNA base-pair probabilities on real RNA sequences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rna_predict.config import Config
from rna_predict.data.features import base_pair_probabilities, run_features, strands

# Yeast tRNA-Phe (PDB 1EHZ chain A, modified residues mapped to parent bases).
TRNA_PHE = "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"
# PDB 1DQF: two strands of an RNA duplex (chains A, B).
DUPLEX = ("GCCACCCUG", "CAGGGUCGGC")
HAIRPIN = "GGGGAAAACCCC"


def write_angles(root: Path, records: dict[str, tuple[str, list[int]]],
                 skipped: tuple[str, ...] = ()) -> Path:
    """Minimal angles-stage output: <id>.pt dicts and manifest.json."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"records": {}}
    for rid, (seq, chain_index) in records.items():
        torch.save({"id": rid, "sequence": seq,
                    "chain_index": torch.tensor(chain_index, dtype=torch.int64)},
                   root / f"{rid}.pt")
        manifest["records"][rid] = {"status": "ok"}
    for rid in skipped:
        manifest["records"][rid] = {"status": "skipped: no RNA chain"}
    (root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
    return root


def make_cfg(tmp: Path, temperature: float = 37.0) -> Config:
    cfg = Config()
    cfg.angles.out_dir = str(tmp / "angles")
    cfg.features.out_dir = str(tmp / "features")
    cfg.features.temperature = temperature
    return cfg


def demo_records() -> dict[str, tuple[str, list[int]]]:
    return {
        "1EHZ": (TRNA_PHE, [0] * len(TRNA_PHE)),
        "1DQF": ("".join(DUPLEX), [0] * len(DUPLEX[0]) + [1] * len(DUPLEX[1])),
        "HAIRPIN": (HAIRPIN, [0] * len(HAIRPIN)),
    }


def shas(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_hairpin_stem_pairs_are_probable():
    bpp, structure, mfe = base_pair_probabilities(HAIRPIN)
    assert bpp.dtype == np.float32 and bpp.shape == (12, 12)
    assert structure == "((((....))))"
    assert mfe == pytest.approx(-5.4, abs=1e-3)  # Turner 2004, 37 C
    for i in range(4):
        assert bpp[i, 11 - i] > 0.5
    assert bpp[4:8, 4:8].max() < 1e-3  # loop bases do not pair with each other
    np.testing.assert_array_equal(bpp, bpp.T)
    assert np.all(np.diag(bpp) == 0)
    assert np.all(bpp.sum(axis=1) <= 1 + 1e-5) and bpp.min() >= 0


def test_temperature_melts_hairpin():
    cold, _, _ = base_pair_probabilities(HAIRPIN, 37.0)
    hot, structure, _ = base_pair_probabilities(HAIRPIN, 90.0)
    assert structure == "............"
    assert hot[0, 11] < 0.5 < cold[0, 11]


def test_trna_cloverleaf_acceptor_stem():
    bpp, structure, _ = base_pair_probabilities(TRNA_PHE)
    assert len(structure) == 76
    for i in range(7):  # acceptor stem G1-C72 ... A7-U66 (1-based)
        assert bpp[i, 71 - i] > 0.5
    assert np.all(bpp.sum(axis=1) <= 1 + 1e-5)


def test_multistrand_duplex_has_intermolecular_pairs():
    seq = "".join(DUPLEX)
    assert strands(seq, [0] * 9 + [1] * 10) == list(DUPLEX)
    bpp, structure, _ = base_pair_probabilities(list(DUPLEX))
    assert bpp.shape == (19, 19) and len(structure) == 19 and "&" not in structure
    inter = bpp[:9, 9:].sum()
    assert inter > 7.0  # most of the 9 nt of strand A pair with strand B
    assert bpp[:9, :9].sum() < 0.1
    np.testing.assert_array_equal(bpp, bpp.T)


def test_run_features_outputs_manifest_and_determinism(tmp_path):
    write_angles(tmp_path / "angles", demo_records(), skipped=("1XXX",))
    cfg = make_cfg(tmp_path)
    out = run_features(cfg)
    assert sorted(p.name for p in out.glob("*.pt")) == ["1DQF.pt", "1EHZ.pt", "HAIRPIN.pt"]
    rec = torch.load(out / "1DQF.pt", weights_only=True)
    assert set(rec) == {"id", "sequence", "bpp", "mfe_structure", "mfe"}
    assert rec["id"] == "1DQF" and rec["sequence"] == "".join(DUPLEX)
    assert rec["bpp"].dtype == torch.float32 and rec["bpp"].shape == (19, 19)
    assert rec["bpp"][:9, 9:].sum() > 7.0  # folded as a complex, not block-diagonal
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["temperature"] == 37.0 and manifest["viennarna"]
    assert set(manifest["records"]) == {"1DQF", "1EHZ", "HAIRPIN"}
    first = shas(out)
    for name, digest in first.items():
        if name != "manifest.json":
            assert manifest["records"][name[:-3]]["sha256"] == digest
    for p in out.iterdir():
        p.unlink()
    run_features(cfg)
    assert shas(out) == first


def test_run_features_resume_and_invalidation(tmp_path):
    records = demo_records()
    write_angles(tmp_path / "angles", records)
    cfg = make_cfg(tmp_path)
    out = run_features(cfg)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    before = shas(out)
    run_features(cfg)  # nothing changed: every record reused
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == mtimes
    assert shas(out) == before
    # Changed input -> only that record is recomputed.
    records["HAIRPIN"] = ("GGGGAAAACCCCA", [0] * 13)
    write_angles(tmp_path / "angles", records)
    run_features(cfg)
    assert (out / "1EHZ.pt").stat().st_mtime_ns == mtimes["1EHZ.pt"]
    assert torch.load(out / "HAIRPIN.pt", weights_only=True)["bpp"].shape == (13, 13)
    # A record no longer ok is removed; another temperature recomputes everything.
    del records["HAIRPIN"]
    write_angles(tmp_path / "angles", records, skipped=("HAIRPIN",))
    run_features(make_cfg(tmp_path, temperature=25.0))
    assert not (out / "HAIRPIN.pt").exists()
    assert shas(out)["1EHZ.pt"] != before["1EHZ.pt"]
    assert json.loads((out / "manifest.json").read_text())["temperature"] == 25.0
