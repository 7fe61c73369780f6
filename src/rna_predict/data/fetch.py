"""The ``fetch`` stage: put raw PDB/mmCIF structures into ``data.raw_dir``.

ARCHITECTURE.md section 3. Three sources (``data.source``):

- ``demo``: 17 pinned experimental structures shipped inside the PyPI wheel
  ``rna-tools==3.28``. The wheel is downloaded with pip (hash-checked, never installed)
  into a cache (``$RNA_PREDICT_CACHE`` or ``~/.cache/rna-predict``); the listed members
  are extracted and checked against ``demo_manifest.json``.
- ``local``: every ``.pdb``/``.cif``/``.cif.gz``/``.ent`` file of ``data.local_dir``.
- ``rcsb``: ``data.pdb_ids`` downloaded from ``{rcsb_url}/{ID}.{cif|pdb}``; an id that
  fails is recorded in ``fetch_report.json`` while the others proceed.

Outputs: the structures, ``index.csv`` (``id,file,chains,sha256,source``; sorted by id;
``chains`` empty = all RNA chains) and ``fetch_report.json``. A file already present
with the expected sha256 is kept as is (resume). Every write is atomic.
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
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rna_predict.config import Config
from rna_predict.data.atomic import sha256_file, write_bytes, write_json, write_text

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("demo_manifest.json")
WHEEL_PREFIX = "rna_tools/tools/"
INDEX_NAME = "index.csv"
REPORT_NAME = "fetch_report.json"
INDEX_COLUMNS = ("id", "file", "chains", "sha256", "source")
LOCAL_SUFFIXES = (".cif.gz", ".pdb", ".cif", ".ent")
BACKOFF_S = 1.0  # first retry delay for rcsb downloads; doubles per attempt
USER_AGENT = "rna-predict-fetch/0.1"

_LOCAL_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_PDB_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")
_EXT_PDB_ID = re.compile(r"^pdb_[0-9]{4}[0-9][A-Za-z0-9]{3}$", re.IGNORECASE)


class FetchError(ValueError):
    """A structure could not be fetched or verified; the message names it and why."""


@dataclass(frozen=True)
class Row:
    """One line of ``index.csv``."""

    id: str
    file: str
    sha256: str
    source: str
    chains: str = ""


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
def fetch_demo(raw_dir: str | Path, cache_dir: str | Path | None = None) -> list[Row]:
    """Write the 17 demo structures as ``<raw_dir>/<ID>.pdb``; the wheel is only opened if needed."""
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


def fetch_local(local_dir: str | Path, raw_dir: str | Path) -> list[Row]:
    """Copy every structure file of ``local_dir`` (sorted) to ``<raw_dir>/<ID><suffix>``."""
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
    for sid in tqdm(sorted(found), desc="fetch local", unit="file", disable=None):
        path, suffix = found[sid]
        dest = raw / f"{sid}{suffix}"
        sha = sha256_file(path)
        if not _has_sha(dest, sha):
            write_bytes(dest, path.read_bytes())
        rows.append(Row(sid, dest.name, sha, "local"))
    return rows


def normalize_pdb_id(raw_id: str) -> str:
    """Canonical form of a PDB id (``1EHZ``, ``pdb_00001EHZ``); FetchError if malformed."""
    sid = str(raw_id).strip()
    if _PDB_ID.match(sid):
        return sid.upper()
    if _EXT_PDB_ID.match(sid):
        return "pdb_" + sid[4:].upper()
    raise FetchError(f"invalid PDB id {raw_id!r}: expected 4 characters starting with a digit "
                     "(1EHZ) or the extended form pdb_0000xxxx")


def _looks_like(data: bytes, file_format: str) -> bool:
    if file_format == "cif":
        return b"data_" in data[:4096]
    return b"ATOM  " in data or b"HETATM" in data


def download(url: str, timeout_s: float, retries: int) -> bytes:
    """GET ``url``; transient failures (network, 408/429/5xx) are retried with backoff."""
    attempt = 0
    while True:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            transient = exc.code in (408, 429) or exc.code >= 500
            reason = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            transient = True
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if not transient or attempt >= retries:
            raise FetchError(f"{url}: {reason}")
        delay = BACKOFF_S * 2**attempt
        attempt += 1
        logger.warning("%s: %s; retry %d/%d in %.1fs", url, reason, attempt, retries, delay)
        time.sleep(delay)


def _previous_index(raw: Path) -> dict[str, Row]:
    path = raw / INDEX_NAME
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["id"]: Row(r["id"], r["file"], r["sha256"], r["source"], r.get("chains") or "")
                for r in csv.DictReader(fh)}


def fetch_rcsb(pdb_ids: list[str], raw_dir: str | Path, rcsb_url: str, file_format: str = "cif",
               timeout_s: float = 60.0, retries: int = 3) -> tuple[list[Row], list[dict[str, str]]]:
    """Download ``pdb_ids``; return (rows, skipped) where skipped = ``[{id, reason}]``.

    Every id is validated before the first request. A file already listed in a previous
    ``index.csv`` with a matching sha256 is not downloaded again.
    """
    if file_format not in ("cif", "pdb"):
        raise FetchError(f"data.file_format {file_format!r}: expected cif or pdb")
    if not rcsb_url.startswith(("http://", "https://")):
        raise FetchError(f"data.rcsb_url {rcsb_url!r}: expected an http(s) URL")
    if retries < 0 or timeout_s <= 0:
        raise FetchError(f"data.retries={retries}, data.timeout_s={timeout_s}: must be >= 0 and > 0")
    ids = sorted({normalize_pdb_id(i) for i in pdb_ids})
    if not ids:
        raise FetchError("data.pdb_ids is empty: nothing to fetch from rcsb")
    raw = Path(raw_dir)
    previous = _previous_index(raw)
    rows, skipped = [], []
    for sid in tqdm(ids, desc="fetch rcsb", unit="file", disable=None):
        dest = raw / f"{sid}.{file_format}"
        old = previous.get(sid)
        if old and old.file == dest.name and _has_sha(dest, old.sha256):
            rows.append(Row(sid, dest.name, old.sha256, "rcsb"))
            continue
        url = f"{rcsb_url.rstrip('/')}/{sid}.{file_format}"
        try:
            data = download(url, timeout_s, retries)
            if not _looks_like(data, file_format):
                raise FetchError(f"{url}: response is not a {file_format} file ({len(data)} bytes)")
        except FetchError as exc:
            logger.error("%s: skipped: %s", sid, exc)
            skipped.append({"id": sid, "reason": str(exc)})
            continue
        write_bytes(dest, data)
        rows.append(Row(sid, dest.name, sha256_file(dest), "rcsb"))
    return rows, skipped


# --------------------------------------------------------------------------- stage
def write_index(raw_dir: str | Path, rows: list[Row]) -> Path:
    """Write ``<raw_dir>/index.csv`` sorted by id (LF line endings, no timestamps)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for row in sorted(rows, key=lambda r: r.id):
        writer.writerow([row.id, row.file, row.chains, row.sha256, row.source])
    path = Path(raw_dir) / INDEX_NAME
    write_text(path, buf.getvalue())
    return path


def run_fetch(cfg: Config) -> Path:
    """Run the fetch stage for ``cfg.data``; return the path of ``index.csv``."""
    data = cfg.data
    raw = Path(data.raw_dir)
    skipped: list[dict[str, str]] = []
    if data.source == "demo":
        rows = fetch_demo(raw)
    elif data.source == "local":
        rows = fetch_local(data.local_dir, raw)
    elif data.source == "rcsb":
        rows, skipped = fetch_rcsb(list(data.pdb_ids), raw, data.rcsb_url, data.file_format,
                                   data.timeout_s, data.retries)
    else:
        raise FetchError(f"data.source {data.source!r}: expected demo, local or rcsb")
    report = {"source": data.source, "fetched": len(rows), "skipped": skipped}
    write_json(raw / REPORT_NAME, report)
    if not rows:
        raise FetchError(f"rcsb: every id failed: {'; '.join(s['reason'] for s in skipped)}")
    listed = {r.file for r in rows} | {INDEX_NAME, REPORT_NAME}
    stale = sorted(p.name for p in raw.iterdir() if p.is_file() and p.name not in listed
                   and not p.name.startswith("."))
    if stale:
        logger.warning("%s holds files not in the index (ignored): %s", raw, ", ".join(stale))
    index = write_index(raw, rows)
    logger.info("fetch: %d structures (%d skipped) -> %s", len(rows), len(skipped), index)
    return index


__all__ = ["FetchError", "Row", "run_fetch", "fetch_demo", "fetch_local", "fetch_rcsb",
           "ensure_wheel", "extract_wheel_member", "extract_extra", "load_manifest", "demo_ids",
           "default_cache_dir", "normalize_pdb_id", "validate_local_id", "write_index", "download"]
