"""The ``data/angles/<id>.pt`` record: build, save atomically, load safely.

Keys and dtypes are the data contract of ARCHITECTURE.md section 4. Records are plain
dicts of tensors, strings and lists so that ``torch.load(..., weights_only=True)`` can
read them without executing code.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_bytes
from .structure import Structure
from .torsions import TorsionResult

#: what the sequence-only stages (features, split) need
SEQUENCE_KEYS = ("id", "sequence", "chain_index")
RECORD_KEYS = (
    "id", "sequence", "resnames", "chain_ids", "resnums", "chain_index", "coords", "atom_mask",
    "linked_prev", "angles", "angle_mask", "extra_angles", "extra_angle_mask",
)


def build_record(record_id: str, structure: Structure, torsions: TorsionResult) -> dict[str, Any]:
    """Assemble the record dict; missing coordinates are 0 with ``atom_mask`` False."""
    coords = np.where(structure.atom_mask[..., None], structure.coords, 0.0)
    return {
        "id": record_id,
        "sequence": structure.sequence,
        "resnames": list(structure.resnames),
        "chain_ids": list(structure.chain_ids),
        "resnums": [int(r) for r in structure.resnums],
        "chain_index": torch.from_numpy(structure.chain_index),
        "coords": torch.from_numpy(coords.astype(np.float32)),
        "atom_mask": torch.from_numpy(structure.atom_mask.copy()),
        "linked_prev": torch.from_numpy(structure.linked_prev.copy()),
        "angles": torch.from_numpy(torsions.angles.astype(np.float32)),
        "angle_mask": torch.from_numpy(torsions.angle_mask),
        "extra_angles": torch.from_numpy(torsions.extra.astype(np.float32)),
        "extra_angle_mask": torch.from_numpy(torsions.extra_mask),
    }


def save_pt(obj: dict[str, Any], path: str | Path) -> str:
    """Serialise with ``torch.save`` in memory, write atomically, return the sha256.

    Saving to a buffer keeps the bytes independent of the file name (``torch.save`` to a
    path names the zip archive after it), so outputs are byte-identical across runs.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def ok_record_ids(stage_dir: str | Path, stage: str = "angles") -> list[str]:
    """Sorted ids whose status in ``<stage_dir>/manifest.json`` is ``ok``: the manifest
    of the ``angles`` stage, or of ``features`` (same shape: ``records`` -> ``status``)."""
    manifest = Path(stage_dir) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no {stage} manifest; run `rna-predict {stage}` first")
    records = json.loads(manifest.read_text())["records"]
    return sorted(rid for rid, rec in records.items() if rec.get("status") == "ok")


def load_record(path: str | Path, required: tuple[str, ...] = RECORD_KEYS) -> dict[str, Any]:
    """Load a record with ``weights_only=True``; check that the ``required`` keys exist."""
    record = torch.load(path, weights_only=True, map_location="cpu")
    missing = [k for k in required if k not in record]
    if missing:
        raise ValueError(f"{path}: not an angles record (missing keys {missing})")
    return record
