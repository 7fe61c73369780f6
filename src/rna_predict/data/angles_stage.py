"""DVC stage ``angles``: precompute torsions of every fetched structure.

Reads ``<raw_dir>/index.csv`` (written by ``fetch``), writes ``<out_dir>/<id>.pt``
records and ``<out_dir>/manifest.json`` with the tool versions (Python, MDAnalysis,
gemmi, biotite, DSSR when used, this package), the backend, and per record the sha256
of input and output and a status (``ok`` or ``skipped: reason``). A broken structure is
recorded as skipped while the rest are processed. The manifest is rewritten atomically
after every record, so an interrupted run resumes where it stopped: a record whose
input and output hashes still match the manifest is not recomputed.
"""

from __future__ import annotations

import csv
import logging
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..config import Config
from .atomic import sha256_file, write_json
from .dssr import DSSRError, dssr_version, parse_nts, run_dssr
from .records import build_record, save_pt
from .structure import StructureError, read_structure
from .torsions import compute_torsions

log = logging.getLogger(__name__)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
PSU_CHI_CONVENTION = "C-glycosidic nucleotides (pseudouridine): chi = O4'-C1'-C5-C4"


class IndexFileError(ValueError):
    """index.csv is missing or malformed."""


def read_index(raw_dir: Path) -> list[dict[str, str]]:
    """Rows of ``<raw_dir>/index.csv`` with validated ids (no path components)."""
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
    structure = read_structure(raw_dir / row["file"], chains=chains, link_cutoff=cfg.angles.link_cutoff)
    if cfg.angles.backend == "dssr":
        torsions = parse_nts(run_dssr(raw_dir / row["file"]), structure)
    else:
        torsions = compute_torsions(structure)
    save_pt(build_record(row["id"], structure, torsions), out)
    return {"residues": len(structure), "chains": sorted(set(structure.chain_ids)),
            "warnings": structure.warnings}


def run_angles(cfg: Config) -> Path:
    """Run the stage; returns the manifest path."""
    if cfg.angles.backend not in ("mdanalysis", "dssr"):
        raise ValueError(f"angles.backend must be mdanalysis or dssr, not {cfg.angles.backend!r}")
    raw_dir, out_dir = Path(cfg.data.raw_dir), Path(cfg.angles.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_index(raw_dir)
    manifest_path = out_dir / "manifest.json"
    previous = _load_previous(manifest_path, cfg.angles.backend)
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
    for row in tqdm(rows, desc="angles", unit="structure"):
        rid, src = row["id"], raw_dir / row["file"]
        out = out_dir / f"{rid}.pt"
        in_sha = sha256_file(src) if src.is_file() else None
        old = previous.get(rid)
        if old and old.get("input_sha256") == in_sha and old.get("status") == "ok" \
                and out.is_file() and sha256_file(out) == old.get("output_sha256"):
            manifest["records"][rid] = old
            continue
        entry: dict[str, Any] = {"file": row["file"], "input_sha256": in_sha}
        try:
            entry.update(_compute(row, raw_dir, cfg, out))
            entry["status"] = "ok"
            entry["output_sha256"] = sha256_file(out)
        except (StructureError, DSSRError) as exc:
            reason = str(exc).replace(str(src), row["file"])  # no absolute paths in outputs
            log.error("skipping %s: %s", rid, exc)
            entry["status"] = f"skipped: {reason}"
            out.unlink(missing_ok=True)
        manifest["records"][rid] = entry
        write_json(manifest_path, manifest)
    write_json(manifest_path, manifest)
    ok = sum(1 for e in manifest["records"].values() if e["status"] == "ok")
    log.info("angles: %d ok, %d skipped", ok, len(rows) - ok)
    if ok == 0:
        raise RuntimeError(f"{manifest_path}: no structure could be processed")
    return manifest_path


def _load_previous(path: Path, backend: str) -> dict[str, Any]:
    import json

    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    if data.get("backend") != backend or data.get("versions") != tool_versions(backend):
        return {}
    return data.get("records", {})
