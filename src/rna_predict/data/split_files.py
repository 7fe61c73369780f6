"""Reading the split files (``<split_dir>/{train,val,test}.csv``) written by ``split``.

Kept apart from :mod:`rna_predict.data.split` (which computes the split) so that the
stages that only read the split (train, evaluate, sweep) do not depend on the
clustering code.
"""

from __future__ import annotations

import csv
from pathlib import Path

SPLITS = ("train", "val", "test")


def read_split_ids(split_dir: str | Path, name: str) -> list[str]:
    """Record ids of ``<split_dir>/<name>.csv`` (column ``id``), in file order."""
    path = Path(split_dir) / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no split file; run `rna-predict split` first")
    with open(path, newline="") as fh:
        return [row["id"] for row in csv.DictReader(fh) if row.get("id")]


__all__ = ["SPLITS", "read_split_ids"]
