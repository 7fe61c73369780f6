"""The ``dssr`` torsion backend: run ``x3dna-dssr --json`` and parse its ``nts`` list.

DSSR (Lu, Bussemaker & Olson 2015, Nucleic Acids Res 43:e142) reports per-nucleotide
torsions in degrees with ``null`` where undefined. Its nucleotides are matched to the
residues of a :class:`~rna_predict.data.structure.Structure` by chain, residue number
and insertion code, so both backends produce the same record layout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .atom_layout import EXTRA_ANGLES, TORSIONS
from .structure import Structure
from .torsions import TorsionResult

DSSR_BINARY = "x3dna-dssr"
#: our angle name -> DSSR JSON key
DSSR_KEYS: dict[str, str] = {
    **{name: name for name in TORSIONS + ("eta", "theta", "amplitude")},
    **{f"nu{k}": f"v{k}" for k in range(5)},
    "phase": "phase_angle",
}


class DSSRError(RuntimeError):
    """DSSR is missing, failed, or its output does not match the structure."""


def dssr_available() -> bool:
    """True when the ``x3dna-dssr`` binary is on PATH."""
    return shutil.which(DSSR_BINARY) is not None


def dssr_version() -> str | None:
    """DSSR's version string (e.g. ``v2.5.4-2025...``), or None when not installed."""
    if not dssr_available():
        return None
    proc = subprocess.run([DSSR_BINARY, "--version"], capture_output=True, text=True, timeout=60)
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def run_dssr(path: str | Path) -> dict:
    """Run DSSR on ``path`` and return its parsed JSON output."""
    if not dssr_available():
        raise DSSRError(f"{DSSR_BINARY} is not on PATH; use angles.backend=mdanalysis")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dssr.json"
        cmd = [DSSR_BINARY, f"-i={Path(path).resolve()}", "--json", f"-o={out}"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not out.is_file():
            raise DSSRError(f"{path}: x3dna-dssr failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return json.loads(out.read_text())


def _nt_key(nt: dict) -> tuple[str, int, str]:
    """(chain, resnum, insertion code) of a DSSR ``nts`` entry (``nt_id`` ``A.G68^B``)."""
    icode = nt["nt_id"].split("^", 1)[1] if "^" in nt["nt_id"] else ""
    return nt["chain_name"], int(nt["nt_resnum"]), icode


def parse_nts(dssr_json: dict, structure: Structure) -> TorsionResult:
    """Torsions (radians, NaN for ``null``) for every residue of ``structure`` from DSSR JSON.

    Raises :class:`DSSRError` when a residue of the structure has no DSSR nucleotide.
    """
    by_key = {_nt_key(nt): nt for nt in dssr_json.get("nts", [])}
    names = TORSIONS + EXTRA_ANGLES
    values = np.full((len(structure), len(names)), np.nan)
    for i, key in enumerate(zip(structure.chain_ids, structure.resnums, structure.icodes)):
        nt = by_key.get(key)
        if nt is None:
            raise DSSRError(f"{structure.path}: DSSR reports no nucleotide {key[0]}:{key[1]}{key[2]}")
        for k, name in enumerate(names):
            v = nt.get(DSSR_KEYS[name])
            if v is not None:
                values[i, k] = v
    rad = np.radians(values)
    angles = rad[:, : len(TORSIONS)]
    angles = np.where(angles <= -np.pi, np.pi, angles)
    return TorsionResult(angles=angles, extra=rad[:, len(TORSIONS):])
