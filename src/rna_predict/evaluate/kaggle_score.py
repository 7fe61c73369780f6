"""``rna-predict score``: the Stanford RNA 3D Folding (Kaggle) metric of a submission.

Per target: the best over the five predictions of the best over the reference
conformations of the C1' TM-score (:func:`rna_predict.evaluate.metrics.tm_score`:
US-align's ``-TMscore 1`` sequence-dependent mode, RNA d0, normalised by the residues
the reference observed; a reference coordinate of -1e18 is unobserved and its residue
is left out of the superposition and the normalisation). A reference conformation with
no observed residue is skipped. The score of the submission is the mean over targets.

Files are read by :mod:`rna_predict.inference.kaggle`; the submission must hold exactly
the IDs of the labels, in the same order within each target, or the error names the
first row that differs. Output: ``target_id,length,n_references,score`` per target,
written atomically (6 decimals) after every target is scored.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from rna_predict.data.atomic import write_text
from rna_predict.evaluate.metrics import tm_score
from rna_predict.inference.kaggle import (N_PREDICTIONS, CoordinateTable, KaggleFormatError,
                                          read_coordinates)

log = logging.getLogger(__name__)


def check_ids(labels: CoordinateTable, submission: CoordinateTable) -> None:
    """The submission holds exactly the labels' IDs (order inside a target checked by the
    reader); the error names the file and row of the first difference."""
    for rid, line in submission.lines.items():
        if rid not in labels.lines:
            raise KaggleFormatError(f"{submission.path}: row {line}: ID {rid!r} is not in the "
                                    f"labels {labels.path}")
    for rid, line in labels.lines.items():
        if rid not in submission.lines:
            raise KaggleFormatError(f"{submission.path}: no row for ID {rid!r} (labels "
                                    f"{labels.path} row {line})")


def target_score(pred: np.ndarray, refs: np.ndarray) -> float:
    """max over predictions [P, L, 3] of max over references [R, L, 3] (NaN = missing)
    of the C1' TM-score normalised by the reference's observed residues; a prediction
    with no coordinate at an observed residue scores 0. NaN when no reference observes
    any residue."""
    observed = [ref for ref in refs if np.isfinite(ref).all(axis=1).any()]
    if not observed:
        return float("nan")
    scores = [tm_score(p, ref) for ref in observed for p in pred]
    return max([float(s) for s in scores if np.isfinite(s)], default=0.0)


def score_submission(labels_path: str | Path, submission_path: str | Path) -> list[dict]:
    """``[{"target_id", "length", "n_references", "score"}, ...]`` in labels order."""
    labels = read_coordinates(labels_path)
    submission = read_coordinates(submission_path, n_models=N_PREDICTIONS)
    check_ids(labels, submission)
    rows = []
    for target, (_, _, resids, refs) in labels.targets.items():
        pred = submission.targets[target][3]
        score = target_score(pred, refs)
        if not np.isfinite(score):
            raise KaggleFormatError(f"{labels.path}: target {target}: no observed C1' "
                                    "coordinate in any reference conformation")
        rows.append({"target_id": target, "length": len(resids), "n_references": len(refs),
                     "score": float(score)})
        log.info("score: %s L=%d TM=%.4f", target, len(resids), score)
    return rows


def scores_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["target_id", "length", "n_references", "score"])
    for r in rows:
        w.writerow([r["target_id"], r["length"], r["n_references"], f"{r['score']:.6f}"])
    return buf.getvalue()


def run_score(labels: str | Path, submission: str | Path, out: str | Path) -> tuple[list[dict], float]:
    """Score ``submission`` against ``labels``, write the per-target CSV to ``out``;
    returns the rows and the mean score."""
    rows = score_submission(labels, submission)
    write_text(Path(out), scores_csv(rows))
    mean = float(np.mean([r["score"] for r in rows]))
    log.info("score: mean TM-score %.4f over %d targets; wrote %s", mean, len(rows), out)
    return rows, mean


__all__ = ["check_ids", "run_score", "score_submission", "scores_csv", "target_score"]
