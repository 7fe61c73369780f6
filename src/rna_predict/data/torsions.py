"""Vectorised RNA torsion angles (SCIENCE.md section 1).

Backbone alpha..zeta and chi (IUPAC; purine chi O4'-C1'-N9-C4, pyrimidine chi
O4'-C1'-N1-C2, C-glycosidic pseudouridine chi O4'-C1'-C5-C4), the Olson (1980)
pseudo-torsions eta and theta, the sugar ring torsions nu0..nu4 and the Altona &
Sundaralingam (1972) pseudorotation phase and amplitude.

All dihedrals of a structure are computed in one call of MDAnalysis'
``lib.distances.calc_dihedrals`` over gathered atom quadruples: no per-residue Python
loop. A neighbour counts only when covalently linked (O3'(i-1)-P(i) distance, as DSSR
does); an angle whose atoms are missing or whose neighbour is not linked is NaN with a
False mask, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .atom_layout import (
    BASES,
    BB,
    C_GLYCOSIDIC_CHI_ATOMS,
    CHI_BASE_ATOMS,
    EXTRA_ANGLES,
    SLOT,
    TORSION_ATOMS,
    TORSIONS,
)
from .structure import Structure

#: DSSR reports the pseudo-torsions only within a chain, although it links A.C88-B.U89
#: of 1A4D for epsilon/zeta/alpha; we follow it (checked against the DSSR fixture)
_PSEUDO = {"eta", "theta"}
_SIN36_72 = np.sin(np.radians(36.0)) + np.sin(np.radians(72.0))


@dataclass
class TorsionResult:
    """Per-residue angles in radians; NaN where undefined."""

    angles: np.ndarray  # float64 [L, 7] alpha..zeta, chi in (-pi, pi]
    extra: np.ndarray  # float64 [L, 9] eta, theta, nu0..nu4 in (-pi, pi]; phase [0, 2pi); amplitude

    @property
    def angle_mask(self) -> np.ndarray:
        return np.isfinite(self.angles)

    @property
    def extra_mask(self) -> np.ndarray:
        return np.isfinite(self.extra)

    def degrees(self) -> dict[str, np.ndarray]:
        """Every angle in degrees keyed by name (TORSIONS + EXTRA_ANGLES)."""
        cols = np.degrees(np.concatenate([self.angles, self.extra], axis=1))
        return {name: cols[:, k] for k, name in enumerate(TORSIONS + EXTRA_ANGLES)}


def _neighbour_ok(structure: Structure, offsets: set[int], same_chain: bool = False) -> np.ndarray:
    """bool [L]: residue i has linked neighbours at all ``offsets`` (and in its chain)."""
    link_prev = structure.linked_prev.copy()
    if same_chain:
        chain = structure.chain_index
        link_prev[1:] &= chain[1:] == chain[:-1]
    link_next = np.zeros_like(link_prev)
    link_next[:-1] = link_prev[1:]
    ok = np.ones(len(link_prev), dtype=bool)
    if -1 in offsets:
        ok &= link_prev
    if 1 in offsets:
        ok &= link_next
    return ok


def _gather(coords: np.ndarray, offset: int, slots: np.ndarray) -> np.ndarray:
    """[L, 3] coordinates of atom ``slots`` of residue i + ``offset`` (NaN off the ends)."""
    n = len(coords)
    idx = np.arange(n) + offset
    valid = (idx >= 0) & (idx < n)
    out = np.full((n, 3), np.nan)
    out[valid] = coords[idx[valid], slots[valid]]
    return out


def _chi_slots(structure: Structure) -> list[np.ndarray]:
    """Per-residue slot indices of the four chi atoms (parent-base and C-glycosidic rule)."""
    seq = np.array(list(structure.sequence))
    third = np.empty(len(seq), dtype=np.int64)
    fourth = np.empty(len(seq), dtype=np.int64)
    for base in BASES:
        sel = seq == base
        x, y = CHI_BASE_ATOMS[base]
        third[sel], fourth[sel] = SLOT[base][x], SLOT[base][y]
    cg = structure.c_glycosidic
    if cg.any():
        x, y = C_GLYCOSIDIC_CHI_ATOMS
        third[cg] = [SLOT[b][x] for b in seq[cg]]
        fourth[cg] = [SLOT[b][y] for b in seq[cg]]
    n = len(seq)
    return [np.full(n, BB["O4'"]), np.full(n, BB["C1'"]), third, fourth]


def dihedrals(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """IUPAC dihedral a-b-c-d in radians, (-pi, pi]; NaN where any atom is NaN.

    Wraps MDAnalysis ``calc_dihedrals`` (vectorised C); rows with missing atoms are
    excluded from the call and reported as NaN.
    """
    from MDAnalysis.lib.distances import calc_dihedrals

    out = np.full(len(a), np.nan)
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1) & np.isfinite(c).all(1) & np.isfinite(d).all(1)
    if ok.any():
        vals = calc_dihedrals(a[ok], b[ok], c[ok], d[ok])
        out[ok] = np.where(vals <= -np.pi, np.pi, vals)
    return out


def compute_torsions(structure: Structure) -> TorsionResult:
    """All torsions of ``structure`` (SCIENCE.md section 1), vectorised over residues."""
    n = len(structure)
    coords = structure.coords
    names = TORSIONS + EXTRA_ANGLES[:7]
    quads: list[list[np.ndarray]] = []
    for name in names:
        if name == "chi":
            slots = _chi_slots(structure)
            quads.append([_gather(coords, 0, s) for s in slots])
            continue
        defn = TORSION_ATOMS[name]
        pts = [_gather(coords, off, np.full(n, BB[atom])) for off, atom in defn]
        ok = _neighbour_ok(structure, {off for off, _ in defn if off}, name in _PSEUDO)
        for p in pts:
            p[~ok] = np.nan
        quads.append(pts)
    # one vectorised call over every (angle, residue) pair
    stacked = [np.concatenate([q[k] for q in quads]) for k in range(4)]
    values = dihedrals(*stacked).reshape(len(names), n).T
    angles = values[:, :7]
    eta_theta, nus = values[:, 7:9], values[:, 9:14]
    phase, amplitude = pseudorotation(nus)
    extra = np.concatenate([eta_theta, nus, phase[:, None], amplitude[:, None]], axis=1)
    return TorsionResult(angles=angles, extra=extra)


def pseudorotation(nus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Altona & Sundaralingam (1972) phase P in [0, 2pi) and amplitude tm from nu0..nu4 (radians).

    P = atan2((nu4 + nu1) - (nu3 + nu0), 2 nu2 (sin 36 + sin 72)); tm = nu2 / cos P.
    """
    nu0, nu1, nu2, nu3, nu4 = (nus[:, k] for k in range(5))
    phase = np.mod(np.arctan2((nu4 + nu1) - (nu3 + nu0), 2.0 * nu2 * _SIN36_72), 2 * np.pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        amplitude = nu2 / np.cos(phase)
    return phase, amplitude
