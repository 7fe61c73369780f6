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
    :data:`CLASH_DISTANCE` apart; ``positions`` holds one [n_atoms, 3] array per residue.

    Out of the L (L - 1) / 2 residue pairs (0.0 when L < 2), the pairs holding a clash
    (two atoms, one in each residue, closer than 1.5 A) are found with a neighbour
    search over all atoms (MDAnalysis ``self_capped_distance``, cells of the cutoff
    size: O(atoms), not O(L^2)); the candidate distances are recomputed in float64 so
    the 1.5 A boundary is decided exactly as a direct computation would.
    """
    from MDAnalysis.lib.distances import self_capped_distance

    pos = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in positions]
    n_res = len(pos)
    total = n_res * (n_res - 1) // 2
    if total == 0:
        return 0.0
    xyz = np.concatenate(pos) if pos else np.zeros((0, 3))
    residue = np.repeat(np.arange(n_res), [len(p) for p in pos])
    if len(xyz) < 2:
        return 1.0
    # a small margin so float32 rounding inside the search cannot drop a pair at 1.5 A
    pairs = self_capped_distance(xyz, CLASH_DISTANCE + 1e-3, return_distances=False)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    ri, rj = residue[pairs[:, 0]], residue[pairs[:, 1]]
    dist = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
    hit = (ri != rj) & (dist < CLASH_DISTANCE)
    lo, hi = np.minimum(ri[hit], rj[hit]), np.maximum(ri[hit], rj[hit])
    clashing = len(np.unique(lo * n_res + hi))
    return (total - clashing) / total


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
