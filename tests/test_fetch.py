"""Tests of the fetch stage: real demo wheel, a local HTTP server for rcsb, local dirs."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rna_predict.config import Config, DataConfig
from rna_predict.data import fetch
from rna_predict.data.atomic import sha256_file
from rna_predict.data.fetch import FetchError, run_fetch

DEMO_IDS = ["1A51", "1A9N", "1DQF", "1DUQ", "1EHZ", "1KXK", "1Q9A", "1XJR", "1Y26", "1YKQ",
            "1ZHO", "2A43", "2GDI", "434D", "4QK8", "4QLM", "6Y2L"]


def read_index(raw: Path) -> list[dict[str, str]]:
    with open(raw / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def cfg(**data) -> Config:
    return Config(data=DataConfig(**data))


# ----------------------------------------------------------------------------- demo
def test_manifest_pins_17_structures_912_nt():
    man = fetch.load_manifest()
    assert fetch.demo_ids() == DEMO_IDS
    assert sum(e["residues"] for e in man["structures"].values()) == 912
    assert {k: e["residues"] for k, e in man["extras"].items()} == {
        "1EHZ_CIF": 76, "3JBV": 1530, "1Z58": 2766}
    assert man["wheel"]["sha256"] == (
        "5f75614949672049f77fbb933d376cf7f30862b1c179ad3437566093c369c9c7")


def test_demo_fetch_end_to_end(demo_raw_dir: Path):
    structures = fetch.load_manifest()["structures"]
    files = sorted(p.name for p in demo_raw_dir.glob("*.pdb"))
    assert files == [f"{i}.pdb" for i in DEMO_IDS]
    rows = read_index(demo_raw_dir)
    assert list(rows[0]) == ["id", "file", "chains", "sha256", "source"]
    assert [r["id"] for r in rows] == DEMO_IDS
    for r in rows:
        assert r["file"] == f"{r['id']}.pdb" and r["chains"] == "" and r["source"] == "demo"
        assert r["sha256"] == structures[r["id"]]["sha256"] == sha256_file(demo_raw_dir / r["file"])
    text = (demo_raw_dir / "index.csv").read_text()
    assert "\r" not in text and str(demo_raw_dir) not in text and len(text.splitlines()) == 18
    report = json.loads((demo_raw_dir / "fetch_report.json").read_text())
    assert report == {"fetched": 17, "skipped": [], "source": "demo"}
    # 1EHZ is the tRNA-Phe crystal structure (76 nt, chain A).
    atoms = [ln for ln in (demo_raw_dir / "1EHZ.pdb").read_text().splitlines()
             if ln.startswith(("ATOM", "HETATM")) and ln[21] == "A"]
    assert len({ln[22:27] for ln in atoms if ln[12:16].strip() == "C1'"}) == 76


def test_demo_resume_and_repair(demo_raw_dir: Path, tmp_path: Path, monkeypatch):
    raw = tmp_path / "raw"
    shutil.copytree(demo_raw_dir, raw)
    for p in raw.iterdir():
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    index_bytes = (raw / "index.csv").read_bytes()

    def no_wheel(*a, **k):
        raise AssertionError("wheel must not be opened when every file is present")

    with monkeypatch.context() as m:  # second run: nothing extracted, wheel never touched
        m.setattr(fetch, "ensure_wheel", no_wheel)
        run_fetch(cfg(source="demo", raw_dir=str(raw)))
    assert all(p.stat().st_mtime_ns == 1_000_000_000 for p in raw.glob("*.pdb"))
    assert (raw / "index.csv").read_bytes() == index_bytes

    (raw / "4QK8.pdb").write_text("corrupted\n")
    (raw / "1A51.pdb").unlink()
    run_fetch(cfg(source="demo", raw_dir=str(raw)))
    expected = fetch.load_manifest()["structures"]
    assert sha256_file(raw / "4QK8.pdb") == expected["4QK8"]["sha256"]
    assert sha256_file(raw / "1A51.pdb") == expected["1A51"]["sha256"]
    untouched = [p for p in raw.glob("*.pdb") if p.name not in ("4QK8.pdb", "1A51.pdb")]
    assert len(untouched) == 15 and all(p.stat().st_mtime_ns == 1_000_000_000 for p in untouched)
    assert (raw / "index.csv").read_bytes() == index_bytes


def test_extract_member_rejects_wrong_hash_and_missing_member(demo_raw_dir, tmp_path):
    wheel = fetch.ensure_wheel()
    with pytest.raises(FetchError, match=r"1ehz\.pdb: sha256 .* does not match"):
        fetch.extract_wheel_member("clarna_play/test_data/1ehz.pdb", tmp_path / "x.pdb", "0" * 64, wheel)
    assert not (tmp_path / "x.pdb").exists()
    with pytest.raises(FetchError, match="nope.pdb: not a member"):
        fetch.extract_wheel_member("nope.pdb", tmp_path / "y.pdb", "0" * 64, wheel)


def test_ensure_wheel_checks_pip_result(tmp_path, monkeypatch):
    """pip failing, or handing back bytes with another hash, raises and caches nothing."""
    import subprocess

    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        req = Path(cmd[cmd.index("-r") + 1]).read_text()
        assert req == ("rna-tools==3.28 --hash=sha256:"
                       "5f75614949672049f77fbb933d376cf7f30862b1c179ad3437566093c369c9c7\n")
        if len(calls) == 1:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: THESE PACKAGES DO NOT MATCH")
        dest.mkdir(parents=True)
        (dest / "rna_tools-3.28-py3-none-any.whl").write_bytes(b"tampered")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_pip)
    with pytest.raises(FetchError, match="pip download failed .exit 1.: ERROR: THESE PACKAGES"):
        fetch.ensure_wheel(tmp_path)
    with pytest.raises(FetchError, match="does not match the pinned sha256"):
        fetch.ensure_wheel(tmp_path)
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:", "download"} <= set(calls[0])
    assert list(tmp_path.iterdir()) == []


def test_wheel_extras(wheel_extra):
    extras = fetch.load_manifest()["extras"]
    for name, fname in [("1EHZ_CIF", "1EHZ.cif"), ("3JBV", "3JBV.pdb"), ("1Z58", "1Z58.pdb")]:
        path = wheel_extra(name)
        assert path.name == fname and sha256_file(path) == extras[name]["sha256"]
    assert wheel_extra("1EHZ_CIF").read_text().startswith("data_1EHZ")
    with pytest.raises(FetchError, match="XXXX: unknown extra"):
        wheel_extra("XXXX")


# ----------------------------------------------------------------------------- rcsb
class _Handler(SimpleHTTPRequestHandler):
    """Serves a directory; records every request path; paths starting ``/2`` fail once with 503."""

    requests: list[str]
    failed_once: set[str]

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        if self.path.startswith("/2") and self.path not in self.failed_once:
            self.failed_once.add(self.path)
            self.send_error(503, "busy")
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture()
def server(tmp_path, wheel_extra, demo_raw_dir):
    """A local HTTP server on 127.0.0.1 serving 1EHZ.cif, 2EHZ.cif (503 once) and 1Y26.pdb."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(wheel_extra("1EHZ_CIF"), root / "1EHZ.cif")
    shutil.copy(wheel_extra("1EHZ_CIF"), root / "2EHZ.cif")
    shutil.copy(demo_raw_dir / "1Y26.pdb", root / "1Y26.pdb")
    (root / "3BAD.cif").write_text("<html>not a structure</html>\n")
    handler = type("H", (_Handler,), {"requests": [], "failed_once": set()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.requests, root
    httpd.shutdown()
    httpd.server_close()


def test_rcsb_success_retry_and_resume(server, tmp_path, monkeypatch):
    url, requests, root = server
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.0)
    raw = tmp_path / "raw"
    index = run_fetch(cfg(source="rcsb", raw_dir=str(raw), rcsb_url=url + "/",
                          pdb_ids=["1ehz", "2EHZ"], retries=2, timeout_s=5))
    assert index == raw / "index.csv"
    rows = read_index(raw)
    assert [(r["id"], r["file"], r["source"]) for r in rows] == [
        ("1EHZ", "1EHZ.cif", "rcsb"), ("2EHZ", "2EHZ.cif", "rcsb")]
    assert rows[0]["sha256"] == sha256_file(root / "1EHZ.cif") == sha256_file(raw / "1EHZ.cif")
    assert sorted(requests) == ["/1EHZ.cif", "/2EHZ.cif", "/2EHZ.cif"]  # 503 retried once
    requests.clear()
    run_fetch(cfg(source="rcsb", raw_dir=str(raw), rcsb_url=url, pdb_ids=["1EHZ", "2EHZ"]))
    assert requests == []  # resume: both files present with the indexed sha256


def test_rcsb_pdb_format(server, tmp_path):
    url, requests, root = server
    raw = tmp_path / "raw"
    run_fetch(cfg(source="rcsb", raw_dir=str(raw), rcsb_url=url, pdb_ids=["1Y26"], file_format="pdb"))
    assert (raw / "1Y26.pdb").read_bytes() == (root / "1Y26.pdb").read_bytes()


def test_rcsb_404_and_bad_content_are_skipped(server, tmp_path):
    url, requests, _ = server
    raw = tmp_path / "raw"
    run_fetch(cfg(source="rcsb", raw_dir=str(raw), rcsb_url=url,
                  pdb_ids=["9ZZZ", "1EHZ", "3BAD"], retries=3))
    assert [r["id"] for r in read_index(raw)] == ["1EHZ"]
    report = json.loads((raw / "fetch_report.json").read_text())
    assert report["fetched"] == 1 and [s["id"] for s in report["skipped"]] == ["3BAD", "9ZZZ"]
    reasons = {s["id"]: s["reason"] for s in report["skipped"]}
    assert "HTTP 404" in reasons["9ZZZ"] and "not a cif file" in reasons["3BAD"]
    assert requests.count("/9ZZZ.cif") == 1  # a 404 is not retried
    assert not (raw / "9ZZZ.cif").exists() and not (raw / "3BAD.cif").exists()


def test_rcsb_all_failed_raises(server, tmp_path):
    url, _, _ = server
    with pytest.raises(FetchError, match="every id failed.*9ZZZ"):
        run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path / "raw"), rcsb_url=url, pdb_ids=["9ZZZ"]))


@pytest.mark.parametrize("bad", ["../etc/passwd", "1EH", "ABCD", "1EHZ.cif", "pdb_1EHZ"])
def test_rcsb_invalid_id_rejected_before_any_request(server, tmp_path, bad):
    url, requests, _ = server
    with pytest.raises(FetchError, match="invalid PDB id"):
        run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path / "raw"), rcsb_url=url,
                      pdb_ids=["1EHZ", bad]))
    assert requests == []


def test_normalize_pdb_id():
    assert fetch.normalize_pdb_id(" 1ehz ") == "1EHZ"
    assert fetch.normalize_pdb_id("PDB_00001ehz") == "pdb_00001EHZ"


# ----------------------------------------------------------------------------- local
def test_local_copies_structures(demo_raw_dir, wheel_extra, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(demo_raw_dir / "1Y26.pdb", src / "1y26.pdb")
    cif = wheel_extra("1EHZ_CIF").read_bytes()
    (src / "trna-phe.cif.gz").write_bytes(gzip.compress(cif, mtime=0))
    (src / "README.txt").write_text("not a structure\n")
    raw = tmp_path / "raw"
    run_fetch(cfg(source="local", local_dir=str(src), raw_dir=str(raw)))
    rows = read_index(raw)
    assert [(r["id"], r["file"], r["source"]) for r in rows] == [
        ("1Y26", "1Y26.pdb", "local"), ("TRNA-PHE", "TRNA-PHE.cif.gz", "local")]
    assert gzip.decompress((raw / "TRNA-PHE.cif.gz").read_bytes()) == cif
    for r in rows:
        assert r["sha256"] == sha256_file(raw / r["file"])
    assert sorted(p.name for p in raw.iterdir()) == [
        "1Y26.pdb", "TRNA-PHE.cif.gz", "fetch_report.json", "index.csv"]


def test_local_rejects_bad_ids(tmp_path):
    with pytest.raises(FetchError, match=r"invalid structure id '\.\./EVIL'"):
        fetch.validate_local_id("../EVIL")
    with pytest.raises(FetchError, match="invalid structure id 'A/B'"):
        fetch.validate_local_id("A/B")
    src = tmp_path / "src"
    src.mkdir()
    (src / "...pdb").write_text("ATOM\n")  # id ".." would escape raw_dir
    with pytest.raises(FetchError, match=r"invalid structure id '\.\.' \(from \.\.\.pdb\)"):
        run_fetch(cfg(source="local", local_dir=str(src), raw_dir=str(tmp_path / "raw")))
    assert not (tmp_path / "raw" / "index.csv").exists()


def test_local_duplicate_and_empty(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(FetchError, match=r"no \.cif\.gz, \.pdb"):
        run_fetch(cfg(source="local", local_dir=str(src), raw_dir=str(tmp_path / "raw")))
    (src / "1abc.pdb").write_text("ATOM\n")
    (src / "1ABC.cif").write_text("data_1ABC\n")
    with pytest.raises(FetchError, match="duplicate structure id '1ABC'"):
        run_fetch(cfg(source="local", local_dir=str(src), raw_dir=str(tmp_path / "raw")))


def test_unknown_source_and_format(tmp_path):
    with pytest.raises(FetchError, match="data.source 'ftp'"):
        run_fetch(cfg(source="ftp", raw_dir=str(tmp_path)))
    with pytest.raises(FetchError, match="data.file_format 'mmtf'"):
        run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path), pdb_ids=["1EHZ"], file_format="mmtf"))
