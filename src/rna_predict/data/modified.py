"""Residue classification through the PDB Chemical Component Dictionary (CCD).

Modified nucleotides are mapped to their parent base with the CCD's
``_chem_comp.one_letter_code`` (biotite ships the whole dictionary offline); gemmi's
small built-in table misses e.g. 5MC, YYG and A2M. Whether a component is an RNA
nucleotide at all is decided by its CCD ``_chem_comp.type`` ("RNA LINKING", "RNA OH 3
PRIME TERMINUS", ...), so DNA (``DNA LINKING``), amino acids (``ALA`` also has the one
letter code "A"!) and ligands such as free GTP (``NON-POLYMER``) are not taken for RNA.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .atom_layout import BASES


@dataclass(frozen=True)
class ComponentInfo:
    """What the CCD says about one residue name."""

    name: str
    known: bool  # present in the CCD
    link_type: str  # CCD _chem_comp.type, upper case ("" when unknown)
    parent: str | None  # parent base A/C/G/U for RNA nucleotides, else None
    one_letter: str | None = None  # CCD one-letter code when it is A/C/G/U

    @property
    def is_rna(self) -> bool:
        return self.parent is not None

    @property
    def is_dna(self) -> bool:
        return "DNA" in self.link_type

    @property
    def nucleotide_like(self) -> bool:
        """A/C/G/U one-letter code but not an RNA-linking type (free GTP, ATP, ...)."""
        return self.one_letter is not None and not (self.is_dna or self.is_peptide)

    @property
    def is_peptide(self) -> bool:
        return "PEPTIDE" in self.link_type


@lru_cache(maxsize=None)
def component_info(res_name: str) -> ComponentInfo:
    """Classify ``res_name`` with the CCD (cached; the first call loads the dictionary)."""
    name = res_name.strip().upper()
    if name in BASES:  # the four standard ribonucleotides: no need to load the CCD
        return ComponentInfo(name, known=True, link_type="RNA LINKING", parent=name, one_letter=name)
    import biotite.structure.info as ccd

    try:
        link = ccd.link_type(name)
    except KeyError:
        link = None
    if link is None:
        return ComponentInfo(name, known=False, link_type="", parent=None)
    link = str(link).upper()
    code = (ccd.one_letter_code(name) or "").upper()
    one_letter = code if code in BASES else None
    parent = one_letter if "RNA" in link else None
    return ComponentInfo(name, known=True, link_type=link, parent=parent, one_letter=one_letter)


def parent_base(res_name: str) -> str | None:
    """Parent base (A, C, G or U) of an RNA nucleotide, None for anything else.

    >>> parent_base("5MC"), parent_base("PSU"), parent_base("DA"), parent_base("ALA")
    ('C', 'U', None, None)
    """
    return component_info(res_name).parent
