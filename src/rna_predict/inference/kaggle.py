"""Stanford RNA 3D Folding (Kaggle, 2025) files: sequences in, C1' submissions out.

Formats (the competition's data page):

- sequences: ``target_id,sequence,temporal_cutoff,description,all_sequences``; only
  ``target_id`` and ``sequence`` are required. ``all_sequences`` is the FASTA of the
  entry's chains; when its chain sequences (a header's ``Chains A, B`` counting twice)
  concatenate to ``sequence``, the target is predicted as a complex of those strands,
  otherwise as one chain.
- submission: ``ID,resname,resid,x_1,y_1,z_1,...,x_5,y_5,z_5``, one row per residue in
  residue order, ``ID = <target_id>_<resid>`` (resid 1..L over the whole sequence),
  the C1' coordinates of five predictions.
- labels: ``ID,resname,resid,x_1,y_1,z_1,...`` with one or more reference conformations
  (``x_k,y_k,z_k``) and ``-1e18`` where a coordinate was not observed.

Readers check everything before anything is written and raise :class:`KaggleFormatError`
naming the file, the row (line number, header = line 1) and the problem: missing
columns, an ID that is not ``<target_id>_<resid>``, residues out of order, NaN or
infinite coordinates, letters outside ACGU. The submission is written atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

N_PREDICTIONS = 5  #: predictions per target in a submission
MISSING = -1e18  #: the competition's value of an unobserved coordinate
_MISSING_BELOW = -1e17
SEQUENCE_COLUMNS = ("target_id", "sequence", "temporal_cutoff", "description", "all_sequences")
_REQUIRED_SEQUENCE_COLUMNS = ("target_id", "sequence")
_ID_COLUMNS = ("ID", "resname", "resid")
_RESNAMES = set("ACGU")


class KaggleFormatError(ValueError):
    """A Kaggle sequences, labels or submission file that breaks the format."""


def _err(path: Path, line: int | None, problem: str) -> KaggleFormatError:
    where = f"{path}: row {line}" if line is not None else str(path)
    return KaggleFormatError(f"{where}: {problem}")


def _read_csv(path: str | Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = list(reader)
    if not header:
        raise _err(path, None, "empty file (no header row)")
    return path, header, rows


# ----------------------------------------------------------------------- sequences
@dataclass
class Target:
    """One row of a sequences file: the id, the strands (joined: the full sequence)."""

    target_id: str
    strands: list[str] = field(default_factory=list)

    @property
    def sequence(self) -> str:
        return "".join(self.strands)


def _chain_sequences(all_sequences: str) -> list[str]:
    """Chain sequences of a FASTA text, a record repeated once per chain its header
    names (``>7XYZ_1|Chains A, B|...``)."""
    out: list[str] = []
    header, parts = None, []

    def flush():
        if header is not None:
            m = re.search(r"Chains?\s+([^|]+)", header)
            count = len([c for c in m.group(1).split(",") if c.strip()]) if m else 1
            out.extend(["".join(parts).upper()] * max(count, 1))

    for line in all_sequences.splitlines():
        line = line.strip()
        if line.startswith(">"):
            flush()
            header, parts = line, []
        elif line:
            parts.append(line)
    flush()
    return out


def read_sequences(path: str | Path) -> list[Target]:
    """Targets of a competition sequences file, in file order (see the module docstring)."""
    path, header, rows = _read_csv(path)
    missing = [c for c in _REQUIRED_SEQUENCE_COLUMNS if c not in header]
    if missing:
        raise _err(path, 1, f"missing column(s) {', '.join(missing)} (expected "
                            f"{','.join(SEQUENCE_COLUMNS)})")
    if not rows:
        raise _err(path, None, "no targets")
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, 2):
        tid = (row.get("target_id") or "").strip()
        if not tid or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", tid):
            raise _err(path, line, f"target_id {tid!r} must be non-empty letters, digits, _ . -")
        if tid in seen:
            raise _err(path, line, f"target_id {tid!r} repeats row {seen[tid]}")
        seen[tid] = line
        seq = re.sub(r"\s+", "", row.get("sequence") or "").upper()
        if not seq:
            raise _err(path, line, f"target {tid}: empty sequence")
        bad = [(i + 1, c) for i, c in enumerate(seq) if c not in _RESNAMES]
        if bad:
            shown = ", ".join(f"{c!r} at position {i}" for i, c in bad[:5])
            raise _err(path, line, f"target {tid}: sequence letters outside ACGU: {shown}"
                                   + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""))
        chains = _chain_sequences(row.get("all_sequences") or "")
        strands = chains if len(chains) > 1 and "".join(chains) == seq else [seq]
        targets.append(Target(tid, strands))
    return targets


# ------------------------------------------------------------------ coordinate tables
@dataclass
class CoordinateTable:
    """Rows of a labels or submission file, grouped by target (file order)."""

    path: Path
    n_models: int
    #: target -> (first line, resnames, resids, coords [n_models, L, 3] with NaN = missing)
    targets: dict[str, tuple[int, list[str], list[int], np.ndarray]]
    #: ID -> line, for error messages
    lines: dict[str, int]


def _n_models(path: Path, header: list[str]) -> int:
    k = 0
    while all(f"{a}_{k + 1}" in header for a in "xyz"):
        k += 1
    partial = [f"{a}_{k + 1}" for a in "xyz" if f"{a}_{k + 1}" in header]
    if partial:
        raise _err(path, 1, f"coordinate columns of conformation {k + 1} incomplete: "
                            f"{', '.join(partial)} without the rest of x_{k + 1},y_{k + 1},z_{k + 1}")
    return k


def read_coordinates(path: str | Path, n_models: int | None = None) -> CoordinateTable:
    """Read a labels (``n_models`` None: one or more conformations) or submission
    (``n_models`` = 5) file; ``-1e18`` (anything below -1e17) becomes NaN (missing)."""
    path, header, rows = _read_csv(path)
    missing = [c for c in _ID_COLUMNS if c not in header]
    want = n_models if n_models is not None else max(_n_models(path, header), 1)
    missing += [f"{a}_{m}" for m in range(1, want + 1) for a in "xyz" if f"{a}_{m}" not in header]
    if missing:
        raise _err(path, 1, f"missing column(s) {', '.join(missing)}")
    if not rows:
        raise _err(path, None, "no residue rows")
    cols = [(f"x_{m}", f"y_{m}", f"z_{m}") for m in range(1, want + 1)]
    grouped: dict[str, tuple[int, list[str], list[int], list[list[list[float]]]]] = {}
    lines: dict[str, int] = {}
    previous = None
    for line, row in enumerate(rows, 2):
        rid = (row.get("ID") or "").strip()
        try:
            resid = int((row.get("resid") or "").strip())
        except ValueError:
            raise _err(path, line, f"resid {row.get('resid')!r} is not an integer") from None
        target, sep, suffix = rid.rpartition("_")
        if not sep or not target or suffix != str(resid):
            raise _err(path, line, f"ID {rid!r} is not <target_id>_<resid> with resid {resid}")
        if rid in lines:
            raise _err(path, line, f"ID {rid!r} repeats row {lines[rid]}")
        lines[rid] = line
        if target in grouped and previous != target:
            raise _err(path, line, f"residues out of order: target {target} resumes after "
                                   f"target {previous}")
        if target in grouped and resid <= grouped[target][2][-1]:
            raise _err(path, line, f"residues out of order: {rid} after "
                                   f"{target}_{grouped[target][2][-1]}")
        resname = (row.get("resname") or "").strip().upper()
        xyz = []
        for cx in cols:
            point = []
            for c in cx:
                text = (row.get(c) or "").strip()
                try:
                    v = float(text)
                except ValueError:
                    raise _err(path, line, f"{c} = {text!r} is not a number") from None
                if not math.isfinite(v):
                    raise _err(path, line, f"{c} = {text} is not a finite coordinate")
                point.append(math.nan if v < _MISSING_BELOW else v)
            xyz.append(point)
        if target not in grouped:
            grouped[target] = (line, [], [], [])
        grouped[target][1].append(resname)
        grouped[target][2].append(resid)
        grouped[target][3].append(xyz)
        previous = target
    targets = {t: (first, names, ids, np.asarray(c, dtype=np.float64).transpose(1, 0, 2))
               for t, (first, names, ids, c) in grouped.items()}
    return CoordinateTable(path, want, targets, lines)


# --------------------------------------------------------------------- submission out
def submission_text(entries: list[tuple[str, str, np.ndarray]]) -> str:
    """CSV text of ``[(target_id, sequence, c1 [5, L, 3]), ...]`` (3 decimals)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["ID", "resname", "resid"]
               + [f"{a}_{m}" for m in range(1, N_PREDICTIONS + 1) for a in "xyz"])
    for tid, seq, c1 in entries:
        c1 = np.asarray(c1, dtype=np.float64)
        if c1.shape != (N_PREDICTIONS, len(seq), 3):
            raise ValueError(f"{tid}: C1' array {c1.shape}, expected ({N_PREDICTIONS}, {len(seq)}, 3)")
        if not np.isfinite(c1).all():
            raise ValueError(f"{tid}: non-finite predicted coordinates")
        for i, base in enumerate(seq):
            w.writerow([f"{tid}_{i + 1}", base, i + 1]
                       + [f"{v:.3f}" for v in c1[:, i, :].reshape(-1)])
    return buf.getvalue()


def target_seed(seed: int, target: str) -> int:
    """Sampling seed of one target: depends on (seed, target id) only, not file order."""
    return (int(seed) * 1_000_003 + zlib.crc32(target.encode())) % (2**63 - 1)


def predict_c1(model, strands: list[str], steps: int, seed: int, refine_steps: int,
               sample_batch: int = N_PREDICTIONS) -> np.ndarray:
    """[5, L, 3] C1' coordinates: five samples of the complex ``strands``, drawn
    ``sample_batch`` at a time (one batched sampler call for the default), each batch
    ranked best first by the model's torsion consistency."""
    import torch

    from rna_predict.data.atom_layout import BB
    from rna_predict.data.dataset import batch_from_sequence

    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
             for k, v in batch_from_sequence("&".join(strands)).items()}
    gen = torch.Generator(device=device).manual_seed(int(seed))
    c1 = BB["C1'"]
    out = []
    left = N_PREDICTIONS
    with torch.no_grad():
        while left > 0:
            n = min(max(1, int(sample_batch)), left)
            x = model.sample(batch, steps=int(steps), n_samples=n, generator=gen,
                             refine_steps=int(refine_steps))  # [n, 1, L, 23, 3]
            out.append(x[:, 0, :, c1].double().cpu().numpy())
            left -= n
    return np.concatenate(out)


def predict_kaggle(model_dir: str | Path, sequences: str | Path, out: str | Path,
                   steps: int = 200, seed: int = 0, refine_steps: int = 200,
                   device: str = "cpu", sample_batch: int = N_PREDICTIONS) -> Path:
    """Write the submission for every target of ``sequences`` to ``out`` (atomically,
    after every target is predicted); the file is checked before the model loads."""
    from tqdm import tqdm

    from rna_predict.data.atomic import write_text
    from rna_predict.inference.predict import load_model

    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"{out}: a Kaggle submission is a .csv file")
    targets = read_sequences(sequences)
    model = load_model(model_dir, device=device)
    entries = []
    for t in tqdm(targets, desc="predict --kaggle", unit="target"):
        t0 = time.perf_counter()
        c1 = predict_c1(model, t.strands, steps, target_seed(seed, t.target_id), refine_steps,
                        sample_batch)
        entries.append((t.target_id, t.sequence, c1))
        log.info("predict --kaggle: %s L=%d (%d strand(s)) %.1f s", t.target_id, len(t.sequence),
                 len(t.strands), time.perf_counter() - t0)
    write_text(out, submission_text(entries))
    log.info("predict --kaggle: wrote %s (%d targets)", out, len(entries))
    return out


__all__ = ["CoordinateTable", "KaggleFormatError", "MISSING", "N_PREDICTIONS", "SEQUENCE_COLUMNS",
           "Target", "predict_c1", "predict_kaggle", "read_coordinates", "read_sequences",
           "submission_text", "target_seed"]
