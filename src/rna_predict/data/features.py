"""Stage A input features: ViennaRNA base-pair probabilities (pipeline stage ``features``).

For every ``ok`` record of ``data/angles`` the equilibrium base-pair probability matrix
P[i, j] is computed with McCaskill's partition-function algorithm (McCaskill 1990,
Biopolymers 29:1105) as implemented in ViennaRNA (Lorenz et al. 2011, Algorithms Mol.
Biol. 6:26) with the Turner 2004 nearest-neighbour energies at ``features.temperature``
(degrees Celsius). The MFE structure (Zuker & Stiegler 1981) is stored alongside.

Multi-chain records are folded as one complex: the strands (runs of equal
``chain_index``, in record order) are joined with ``&`` and folded with ViennaRNA's
multi-strand partition function (RNAcofold for two strands, Bernhart et al. 2006; the
RNAmultifold extension for more), so intermolecular pairs such as a duplex's get their
probability. The ensemble is that of the single connected strand order found in the
file, without concentration dependence. A per-chain block-diagonal matrix would forbid
exactly the pairs that hold such complexes together, so it is not used.

Output ``data/features/<id>.pt`` (``torch.save`` of a dict, loadable with
``weights_only=True``): ``id`` str, ``sequence`` str, ``bpp`` float32 [L, L] (symmetric,
zero diagonal, row sums = pairing probability of each residue <= 1), ``mfe_structure``
str (dot-bracket of length L, no ``&`` separators), ``mfe`` float (kcal/mol).
``data/features/manifest.json`` records the ViennaRNA version, the temperature and, per
record, the sha256 of the input and output files; a re-run skips records whose input
hash and output are unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rna_predict.data.atomic import sha256_file, write_json
from rna_predict.data.records import SEQUENCE_KEYS, load_record, ok_record_ids, save_pt

log = logging.getLogger(__name__)

METHOD = "ViennaRNA McCaskill partition function (multi-strand for multi-chain records)"


def vienna_version() -> str:
    import RNA

    return str(RNA.__version__)


def strands(sequence: str, chain_index: Any = None) -> list[str]:
    """Split ``sequence`` into strands at every change of ``chain_index`` (record order)."""
    if chain_index is None or len(sequence) == 0:
        return [sequence]
    ci = np.asarray(chain_index).reshape(-1)
    if ci.shape[0] != len(sequence):
        raise ValueError(f"chain_index has {ci.shape[0]} entries for {len(sequence)} residues")
    cuts = (np.nonzero(ci[1:] != ci[:-1])[0] + 1).tolist()
    bounds = [0, *cuts, len(sequence)]
    return [sequence[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def base_pair_probabilities(
    seq_strands: str | list[str], temperature: float = 37.0
) -> tuple[np.ndarray, str, float]:
    """McCaskill base-pair probabilities of one (possibly multi-strand) complex.

    ``seq_strands`` is one sequence or a list of strands (folded together, in that order).
    Returns ``(bpp, mfe_structure, mfe)``: ``bpp`` float32 [L, L] symmetric with zero
    diagonal, ``mfe_structure`` a dot-bracket string of length L, ``mfe`` in kcal/mol.
    """
    import RNA

    parts = [seq_strands] if isinstance(seq_strands, str) else list(seq_strands)
    parts = [p.upper().replace("T", "U") for p in parts if p]
    length = sum(len(p) for p in parts)
    if length == 0:
        return np.zeros((0, 0), dtype=np.float32), "", 0.0
    md = RNA.md()
    md.temperature = float(temperature)
    fc = RNA.fold_compound("&".join(parts), md)
    structure, mfe = fc.mfe()
    fc.exp_params_rescale(mfe)  # scale Boltzmann factors to avoid overflow on long chains
    fc.pf()
    upper = np.asarray(fc.bpp(), dtype=np.float64)[1:, 1:]  # 1-based, upper triangle
    bpp = np.triu(upper, k=1)
    bpp = bpp + bpp.T
    bpp = np.clip(bpp, 0.0, 1.0).astype(np.float32)
    structure = structure.replace("&", "")
    if bpp.shape != (length, length) or len(structure) != length:
        raise RuntimeError(f"ViennaRNA returned shape {bpp.shape} for length {length}")
    return bpp, structure, float(mfe)


def featurize(record: dict[str, Any], temperature: float) -> dict[str, Any]:
    """Feature dict for one angles record (see module docstring)."""
    seq = str(record["sequence"])
    bpp, structure, mfe = base_pair_probabilities(
        strands(seq, record.get("chain_index")), temperature
    )
    return {
        "id": str(record["id"]),
        "sequence": seq,
        "bpp": torch.from_numpy(bpp),
        "mfe_structure": structure,
        "mfe": mfe,
    }


def _previous(manifest: Path, temperature: float, version: str) -> dict[str, Any]:
    """Per-record entries of an earlier run made with the same settings, else ``{}``."""
    if not manifest.is_file():
        return {}
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    if old.get("temperature") != float(temperature) or old.get("viennarna") != version:
        return {}
    return dict(old.get("records", {}))


def run_features(cfg: Any) -> Path:
    """Compute ``data/features/<id>.pt`` for every ok angles record; return the out dir."""
    angles_dir = Path(cfg.angles.out_dir)
    out_dir = Path(cfg.features.out_dir)
    temperature = float(cfg.features.temperature)
    version = vienna_version()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    previous = _previous(manifest_path, temperature, version)
    ids = ok_record_ids(angles_dir)
    log.info("features: %d ok records, ViennaRNA %s, %.2f C", len(ids), version, temperature)

    records: dict[str, dict[str, Any]] = {}
    reused = 0
    for rid in tqdm(ids, desc="features", unit="rec"):
        in_path = angles_dir / f"{rid}.pt"
        out_path = out_dir / f"{rid}.pt"
        in_sha = sha256_file(in_path)
        old = previous.get(rid)
        if (
            old is not None
            and old.get("input_sha256") == in_sha
            and out_path.is_file()
            and sha256_file(out_path) == old.get("sha256")
        ):
            records[rid] = old
            reused += 1
            continue
        record = load_record(Path(angles_dir) / f"{rid}.pt", SEQUENCE_KEYS)
        feats = featurize(record, temperature)
        n_strands = len(strands(feats["sequence"], record.get("chain_index")))
        records[rid] = {
            "input_sha256": in_sha,
            "sha256": save_pt(feats, out_path),
            "length": len(feats["sequence"]),
            "n_strands": n_strands,
            "mfe": round(feats["mfe"], 4),
            "status": "ok",
        }
        log.debug("features %s: L=%d strands=%d mfe=%.2f", rid, len(feats["sequence"]),
                  n_strands, feats["mfe"])

    for stale in sorted(out_dir.glob("*.pt")):
        if stale.stem not in records:
            log.info("features: removing stale %s", stale.name)
            stale.unlink()
    write_json(manifest_path, {
        "method": METHOD,
        "viennarna": version,
        "energy_parameters": "Turner 2004 (ViennaRNA default)",
        "temperature": temperature,
        "records": records,
    })
    log.info("features: wrote %d records (%d reused) to %s", len(records), reused, out_dir)
    return out_dir


__all__ = [
    "base_pair_probabilities",
    "featurize",
    "run_features",
    "strands",
    "vienna_version",
]
