"""The canonical atom layout: the ONE table every stage uses.

ARCHITECTURE.md section 4. Each residue has 23 slots: 12 backbone/sugar slots shared by
all nucleotides, then the base atoms of its parent base (A, G, C, U), padded with a
per-type mask. The loader, the NeRF (Stage C), the token->atom bridging of Stage D, the
losses and the PDB/mmCIF writer all import these tables; nothing else may hard-code an
atom order.

This module depends on numpy only, so that command-line tools can use it without
importing torch.
"""

from __future__ import annotations

import numpy as np

BASES: tuple[str, ...] = ("A", "C", "G", "U")
BASE_INDEX: dict[str, int] = {b: i for i, b in enumerate(BASES)}

BACKBONE_ATOMS: tuple[str, ...] = (
    "P", "OP1", "OP2", "O5'", "C5'", "C4'", "O4'", "C3'", "O3'", "C2'", "O2'", "C1'",
)
BASE_ATOMS: dict[str, tuple[str, ...]] = {
    "A": ("N9", "C8", "N7", "C5", "C6", "N6", "N1", "C2", "N3", "C4"),
    "G": ("N9", "C8", "N7", "C5", "C6", "O6", "N1", "C2", "N2", "N3", "C4"),
    "C": ("N1", "C2", "O2", "N3", "C4", "N4", "C5", "C6"),
    "U": ("N1", "C2", "O2", "N3", "C4", "O4", "C5", "C6"),
}
N_BACKBONE = len(BACKBONE_ATOMS)
N_SLOTS = 23
assert N_BACKBONE + max(len(v) for v in BASE_ATOMS.values()) == N_SLOTS

#: atom names per base, padded with "" to N_SLOTS
ATOM_NAMES: dict[str, tuple[str, ...]] = {
    b: BACKBONE_ATOMS + BASE_ATOMS[b] + ("",) * (N_SLOTS - N_BACKBONE - len(BASE_ATOMS[b]))
    for b in BASES
}
#: slot index of every atom name, per base
SLOT: dict[str, dict[str, int]] = {
    b: {name: i for i, name in enumerate(ATOM_NAMES[b]) if name} for b in BASES
}
#: backbone slot index by name (identical for every base)
BB: dict[str, int] = {name: i for i, name in enumerate(BACKBONE_ATOMS)}

#: [4, 23] bool: which slots exist for each base type (index by BASE_INDEX)
SLOT_MASK: np.ndarray = np.array(
    [[bool(n) for n in ATOM_NAMES[b]] for b in BASES], dtype=bool
)
#: [4, 23] element symbol per slot ("" for padding)
ELEMENTS: np.ndarray = np.array(
    [[n[0] if n else "" for n in ATOM_NAMES[b]] for b in BASES], dtype=object
)

#: glycosidic atoms (chi = O4'-C1'-X-Y): purines N9/C4, pyrimidines N1/C2 (SCIENCE.md 1)
CHI_BASE_ATOMS: dict[str, tuple[str, str]] = {
    "A": ("N9", "C4"), "G": ("N9", "C4"), "C": ("N1", "C2"), "U": ("N1", "C2"),
}
#: C-glycosidic nucleotides (pseudouridine and kin): chi = O4'-C1'-C5-C4
C_GLYCOSIDIC_CHI_ATOMS: tuple[str, str] = ("C5", "C4")

#: number of torsion angles predicted per residue and their order
TORSIONS: tuple[str, ...] = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "chi")
#: O3'(i-1)-P(i) distance (A) under which two residues are covalently linked, the way DSSR
#: links nucleotides (SCIENCE.md 1); the one value parsing, torsions and the NeRF use
LINK_CUTOFF: float = 2.0
#: (residue offset, atom name) quadruples of every dihedral (SCIENCE.md 1; Olson 1980 for
#: eta/theta; nu0..nu4 the sugar ring); offsets -1/+1 need the covalent link. chi is
#: per base type (:data:`CHI_BASE_ATOMS`): O4'-C1'-CHI_BASE_ATOMS[base]
TORSION_ATOMS: dict[str, tuple[tuple[int, str], ...]] = {
    "alpha": ((-1, "O3'"), (0, "P"), (0, "O5'"), (0, "C5'")),
    "beta": ((0, "P"), (0, "O5'"), (0, "C5'"), (0, "C4'")),
    "gamma": ((0, "O5'"), (0, "C5'"), (0, "C4'"), (0, "C3'")),
    "delta": ((0, "C5'"), (0, "C4'"), (0, "C3'"), (0, "O3'")),
    "epsilon": ((0, "C4'"), (0, "C3'"), (0, "O3'"), (1, "P")),
    "zeta": ((0, "C3'"), (0, "O3'"), (1, "P"), (1, "O5'")),
    "eta": ((-1, "C4'"), (0, "P"), (0, "C4'"), (1, "P")),
    "theta": ((0, "P"), (0, "C4'"), (1, "P"), (1, "C4'")),
    "nu0": ((0, "C4'"), (0, "O4'"), (0, "C1'"), (0, "C2'")),
    "nu1": ((0, "O4'"), (0, "C1'"), (0, "C2'"), (0, "C3'")),
    "nu2": ((0, "C1'"), (0, "C2'"), (0, "C3'"), (0, "C4'")),
    "nu3": ((0, "C2'"), (0, "C3'"), (0, "C4'"), (0, "O4'")),
    "nu4": ((0, "C3'"), (0, "C4'"), (0, "O4'"), (0, "C1'")),
}
#: the extra per-residue angles stored alongside (pseudo-torsions, sugar ring, pucker)
EXTRA_ANGLES: tuple[str, ...] = (
    "eta", "theta", "nu0", "nu1", "nu2", "nu3", "nu4", "phase", "amplitude",
)


def base_type_index(sequence: str) -> np.ndarray:
    """Return the int64 base-type index (A=0, C=1, G=2, U=3) of every residue."""
    try:
        return np.array([BASE_INDEX[c] for c in sequence], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"sequence has a non-ACGU letter {exc.args[0]!r}") from None


def slot_mask_for(sequence: str) -> np.ndarray:
    """[L, 23] bool: slots that exist for each residue of ``sequence``."""
    return SLOT_MASK[base_type_index(sequence)]


def atom_names_for(sequence: str) -> list[tuple[str, ...]]:
    """Padded atom names of every residue of ``sequence``."""
    return [ATOM_NAMES[c] for c in sequence]


def atom_to_token(atom_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten an [L, 23] mask into per-atom (token index, slot index) arrays.

    Stage D works on the flat list of present atoms; ``atom_to_token`` gathers residue
    (token) features onto atoms (AF3 supplement section 2.6, Algorithm 5 inputs).
    """
    tok, slot = np.nonzero(atom_mask)
    return tok.astype(np.int64), slot.astype(np.int64)
