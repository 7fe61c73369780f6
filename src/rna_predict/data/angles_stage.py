"""DVC stage ``angles``: precompute torsions of every fetched structure.

Reads ``<raw_dir>/index.csv`` (written by ``fetch``), writes ``<out_dir>/<id>.pt``
records and ``<out_dir>/manifest.json`` with the tool versions (Python, MDAnalysis,
gemmi, biotite, DSSR when used, this package), the backend, and per record the sha256
of input and output and a status (``ok`` or ``skipped: reason``). A broken structure is
recorded as skipped while the rest are processed. ``angles.workers`` processes compute
records in parallel with byte-identical outputs for any count. The manifest is
rewritten atomically while records finish (at most every few seconds) and at the end,
so an interrupted run resumes where it stopped: a record whose input and output hashes
still match the manifest is not recomputed.
"""

from __future__ import annotations

import csv
import logging
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import Config
from .atomic import sha256_file
from .dssr import DSSRError, dssr_version, parse_nts, run_dssr
from .parallel import Checkpoint, run_tasks
from .records import build_record, save_pt
from .structure import StructureError, read_structure
from .torsions import compute_torsions

log = logging.getLogger(__name__)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
PSU_CHI_CONVENTION = "C-glycosidic nucleotides (pseudouridine): chi = O4'-C1'-C5-C4"


class IndexFileError(ValueError):
    """index.csv is missing or malformed."""


def read_index(raw_dir: Path) -> list[dict[str, str]]:
    """Rows of ``<raw_dir>/index.csv`` with validated ids (no path components).

    Optional columns: ``chains`` (';'-joined chain ids, empty = all RNA chains) and
    ``model`` (model number, empty or absent = first model).
    """
    path = raw_dir / "index.csv"
    if not path.is_file():
        raise IndexFileError(f"{path}: missing; run `rna-predict fetch` first")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("id", "file"):
            if key not in row:
                raise IndexFileError(f"{path}: no column {key!r}")
        if not _ID_RE.match(row["id"]):
            raise IndexFileError(f"{path}: invalid record id {row['id']!r} (letters, digits, _ and - only)")
        if (row.get("model") or "") and not row["model"].isdigit():
            raise IndexFileError(f"{path}: invalid model {row['model']!r} of {row['id']} (a number or empty)")
        target = (raw_dir / row["file"]).resolve()
        if raw_dir.resolve() not in target.parents:
            raise IndexFileError(f"{path}: file {row['file']!r} of {row['id']} is outside {raw_dir}")
    return rows


def tool_versions(backend: str) -> dict[str, str | None]:
    """Versions of everything that shapes the angle values."""
    versions = {
        name: metadata.version(dist)
        for name, dist in (("MDAnalysis", "MDAnalysis"), ("gemmi", "gemmi"), ("biotite", "biotite"),
                           ("numpy", "numpy"), ("torch", "torch"), ("rna_predict", "rna-predict"))
    }
    versions["python"] = platform.python_version()
    if backend == "dssr":
        versions["dssr"] = dssr_version()
    return versions


def _compute(row: dict[str, str], raw_dir: Path, cfg: Config, out: Path) -> dict[str, Any]:
    chains = [c for c in (row.get("chains") or "").split(";") if c] or None
    model = int(row["model"]) if row.get("model") else None
    structure = read_structure(raw_dir / row["file"], chains=chains, link_cutoff=cfg.angles.link_cutoff,
                               model=model)
    if cfg.angles.backend == "dssr":
        torsions = parse_nts(run_dssr(raw_dir / row["file"]), structure)
    else:
        torsions = compute_torsions(structure)
    save_pt(build_record(row["id"], structure, torsions), out)
    return {"residues": len(structure), "chains": sorted(set(structure.chain_ids)),
            "warnings": structure.warnings}


def _angles_task(row: dict[str, str], raw_dir: Path, cfg: Config, out: Path,
                 in_sha: str | None) -> dict[str, Any]:
    """Worker: compute one record with :func:`_compute`; its manifest entry (ok or skipped)."""
    src = raw_dir / row["file"]
    entry: dict[str, Any] = {"file": row["file"], "input_sha256": in_sha}
    try:
        entry.update(_compute(row, raw_dir, cfg, out))
        entry["status"] = "ok"
        entry["output_sha256"] = sha256_file(out)
    except (StructureError, DSSRError) as exc:
        reason = str(exc).replace(str(src), row["file"])  # no absolute paths in outputs
        log.error("skipping %s: %s", row["id"], exc)
        entry["status"] = f"skipped: {reason}"
        out.unlink(missing_ok=True)
    return entry


def run_angles(cfg: Config) -> Path:
    """Run the stage with ``angles.workers`` processes; returns the manifest path.

    Records already in the manifest with the same input hash, tool versions, backend and
    link cutoff, whose output file still has its recorded hash, are reused; the rest are
    computed by :func:`rna_predict.data.parallel.run_tasks` (in this process when
    ``workers == 1``). Each worker writes its record with the same deterministic code and
    the manifest is keyed by id with sorted keys, so every output byte is independent of
    the worker count. The manifest is checkpointed while records finish, so an
    interrupted run resumes where it stopped.
    """
    if cfg.angles.backend not in ("mdanalysis", "dssr"):
        raise ValueError(f"angles.backend must be mdanalysis or dssr, not {cfg.angles.backend!r}")
    if cfg.angles.workers < 1:
        raise ValueError(f"angles.workers must be >= 1, not {cfg.angles.workers}")
    raw_dir, out_dir = Path(cfg.data.raw_dir), Path(cfg.angles.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_index(raw_dir)
    manifest_path = out_dir / "manifest.json"
    previous = _load_previous(manifest_path, cfg.angles.backend, cfg.angles.link_cutoff)
    manifest: dict[str, Any] = {
        "backend": cfg.angles.backend,
        "link_cutoff": cfg.angles.link_cutoff,
        "chi_convention": PSU_CHI_CONVENTION,
        "versions": tool_versions(cfg.angles.backend),
        "records": {},
    }
    wanted = {row["id"] for row in rows}
    for stale in sorted(out_dir.glob("*.pt")):
        if stale.stem not in wanted:
            stale.unlink()
    todo: list[tuple[dict[str, str], Path, Config, Path, str | None]] = []
    for row in rows:
        rid, src = row["id"], raw_dir / row["file"]
        out = out_dir / f"{rid}.pt"
        in_sha = sha256_file(src) if src.is_file() else None
        old = previous.get(rid)
        if old and old.get("input_sha256") == in_sha and old.get("status") == "ok" \
                and out.is_file() and sha256_file(out) == old.get("output_sha256"):
            manifest["records"][rid] = old
        else:
            todo.append((row, raw_dir, cfg, out, in_sha))
    checkpoint = Checkpoint(manifest_path)
    try:
        for k, entry in run_tasks(_angles_task, todo, int(cfg.angles.workers), "angles", "structure"):
            manifest["records"][todo[k][0]["id"]] = entry
            checkpoint.maybe_write(manifest)
    finally:  # also on interruption: what finished so far is reused by the next run
        checkpoint.write(manifest)
    ok = sum(1 for e in manifest["records"].values() if e["status"] == "ok")
    log.info("angles: %d ok, %d skipped, %d reused", ok, len(rows) - ok, len(rows) - len(todo))
    if ok == 0:
        raise RuntimeError(f"{manifest_path}: no structure could be processed")
    return manifest_path


def _load_previous(path: Path, backend: str, link_cutoff: float) -> dict[str, Any]:
    """Records of an earlier manifest made with the same backend, link cutoff and versions."""
    import json

    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    if data.get("backend") != backend or data.get("versions") != tool_versions(backend) \
            or data.get("link_cutoff") != link_cutoff:
        return {}
    return data.get("records", {})
