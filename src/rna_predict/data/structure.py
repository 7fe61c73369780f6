"""Read RNA structures (PDB, mmCIF, .cif.gz) into the canonical atom layout.

Parsing rules (ARCHITECTURE.md section 4): first model only; altloc blank or A; waters,
ions, ligands, protein and DNA dropped; modified nucleotides mapped to their parent base
through the PDB Chemical Component Dictionary (:mod:`rna_predict.data.modified`);
residues kept in file order; chain breaks found by the O3'(i-1)-P(i) distance, the way
DSSR links nucleotides, not by chain id or residue number. gemmi does the file parsing
for both formats.

Everything here is numpy; command-line tools import it without torch.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atom_layout import BB, LINK_CUTOFF, N_SLOTS, SLOT
from .modified import component_info

log = logging.getLogger(__name__)

#: O3'(i-1)-P(i) distance (A) under which two nucleotides count as covalently linked
#: atoms without which a nucleotide has no usable sugar-phosphate backbone
CORE_ATOMS = ("C4'", "C3'", "C1'", "O4'")
#: legacy atom names (PDB v2 and older) -> current names
_ALIASES = {"O1P": "OP1", "O2P": "OP2", "O3P": "OP3"}
#: backbone atoms that make an unknown component look like a nucleotide
_NUCLEOTIDE_HINT = {"C1'", "C4'", "O3'", "O4'"}


class StructureError(ValueError):
    """A structure file that cannot be turned into an RNA record; says which and why."""


@dataclass
class Structure:
    """RNA residues of one structure in the canonical 23-slot layout.

    ``coords`` holds NaN where an atom is absent (``atom_mask`` False), so that every
    derived quantity of a missing atom is NaN rather than a silent zero.
    """

    path: str
    sequence: str  # parent bases, ACGU
    resnames: list[str]  # residue names as in the file (5MC, PSU, G, ...)
    chain_ids: list[str]
    resnums: list[int]
    icodes: list[str]
    coords: np.ndarray  # float64 [L, 23, 3], NaN where missing
    atom_mask: np.ndarray  # bool [L, 23]
    linked_prev: np.ndarray  # bool [L]: O3'(i-1)-P(i) < cutoff
    c_glycosidic: np.ndarray  # bool [L]: C1'-C5 glycosidic bond (pseudouridine)
    n_models: int = 1
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def chain_index(self) -> np.ndarray:
        """int64 [L]: index of each residue's chain in order of first appearance."""
        order: dict[str, int] = {}
        return np.array([order.setdefault(c, len(order)) for c in self.chain_ids], dtype=np.int64)


def _atom_name(name: str) -> str:
    name = name.strip().replace("*", "'")
    return _ALIASES.get(name, name)


def _kind(res_name: str) -> str:
    """Coarse kind of a non-nucleotide residue for error messages (gemmi's table)."""
    import gemmi

    tab = gemmi.find_tabulated_residue(res_name)
    if tab is None:
        return "ligand"
    if tab.is_amino_acid():
        return "protein"
    return "water" if tab.is_water() else "ligand/ion"


#: PDB record names (wwPDB format v3.3, section "Record format"); a file whose last line
#: starts with anything else was cut inside a record
PDB_RECORDS = frozenset((
    "HEADER OBSLTE TITLE SPLIT CAVEAT COMPND SOURCE KEYWDS EXPDTA NUMMDL MDLTYP AUTHOR "
    "REVDAT SPRSDE JRNL REMARK DBREF DBREF1 DBREF2 SEQADV SEQRES MODRES HET HETNAM HETSYN "
    "FORMUL HELIX SHEET SSBOND LINK CISPEP SITE CRYST1 ORIGX1 ORIGX2 ORIGX3 SCALE1 SCALE2 "
    "SCALE3 MTRIX1 MTRIX2 MTRIX3 MODEL ATOM ANISOU TER HETATM ENDMDL CONECT MASTER END"
).split())
#: an ATOM/HETATM line holds the z coordinate in columns 47-54 (wwPDB format v3.3)
PDB_COORD_END = 54


class StructureFileError(StructureError):
    """The file itself is unusable (empty, truncated, not PDB/mmCIF): a download of it
    failed, as opposed to a complete file without usable RNA."""


def _file_text(path: Path) -> str:
    """Text of ``path``, gunzipped when it ends in ``.gz``; StructureFileError if unreadable."""
    try:
        data = path.read_bytes()
        if path.suffix.lower() == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise StructureFileError(f"{path}: cannot read file: {exc}") from None
    return data.decode("latin-1")


def _is_cif(path: Path, text: str) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".cif", ".mmcif")):
        return True
    if name.endswith((".pdb", ".ent")):
        return False
    return text.lstrip().startswith("data_")


def check_complete(path: str | Path) -> None:
    """Raise :class:`StructureFileError` naming ``path`` if the file was cut short.

    gemmi reads a file cut inside a record without complaint (a PDB ending in ``ATO``),
    so completeness is checked on the text first. PDB (wwPDB format v3.3): every
    ATOM/HETATM line reaches the z coordinate (column 54) and the last line starts with a
    record name. mmCIF (CIF 1.1 syntax): the file ends with a newline unless its last
    line is the ``#`` separator; gemmi then rejects a loop with a partial row ("Wrong
    number of values in loop") and an unterminated text field. A file cut exactly at a
    line boundary cannot be told from a complete one.
    """
    path = Path(path)
    text = _file_text(path)
    lines = text.splitlines()
    if _is_cif(path, text):
        if lines and not text.endswith(("\n", "\r")) and lines[-1].strip() != "#":
            raise StructureFileError(
                f"{path}: cannot parse structure file: truncated: line {len(lines)} ends "
                f"mid-line ({lines[-1][-40:]!r})")
        return
    has_atoms = False
    for number, line in enumerate(lines, 1):
        if line.startswith(("ATOM", "HETATM")):
            has_atoms = True
            if len(line) < PDB_COORD_END:
                raise StructureFileError(
                    f"{path}: cannot parse structure file: truncated at line {number}: "
                    f"{line[:6].strip()} record has {len(line)} of the {PDB_COORD_END} "
                    "characters up to the z coordinate")
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    if has_atoms and last[:6].strip() not in PDB_RECORDS:
        raise StructureFileError(
            f"{path}: cannot parse structure file: truncated at line {len(lines)}: "
            f"{last[:20]!r} is not a PDB record")


def _read_gemmi(path: Path):
    import gemmi

    check_complete(path)
    try:
        st = gemmi.read_structure(str(path), merge_chain_parts=True)
    except (RuntimeError, ValueError, OSError, IndexError) as exc:
        raise StructureFileError(f"{path}: cannot parse structure file: {exc}") from None
    return st


def read_structure(
    path: str | Path, chains: list[str] | None = None, link_cutoff: float = LINK_CUTOFF,
    model: int | None = None,
) -> Structure:
    """Read the RNA residues of ``path`` (one model) into a :class:`Structure`.

    ``chains`` restricts the chains kept (author chain ids); every listed chain must be
    present. ``model`` is the model number as written in the file (``MODEL``
    record, ``pdbx_PDB_model_num``); None takes the first model. Raises
    :class:`StructureFileError` for missing, empty, truncated or unparsable files and
    :class:`StructureError` for RNA-less or backbone-less input, missing chains or model,
    and unknown nucleotide-like residue names; every message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise StructureFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise StructureFileError(f"{path}: empty file")
    st = _read_gemmi(path)
    if len(st) == 0 or not any(len(ch) for ch in st[0]):
        raise StructureFileError(f"{path}: no atoms found (not a PDB/mmCIF coordinate file?)")
    warnings: list[str] = []
    if model is None:
        chosen = st[0]
        if len(st) > 1:
            warnings.append(f"{len(st)} models; using the first")
    else:
        chosen = next((m for m in st if m.num == model), None)
        if chosen is None:
            raise StructureError(f"{path}: model {model} not found (has {[m.num for m in st]})")

    seq: list[str] = []
    resnames: list[str] = []
    chain_ids: list[str] = []
    resnums: list[int] = []
    icodes: list[str] = []
    blocks: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    dropped: dict[str, int] = {}
    in_polymer: list[bool] = []
    wanted = set(chains) if chains else None
    seen_chains: set[str] = set()

    for chain in chosen:
        seen_chains.add(chain.name)
        if wanted is not None and chain.name not in wanted:
            continue
        for res in chain:
            names = {_atom_name(a.name) for a in res}
            if res.name not in SLOT and not names & _NUCLEOTIDE_HINT:  # water, ions, ligands
                kind = _kind(res.name)
                dropped[kind] = dropped.get(kind, 0) + 1
                continue
            info = component_info(res.name)
            if not info.known and names & _NUCLEOTIDE_HINT:
                raise StructureError(
                    f"{path}: residue {res.name} {chain.name}:{res.seqid.num} looks like a "
                    "nucleotide but is not in the PDB Chemical Component Dictionary"
                )
            parent = info.parent
            # a free nucleotide (GTP, ATP ...) counts when covalently linked into the chain
            candidate = parent is None and info.nucleotide_like and bool(names & _NUCLEOTIDE_HINT)
            if parent is None and not candidate:
                kind = "DNA" if info.is_dna else "protein" if info.is_peptide else res.name
                dropped[kind] = dropped.get(kind, 0) + 1
                continue
            if candidate:
                parent = info.one_letter
            xyz = np.full((N_SLOTS, 3), np.nan)
            mask = np.zeros(N_SLOTS, dtype=bool)
            slots = SLOT[parent]
            kept_any = False
            for atom in res:
                if atom.altloc not in ("\0", "A") or atom.element.name in ("H", "D"):
                    continue
                slot = slots.get(_atom_name(atom.name))
                if slot is None or mask[slot]:
                    continue
                xyz[slot] = (atom.pos.x, atom.pos.y, atom.pos.z)
                mask[slot] = True
                kept_any = True
            if not kept_any:  # e.g. the altloc-B copy of a microheterogeneous residue
                continue
            seq.append(parent)
            in_polymer.append(not candidate)
            resnames.append(res.name)
            chain_ids.append(chain.name)
            resnums.append(res.seqid.num)
            icodes.append(res.seqid.icode.strip())
            blocks.append(xyz)
            masks.append(mask)

    if wanted is not None and wanted - seen_chains:
        raise StructureError(f"{path}: chains {sorted(wanted - seen_chains)} not found "
                             f"(has {sorted(seen_chains)})")
    if not seq:
        what = ", ".join(f"{n} {k}" for k, n in sorted(dropped.items())) or "nothing"
        raise StructureError(f"{path}: no RNA nucleotides found (residues seen: {what})")

    coords = np.stack(blocks)
    atom_mask = np.stack(masks)
    keep = _linked_candidates(coords, np.array(in_polymer), link_cutoff)
    if not keep.all():
        for i in np.flatnonzero(~keep):
            dropped[resnames[i]] = dropped.get(resnames[i], 0) + 1
        idx = np.flatnonzero(keep)
        seq, resnames, chain_ids, resnums, icodes = (
            [v[i] for i in idx] for v in (seq, resnames, chain_ids, resnums, icodes)
        )
        coords, atom_mask = coords[idx], atom_mask[idx]
    if not seq:
        raise StructureError(f"{path}: no RNA nucleotides found (only free nucleotides)")
    core = [BB[a] for a in CORE_ATOMS]
    no_core = ~atom_mask[:, core].any(axis=1)
    if no_core.mean() > 0.5:
        raise StructureError(
            f"{path}: missing backbone atoms: {int(no_core.sum())} of {len(seq)} nucleotides "
            f"have none of {', '.join(CORE_ATOMS)} (coarse-grained or trace-only model?)"
        )
    partial = ~atom_mask[:, core].all(axis=1)
    if partial.any():
        where = [f"{chain_ids[i]}:{resnums[i]}" for i in np.flatnonzero(partial)[:5]]
        warnings.append(f"{int(partial.sum())} nucleotides lack sugar atoms (e.g. {', '.join(where)})")

    structure = Structure(
        path=str(path),
        sequence="".join(seq),
        resnames=resnames,
        chain_ids=chain_ids,
        resnums=resnums,
        icodes=icodes,
        coords=coords,
        atom_mask=atom_mask,
        linked_prev=linked_prev(coords, link_cutoff),
        c_glycosidic=c_glycosidic(coords, seq),
        n_models=len(st),
        warnings=warnings,
    )
    for w in warnings:
        log.warning("%s: %s", path, w)
    return structure


def _linked_candidates(coords: np.ndarray, certain: np.ndarray, cutoff: float) -> np.ndarray:
    """Keep certain residues, and candidates linked by O3'-P to a neighbour."""
    link = linked_prev(coords, cutoff)
    to_next = np.zeros_like(link)
    to_next[:-1] = link[1:]
    return certain | link | to_next


def linked_prev(coords: np.ndarray, cutoff: float = LINK_CUTOFF) -> np.ndarray:
    """bool [L]: residue i is covalently linked to i-1 (O3'(i-1)-P(i) < ``cutoff``)."""
    out = np.zeros(len(coords), dtype=bool)
    if len(coords) > 1:
        d = np.linalg.norm(coords[1:, BB["P"]] - coords[:-1, BB["O3'"]], axis=-1)
        with np.errstate(invalid="ignore"):
            out[1:] = d < cutoff  # NaN (missing atom) compares False
    return out


def c_glycosidic(coords: np.ndarray, sequence: list[str] | str) -> np.ndarray:
    """bool [L]: pyrimidines bonded to C1' through C5 (pseudouridine), not N1."""
    out = np.zeros(len(coords), dtype=bool)
    c1 = coords[:, BB["C1'"]]
    for base in ("U", "C"):
        idx = np.array([i for i, b in enumerate(sequence) if b == base], dtype=int)
        if idx.size == 0:
            continue
        d_n1 = np.linalg.norm(coords[idx, SLOT[base]["N1"]] - c1[idx], axis=-1)
        d_c5 = np.linalg.norm(coords[idx, SLOT[base]["C5"]] - c1[idx], axis=-1)
        with np.errstate(invalid="ignore"):
            out[idx] = (d_c5 < 1.8) & ~(d_n1 < 1.8)
    return out
