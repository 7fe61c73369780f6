"""Structure id lists for ``data.id_list`` and ``data.pdb_ids`` (ARCHITECTURE.md section 8).

Accepted list files (detected per line, so both may be mixed; ``#`` comments and blank
lines are ignored):

- the BGSU RNA 3D Hub representative-set CSV (Leontis & Zirbel, "Nonredundant 3D
  structure datasets for RNA knowledge extraction and benchmarking", 2012;
  http://rna.bgsu.edu/rna3dhub/nrlist): no header, one equivalence class per row,
  columns ``class id, representative IFE, member IFEs``. Only the representative is
  used. An IFE (integrated functional element) is ``PDB|model|chain``, with ``+``
  joining the chains of one complex: ``4V9D|1|AA+4V9D|1|BA``;
- one ``PDBID`` (all RNA chains of the first model), ``PDBID_CHAIN`` (that chain of the
  first model) or IFE per line.

A record is one entry: the listed chains of the listed model kept together as one
complex. Its id, used for file names downstream, is derived from the entry:

==========================  ================  ======================================
entry                       record id         chains read
==========================  ================  ======================================
``1EHZ``                    ``1EHZ``          every RNA chain, first model
``1EHZ_A``                  ``1EHZ_A``        chain A, first model
``1EHZ|1|A``                ``1EHZ_1_A``      chain A, model 1
``4V9D|1|AA+4V9D|1|BA``     ``4V9D_1_AA-BA``  chains AA and BA, model 1
==========================  ================  ======================================

PDB ids are upper-cased (extended ids ``pdb_0000xxxx`` keep their lower-case prefix);
chain ids keep their case (they are case-sensitive in the PDB).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

_PDB_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")
_EXT_PDB_ID = re.compile(r"^pdb_[0-9]{4}[0-9][A-Za-z0-9]{3}$", re.IGNORECASE)
_CHAIN = re.compile(r"^[A-Za-z0-9]{1,4}$")


class IdListError(ValueError):
    """An id or id-list line that cannot be read; the message names the file and line."""


@dataclass(frozen=True, order=True)
class Entry:
    """One record to fetch: ``chains`` of ``model`` of ``pdb_id`` (empty/None: all, first)."""

    pdb_id: str
    model: int | None = None
    chains: tuple[str, ...] = ()

    @property
    def record_id(self) -> str:
        """File-name-safe id: ``1EHZ``, ``1EHZ_A``, ``1EHZ_1_A``, ``4V9D_1_AA-BA``."""
        parts = [self.pdb_id]
        if self.model is not None:
            parts.append(str(self.model))
        if self.chains:
            parts.append("-".join(self.chains))
        return "_".join(parts)


def normalize_pdb_id(raw_id: str) -> str:
    """Canonical form of a PDB id (``1EHZ``, ``pdb_00001EHZ``); IdListError if malformed."""
    sid = str(raw_id).strip()
    if _PDB_ID.match(sid):
        return sid.upper()
    if _EXT_PDB_ID.match(sid):
        return "pdb_" + sid[4:].upper()
    raise IdListError(f"invalid PDB id {raw_id!r}: expected 4 characters starting with a digit "
                      "(1EHZ) or the extended form pdb_0000xxxx")


def _chain(chain: str, token: str) -> str:
    if not _CHAIN.match(chain):
        raise IdListError(f"invalid chain id {chain!r} in {token!r}: 1-4 letters or digits")
    return chain


def parse_ife(token: str) -> Entry:
    """``1EHZ|1|A`` or ``4V9D|1|AA+4V9D|1|BA`` -> :class:`Entry` (one PDB id and model)."""
    pdb_ids, models, chains = set(), set(), []
    for part in token.strip().split("+"):
        fields = part.strip().split("|")
        if len(fields) != 3:
            raise IdListError(f"invalid IFE {token!r}: expected PDB|model|chain joined by '+'")
        pdb_ids.add(normalize_pdb_id(fields[0]))
        if not fields[1].strip().isdigit():
            raise IdListError(f"invalid model {fields[1]!r} in IFE {token!r}")
        models.add(int(fields[1]))
        chains.append(_chain(fields[2].strip(), token))
    if len(pdb_ids) != 1 or len(models) != 1:
        raise IdListError(f"IFE {token!r} spans several entries or models; one record is "
                          "one model of one entry")
    if len(set(chains)) != len(chains):
        raise IdListError(f"IFE {token!r} lists a chain twice")
    return Entry(pdb_ids.pop(), models.pop(), tuple(chains))


def parse_token(token: str) -> Entry:
    """One id: ``PDBID``, ``PDBID_CHAIN`` or an IFE."""
    token = token.strip()
    if "|" in token:
        return parse_ife(token)
    if "_" in token and not _EXT_PDB_ID.match(token):
        pdb, chain = token.rsplit("_", 1)
        return Entry(normalize_pdb_id(pdb), None, (_chain(chain, token),))
    return Entry(normalize_pdb_id(token))


def read_id_list(path: str | Path) -> list[Entry]:
    """Entries of a list file (format in the module docstring), sorted by record id.

    Duplicate records are kept once; two different entries with the same record id
    cannot occur (the id encodes the whole entry).
    """
    path = Path(path)
    if not path.is_file():
        raise IdListError(f"data.id_list {str(path)!r}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    entries: set[Entry] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = next(csv.reader([line]))
        token = fields[1] if len(fields) >= 2 else fields[0]  # BGSU: class, representative, ...
        try:
            entries.add(parse_token(token))
        except IdListError as exc:
            raise IdListError(f"{path}:{number}: {exc}") from None
    if not entries:
        raise IdListError(f"data.id_list {str(path)!r}: no ids (only blank or comment lines)")
    return sorted(entries, key=lambda e: e.record_id)


def resolve_entries(pdb_ids: list[str], id_list: str | Path = "") -> list[Entry]:
    """Union of ``data.pdb_ids`` (any token form) and the ``data.id_list`` file, sorted."""
    entries = {parse_token(str(i)) for i in pdb_ids}
    if str(id_list):
        entries.update(read_id_list(id_list))
    return sorted(entries, key=lambda e: e.record_id)


__all__ = ["Entry", "IdListError", "normalize_pdb_id", "parse_ife", "parse_token",
           "read_id_list", "resolve_entries"]
