"""Write RNA coordinates in the canonical atom layout as PDB or mmCIF.

Both writers build a :mod:`gemmi` structure (one model; one polymer chain per run of
equal chain ids; residue names, numbers and chains as given; atom names and element
symbols from :mod:`rna_predict.data.atom_layout`) and write it atomically through
:mod:`rna_predict.data.atomic`. PDB output has TER records after every chain, an END
record and no CRYST1 record; mmCIF output comes from ``gemmi.Structure.make_mmcif_document`` with
``label_asym_id`` equal to the chain id and ``label_seq_id`` numbered along each chain.

Atoms whose ``atom_mask`` is False are not written; an atom in the mask with a non-finite
coordinate is an error. Numpy and gemmi only (no torch), for command-line tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atom_layout import ATOM_NAMES, BASE_INDEX, ELEMENTS, N_SLOTS
from .atomic import write_text

__all__ = [
    "STRUCTURE_SUFFIXES",
    "build_gemmi_structure",
    "structure_format",
    "write_mmcif",
    "write_pdb",
    "write_structure",
]

#: output suffix (lower case) -> format written by :func:`write_structure`
STRUCTURE_SUFFIXES = {".pdb": "pdb", ".ent": "pdb", ".cif": "mmcif", ".mmcif": "mmcif"}


def structure_format(path: str | Path) -> str:
    """``"pdb"`` for ``.pdb``/``.ent`` paths, ``"mmcif"`` for ``.cif``/``.mmcif`` (any case).

    Any other suffix (or none) raises ``ValueError`` naming the path and the suffixes
    that are understood, so that a typo never writes one format under another's name.
    """
    suffix = Path(path).suffix.lower()
    try:
        return STRUCTURE_SUFFIXES[suffix]
    except KeyError:
        known = ", ".join(STRUCTURE_SUFFIXES)
        what = f"suffix {suffix!r}" if suffix else "no suffix"
        raise ValueError(
            f"{path}: cannot tell the structure format from {what}; use one of {known} "
            "(.pdb/.ent write PDB, .cif/.mmcif write mmCIF)"
        ) from None


def _validate(
    sequence: str, coords: np.ndarray, atom_mask: np.ndarray, chain_ids, resnums, bfactors, resnames
) -> tuple[np.ndarray, np.ndarray, list[str], list[int], np.ndarray, list[str]]:
    length = len(sequence)
    coords = np.asarray(coords, dtype=np.float64)
    atom_mask = np.asarray(atom_mask, dtype=bool)
    if coords.shape != (length, N_SLOTS, 3) or atom_mask.shape != (length, N_SLOTS):
        raise ValueError(
            f"expected coords [{length}, {N_SLOTS}, 3] and atom_mask [{length}, {N_SLOTS}] for a "
            f"sequence of {length}; got {coords.shape} and {atom_mask.shape}"
        )
    bad = set(sequence) - set(BASE_INDEX)
    if bad:
        raise ValueError(f"sequence has non-ACGU letters {sorted(bad)}")
    if not np.isfinite(coords[atom_mask]).all():
        raise ValueError("non-finite coordinates for atoms in atom_mask")
    chain_ids = ["A"] * length if chain_ids is None else [str(c) for c in chain_ids]
    resnums = list(range(1, length + 1)) if resnums is None else [int(r) for r in resnums]
    resnames = list(sequence) if resnames is None else [str(r) for r in resnames]
    if not (len(chain_ids) == len(resnums) == len(resnames) == length):
        raise ValueError("chain_ids, resnums and resnames need one entry per residue")
    if any(not c or " " in c for c in chain_ids):
        raise ValueError("chain ids must be non-empty and contain no spaces")
    b = np.zeros((length, N_SLOTS)) if bfactors is None else np.asarray(bfactors, dtype=np.float64)
    if b.shape == (length,):
        b = np.repeat(b[:, None], N_SLOTS, axis=1)
    if b.shape != (length, N_SLOTS):
        raise ValueError(f"bfactors must be [{length}] or [{length}, {N_SLOTS}], got {b.shape}")
    return coords, atom_mask, chain_ids, resnums, b, resnames


def build_gemmi_structure(
    sequence: str,
    coords: np.ndarray,
    atom_mask: np.ndarray,
    chain_ids: Sequence[str] | None = None,
    resnums: Sequence[int] | None = None,
    bfactors: np.ndarray | None = None,
    resnames: Sequence[str] | None = None,
    name: str = "rna_predict",
):
    """A ``gemmi.Structure`` of the residues (see the module docstring)."""
    import gemmi

    coords, atom_mask, chain_ids, resnums, bfac, resnames = _validate(
        sequence, coords, atom_mask, chain_ids, resnums, bfactors, resnames
    )
    st = gemmi.Structure()
    st.name = name
    model = gemmi.Model(1)
    chain = None
    elements = {}
    for i, base in enumerate(sequence):
        if chain is None or chain_ids[i] != chain.name:
            if chain is not None:
                model.add_chain(chain)
            chain = gemmi.Chain(chain_ids[i])
        res = gemmi.Residue()
        res.name = resnames[i]
        res.seqid = gemmi.SeqId(resnums[i], " ")
        res.entity_type = gemmi.EntityType.Polymer
        res.subchain = chain_ids[i]
        t = BASE_INDEX[base]
        for slot in np.flatnonzero(atom_mask[i]):
            if not ATOM_NAMES[base][slot]:
                raise ValueError(f"residue {i} ({base}) has an atom in padding slot {slot}")
            atom = gemmi.Atom()
            atom.name = ATOM_NAMES[base][slot]
            el = ELEMENTS[t, slot]
            atom.element = elements.setdefault(el, gemmi.Element(el))
            atom.pos = gemmi.Position(*coords[i, slot])
            atom.occ = 1.0
            atom.b_iso = float(bfac[i, slot])
            res.add_atom(atom)
        chain.add_residue(res)
    if chain is not None:
        model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    for entity in st.entities:  # full sequence per polymer entity, for label_seq_id
        for sub in entity.subchains:
            span = st[0].get_subchain(sub)
            entity.full_sequence = [r.name for r in span]
            break
    st.assign_label_seq_id()
    st.assign_serial_numbers()
    return st


def _pdb_text(st) -> str:
    import gemmi

    opts = gemmi.PdbWriteOptions(minimal=True)
    opts.cryst1_record = False
    opts.ter_records = True
    opts.end_record = True
    return st.make_pdb_string(opts)


def write_pdb(
    path: str | Path,
    sequence: str,
    coords: np.ndarray,
    atom_mask: np.ndarray,
    chain_ids: Sequence[str] | None = None,
    resnums: Sequence[int] | None = None,
    bfactors: np.ndarray | None = None,
    resnames: Sequence[str] | None = None,
) -> Path:
    """Write a PDB file (TER after each chain). Chain ids must be one character.

    ``coords`` [L, 23, 3] and ``atom_mask`` [L, 23] in the canonical layout; ``chain_ids``
    default "A", ``resnums`` 1..L, ``bfactors`` [L] or [L, 23] (default 0), ``resnames``
    the sequence letters. Returns ``path``.
    """
    if chain_ids is not None and any(len(str(c)) != 1 for c in chain_ids):
        raise ValueError("PDB chain ids must be one character; use write_mmcif")
    if resnums is not None and any(not -999 <= int(r) <= 9999 for r in resnums):
        raise ValueError("PDB residue numbers must lie in -999..9999; use write_mmcif")
    st = build_gemmi_structure(sequence, coords, atom_mask, chain_ids, resnums, bfactors, resnames)
    write_text(path, _pdb_text(st))
    return Path(path)


def write_mmcif(
    path: str | Path,
    sequence: str,
    coords: np.ndarray,
    atom_mask: np.ndarray,
    chain_ids: Sequence[str] | None = None,
    resnums: Sequence[int] | None = None,
    bfactors: np.ndarray | None = None,
    resnames: Sequence[str] | None = None,
) -> Path:
    """Write an mmCIF file (arguments as :func:`write_pdb`, any chain ids). Returns ``path``."""
    name = Path(path).name.split(".")[0] or "rna_predict"
    st = build_gemmi_structure(sequence, coords, atom_mask, chain_ids, resnums, bfactors, resnames, name=name)
    write_text(path, st.make_mmcif_document().as_string())
    return Path(path)


def write_structure(path: str | Path, *args, **kwargs) -> Path:
    """:func:`write_mmcif` for ``.cif``/``.mmcif`` paths, :func:`write_pdb` for ``.pdb``/``.ent``.

    Other suffixes raise ``ValueError`` (see :func:`structure_format`) before anything is
    written. Arguments after ``path`` as :func:`write_pdb`.
    """
    writer = write_mmcif if structure_format(path) == "mmcif" else write_pdb
    return writer(path, *args, **kwargs)
