"""Stage `angles` end to end on the real demo set: contract, manifest, skip, resume."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from rna_predict.data.angles_stage import IndexFileError, run_angles
from rna_predict.data.atom_layout import N_SLOTS
from rna_predict.data.records import load_record


def _cfg(tmp_path, raw_dir):
    from conftest import demo_config

    return demo_config(tmp_path, raw_dir)


def test_records_follow_the_data_contract(demo_records):
    manifest = json.loads((demo_records / "angles" / "manifest.json").read_text())
    assert manifest["backend"] == "mdanalysis"
    assert {"python", "MDAnalysis", "gemmi", "biotite", "rna_predict"} <= set(manifest["versions"])
    assert len(manifest["records"]) == 17
    assert all(r["status"] == "ok" for r in manifest["records"].values())
    assert sum(r["residues"] for r in manifest["records"].values()) == 912
    rec = load_record(demo_records / "angles" / "1EHZ.pt")
    L = len(rec["sequence"])
    assert L == 76 and set(rec["sequence"]) <= set("ACGU")
    assert rec["coords"].shape == (L, N_SLOTS, 3) and rec["coords"].dtype == torch.float32
    assert rec["atom_mask"].dtype == torch.bool and rec["chain_index"].dtype == torch.int64
    assert rec["angles"].shape == (L, 7) and rec["extra_angles"].shape == (L, 9)
    a, m = rec["angles"], rec["angle_mask"]
    assert torch.equal(m, torch.isfinite(a))
    assert (a[m].abs() <= np.pi + 1e-6).all() and (a[m] > -np.pi).all()
    assert not m[0, 0] and not m[-1, 4] and m[1:-1].all()  # 5'-alpha and 3'-epsilon undefined
    assert (rec["coords"][~rec["atom_mask"]] == 0).all()


def _copy_raw(demo_raw_dir, tmp_path, ids):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = list(csv.DictReader(open(demo_raw_dir / "index.csv")))
    rows = [r for r in rows if r["id"] in ids]
    for r in rows:
        shutil.copy(demo_raw_dir / r["file"], raw / r["file"])
    return raw, rows


def _write_index(raw, rows):
    with open(raw / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_broken_structure_is_skipped_rest_processed_and_resume(tmp_path, demo_raw_dir):
    raw, rows = _copy_raw(demo_raw_dir, tmp_path, {"434D", "1DQF", "1A9N"})
    (raw / "1A9N.pdb").write_text("garbage\n")
    _write_index(raw, rows)
    cfg = _cfg(tmp_path, raw)
    manifest_path = run_angles(cfg)
    records = json.loads(manifest_path.read_text())["records"]
    assert records["1A9N"]["status"].startswith("skipped: ") and "1A9N.pdb" in records["1A9N"]["status"]
    assert records["434D"]["status"] == records["1DQF"]["status"] == "ok"
    out = tmp_path / "angles"
    assert sorted(p.name for p in out.glob("*.pt")) == ["1DQF.pt", "434D.pt"]
    # resume: an untouched record is not rewritten, a deleted one is recomputed identically
    kept = (out / "434D.pt").stat().st_mtime_ns
    before = (out / "1DQF.pt").read_bytes()
    (out / "1DQF.pt").unlink()
    run_angles(cfg)
    assert (out / "434D.pt").stat().st_mtime_ns == kept
    assert (out / "1DQF.pt").read_bytes() == before
    assert json.loads(manifest_path.read_text()) == json.loads(manifest_path.read_text())


def test_outputs_are_byte_identical_across_runs(tmp_path, demo_raw_dir):
    raw, rows = _copy_raw(demo_raw_dir, tmp_path, {"434D", "1EHZ"})
    _write_index(raw, rows)
    first = run_angles(_cfg(tmp_path / "a", raw)).parent
    second = run_angles(_cfg(tmp_path / "b", raw)).parent
    for name in ("434D.pt", "1EHZ.pt", "manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert str(tmp_path) not in (first / "manifest.json").read_text()


@pytest.mark.parametrize("bad_id", ["../evil", "a/b", ""])
def test_index_ids_with_paths_are_rejected(tmp_path, demo_raw_dir, bad_id):
    raw, rows = _copy_raw(demo_raw_dir, tmp_path, {"434D"})
    rows[0]["id"] = bad_id
    _write_index(raw, rows)
    with pytest.raises(IndexFileError, match="invalid record id"):
        run_angles(_cfg(tmp_path, raw))


def test_index_file_outside_raw_dir_is_rejected(tmp_path, demo_raw_dir):
    raw, rows = _copy_raw(demo_raw_dir, tmp_path, {"434D"})
    rows[0]["file"] = "../../etc/passwd"
    _write_index(raw, rows)
    with pytest.raises(IndexFileError, match="outside"):
        run_angles(_cfg(tmp_path, raw))


def test_workers_1_and_2_write_identical_bytes(tmp_path, demo_raw_dir):
    """angles.workers: every output byte (records, skipped entry, manifest) is independent of it."""
    import hashlib

    from conftest import demo_config

    raw, rows = _copy_raw(demo_raw_dir, tmp_path, {"434D", "1DQF", "1EHZ", "1A9N"})
    (raw / "1A9N.pdb").write_text("garbage\n")
    _write_index(raw, rows)
    digests = []
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        out = run_angles(demo_config(root, raw, [f"angles.workers={workers}"])).parent
        digests.append({p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]
    assert set(digests[0]) == {"434D.pt", "1DQF.pt", "1EHZ.pt", "manifest.json"}
    records = json.loads((tmp_path / "w2" / "angles" / "manifest.json").read_text())["records"]
    assert records["1A9N"]["status"].startswith("skipped: ")
    assert [records[r]["residues"] for r in ("1DQF", "1EHZ", "434D")] == [19, 76, 14]
