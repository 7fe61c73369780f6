"""Homology-aware train/val/test split (pipeline stage ``split``).

Sequence identity between two records is computed from an optimal pairwise alignment of
their full sequences (strands concatenated in record order) with biotite's
``align_optimal``: Needleman-Wunsch/Gotoh dynamic programming (Needleman & Wunsch 1970;
Gotoh 1982), NUC.4.4 scores (match +5, mismatch -4), affine gaps (open -10, extend -1),
terminal gaps free (semi-global), so that a fragment aligns inside its parent.

    identity(a, b) = identical aligned positions / max(min(len a, len b), aligned span)

where the aligned span counts the alignment columns from the first to the last column
in which both sequences have a residue. For a gap-free alignment of the shorter sequence
this is the CD-HIT convention, matches / length of the shorter sequence, so an exact
fragment of a chain has identity 1. The span term counts gaps opened inside the shorter
sequence as mismatches: with matches / shorter length alone, unrelated short RNAs
(14-40 nt) scatter through a 100-nt chain with gaps and score above 0.8 against it
(1A51 vs 6Y2L 0.805, 434D vs 4QLM 0.857 in the demo set).

Records are clustered by single linkage at identity > ``split.max_identity``; whole
clusters go to one split, so no val or test record is more than ``max_identity``
identical to any training record (nor to any record of another split), and identical
sequences always share a split. Clusters are shuffled with ``seed``, placed largest
first into the split furthest below its target count (``fractions``), then clusters are
moved until every split holds at least ``min_per_split`` records.
"""

from __future__ import annotations

import csv
import logging
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from rna_predict.data.atomic import write_json, write_text
from rna_predict.data.records import SEQUENCE_KEYS, load_record, ok_record_ids

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GAP_PENALTY = (-10, -1)
IDENTITY_DEFINITION = (
    "identical aligned positions / max(length of the shorter sequence, aligned span); "
    "semi-global Needleman-Wunsch/Gotoh, NUC.4.4, gap open -10 extend -1, end gaps free"
)


class SplitError(ValueError):
    """The records cannot be split under the identity and size constraints."""


def _clean(seq: str) -> str:
    """DNA letters for biotite (U -> T); anything but ACGU becomes N (never identical)."""
    return "".join(c if c in "ACGT" else "N" for c in seq.upper().replace("U", "T"))


def sequence_identity(a: str, b: str) -> float:
    """Identity of two RNA sequences as defined in the module docstring (0..1)."""
    from biotite.sequence import NucleotideSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal

    if not a or not b:
        return 0.0
    ca, cb = _clean(a), _clean(b)
    if ca == cb and "N" not in ca:
        return 1.0
    aln = align_optimal(NucleotideSequence(ca), NucleotideSequence(cb),
                        SubstitutionMatrix.std_nucleotide_matrix(), gap_penalty=GAP_PENALTY,
                        terminal_penalty=False, max_number=1)[0]
    both = (aln.trace >= 0).all(axis=1)
    cols = np.nonzero(both)[0]
    if cols.size == 0:
        return 0.0
    pairs = aln.trace[both]
    la, lb = np.array(list(ca)), np.array(list(cb))
    res_a, res_b = la[pairs[:, 0]], lb[pairs[:, 1]]
    matches = int(np.sum((res_a == res_b) & (res_a != "N")))
    span = int(cols[-1] - cols[0] + 1)
    return matches / max(min(len(a), len(b)), span)


def identity_matrix(seqs: Sequence[str]) -> np.ndarray:
    """Symmetric [n, n] float64 matrix of :func:`sequence_identity` (diagonal 1)."""
    n = len(seqs)
    out = np.eye(n, dtype=np.float64)
    cache: dict[tuple[str, str], float] = {}
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in tqdm(pairs, desc="identity", unit="pair", disable=len(pairs) < 200):
        key = (seqs[i], seqs[j]) if seqs[i] <= seqs[j] else (seqs[j], seqs[i])
        if key not in cache:
            cache[key] = sequence_identity(*key)
        out[i, j] = out[j, i] = cache[key]
    return out


def cluster(identity: np.ndarray, threshold: float) -> list[list[int]]:
    """Single-linkage clusters (index lists, sorted) of pairs with identity > threshold."""
    n = identity.shape[0]
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(*np.nonzero(np.triu(identity > threshold, k=1))):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values())


def assign(sizes: Sequence[int], fractions: Sequence[float], seed: int,
           min_per_split: int) -> list[int]:
    """Split index (0 train, 1 val, 2 test) for each cluster of the given sizes."""
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise SplitError(f"split.fractions must be 3 non-negative numbers, got {list(fractions)}")
    total = int(sum(sizes))
    if total < 3 * min_per_split:
        raise SplitError(f"{total} records cannot give 3 splits of >= {min_per_split}")
    targets = [f / sum(fractions) * total for f in fractions]
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda c: -sizes[c])  # stable: seeded order among equal sizes
    where = [0] * len(sizes)
    counts = [0, 0, 0]
    for c in order:
        k = max(range(3), key=lambda s: (targets[s] - counts[s], -s))
        where[c] = k
        counts[k] += sizes[c]
    rank = {c: r for r, c in enumerate(order)}
    while True:  # repair: each move lowers the total shortfall, so this terminates
        short = [k for k in range(3) if counts[k] < min_per_split]
        if not short:
            return where
        k = short[0]
        need = min_per_split - counts[k]
        movable = [c for c in order if where[c] != k
                   and counts[where[c]] - sizes[c] >= min_per_split]
        if not movable:
            raise SplitError(
                f"cannot give every split >= {min_per_split} records without breaking an "
                f"identity cluster; cluster sizes {sorted(sizes, reverse=True)}")
        fits = [c for c in movable if sizes[c] >= need]
        pick = (min(fits, key=lambda c: (sizes[c], rank[c])) if fits
                else max(movable, key=lambda c: (sizes[c], -rank[c])))
        counts[where[pick]] -= sizes[pick]
        where[pick] = k
        counts[k] += sizes[pick]


def make_split(ids: Sequence[str], seqs: Sequence[str], fractions: Sequence[float],
               seed: int, max_identity: float, min_per_split: int) -> dict[str, Any]:
    """Split records; returns ``{"splits": {name: [ids]}, "report": {...}}``."""
    ident = identity_matrix(seqs)
    clusters = cluster(ident, max_identity)
    where = assign([len(c) for c in clusters], fractions, seed, min_per_split)
    label = np.empty(len(ids), dtype=np.int64)
    for c, members in zip(where, clusters):
        label[members] = c
    splits = {name: sorted(ids[i] for i in np.nonzero(label == k)[0])
              for k, name in enumerate(SPLITS)}
    cross = ident.copy()
    cross[label[:, None] == label[None, :]] = -1.0
    max_cross, pair = 0.0, None
    if (cross >= 0).any():
        i, j = np.unravel_index(int(np.argmax(cross)), cross.shape)
        max_cross, pair = float(cross[i, j]), sorted([ids[i], ids[j]])
    if max_cross > max_identity:
        raise RuntimeError("internal error: cross-split identity above threshold")
    sizes = {name: {"records": len(splits[name]),
                    "nucleotides": int(sum(len(seqs[i]) for i in np.nonzero(label == k)[0])),
                    "clusters": int(sum(1 for w in where if w == k))}
             for k, name in enumerate(SPLITS)}
    report = {
        "identity_definition": IDENTITY_DEFINITION,
        "max_identity": float(max_identity),
        "fractions": [float(f) for f in fractions],
        "min_per_split": int(min_per_split),
        "seed": int(seed),
        "n_records": len(ids),
        "sizes": sizes,
        "max_cross_split_identity": round(max_cross, 6),
        "max_cross_split_pair": pair,
        "clusters": [{"ids": sorted(ids[i] for i in members), "split": SPLITS[w]}
                     for members, w in sorted(zip(clusters, where),
                                              key=lambda mw: min(ids[i] for i in mw[0]))],
    }
    return {"splits": splits, "report": report}


def run_split(cfg: Any) -> Path:
    """Write ``{train,val,test}.csv`` and ``split_report.json``; return the out dir."""
    angles_dir, out_dir = Path(cfg.angles.out_dir), Path(cfg.split.out_dir)
    ids = ok_record_ids(angles_dir)
    seqs = [str(load_record(Path(angles_dir) / f"{rid}.pt", SEQUENCE_KEYS)["sequence"]) for rid in
            tqdm(ids, desc="split: load", unit="rec")]
    log.info("split: %d ok records, %d nt, max_identity %.2f, seed %d",
             len(ids), sum(map(len, seqs)), cfg.split.max_identity, cfg.seed)
    result = make_split(ids, seqs, list(cfg.split.fractions), int(cfg.seed),
                        float(cfg.split.max_identity), int(cfg.split.min_per_split))
    length = dict(zip(ids, map(len, seqs)))
    for name in SPLITS:
        rows = "".join(f"{rid},{length[rid]}\n" for rid in result["splits"][name])
        write_text(out_dir / f"{name}.csv", "id,length\n" + rows)
    write_json(out_dir / "split_report.json", result["report"])
    sizes = result["report"]["sizes"]
    log.info("split: train %d / val %d / test %d records, max cross identity %.3f",
             sizes["train"]["records"], sizes["val"]["records"], sizes["test"]["records"],
             result["report"]["max_cross_split_identity"])
    return out_dir


def read_split_ids(split_dir: str | Path, name: str) -> list[str]:
    """Record ids of ``<split_dir>/<name>.csv`` (column ``id``), in file order."""
    path = Path(split_dir) / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no split file; run `rna-predict split` first")
    with open(path, newline="") as fh:
        return [row["id"] for row in csv.DictReader(fh) if row.get("id")]

__all__ = ["SplitError", "assign", "cluster", "identity_matrix", "make_split",
           "read_split_ids", "run_split", "sequence_identity", "IDENTITY_DEFINITION"]
