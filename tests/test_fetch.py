"""Tests of the fetch stage: real demo wheel, a fault-injecting local HTTP server for rcsb
(tests/fault_server.py), local dirs."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
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
    assert list(rows[0]) == ["id", "file", "chains", "model", "sha256", "source"]
    assert [r["id"] for r in rows] == DEMO_IDS
    for r in rows:
        assert r["file"] == f"{r['id']}.pdb" and r["chains"] == r["model"] == "" and r["source"] == "demo"
        assert r["sha256"] == structures[r["id"]]["sha256"] == sha256_file(demo_raw_dir / r["file"])
    text = (demo_raw_dir / "index.csv").read_text()
    assert "\r" not in text and str(demo_raw_dir) not in text and len(text.splitlines()) == 18
    report = json.loads((demo_raw_dir / "fetch_report.json").read_text())
    assert report["source"] == "demo" and report["records"] == 17
    assert report["fetched"] + report["reused"] == 17 and report["skipped"] == []
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
REPO = Path(__file__).resolve().parents[1]
BACKOFF = 0.01  # seconds; the production default (download.BACKOFF_S) is 1 s


@pytest.fixture()
def www(tmp_path, demo_raw_dir, wheel_extra) -> Path:
    """Files served by the fault server: ten demo PDB files and the 1EHZ mmCIF."""
    root = tmp_path / "www"
    root.mkdir()
    for sid in ("1EHZ", "1DUQ", "434D", "1Y26", "2GDI", "1KXK", "1A9N", "4QK8", "1ZHO", "1A51"):
        shutil.copy(demo_raw_dir / f"{sid}.pdb", root / f"{sid}.pdb")
    shutil.copy(wheel_extra("1EHZ_CIF"), root / "1EHZ.cif")
    return root


def all_files(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir())  # dot files (temp files) included


BGSU_ROWS = [  # BGSU nrlist CSV rows (class, representative IFE, members)
    ("NR_4.0_00011.1", "1EHZ|1|A"), ("NR_4.0_00012.1", "1DUQ|1|A+1DUQ|1|B"),
    ("NR_4.0_00013.1", "434D|1|A+434D|1|B"), ("NR_4.0_00014.1", "1Y26|1|X"),
    ("NR_4.0_00015.1", "2GDI|1|X"), ("NR_4.0_00016.1", "1KXK|1|A"),
    ("NR_4.0_00017.1", "9ZZZ|1|A"), ("NR_4.0_00018.1", "1A9N|1|R"),
    ("NR_4.0_00019.1", "4QK8|1|Z"), ("NR_4.0_00020.1", "1ZHO|1|H")]
FAULTS = {"1DUQ": ["500", "500"], "434D": ["short"], "1Y26": ["html"], "2GDI": ["stall"],
          "1KXK": ["truncated"], "1A9N": ["503"] * 10, "1ZHO": ["gzip"]}


def test_bgsu_list_through_cli_against_fault_server(www, tmp_path, monkeypatch):
    """Every injected fault is retried or recorded; nothing bad lands in raw; rerun resumes."""
    from fault_server import FaultServer

    from rna_predict.cli import main
    from rna_predict.data import download

    monkeypatch.setattr(download, "BACKOFF_S", BACKOFF)
    nrlist = tmp_path / "nrlist_4.0A.csv"
    nrlist.write_text("".join(f'"{c}","{ife}","{ife}"\n' for c, ife in BGSU_ROWS))
    raw = tmp_path / "raw"
    with FaultServer(www, FAULTS, stall_s=3) as srv:
        argv = ["fetch", "--params", str(REPO / "params.yaml"), "data.source=rcsb",
                f"data.id_list={nrlist}", f"data.rcsb_url={srv.url}", f"data.raw_dir={raw}",
                "data.file_format=pdb", "data.timeout_s=1", "data.retries=3", "data.workers=4"]
        assert main(argv) == 0
        ok = ["1DUQ", "1EHZ", "1KXK", "1Y26", "1ZHO", "2GDI", "434D"]
        assert {sid: srv.count(sid) for sid in ok + ["9ZZZ", "1A9N", "4QK8"]} == {
            "1DUQ": 3, "1EHZ": 1, "1KXK": 2, "1Y26": 2, "1ZHO": 1, "2GDI": 2, "434D": 2,
            "9ZZZ": 1, "1A9N": 4, "4QK8": 1}  # 404 not retried; 503 retried 3 times
        report = json.loads((raw / "fetch_report.json").read_text())
        assert {k: report[k] for k in ("records", "fetched", "reused", "retried", "failed")} == {
            "records": 7, "fetched": 7, "reused": 0, "retried": 6, "failed": 3}
        retries = report["retries"]
        assert sorted(retries) == ["1A9N", "1DUQ", "1KXK", "1Y26", "2GDI", "434D"]
        assert retries["1DUQ"] == ["HTTP 500 Internal Server Error"] * 2
        assert "IncompleteRead" in retries["434D"][0] and "cut short" in retries["434D"][0]
        assert retries["1Y26"][0].startswith("HTML page")
        assert "timed out" in retries["2GDI"][0]
        assert retries["1KXK"][0].startswith("1KXK.pdb: cannot parse structure file: truncated")
        assert retries["1A9N"] == ["HTTP 503 Service Unavailable"] * 3
        reasons = {s["id"]: s["reason"] for s in report["skipped"]}
        assert sorted(reasons) == ["1A9N_1_R", "4QK8_1_Z", "9ZZZ_1_A"]
        assert reasons["9ZZZ_1_A"].endswith("/9ZZZ.pdb: HTTP 404 Not Found")
        assert "failed after 4 attempts: HTTP 503" in reasons["1A9N_1_R"]
        assert reasons["4QK8_1_Z"] == "4QK8.pdb: chains ['Z'] not found (has ['A'])"
        assert str(tmp_path) not in (raw / "fetch_report.json").read_text()
        # nothing bad in raw: exactly the served bytes of the good entries, no temp files
        assert all_files(raw) == sorted([f"{s}.pdb" for s in ok] + ["fetch_report.json", "index.csv"])
        for sid in ok:
            assert (raw / f"{sid}.pdb").read_bytes() == (www / f"{sid}.pdb").read_bytes()
        rows = read_index(raw)
        assert [(r["id"], r["file"], r["chains"], r["model"]) for r in rows] == [
            ("1DUQ_1_A-B", "1DUQ.pdb", "A;B", "1"), ("1EHZ_1_A", "1EHZ.pdb", "A", "1"),
            ("1KXK_1_A", "1KXK.pdb", "A", "1"), ("1Y26_1_X", "1Y26.pdb", "X", "1"),
            ("1ZHO_1_H", "1ZHO.pdb", "H", "1"), ("2GDI_1_X", "2GDI.pdb", "X", "1"),
            ("434D_1_A-B", "434D.pdb", "A;B", "1")]
        index_bytes = (raw / "index.csv").read_bytes()

        srv.requests.clear()  # second run: only what is missing is asked for again
        assert main(argv) == 0
        assert sorted(srv.requests) == ["/1A9N.pdb"] * 4 + ["/4QK8.pdb", "/9ZZZ.pdb"]
        report = json.loads((raw / "fetch_report.json").read_text())
        assert (report["fetched"], report["reused"], report["failed"]) == (0, 7, 3)
        assert (raw / "index.csv").read_bytes() == index_bytes


def test_angles_reads_exactly_the_listed_chains(www, tmp_path):
    """An IFE's chains travel through index.csv to the angles stage."""
    from fault_server import FaultServer

    from rna_predict.config import AnglesConfig
    from rna_predict.data.angles_stage import run_angles

    raw = tmp_path / "raw"
    with FaultServer(www) as srv:
        config = Config(data=DataConfig(source="rcsb", raw_dir=str(raw), rcsb_url=srv.url,
                                        file_format="pdb", pdb_ids=["1DUQ_B", "1DUQ|1|A+1DUQ|1|B",
                                                                    "1DUQ"]),
                        angles=AnglesConfig(out_dir=str(tmp_path / "angles"), workers=1))
        run_fetch(config)
        assert srv.requests == ["/1DUQ.pdb"]  # one download for three records of one entry
    manifest = json.loads(run_angles(config).read_text())["records"]
    assert {rid: (e["residues"], e["chains"]) for rid, e in manifest.items()} == {
        "1DUQ": (26, ["A", "B"]), "1DUQ_1_A-B": (26, ["A", "B"]), "1DUQ_B": (14, ["B"])}


def test_gzip_files_and_content_encoding(www, tmp_path):
    from fault_server import FaultServer

    raw = tmp_path / "raw"
    cif = (www / "1EHZ.cif").read_bytes()
    with FaultServer(www, {"1EHZ.cif.gz": ["truncated"], "1EHZ.cif": ["gzip"]}) as srv:
        run_fetch(cfg(source="rcsb", raw_dir=str(raw), rcsb_url=srv.url, pdb_ids=["1EHZ"],
                      file_format="cif.gz"), backoff_s=BACKOFF)
        assert srv.requests == ["/1EHZ.cif.gz"] * 2  # half a gzip stream is retried
        assert gzip.decompress((raw / "1EHZ.cif.gz").read_bytes()) == cif
        report = json.loads((raw / "fetch_report.json").read_text())
        assert report["retries"]["1EHZ"][0].startswith("corrupt gzip body")
        run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path / "raw2"), rcsb_url=srv.url,
                      pdb_ids=["1EHZ"]))  # Content-Encoding: gzip is decoded
        assert (tmp_path / "raw2" / "1EHZ.cif").read_bytes() == cif


def test_stall_mid_body_and_empty_body_are_retried(www, tmp_path):
    from fault_server import FaultServer

    raw = tmp_path / "raw"
    with FaultServer(www, {"1EHZ": ["stall_body", "empty"]}, stall_s=3) as srv:
        run_fetch(cfg(source="rcsb", raw_dir=str(raw), rcsb_url=srv.url, pdb_ids=["1EHZ"],
                      timeout_s=0.5), backoff_s=BACKOFF)
        assert srv.count("1EHZ") == 3
    retries = json.loads((raw / "fetch_report.json").read_text())["retries"]["1EHZ"]
    assert "timed out" in retries[0] and retries[1] == "empty body (0 bytes)"
    assert (raw / "1EHZ.cif").read_bytes() == (www / "1EHZ.cif").read_bytes()


def test_download_backoff_doubles_and_404_is_final(www):
    import time

    from fault_server import FaultServer

    from rna_predict.data.download import DownloadError, download

    with FaultServer(www, {"1EHZ": ["500", "503"]}) as srv:
        t0 = time.perf_counter()
        data, reasons = download(f"{srv.url}/1EHZ.cif", 5, retries=2, backoff_s=0.1)
        assert time.perf_counter() - t0 >= 0.3  # 0.1 s, then 0.2 s
        assert data == (www / "1EHZ.cif").read_bytes() and len(reasons) == 2
        with pytest.raises(DownloadError, match="HTTP 404") as err:
            download(f"{srv.url}/9ZZZ.cif", 5, retries=3, backoff_s=0.1)
        assert err.value.reasons == ["HTTP 404 Not Found"] and srv.count("9ZZZ") == 1


def test_workers_do_not_change_outputs(www, tmp_path):
    from fault_server import FaultServer

    ids = ["1EHZ", "1DUQ", "434D_A", "1Y26", "2GDI", "1A51|1|A"]
    with FaultServer(www) as srv:
        for n in (1, 4):
            run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path / f"w{n}"), rcsb_url=srv.url,
                          pdb_ids=ids, file_format="pdb", workers=n))
    for name in ("index.csv", "fetch_report.json"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w4" / name).read_bytes()
    assert [r["id"] for r in read_index(tmp_path / "w1")] == [
        "1A51_1_A", "1DUQ", "1EHZ", "1Y26", "2GDI", "434D_A"]


def test_interrupted_run_reuses_whole_files_and_refetches_cut_ones(www, tmp_path):
    """Files left by a run that died before index.csv are parsed, not downloaded again."""
    from fault_server import FaultServer

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(www / "1EHZ.pdb", raw / "1EHZ.pdb")
    (raw / "434D.pdb").write_bytes((www / "434D.pdb").read_bytes()[:3000])  # ends in "ATO"
    (raw / ".434D.x1y2.part.pdb").write_bytes(b"ATOM")  # temp file of a killed run
    with FaultServer(www) as srv:
        run_fetch(cfg(source="rcsb", raw_dir=str(raw), rcsb_url=srv.url,
                      pdb_ids=["1EHZ", "434D"], file_format="pdb"))
        assert srv.requests == ["/434D.pdb"]
    assert (raw / "434D.pdb").read_bytes() == (www / "434D.pdb").read_bytes()
    assert all_files(raw) == ["1EHZ.pdb", "434D.pdb", "fetch_report.json", "index.csv"]
    report = json.loads((raw / "fetch_report.json").read_text())
    assert (report["fetched"], report["reused"]) == (1, 1)


def test_rcsb_all_failed_raises(www, tmp_path):
    from fault_server import FaultServer

    with FaultServer(www) as srv, pytest.raises(FetchError, match="every id failed.*9ZZZ"):
        run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path / "raw"), rcsb_url=srv.url,
                      pdb_ids=["9ZZZ"]))


@pytest.mark.parametrize("bad", ["../etc/passwd", "1EH", "ABCD", "1EHZ.cif", "pdb_1EHZ"])
def test_rcsb_invalid_id_rejected_before_any_request(www, tmp_path, bad):
    from fault_server import FaultServer

    with FaultServer(www) as srv:
        with pytest.raises(FetchError, match="invalid PDB id"):
            run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path / "raw"), rcsb_url=srv.url,
                          pdb_ids=["1EHZ", bad]))
        assert srv.requests == []


def test_bad_id_list_line_is_reported_before_any_request(www, tmp_path):
    from fault_server import FaultServer

    lst = tmp_path / "list.csv"
    lst.write_text('"NR_4.0_1.1","1EHZ|1|A","1EHZ|1|A"\n"NR_4.0_2.1","1EHZ|1|A+2EHZ|1|B","x"\n')
    with FaultServer(www) as srv:
        with pytest.raises(FetchError, match=f"{lst}:2: IFE .* spans several entries"):
            run_fetch(cfg(source="rcsb", raw_dir=str(tmp_path / "raw"), rcsb_url=srv.url,
                          id_list=str(lst)))
        assert srv.requests == []


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
