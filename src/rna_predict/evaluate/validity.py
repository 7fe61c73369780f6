"""Physical validity of a predicted structure file: backbone links and steric clashes.

Read with MDAnalysis (what a user would do with ``rna-predict predict`` output) and
report, over consecutive residues of one chain, the O3'(i)-P(i+1) distances (ideal
1.607 A; the acceptance band is 1.6 +/- 0.2 A), and over every pair of different
residues (neighbours included) whether their closest atoms are at least 1.5 A apart.
"""

from __future__ import annotations

import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np

LINK_TARGET = 1.6
LINK_TOLERANCE = 0.2
CLASH_DISTANCE = 1.5


def clash_free_fraction(positions: list[np.ndarray]) -> float:
    """Fraction of residue pairs (neighbours included) whose closest atoms are at least
    :data:`CLASH_DISTANCE` apart; ``positions`` holds one [n_atoms, 3] array per residue."""
    pos = [np.asarray(p, dtype=np.float64) for p in positions]
    ok = total = 0
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            ok += int(np.linalg.norm(pos[i][:, None] - pos[j][None], axis=-1).min() >= CLASH_DISTANCE)
            total += 1
    return ok / max(total, 1)


def link_and_clash_stats(path: str | Path) -> dict[str, float]:
    """``residues``, ``links``, ``links_ok_fraction``, ``link_median_A``,
    ``pairs_without_clash_fraction`` of the structure file ``path``."""
    import MDAnalysis as mda

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PDB files without element/occupancy columns
        u = mda.Universe(str(path))
    residues = u.residues
    links = []
    for a, b in pairwise(residues):
        if a.segid != b.segid or a.atoms.chainIDs[0] != b.atoms.chainIDs[0]:
            continue
        o3, p = a.atoms.select_atoms("name O3'"), b.atoms.select_atoms("name P")
        if len(o3) and len(p):
            links.append(float(np.linalg.norm(o3.positions[0] - p.positions[0])))
    link_arr = np.asarray(links)
    in_band = np.abs(link_arr - LINK_TARGET) <= LINK_TOLERANCE
    return {
        "residues": float(len(residues)),
        "links": float(len(link_arr)),
        "links_ok_fraction": float(in_band.mean()) if len(link_arr) else 0.0,
        "link_median_A": float(np.median(link_arr)) if len(link_arr) else float("nan"),
        "pairs_without_clash_fraction": clash_free_fraction([r.atoms.positions for r in residues]),
    }


__all__ = ["CLASH_DISTANCE", "LINK_TARGET", "LINK_TOLERANCE", "clash_free_fraction", "link_and_clash_stats"]
