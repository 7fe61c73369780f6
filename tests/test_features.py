"""Stage `features`: ViennaRNA base-pair probabilities on real RNA sequences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rna_predict.config import Config
from rna_predict.data.features import (
    base_pair_probabilities,
    local_pair_probabilities,
    run_features,
    strands,
)

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
    cfg.features.workers = 1
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


# --------------------------------------------------------------------------- long RNAs
@pytest.fixture(scope="module")
def rrna_300(wheel_extra) -> str:
    """First 300 nt of the 16S rRNA crop 3JBV chain A (rna-tools wheel)."""
    from rna_predict.data.structure import read_structure

    seq = read_structure(wheel_extra("3JBV")).sequence
    assert len(seq) == 1530
    return seq[:300]


def span_mask(n: int, span: int) -> np.ndarray:
    idx = np.arange(n)
    d = np.abs(idx[:, None] - idx[None, :])
    return (d <= span) & (d > 0)


def test_local_with_whole_sequence_window_equals_global(rrna_300):
    seq = rrna_300[:120]
    glob, structure, mfe = base_pair_probabilities(seq)
    local, l_structure, l_mfe = local_pair_probabilities(seq, window=120, max_bp_span=120)
    np.testing.assert_allclose(local, glob, atol=2e-6)  # one window = McCaskill on the whole chain
    assert l_structure == structure and l_mfe == pytest.approx(mfe)


def test_local_probabilities_agree_with_global_on_short_range_pairs(rrna_300):
    glob, _, _ = base_pair_probabilities(rrna_300)
    local, structure, mfe = local_pair_probabilities(rrna_300, window=240, max_bp_span=160)
    assert local.dtype == np.float32 and local.shape == (300, 300) and len(structure) == 300
    np.testing.assert_array_equal(local, local.T)
    assert np.all(np.diag(local) == 0) and local.min() >= 0
    assert local.sum(axis=1).max() <= 1 + 1e-5
    assert local[~span_mask(300, 160) & ~np.eye(300, dtype=bool)].max() == 0  # nothing beyond the span
    near = span_mask(300, 160)
    corr = np.corrcoef(glob[near], local[near])[0, 1]
    assert corr > 0.85, corr  # measured 0.91
    strong = near & (glob > 0.9)  # 58 pairs; 86% of them have local P > 0.5
    assert strong.sum() >= 40 and (local[strong] > 0.5).mean() > 0.8
    sure = near & (local > 0.9)  # 38 pairs, all with global P > 0.5
    assert sure.sum() >= 20 and (glob[sure] > 0.5).all()
    # the MFE is that of the span-limited structures, never below the unrestricted MFE
    assert mfe >= base_pair_probabilities(rrna_300)[2] - 1e-6
    pairs, stack = [], []
    for i, ch in enumerate(structure):
        if ch == "(":
            stack.append(i)
        elif ch == ")":
            pairs.append(i - stack.pop())
    assert pairs and max(pairs) <= 160


def test_local_mode_multistrand_has_no_interstrand_pairs():
    a, b = "GGGGGGAAAACCCCCC", "GCGCGCAAAAGCGCGC"
    bpp, structure, mfe = local_pair_probabilities([a, b], window=16, max_bp_span=16)
    assert bpp.shape == (32, 32) and len(structure) == 32
    assert bpp[:16, 16:].max() == 0 and bpp[16:, :16].max() == 0
    assert bpp[0, 15] > 0.5 and bpp[16, 31] > 0.5  # each hairpin folds on its own
    assert mfe == pytest.approx(local_pair_probabilities(a, window=16, max_bp_span=16)[2]
                                + local_pair_probabilities(b, window=16, max_bp_span=16)[2])


def long_records(rrna_300: str) -> dict[str, tuple[str, list[int]]]:
    records = demo_records()
    records["LONG"] = (rrna_300, [0] * 300)
    records["LONG2"] = (rrna_300, [0] * 150 + [1] * 150)  # as two strands
    return records


def test_run_features_switches_to_local_above_max_global_len(tmp_path, rrna_300):
    write_angles(tmp_path / "angles", long_records(rrna_300))
    cfg = make_cfg(tmp_path)
    cfg.features.max_global_len = 200
    out = run_features(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    methods = {rid: e["method"] for rid, e in manifest["records"].items()}
    assert methods == {"1DQF": "global", "1EHZ": "global", "HAIRPIN": "global",
                       "LONG": "local", "LONG2": "local"}
    assert (manifest["max_global_len"], manifest["window"], manifest["max_bp_span"]) == (200, 240, 160)
    assert manifest["records"]["LONG2"]["n_strands"] == 2
    for rid in ("LONG", "LONG2"):
        rec = torch.load(out / f"{rid}.pt", weights_only=True)
        bpp = rec["bpp"]
        assert bpp.dtype == torch.float32 and bpp.shape == (300, 300) and len(rec["mfe_structure"]) == 300
        assert torch.equal(bpp, bpp.T) and float(bpp.sum(1).max()) <= 1 + 1e-5
    two = torch.load(out / "LONG2.pt", weights_only=True)["bpp"]
    assert float(two[:150, 150:].abs().max()) == 0  # local mode: strands folded separately
    # changing a local-mode setting recomputes only the local records
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    cfg.features.window = 200
    run_features(cfg)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    assert {n for n in mtimes if after[n] != mtimes[n]} == {"LONG.pt", "LONG2.pt"}
    # raising the threshold above every length brings back the global matrices
    cfg.features.max_global_len = 1000
    run_features(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["method"] for e in manifest["records"].values()} == {"global"}
    glob = torch.load(out / "LONG.pt", weights_only=True)["bpp"].numpy()
    np.testing.assert_array_equal(glob, base_pair_probabilities(rrna_300)[0])


def test_workers_1_and_2_write_identical_bytes(tmp_path, rrna_300):
    write_angles(tmp_path / "angles", long_records(rrna_300), skipped=("1XXX",))
    (tmp_path / "angles" / "BROKEN.pt").write_bytes(b"not a torch file")
    manifest = json.loads((tmp_path / "angles" / "manifest.json").read_text())
    manifest["records"]["BROKEN"] = {"status": "ok"}
    (tmp_path / "angles" / "manifest.json").write_text(json.dumps(manifest))
    digests = []
    for workers in (1, 2):
        cfg = make_cfg(tmp_path)
        cfg.features.out_dir = str(tmp_path / f"features_{workers}")
        cfg.features.workers = workers
        cfg.features.max_global_len = 200
        digests.append({name: hashlib.md5((Path(cfg.features.out_dir) / name).read_bytes()).hexdigest()
                        for name in shas(run_features(cfg))})
    assert digests[0] == digests[1]
    assert set(digests[0]) == {"1DQF.pt", "1EHZ.pt", "HAIRPIN.pt", "LONG.pt", "LONG2.pt", "manifest.json"}
    records = json.loads((tmp_path / "features_2" / "manifest.json").read_text())["records"]
    assert records["BROKEN"]["status"].startswith("skipped: ") and "BROKEN.pt" in records["BROKEN"]["status"]
    assert str(tmp_path) not in json.dumps(records)
