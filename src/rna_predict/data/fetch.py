"""The ``fetch`` stage: put raw PDB/mmCIF structures into ``data.raw_dir``.

ARCHITECTURE.md section 3. Three sources (``data.source``):

- ``demo``: 17 pinned experimental structures shipped inside the PyPI wheel
  ``rna-tools==3.28``. The wheel is downloaded with pip (hash-checked, never installed)
  into a cache (``$RNA_PREDICT_CACHE`` or ``~/.cache/rna-predict``); the listed members
  are extracted and checked against ``demo_manifest.json``.
- ``local``: every ``.pdb``/``.cif``/``.cif.gz``/``.ent`` file of ``data.local_dir``.
- ``rcsb``: the records of ``data.pdb_ids`` and the ``data.id_list`` file (BGSU
  representative-set CSV or one ``PDBID``/``PDBID_CHAIN`` per line;
  :mod:`rna_predict.data.id_list`), one file per PDB entry downloaded from
  ``{rcsb_url}/{ID}.{data.file_format}`` by ``data.workers`` threads with retries
  (:mod:`rna_predict.data.download`). Each body is parsed before it is kept; a record
  that fails is recorded in ``fetch_report.json`` while the others proceed.

Outputs: the structures, ``index.csv`` (``id,file,chains,model,sha256,source``; sorted
by id; ``chains`` ';'-joined, empty = all RNA chains; ``model`` empty = first model) and
``fetch_report.json``. A file already present with the expected sha256 is kept as is
(resume). Every write is atomic.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rna_predict.config import Config
from rna_predict.data import id_list
from rna_predict.data.atomic import _UMASK, sha256_file, write_bytes, write_json, write_text
from rna_predict.data.download import DownloadError, InvalidBody, download
from rna_predict.data.id_list import Entry, IdListError
from rna_predict.data.structure import StructureError, StructureFileError, read_structure

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("demo_manifest.json")
WHEEL_PREFIX = "rna_tools/tools/"
INDEX_NAME = "index.csv"
REPORT_NAME = "fetch_report.json"
INDEX_COLUMNS = ("id", "file", "chains", "model", "sha256", "source")
LOCAL_SUFFIXES = (".cif.gz", ".pdb", ".cif", ".ent")
FILE_FORMATS = ("cif", "pdb", "cif.gz", "pdb.gz")  # data.file_format for rcsb

_LOCAL_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class FetchError(ValueError):
    """A structure could not be fetched or verified; the message names it and why."""


@dataclass(frozen=True)
class Row:
    """One line of ``index.csv``."""

    id: str
    file: str
    sha256: str
    source: str
    chains: str = ""  # ';'-joined author chain ids; empty = every RNA chain
    model: str = ""  # model number; empty = first model


# --------------------------------------------------------------------------- manifest
@lru_cache(maxsize=1)
def load_manifest() -> dict[str, Any]:
    """The committed demo manifest: ``wheel``, ``structures`` and ``extras`` maps."""
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))


def demo_ids() -> list[str]:
    """Sorted ids of the pinned demo set."""
    return sorted(load_manifest()["structures"])


def default_cache_dir() -> Path:
    """``$RNA_PREDICT_CACHE`` if set, else ``~/.cache/rna-predict``."""
    env = os.environ.get("RNA_PREDICT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rna-predict"


def _has_sha(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


# --------------------------------------------------------------------------- wheel
def ensure_wheel(cache_dir: str | Path | None = None) -> Path:
    """Path of the hash-checked ``rna-tools`` wheel, downloading it with pip if needed.

    A cached wheel whose sha256 matches is reused; otherwise ``pip download`` runs with
    ``--require-hashes`` into a temporary folder of the cache, and the checked wheel is
    moved into place. The wheel is never installed.
    """
    spec = load_manifest()["wheel"]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wheel = cache / spec["filename"]
    if _has_sha(wheel, spec["sha256"]):
        return wheel
    if wheel.exists():
        logger.warning("%s: sha256 mismatch, downloading the wheel again", wheel)
    cache.mkdir(parents=True, exist_ok=True)
    requirement = f"{spec['name']}=={spec['version']}"
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=cache) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{requirement} --hash=sha256:{spec['sha256']}\n", encoding="utf-8")
        dest = Path(tmp) / "dl"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "--disable-pip-version-check", "--no-input", "-q",
               "--dest", str(dest), "-r", str(req)]
        logger.info("downloading %s with pip into %s", requirement, cache)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = dest / spec["filename"]
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise FetchError(f"{requirement}: pip download failed (exit {proc.returncode}): {tail}")
        if sha256_file(got) != spec["sha256"]:
            raise FetchError(f"{requirement}: downloaded wheel does not match the pinned sha256")
        os.replace(got, wheel)
    return wheel


def extract_wheel_member(member: str, dest: str | Path, sha256: str,
                         wheel: str | Path | None = None) -> Path:
    """Extract ``member`` of the rna-tools wheel to ``dest`` after checking its sha256.

    ``member`` is the path inside the wheel, with or without the ``rna_tools/tools/``
    prefix. If ``dest`` already holds the expected bytes nothing is done. ``wheel``
    defaults to :func:`ensure_wheel` (download on first use).
    """
    dest = Path(dest)
    if _has_sha(dest, sha256):
        return dest
    name = member if member.startswith("rna_tools/") else WHEEL_PREFIX + member
    wheel_path = Path(wheel) if wheel is not None else ensure_wheel()
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            data = zf.read(name)
    except KeyError:
        raise FetchError(f"{name}: not a member of {wheel_path.name}") from None
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel_path}: not a valid wheel ({exc})") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise FetchError(f"{name}: sha256 {got} does not match the manifest ({sha256})")
    write_bytes(dest, data)
    return dest


def extract_extra(name: str, dest_dir: str | Path, wheel: str | Path | None = None) -> Path:
    """Extract the benchmark extra ``name`` (``1EHZ_CIF``, ``3JBV``, ``1Z58``) into ``dest_dir``."""
    extras = load_manifest()["extras"]
    if name not in extras:
        raise FetchError(f"{name}: unknown extra (known: {', '.join(sorted(extras))})")
    entry = extras[name]
    return extract_wheel_member(entry["member"], Path(dest_dir) / entry["file"], entry["sha256"], wheel)


# --------------------------------------------------------------------------- sources
def fetch_demo(raw_dir: str | Path, cache_dir: str | Path | None = None,
               stats: dict[str, int] | None = None) -> list[Row]:
    """Write the 17 demo structures as ``<raw_dir>/<ID>.pdb``; the wheel is only opened if needed.

    ``stats`` (if given) receives ``fetched`` (files extracted) and ``reused`` counts.
    """
    raw = Path(raw_dir)
    structures = load_manifest()["structures"]
    todo = [i for i in sorted(structures) if not _has_sha(raw / f"{i}.pdb", structures[i]["sha256"])]
    logger.info("demo: %d of %d structures present, %d to extract",
                len(structures) - len(todo), len(structures), len(todo))
    if todo:
        wheel = ensure_wheel(cache_dir)
        for sid in tqdm(todo, desc="fetch demo", unit="file", disable=None):
            entry = structures[sid]
            extract_wheel_member(entry["member"], raw / f"{sid}.pdb", entry["sha256"], wheel)
    if stats is not None:
        stats.update(fetched=len(todo), reused=len(structures) - len(todo))
    return [Row(i, f"{i}.pdb", structures[i]["sha256"], "demo") for i in sorted(structures)]


def validate_local_id(sid: str, origin: str | None = None) -> str:
    """Return ``sid`` if it only has letters, digits, ``_`` and ``-``; else raise FetchError."""
    if not _LOCAL_ID.match(sid):
        where = f" (from {origin})" if origin else ""
        raise FetchError(f"invalid structure id {sid!r}{where}: only letters, digits, '_' and '-' "
                         "are allowed")
    return sid


def _split_suffix(name: str) -> tuple[str, str] | None:
    low = name.lower()
    for suffix in LOCAL_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def fetch_local(local_dir: str | Path, raw_dir: str | Path,
                stats: dict[str, int] | None = None) -> list[Row]:
    """Copy every structure file of ``local_dir`` (sorted) to ``<raw_dir>/<ID><suffix>``.

    ``stats`` (if given) receives ``fetched`` (files copied) and ``reused`` counts.
    """
    src_dir, raw = Path(local_dir), Path(raw_dir)
    if not str(local_dir) or not src_dir.is_dir():
        raise FetchError(f"data.local_dir {str(local_dir)!r}: not a directory")
    if raw.exists() and src_dir.resolve() == raw.resolve():
        raise FetchError(f"data.local_dir {str(local_dir)!r} must differ from data.raw_dir")
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(src_dir.iterdir()):
        split = _split_suffix(path.name)
        if split is None or not path.is_file():
            continue
        sid = validate_local_id(split[0].upper(), origin=str(path.name))
        if sid in found:
            raise FetchError(f"duplicate structure id {sid!r}: {found[sid][0].name} and {path.name}")
        found[sid] = (path, split[1])
    if not found:
        raise FetchError(f"data.local_dir {str(local_dir)!r}: no {', '.join(LOCAL_SUFFIXES)} files")
    rows = []
    copied = 0
    for sid in tqdm(sorted(found), desc="fetch local", unit="file", disable=None):
        path, suffix = found[sid]
        dest = raw / f"{sid}{suffix}"
        sha = sha256_file(path)
        if not _has_sha(dest, sha):
            write_bytes(dest, path.read_bytes())
            copied += 1
        rows.append(Row(sid, dest.name, sha, "local"))
    if stats is not None:
        stats.update(fetched=copied, reused=len(rows) - copied)
    return rows


def normalize_pdb_id(raw_id: str) -> str:
    """Canonical form of a PDB id (``1EHZ``, ``pdb_00001EHZ``); FetchError if malformed."""
    try:
        return id_list.normalize_pdb_id(raw_id)
    except IdListError as exc:
        raise FetchError(str(exc)) from None


def _previous_index(raw: Path) -> dict[str, Row]:
    path = raw / INDEX_NAME
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["id"]: Row(r["id"], r["file"], r["sha256"], r["source"], r.get("chains") or "",
                             r.get("model") or "")
                for r in csv.DictReader(fh)}


@dataclass
class _EntryResult:
    """Outcome of one PDB entry (one file, one or more records)."""

    rows: list[Row] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # record id -> reason
    retries: list[str] = field(default_factory=list)  # reasons of failed attempts
    status: str = "failed"  # fetched | reused | failed


def _row(entry: Entry, file: str, sha: str) -> Row:
    model = "" if entry.model is None else str(entry.model)
    return Row(entry.record_id, file, sha, "rcsb", ";".join(entry.chains), model)


def _check_records(path: Path, entries: list[Entry], shown: str) -> dict[Entry, str | None]:
    """Per entry: None if its chains/model of ``path`` hold RNA, else the reason.

    A :class:`StructureFileError` (empty, truncated, unparsable file) propagates: the
    file itself is bad. Paths in reasons are replaced by ``shown`` (no temp names).
    """
    out: dict[Entry, str | None] = {}
    for entry in entries:
        try:
            read_structure(path, chains=list(entry.chains) or None, model=entry.model)
            out[entry] = None
        except StructureFileError:
            raise
        except StructureError as exc:
            out[entry] = str(exc).replace(str(path), shown)
    return out


def _fetch_entry(pdb_id: str, entries: list[Entry], raw: Path, base_url: str, ext: str,
                 timeout_s: float, retries: int, backoff_s: float | None,
                 previous: dict[str, Row]) -> _EntryResult:
    """Reuse or download ``<raw>/<pdb_id>.<ext>`` and check every record of it."""
    dest = raw / f"{pdb_id}.{ext}"
    result = _EntryResult()
    known = {r.sha256 for r in previous.values() if r.file == dest.name}
    if dest.is_file():
        sha = sha256_file(dest)
        old = [previous.get(e.record_id) for e in entries]  # the record id encodes chains, model
        if sha in known and all(r is not None and r.file == dest.name and r.sha256 == sha
                                for r in old):
            result.rows = [_row(e, dest.name, sha) for e in entries]  # resume: no parsing
            result.status = "reused"
            return result
        try:  # present but not (all) indexed: an interrupted run, or new records of the file
            checks = _check_records(dest, entries, dest.name)
        except StructureFileError as exc:
            logger.warning("%s: present but unusable, downloading again: %s", dest, exc)
        else:
            result.rows = [_row(e, dest.name, sha) for e, why in checks.items() if why is None]
            result.failed = {e.record_id: why for e, why in checks.items() if why is not None}
            result.status = "reused" if result.rows else "failed"
            return result

    url = f"{base_url}/{pdb_id}.{ext}"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{pdb_id}.", suffix=f".part.{ext}", dir=raw)
    os.close(fd)
    tmp = Path(tmp_name)
    checks: dict[Entry, str | None] = {}

    def validate(data: bytes) -> None:
        with open(tmp, "wb") as fh:  # on disk before os.replace makes it visible
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            checks.update(_check_records(tmp, entries, dest.name))
        except StructureFileError as exc:
            raise InvalidBody(str(exc).replace(str(tmp), dest.name)) from None
        except (RuntimeError, ValueError, OSError) as exc:  # a parser error we do not know
            raise InvalidBody(f"{dest.name}: cannot parse: "
                              f"{str(exc).replace(str(tmp), dest.name)}") from None

    try:
        _, result.retries = download(url, timeout_s, retries, validate, backoff_s)
        result.failed = {e.record_id: why for e, why in checks.items() if why is not None}
        if any(why is None for why in checks.values()):
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, dest)  # atomic: only a validated file ever lands in raw_dir
            sha = sha256_file(dest)
            result.rows = [_row(e, dest.name, sha) for e, why in checks.items() if why is None]
            result.status = "fetched"
    except DownloadError as exc:
        result.retries = exc.reasons[:-1]  # the attempts that were followed by a retry
        result.failed = {e.record_id: str(exc) for e in entries}
    finally:
        tmp.unlink(missing_ok=True)
    return result


def fetch_rcsb(entries: list[Entry | str], raw_dir: str | Path, rcsb_url: str,
               file_format: str = "cif", timeout_s: float = 60.0, retries: int = 3,
               workers: int = 4, backoff_s: float | None = None) -> tuple[list[Row], dict[str, Any]]:
    """Download the files of ``entries``; return (rows, report) (see :func:`run_fetch`).

    ``entries`` are :class:`~rna_predict.data.id_list.Entry` objects or id strings
    (``1EHZ``, ``1EHZ_A``, IFEs). One file is fetched per PDB entry, by ``workers``
    threads; each attempt's body is validated (:mod:`rna_predict.data.download`) and
    parsed with :func:`~rna_predict.data.structure.read_structure` for every record of
    the entry before it is moved into place. A truncated or unparsable body is retried;
    an entry whose listed chains or model are absent or hold no RNA is a failed record.
    A file already present whose sha256 is the one recorded in ``index.csv`` is not
    downloaded again; one present without a record is parsed and reused if it is whole.
    Results do not depend on ``workers`` or completion order (sorted by record id).
    """
    if file_format not in FILE_FORMATS:
        raise FetchError(f"data.file_format {file_format!r}: expected one of {', '.join(FILE_FORMATS)}")
    if not rcsb_url.startswith(("http://", "https://")):
        raise FetchError(f"data.rcsb_url {rcsb_url!r}: expected an http(s) URL")
    if retries < 0 or timeout_s <= 0:
        raise FetchError(f"data.retries={retries}, data.timeout_s={timeout_s}: must be >= 0 and > 0")
    if workers < 1:
        raise FetchError(f"data.workers={workers}: must be >= 1")
    try:
        parsed = sorted({e if isinstance(e, Entry) else id_list.parse_token(e) for e in entries},
                        key=lambda e: e.record_id)
    except IdListError as exc:
        raise FetchError(str(exc)) from None
    if not parsed:
        raise FetchError("data.pdb_ids and data.id_list are empty: nothing to fetch from rcsb")
    groups: dict[str, list[Entry]] = {}
    for entry in parsed:
        groups.setdefault(entry.pdb_id, []).append(entry)
    raw = Path(raw_dir)
    raw.mkdir(parents=True, exist_ok=True)
    for leftover in raw.glob(".*.part.*"):  # temp files of a run that was killed
        leftover.unlink()
    previous = _previous_index(raw)
    base = rcsb_url.rstrip("/")
    results: dict[str, _EntryResult] = {}
    logger.info("rcsb: %d records in %d entries, %d workers", len(parsed), len(groups), workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        futures = {pool.submit(_fetch_entry, pid, group, raw, base, file_format, timeout_s,
                               retries, backoff_s, previous): pid for pid, group in groups.items()}
        for future in tqdm(as_completed(futures), total=len(futures), desc="fetch rcsb",
                           unit="entry", disable=None):
            results[futures[future]] = future.result()
    rows = sorted((r for res in results.values() for r in res.rows), key=lambda r: r.id)
    failed = {rid: why for res in results.values() for rid, why in res.failed.items()}
    for rid in sorted(failed):
        logger.error("%s: skipped: %s", rid, failed[rid])
    report = {
        "records": len(rows),
        "fetched": sum(res.status == "fetched" for res in results.values()),
        "reused": sum(res.status == "reused" for res in results.values()),
        "retried": sum(bool(res.retries) for res in results.values()),
        "failed": len(failed),
        "skipped": [{"id": rid, "reason": failed[rid]} for rid in sorted(failed)],
        "retries": {pid: res.retries for pid, res in sorted(results.items()) if res.retries},
    }
    return rows, report


# --------------------------------------------------------------------------- stage
def write_index(raw_dir: str | Path, rows: list[Row]) -> Path:
    """Write ``<raw_dir>/index.csv`` sorted by id (LF line endings, no timestamps)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for row in sorted(rows, key=lambda r: r.id):
        writer.writerow([row.id, row.file, row.chains, row.model, row.sha256, row.source])
    path = Path(raw_dir) / INDEX_NAME
    write_text(path, buf.getvalue())
    return path


def run_fetch(cfg: Config, backoff_s: float | None = None) -> Path:
    """Run the fetch stage for ``cfg.data``; return the path of ``index.csv``.

    Also writes ``fetch_report.json`` (sorted keys): ``source``; ``records`` (rows of
    ``index.csv``); ``fetched`` and ``reused`` (files downloaded/extracted/copied by
    this run, and files kept from a previous run); ``retried`` (entries that needed
    more than one attempt); ``failed`` (records left out) with ``skipped``
    (``[{id, reason}]`` sorted by id); ``retries`` (entry -> reasons of its failed
    attempts). ``backoff_s`` overrides :data:`rna_predict.data.download.BACKOFF_S`.
    """
    data = cfg.data
    raw = Path(data.raw_dir)
    stats = {"fetched": 0, "reused": 0}
    report: dict[str, Any]
    if data.source in ("demo", "local") and (data.id_list or data.pdb_ids):
        logger.warning("data.source=%s: data.id_list and data.pdb_ids are ignored (rcsb only)",
                       data.source)
    if data.source == "demo":
        rows = fetch_demo(raw, stats=stats)
    elif data.source == "local":
        rows = fetch_local(data.local_dir, raw, stats=stats)
    elif data.source == "rcsb":
        try:
            entries = id_list.resolve_entries(list(data.pdb_ids), data.id_list)
        except IdListError as exc:
            raise FetchError(str(exc)) from None
        rows, report = fetch_rcsb(entries, raw, data.rcsb_url, data.file_format, data.timeout_s,
                                  data.retries, data.workers, backoff_s)
    else:
        raise FetchError(f"data.source {data.source!r}: expected demo, local or rcsb")
    if data.source != "rcsb":
        report = {"records": len(rows), **stats, "retried": 0, "failed": 0, "skipped": [],
                  "retries": {}}
    report["source"] = data.source
    write_json(raw / REPORT_NAME, report)
    if not rows:
        raise FetchError(f"rcsb: every id failed: "
                         f"{'; '.join(s['id'] + ': ' + s['reason'] for s in report['skipped'])}")
    listed = {r.file for r in rows} | {INDEX_NAME, REPORT_NAME}
    stale = sorted(p.name for p in raw.iterdir() if p.is_file() and p.name not in listed
                   and not p.name.startswith("."))
    if stale:
        logger.warning("%s holds files not in the index (ignored): %s", raw, ", ".join(stale))
    index = write_index(raw, rows)
    logger.info("fetch: %d records (%d files fetched, %d reused, %d entries retried, %d failed) -> %s",
                len(rows), report["fetched"], report["reused"], report["retried"], report["failed"],
                index)
    return index


__all__ = ["FetchError", "Row", "run_fetch", "fetch_demo", "fetch_local", "fetch_rcsb",
           "ensure_wheel", "extract_wheel_member", "extract_extra", "load_manifest", "demo_ids",
           "default_cache_dir", "normalize_pdb_id", "validate_local_id", "write_index", "download"]
