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
``data/features/manifest.json`` records the ViennaRNA version, the temperature, the
local-mode settings and, per record, the sha256 of the input and output files and the
``method`` used (``global`` or ``local``); a re-run reuses records whose input hash,
output and method settings are unchanged. A record that cannot be featurised is
recorded as ``skipped: reason`` and the rest proceed. ``features.workers`` processes
compute records in parallel (:mod:`rna_predict.data.parallel`); every output is written
by the same deterministic code, so the bytes do not depend on the worker count.

Long records (more than ``features.max_global_len`` residues) use local base-pair
probabilities instead, so that time and memory grow linearly with L rather than as
O(L^3) / O(L^2): ViennaRNA's sliding-window partition function (``RNAplfold``;
Bernhart, Hofacker & Stadler 2006, Bioinformatics 22:614; ViennaRNA
``vrna_probs_window``) with window size W = ``features.window`` and maximal base-pair
span ``features.max_bp_span``. P[i, j] is the mean of the pair's probability over all
windows of length W that contain both i and j. Because each pair is averaged over its
own set of windows, a row of that matrix is not a distribution over partners and can
sum to more than 1 (up to ~1.7 on rRNA); each entry is therefore divided by
max(1, r_i, r_j), with r the row sums, which keeps the matrix symmetric, leaves rows
that already sum to <= 1 untouched where their partners' rows do too, and makes every
row sum <= 1. The stored MFE is that of the structures with base-pair span <= the same
maximum (``RNAfold --maxBPspan``). Multi-chain records above the threshold are folded
strand by strand (the windowed algorithm has no multi-strand mode): inter-strand
probabilities are 0 and the MFE is the sum over strands. The output keeps the same
dense float32 [L, L] ``bpp`` (34 MB at L = 2,900).
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rna_predict.data.atomic import sha256_file
from rna_predict.data.parallel import Checkpoint, run_tasks
from rna_predict.data.records import SEQUENCE_KEYS, load_record, ok_record_ids, save_pt

log = logging.getLogger(__name__)

METHOD = "ViennaRNA McCaskill partition function (multi-strand for multi-chain records)"
LOCAL_METHOD = ("ViennaRNA sliding-window (RNAplfold) pair probabilities, each strand separately, "
                "rescaled by max(1, r_i, r_j); MFE with base-pair span <= max_bp_span")


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


def _window_strand(seq: str, md: Any, window: int, max_bp_span: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, float]:
    """Windowed pair probabilities of one strand as COO (i < j, 0-based) and its span-limited MFE.

    Only the pairs the window can see are kept (O(L * max_bp_span) entries), so memory
    stays linear in the strand length.
    """
    import RNA

    n = len(seq)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), "." * n, 0.0
    md.window_size = min(int(window), n)
    md.max_bp_span = min(int(max_bp_span), md.window_size)
    span = md.max_bp_span

    def collect(v: Any, v_size: int, i: int, maxsize: int, what: int, data: Any) -> None:
        # v[j] = P(i, j) for j in (i, v_size], 1-based; None outside the computed band
        if what & RNA.PROBS_WINDOW_BPP:
            row = np.array(v[i + 1:min(i + span, v_size) + 1], dtype=np.float64)  # None -> nan
            hit = np.nonzero(row > 0)[0]  # nan compares False
            rows.append(np.full(hit.shape[0], i - 1, dtype=np.int64))
            cols.append(hit + i)
            vals.append(row[hit])

    fc = RNA.fold_compound(seq, md, RNA.OPTION_WINDOW)
    if not fc.probs_window(0, RNA.PROBS_WINDOW_BPP, collect, None):
        raise RuntimeError(f"ViennaRNA probs_window failed on a strand of length {n}")
    structure, mfe = RNA.fold_compound(seq, md).mfe()  # same max_bp_span; not windowed
    if not rows:
        rows, cols, vals = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), structure, float(mfe)


def local_pair_probabilities(
    seq_strands: str | list[str], temperature: float = 37.0, window: int = 240,
    max_bp_span: int = 160,
) -> tuple[np.ndarray, str, float]:
    """Local (RNAplfold-style) base-pair probabilities of one record; see the module docstring.

    Each strand is folded on its own with ViennaRNA's sliding-window partition function
    (window ``window``, span ``max_bp_span``); inter-strand entries are 0. Each entry is
    divided by max(1, r_i, r_j) (r = row sums) so that every row sums to <= 1. Returns
    ``(bpp, mfe_structure, mfe)`` like :func:`base_pair_probabilities`: ``bpp`` float32
    [L, L], symmetric, zero diagonal.
    """
    import RNA

    parts = [seq_strands] if isinstance(seq_strands, str) else list(seq_strands)
    parts = [p.upper().replace("T", "U") for p in parts if p]
    length = sum(len(p) for p in parts)
    ii, jj, pp = [], [], []
    structures, mfe, offset = [], 0.0, 0
    for part in parts:
        md = RNA.md()
        md.temperature = float(temperature)
        i, j, p, structure, energy = _window_strand(part, md, window, max_bp_span)
        ii.append(i + offset)
        jj.append(j + offset)
        pp.append(np.clip(p, 0.0, 1.0))
        structures.append(structure)
        mfe += energy
        offset += len(part)
    i, j, p = np.concatenate(ii), np.concatenate(jj), np.concatenate(pp)
    row_sums = np.bincount(i, p, minlength=length) + np.bincount(j, p, minlength=length)
    p = p / np.maximum(1.0, np.maximum(row_sums[i], row_sums[j]))
    bpp = np.zeros((length, length), dtype=np.float32)
    bpp[i, j] = p
    bpp[j, i] = p
    structure = "".join(structures)
    if len(structure) != length:
        raise RuntimeError(f"ViennaRNA returned a structure of length {len(structure)} for {length}")
    return bpp, structure, float(mfe)


def pair_probabilities(
    seq_strands: str | list[str], temperature: float = 37.0, max_global_len: int = 1000,
    window: int = 240, max_bp_span: int = 160,
) -> tuple[np.ndarray, str, float, str]:
    """Global probabilities up to ``max_global_len`` residues, local above; also the method.

    Returns ``(bpp, mfe_structure, mfe, method)`` with ``method`` ``"global"``
    (:func:`base_pair_probabilities`) or ``"local"`` (:func:`local_pair_probabilities`).
    """
    parts = [seq_strands] if isinstance(seq_strands, str) else list(seq_strands)
    if sum(len(p) for p in parts) <= max_global_len:
        return (*base_pair_probabilities(parts, temperature), "global")
    return (*local_pair_probabilities(parts, temperature, window, max_bp_span), "local")


def featurize(record: dict[str, Any], temperature: float, max_global_len: int = 1000,
              window: int = 240, max_bp_span: int = 160) -> tuple[dict[str, Any], str]:
    """Feature dict for one angles record (see module docstring) and the method used."""
    seq = str(record["sequence"])
    bpp, structure, mfe, method = pair_probabilities(
        strands(seq, record.get("chain_index")), temperature, max_global_len, window, max_bp_span
    )
    feats = {
        "id": str(record["id"]),
        "sequence": seq,
        "bpp": torch.from_numpy(bpp),
        "mfe_structure": structure,
        "mfe": mfe,
    }
    return feats, method


def _settings(cfg: Any) -> dict[str, Any]:
    """Top-level manifest keys; a change in any of them invalidates earlier records."""
    return {
        "temperature": float(cfg.features.temperature),
        "viennarna": vienna_version(),
        "max_global_len": int(cfg.features.max_global_len),
        "window": int(cfg.features.window),
        "max_bp_span": int(cfg.features.max_bp_span),
    }


def _previous(manifest: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Per-record entries of an earlier run that the current settings can reuse, else ``{}``.

    Temperature and ViennaRNA version must match for every record; the local-mode
    settings only matter for records that were computed, or would now be computed, in
    local mode (a manifest without them, from before local mode existed, only had
    global records; those stay valid while their length is within ``max_global_len``).
    """
    if not manifest.is_file():
        return {}
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    if old.get("temperature") != settings["temperature"] or old.get("viennarna") != settings["viennarna"]:
        return {}
    local_same = all(old.get(k) == settings[k] for k in ("window", "max_bp_span"))
    keep = {}
    for rid, entry in dict(old.get("records", {})).items():
        method = entry.get("method", "global")
        wanted = "global" if entry.get("length", 0) <= settings["max_global_len"] else "local"
        if method == wanted and (method == "global" or local_same):
            keep[rid] = entry
    return keep


def _featurize_task(rid: str, in_path: Path, out_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Worker: featurise one angles record, write ``out_path``; the manifest entry."""
    try:
        record = load_record(in_path, SEQUENCE_KEYS)
        feats, method = featurize(record, settings["temperature"], settings["max_global_len"],
                                  settings["window"], settings["max_bp_span"])
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = first.replace(str(in_path), in_path.name)  # no absolute paths in outputs
        if not reason.startswith(in_path.name):
            reason = f"{in_path.name}: {reason}"
        log.error("features: skipping %s: %s", rid, reason)
        out_path.unlink(missing_ok=True)
        return {"status": f"skipped: {reason}"}
    n_strands = len(strands(feats["sequence"], record.get("chain_index")))
    log.debug("features %s: L=%d strands=%d mfe=%.2f method=%s", rid, len(feats["sequence"]),
              n_strands, feats["mfe"], method)
    return {
        "sha256": save_pt(feats, out_path),
        "length": len(feats["sequence"]),
        "n_strands": n_strands,
        "mfe": round(feats["mfe"], 4),
        "method": method,
        "status": "ok",
    }


def run_features(cfg: Any) -> Path:
    """Compute ``data/features/<id>.pt`` for every ok angles record; return the out dir."""
    if cfg.features.workers < 1:
        raise ValueError(f"features.workers must be >= 1, not {cfg.features.workers}")
    if not 2 <= cfg.features.max_bp_span <= cfg.features.window:
        raise ValueError(f"features.max_bp_span must be in [2, features.window = {cfg.features.window}], "
                         f"not {cfg.features.max_bp_span}")
    angles_dir = Path(cfg.angles.out_dir)
    out_dir = Path(cfg.features.out_dir)
    settings = _settings(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    previous = _previous(manifest_path, settings)
    ids = ok_record_ids(angles_dir)
    log.info("features: %d ok records, ViennaRNA %s, %.2f C, %d workers", len(ids),
             settings["viennarna"], settings["temperature"], cfg.features.workers)

    records: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, Path, Path, dict[str, Any]]] = []
    in_shas: dict[str, str] = {}
    for rid in ids:
        in_path = angles_dir / f"{rid}.pt"
        out_path = out_dir / f"{rid}.pt"
        in_shas[rid] = sha256_file(in_path)
        old = previous.get(rid)
        if (
            old is not None
            and old.get("status") == "ok"
            and old.get("input_sha256") == in_shas[rid]
            and out_path.is_file()
            and sha256_file(out_path) == old.get("sha256")
        ):
            records[rid] = {**old, "method": old.get("method", "global")}
            continue
        todo.append((rid, in_path, out_path, settings))
    reused = len(records)

    for stale in sorted(out_dir.glob("*.pt")):
        if stale.stem not in in_shas:
            log.info("features: removing stale %s", stale.name)
            stale.unlink()

    def manifest() -> dict[str, Any]:
        return {
            "method": METHOD,
            "local_method": LOCAL_METHOD,
            "energy_parameters": "Turner 2004 (ViennaRNA default)",
            **settings,
            "records": records,
        }

    checkpoint = Checkpoint(manifest_path)
    try:
        for k, entry in run_tasks(_featurize_task, todo, int(cfg.features.workers), "features", "rec"):
            rid = todo[k][0]
            records[rid] = {"input_sha256": in_shas[rid], **entry}
            checkpoint.maybe_write(manifest())
    finally:  # also on interruption: what finished so far is reused by the next run
        checkpoint.write(manifest())
    ok = sum(1 for e in records.values() if e["status"] == "ok")
    local = sum(1 for e in records.values() if e.get("method") == "local")
    log.info("features: wrote %d records (%d reused, %d local, %d skipped) to %s", ok, reused,
             local, len(records) - ok, out_dir)
    return out_dir


__all__ = [
    "base_pair_probabilities",
    "featurize",
    "local_pair_probabilities",
    "pair_probabilities",
    "run_features",
    "strands",
    "vienna_version",
]
