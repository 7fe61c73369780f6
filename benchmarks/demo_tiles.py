"""Batches of any length from the demo records, for the memory and GPU benchmarks.

The demo set has no record longer than 120 nt, so :func:`tiled_batch` builds a crop of
``length`` residues from several real records placed side by side as the chains of one
complex: each record keeps its sequence, base-pair probabilities (block-diagonal), atom
coordinates (translated 100 A apart along x, so chains do not overlap) and torsions;
``chain_index`` numbers the copies, ``residue_index`` restarts in each. Records are taken
in the order of ``ids`` and cycled until ``length`` is reached; the last one is cut.
The result is collated by :func:`rna_predict.data.dataset.collate`, the training collate.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rna_predict.data.dataset import RecordDataset, collate
from rna_predict.data.split_files import read_split_ids

#: spacing between tiled chains (A), far beyond any interaction cutoff of the model
CHAIN_SHIFT = 100.0


def tiled_example(ds: RecordDataset, ids: list[str], length: int) -> dict:
    """One example of exactly ``length`` residues tiled from the records ``ids`` of ``ds``."""
    parts, total, k = [], 0, 0
    while total < length:
        ex = ds.example(ids[k % len(ids)])
        n = min(len(ex["base_type"]), length - total)
        parts.append((ex, n, k))
        total += n
        k += 1
    out = {"id": f"tiled{length}"}
    for key in ("base_type", "residue_index", "atom_mask", "angles", "angle_mask"):
        out[key] = torch.cat([ex[key][:n] for ex, n, _ in parts])
    out["chain_index"] = torch.cat([torch.full((n,), k, dtype=ex["chain_index"].dtype) for ex, n, k in parts])
    shift = torch.tensor([CHAIN_SHIFT, 0.0, 0.0])
    out["coords"] = torch.cat([ex["coords"][:n] + k * shift for ex, n, k in parts])
    out["bpp"] = torch.block_diag(*[ex["bpp"][:n, :n] for ex, n, _ in parts])
    return out


def tiled_examples(data_dir: str | Path, length: int, count: int) -> list[dict]:
    """``count`` tiled examples of ``length`` residues from the pipeline outputs under
    ``data_dir`` (``angles/``, ``features/``, ``splits/train.csv``); example ``i`` starts
    its tiling at the ``i``-th train record."""
    data_dir = Path(data_dir)
    ids = read_split_ids(data_dir / "splits", "train")
    if not ids:
        raise ValueError(f"{data_dir}/splits/train.csv lists no records: run the pipeline first")
    ds = RecordDataset(data_dir / "angles", data_dir / "features", ids, None, 0)
    return [tiled_example(ds, ids[i % len(ids):] + ids[:i % len(ids)], length) for i in range(count)]


def tiled_batch(data_dir: str | Path, length: int, batch_size: int) -> dict:
    """A training batch (:func:`~rna_predict.data.dataset.collate`) of :func:`tiled_examples`."""
    return collate(tiled_examples(data_dir, length, batch_size))


__all__ = ["CHAIN_SHIFT", "tiled_batch", "tiled_example", "tiled_examples"]
