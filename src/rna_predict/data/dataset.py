"""Training records -> model batches (ARCHITECTURE.md section 4 data contract).

:class:`RecordDataset` reads ``<angles_dir>/<id>.pt`` and ``<features_dir>/<id>.pt``
(``torch.load(..., weights_only=True)``) and returns one example per id, cut to a random
contiguous window of ``crop`` residues when the record is longer. The window start is
drawn from ``numpy.random.default_rng([seed, epoch, index])``, so it depends only on
(seed, epoch, index): call :meth:`RecordDataset.set_epoch` at the start of every epoch
(epoch 0 by default; validation sets can keep it fixed).

:func:`collate` pads a list of examples into a batch dict:
``base_type`` long [B, L] (A, C, G, U = 0..3, ``atom_layout.BASES``), ``residue_mask``
bool [B, L], ``residue_index`` long [B, L] (position in the record, so chain-local offsets
survive cropping), ``chain_index`` long [B, L], ``bpp`` [B, L, L], ``coords``
[B, L, 23, 3], ``atom_mask`` bool [B, L, 23], ``angles`` [B, L, 7] (NaN replaced by 0
only where ``angle_mask`` is False), ``angle_mask`` bool [B, L, 7], ``ids`` list[str].

:func:`batch_from_sequence` builds an inference batch (no coordinates) from a sequence,
strands separated by ``&``, with ViennaRNA base-pair probabilities (Stage A, the same
function as the ``features`` stage).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rna_predict.data.atom_layout import N_SLOTS, TORSIONS, base_type_index

PAD_KEYS = ("base_type", "residue_index", "chain_index", "coords", "atom_mask", "angles", "angle_mask")


def example_from_record(record: dict[str, Any], bpp: Tensor) -> dict[str, Any]:
    """Model example (unpadded tensors, L residues) from an angles record and its bpp."""
    length = len(record["sequence"])
    angles = torch.as_tensor(record["angles"], dtype=torch.float32)
    angle_mask = torch.as_tensor(record["angle_mask"], dtype=torch.bool) & torch.isfinite(angles)
    bpp = torch.as_tensor(bpp, dtype=torch.float32)
    if bpp.shape != (length, length):
        raise ValueError(f"{record['id']}: bpp shape {tuple(bpp.shape)} for {length} residues")
    return {
        "id": str(record["id"]),
        "base_type": torch.from_numpy(base_type_index(record["sequence"])),
        "residue_index": torch.arange(length, dtype=torch.int64),
        "chain_index": torch.as_tensor(record["chain_index"], dtype=torch.int64),
        "bpp": bpp,
        "coords": torch.as_tensor(record["coords"], dtype=torch.float32),
        "atom_mask": torch.as_tensor(record["atom_mask"], dtype=torch.bool),
        "angles": torch.where(angle_mask, angles, torch.zeros_like(angles)),
        "angle_mask": angle_mask,
    }


def crop_example(ex: dict[str, Any], start: int, size: int) -> dict[str, Any]:
    """Residues ``start .. start + size - 1`` of an example."""
    out = {k: (v[start:start + size] if k in PAD_KEYS else v) for k, v in ex.items()}
    out["bpp"] = ex["bpp"][start:start + size, start:start + size]
    return out


class RecordDataset(Dataset):
    """Examples of ``ids``, randomly cropped to ``crop`` residues (None = whole records)."""

    def __init__(self, angles_dir: str | Path, features_dir: str | Path, ids: Sequence[str],
                 crop: int | None, seed: int) -> None:
        self.angles_dir = Path(angles_dir)
        self.features_dir = Path(features_dir)
        self.ids = [str(i) for i in ids]
        self.crop = int(crop) if crop else None
        self.seed = int(seed)
        self.epoch = 0
        self._cache: dict[str, dict[str, Any]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def example(self, rid: str) -> dict[str, Any]:
        """Whole (uncropped) example of ``rid``, cached."""
        if rid not in self._cache:
            rec = torch.load(self.angles_dir / f"{rid}.pt", weights_only=True, map_location="cpu")
            feat = torch.load(self.features_dir / f"{rid}.pt", weights_only=True, map_location="cpu")
            self._cache[rid] = example_from_record(rec, feat["bpp"])
        return self._cache[rid]

    def crop_start(self, index: int, length: int) -> int:
        if self.crop is None or length <= self.crop:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return int(rng.integers(0, length - self.crop + 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.example(self.ids[index])
        length = ex["base_type"].shape[0]
        if self.crop is None or length <= self.crop:
            return dict(ex)
        return crop_example(ex, self.crop_start(index, length), self.crop)


def collate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad examples to the longest one; see the module docstring for the keys."""
    b = len(records)
    length = max(r["base_type"].shape[0] for r in records)
    batch: dict[str, Any] = {
        "base_type": torch.zeros(b, length, dtype=torch.int64),
        "residue_mask": torch.zeros(b, length, dtype=torch.bool),
        "residue_index": torch.zeros(b, length, dtype=torch.int64),
        "chain_index": torch.zeros(b, length, dtype=torch.int64),
        "bpp": torch.zeros(b, length, length),
        "ids": [r["id"] for r in records],
    }
    has_coords = all("coords" in r for r in records)
    if has_coords:
        n_t = len(TORSIONS)
        batch.update(
            coords=torch.zeros(b, length, N_SLOTS, 3),
            atom_mask=torch.zeros(b, length, N_SLOTS, dtype=torch.bool),
            angles=torch.zeros(b, length, n_t),
            angle_mask=torch.zeros(b, length, n_t, dtype=torch.bool),
        )
    for i, r in enumerate(records):
        n = r["base_type"].shape[0]
        batch["residue_mask"][i, :n] = True
        batch["bpp"][i, :n, :n] = r["bpp"]
        for key in PAD_KEYS:
            if key in batch:
                batch[key][i, :n] = r[key]
    return batch


def batch_from_sequence(sequence: str, temperature: float = 37.0) -> dict[str, Any]:
    """Inference batch (B = 1, no coordinates) for ``sequence``; ``&`` separates strands."""
    from rna_predict.data.features import base_pair_probabilities

    parts = [p for p in sequence.strip().upper().replace("T", "U").split("&") if p]
    if not parts:
        raise ValueError("empty sequence")
    seq = "".join(parts)
    bpp, _, _ = base_pair_probabilities(parts, temperature)
    chain = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    example = {
        "id": "query",
        "base_type": torch.from_numpy(base_type_index(seq)),
        "residue_index": torch.arange(len(seq), dtype=torch.int64),
        "chain_index": torch.from_numpy(chain),
        "bpp": torch.from_numpy(bpp),
    }
    return collate([example])


__all__ = ["RecordDataset", "batch_from_sequence", "collate", "crop_example", "example_from_record"]
