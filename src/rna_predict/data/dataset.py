"""Training records -> model batches (ARCHITECTURE.md section 4 data contract).

:class:`RecordDataset` reads ``<angles_dir>/<id>.pt`` and ``<features_dir>/<id>.pt``
(``torch.load(..., weights_only=True)``) lazily, one record per item, keeping at most
``cache_size`` examples in a least-recently-used cache (memory does not grow with the
number of records). It returns one example per id, cut to ``crop`` residues when the
record is longer, by one of two crops (``crop_mode``):

- ``contiguous``: a random window of ``crop`` consecutive residues (AF3 supplement
  section 2.7.1, contiguous cropping of one chain);
- ``spatial``: AF3 supplement section 2.7.2: a reference residue is drawn among the
  residues whose representative atom (C1' here) was resolved, and the ``crop`` residues
  whose C1' is nearest to it are kept (ties broken by residue order; AF3 adds a small
  index offset for the same purpose); residues without C1' rank last. The kept residues
  stay in their original order, with their ``residue_index`` and ``chain_index``, and
  the base-pair probabilities are the submatrix ``bpp[idx][:, idx]``. AF3's *spatial
  interface* variant (reference drawn among interface tokens) is not implemented;
- ``mixed``: spatial for a ``spatial_fraction`` share of the items, contiguous otherwise.

Every random choice is drawn from ``numpy.random.default_rng([seed, epoch, index])``
(contiguous window start, unchanged from the earlier contiguous-only dataset) and
``default_rng([seed, epoch, index, 1])`` (crop kind, spatial reference), so it depends
only on (seed, epoch, index): call :meth:`RecordDataset.set_epoch` at the start of every
epoch (epoch 0 by default; validation sets can keep it fixed).

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

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rna_predict.config import FeaturesConfig
from rna_predict.data.atom_layout import BB, N_SLOTS, TORSIONS, base_type_index

log = logging.getLogger(__name__)

CROP_MODES = ("contiguous", "spatial", "mixed")
#: examples kept in memory per dataset (least recently used dropped first)
DEFAULT_CACHE_SIZE = 16
#: representative atom of a nucleotide for spatial crops (AF3 uses C1' for nucleic acids)
CROP_ATOM = "C1'"

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


class DatasetError(ValueError):
    """Invalid dataset settings (crop mode, fraction, cache size)."""


def select_residues(ex: dict[str, Any], idx: Tensor) -> dict[str, Any]:
    """Residues ``idx`` (long, ascending) of an example; ``bpp`` becomes ``bpp[idx][:, idx]``."""
    out = {k: (v[idx] if k in PAD_KEYS else v) for k, v in ex.items()}
    out["bpp"] = ex["bpp"][idx][:, idx]
    return out


def crop_example(ex: dict[str, Any], start: int, size: int) -> dict[str, Any]:
    """Residues ``start .. start + size - 1`` of an example."""
    return select_residues(ex, torch.arange(start, min(start + size, ex["base_type"].shape[0])))


def spatial_crop_indices(coords: Tensor, atom_mask: Tensor, size: int,
                         rng: np.random.Generator) -> np.ndarray | None:
    """Sorted indices of the ``size`` residues nearest to a random reference (AF3 SI 2.7.2).

    ``coords`` [L, 23, 3], ``atom_mask`` [L, 23]; distances between :data:`CROP_ATOM`
    atoms; the reference is drawn uniformly among residues with that atom, residues
    without it rank after all others. None when no residue has the atom.
    """
    slot = BB[CROP_ATOM]
    present = atom_mask[:, slot].numpy().astype(bool)
    candidates = np.flatnonzero(present)
    if len(candidates) == 0:
        return None
    rep = coords[:, slot].double().numpy()
    ref = rep[int(rng.choice(candidates))]
    dist = np.where(present, np.linalg.norm(rep - ref, axis=1), np.inf)
    return np.sort(np.argsort(dist, kind="stable")[:size])


class RecordDataset(Dataset):
    """Examples of ``ids``, cropped to ``crop`` residues (None = whole records).

    ``crop_mode`` one of :data:`CROP_MODES`; ``spatial_fraction`` the share of spatial
    crops in ``mixed`` mode; ``cache_size`` the number of examples kept in memory.
    """

    def __init__(self, angles_dir: str | Path, features_dir: str | Path, ids: Sequence[str],
                 crop: int | None, seed: int, crop_mode: str = "contiguous",
                 spatial_fraction: float = 0.5, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if crop_mode not in CROP_MODES:
            raise DatasetError(f"training.crop_mode: {crop_mode!r} is not one of {', '.join(CROP_MODES)}")
        if not 0.0 <= float(spatial_fraction) <= 1.0:
            raise DatasetError(f"training.spatial_crop_fraction: {spatial_fraction} is not in [0, 1]")
        if int(cache_size) < 0:
            raise DatasetError(f"dataset cache size must be >= 0, got {cache_size}")
        self.angles_dir = Path(angles_dir)
        self.features_dir = Path(features_dir)
        self.ids = [str(i) for i in ids]
        self.crop = int(crop) if crop else None
        self.seed = int(seed)
        self.crop_mode = crop_mode
        self.spatial_fraction = float(spatial_fraction)
        self.cache_size = int(cache_size)
        self.epoch = 0
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def example(self, rid: str) -> dict[str, Any]:
        """Whole (uncropped) example of ``rid``, read from disk or the LRU cache."""
        if rid in self._cache:
            self._cache.move_to_end(rid)
            return self._cache[rid]
        rec = torch.load(self.angles_dir / f"{rid}.pt", weights_only=True, map_location="cpu")
        feat = torch.load(self.features_dir / f"{rid}.pt", weights_only=True, map_location="cpu")
        ex = example_from_record(rec, feat["bpp"])
        if self.cache_size > 0:
            self._cache[rid] = ex
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return ex

    def crop_start(self, index: int, length: int) -> int:
        """Start of the contiguous window of item ``index`` (0 when no crop is needed)."""
        if self.crop is None or length <= self.crop:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return int(rng.integers(0, length - self.crop + 1))

    def _choice_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index), 1])

    def crop_kind(self, index: int) -> str:
        """``contiguous`` or ``spatial``: the crop item ``index`` gets this epoch."""
        if self.crop_mode != "mixed":
            return self.crop_mode
        return "spatial" if self._choice_rng(index).random() < self.spatial_fraction else "contiguous"

    def crop_indices(self, index: int, ex: dict[str, Any]) -> Tensor | None:
        """Ascending residue indices kept for item ``index`` (None: the whole record)."""
        length = ex["base_type"].shape[0]
        if self.crop is None or length <= self.crop:
            return None
        if self.crop_kind(index) == "spatial":
            rng = self._choice_rng(index)
            if self.crop_mode == "mixed":
                rng.random()  # the draw that chose the crop kind
            idx = spatial_crop_indices(ex["coords"], ex["atom_mask"], self.crop, rng)
            if idx is not None:
                return torch.from_numpy(idx)
            log.warning("%s: no %s resolved, spatial crop replaced by a contiguous one",
                        ex["id"], CROP_ATOM)
        start = self.crop_start(index, length)
        return torch.arange(start, start + self.crop)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.example(self.ids[index])
        idx = self.crop_indices(index, ex)
        return dict(ex) if idx is None else select_residues(ex, idx)


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


def batch_from_sequence(sequence: str, features: FeaturesConfig | None = None) -> dict[str, Any]:
    """Inference batch (B = 1, no coordinates) for ``sequence``; ``&`` separates strands.

    Base-pair probabilities as the ``features`` stage computes them (``features``
    settings, defaults when None): global up to ``max_global_len``, windowed above it.
    """
    from rna_predict.data.features import pair_probabilities

    f = features if features is not None else FeaturesConfig()
    parts = [p for p in sequence.strip().upper().replace("T", "U").split("&") if p]
    if not parts:
        raise ValueError("empty sequence")
    seq = "".join(parts)
    bpp = pair_probabilities(parts, f.temperature, f.max_global_len, f.window, f.max_bp_span)[0]
    chain = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    example = {
        "id": "query",
        "base_type": torch.from_numpy(base_type_index(seq)),
        "residue_index": torch.arange(len(seq), dtype=torch.int64),
        "chain_index": torch.from_numpy(chain),
        "bpp": torch.from_numpy(bpp),
    }
    return collate([example])


__all__ = ["CROP_MODES", "DatasetError", "RecordDataset", "batch_from_sequence", "collate", "crop_example",
           "example_from_record", "select_residues", "spatial_crop_indices"]
