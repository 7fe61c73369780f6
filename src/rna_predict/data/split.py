"""Homology-aware train/val/test split (pipeline stage ``split``).

Sequence identity between two records is computed from an optimal pairwise alignment of
their full sequences (strands concatenated in record order) with biotite's
``align_optimal``: Needleman-Wunsch/Gotoh dynamic programming (Needleman & Wunsch 1970;
Gotoh 1982), NUC.4.4 scores (match +5, mismatch -4), affine gaps (open -10, extend -1),
terminal gaps free (semi-global), so that a fragment aligns inside its parent.

    identity(a, b) = identical aligned positions
                     / max(min(len a, len b), aligned span, split.min_identity_length)

where the aligned span counts the alignment columns from the first to the last column
in which both sequences have a residue; identical sequences have identity 1 whatever
their length. For a gap-free alignment of the shorter sequence (of at least
``min_identity_length`` residues) this is the CD-HIT convention, matches / length of the
shorter sequence, so an exact fragment of a chain has identity 1. The span term counts
gaps opened inside the shorter sequence as mismatches: with matches / shorter length
alone, unrelated short RNAs (14-40 nt) scatter through a 100-nt chain with gaps and
score above 0.8 against it (1A51 vs 6Y2L 0.805, 434D vs 4QLM 0.857 in the demo set).

The floor ``min_identity_length`` (F, default 30, :data:`MIN_IDENTITY_LENGTH`) removes
chance matches of short chains: a 7-mer needs only 6 identical columns to pass 0.8, so
chains of 10 nt or less reach 0.8 against many unrelated chains and single linkage
percolates through them into one giant cluster (4,871 of 5,000 synthetic chains,
benchmarks/bench_split.py). Clustering tools guard against this in the same way:
CD-HIT-EST ignores sequences shorter than its ``-l`` (default 10; Fu et al. 2012) and
MMseqs2 clustering requires alignment coverage (Steinegger & Soding 2017). With F = 30
and t = 0.8 a chain of L <= t F = 24 nt links to nothing except an identical sequence;
a 25-nt exact fragment of a chain still links (25/30 > 0.8), a 20-nt one does not
(20/30). Identities only drop relative to F = 0.

Records are clustered by single linkage at identity > ``split.max_identity``; whole
clusters go to one split, so no val or test record is more than ``max_identity``
identical to any training record (nor to any record of another split), and identical
sequences always share a split. Clusters are shuffled with ``seed``, placed largest
first into the split furthest below its target count (``fractions``), then clusters are
moved until every split holds at least ``min_per_split`` records.

Scaling (``identity_edges``): the clusters are those of all-pairs alignment, found
without aligning every pair. Identical sequences are joined without an alignment; every
other pair must pass, in order:

1. Seeds (``seed_windows``): an inverted k-mer index gives the shared k-mers of each
   pair and their diagonals; a pair is kept with the windows of the longer sequence
   around its seeded diagonals. A shorter sequence with L / F <= t (L <= 24 nt at the
   defaults) is not seeded at all (``can_link``: no identity above t is possible, and
   identical sequences are already joined). Exact for a shorter sequence of fewer than
   3 k residues (so only for t F < L < 3 k, which is empty at the defaults, 24 >= 18):
   it is seeded with k-mers of ``exact_seed_length`` (3-4 nt at 0.8: m identical columns
   and e < m (1 - t) / t others form e + 1 runs, one of >= m / (e + 1) columns). For
   longer sequences it is a heuristic (k = ``split.kmer``, 6): a window needs at least
   a quarter of the (L - k + 1) t^k k-mers expected at identity t, rounded up (so >= 2),
   within 3 bins of up to 16 diagonals (``_min_seed_count``). No exact k-mer filter scales at 0.8:
   the q-gram lemma (Jokinen & Ukkonen 1991; Rasmussen et al. 2006) needs q < 1/(1 - t)
   = 5 and then guarantees only (t q - q + 1) L - (q - 1) = 0.2 L - 3 shared 4-mers,
   which two random 100-nt sequences exceed (about 30); such a filter keeps 90% of the
   pairs of 5,000 synthetic chains. The heuristic is measured instead: on generated
   families it gives the all-pairs clusters (tests/test_split.py,
   benchmarks/bench_split.py).
2. Local-score bound (``identity_bound``, exact): an alignment through a window with
   identity > t has, since max(L', s) >= (L' + s) / 2 with L' = max(L, F), a local
   score above (t/2) L' with +(1 - t/2) per identical column and -t/2 per other
   column; each window is scored by a batched numpy Smith-Waterman (``local_scores``).
   The floor only enlarges the denominator, so every bound proved for D = max(L, s)
   stays valid (``max_gap_columns`` keeps using L).
3. ``sequence_identity`` on the pair, best pairs first, skipping pairs whose records are
   already in one cluster.

The report's ``max_cross_split_identity`` is the maximum over the cross-split pairs the
prefilter aligned (``aligned_cross_split_pairs`` of them); it is null when there are none,
which means every cross-split pair was bounded at or below the threshold without an
alignment, not that an identity of 0 was measured.
``max_identity_to`` applies the same prefilter between two sets (leakage checks).
"""

from __future__ import annotations

import csv
import logging
import math
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from rna_predict.data.atomic import write_json, write_text
from rna_predict.data.records import SEQUENCE_KEYS, load_record, ok_record_ids
from rna_predict.data.split_files import SPLITS, read_split_ids

log = logging.getLogger(__name__)

GAP_PENALTY = (-10, -1)
MIN_IDENTITY_LENGTH = 30  # default of split.min_identity_length (module docstring)
IDENTITY_DEFINITION = (
    "identical aligned positions / max(length of the shorter sequence, aligned span, "
    "split.min_identity_length); identical sequences 1; semi-global Needleman-Wunsch/Gotoh, "
    "NUC.4.4, gap open -10 extend -1, end gaps free"
)
CROSS_SPLIT_NOTE = (
    "maximum identity over the cross-split pairs the prefilter aligned; null when it "
    "aligned none, i.e. every cross-split pair was bounded at or below max_identity"
)


class SplitError(ValueError):
    """The records cannot be split under the identity and size constraints."""


def _clean(seq: str) -> str:
    """DNA letters for biotite (U -> T); anything but ACGU becomes N (never identical)."""
    return "".join(c if c in "ACGT" else "N" for c in seq.upper().replace("U", "T"))


def sequence_identity(a: str, b: str, min_length: int = MIN_IDENTITY_LENGTH) -> float:
    """Identity of two RNA sequences as defined in the module docstring (0..1);
    ``min_length`` is the denominator floor F (``split.min_identity_length``)."""
    from biotite.sequence import NucleotideSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal

    if not a or not b:
        return 0.0
    ca, cb = _clean(a), _clean(b)
    if ca == cb and "N" not in ca:
        return 1.0
    aln = align_optimal(NucleotideSequence(ca), NucleotideSequence(cb),
                        SubstitutionMatrix.std_nucleotide_matrix(), gap_penalty=GAP_PENALTY,
                        terminal_penalty=False, max_number=1)[0]
    both = (aln.trace >= 0).all(axis=1)
    cols = np.nonzero(both)[0]
    if cols.size == 0:
        return 0.0
    pairs = aln.trace[both]
    la, lb = np.array(list(ca)), np.array(list(cb))
    res_a, res_b = la[pairs[:, 0]], lb[pairs[:, 1]]
    matches = int(np.sum((res_a == res_b) & (res_a != "N")))
    span = int(cols[-1] - cols[0] + 1)
    return matches / max(min(len(a), len(b)), span, min_length)


def identity_matrix(seqs: Sequence[str], min_length: int = MIN_IDENTITY_LENGTH
                    ) -> np.ndarray:
    """Symmetric [n, n] float64 matrix of :func:`sequence_identity` (diagonal 1).

    All pairs are aligned: O(n^2) alignments. Kept as the reference the prefilter is
    tested and benchmarked against; the stage itself uses :func:`identity_edges`.
    """
    n = len(seqs)
    out = np.eye(n, dtype=np.float64)
    cache: dict[tuple[str, str], float] = {}
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in tqdm(pairs, desc="identity", unit="pair", disable=len(pairs) < 200):
        key = (seqs[i], seqs[j]) if seqs[i] <= seqs[j] else (seqs[j], seqs[i])
        if key not in cache:
            cache[key] = sequence_identity(*key, min_length=min_length)
        out[i, j] = out[j, i] = cache[key]
    return out


# --- prefilter -------------------------------------------------------------------------

_CODE = np.full(256, 4, dtype=np.int8)
for _i, _c in enumerate("ACGT"):
    _CODE[ord(_c)] = _CODE[ord(_c.lower())] = _i
_CODE[ord("U")] = _CODE[ord("u")] = 3
_PAD = 5  # padding code of the batched local alignment: never identical to anything
_NARROW_BIN = 16  # seed-count bins are at most this many diagonals wide


def _codes(seq: str) -> np.ndarray:
    """0..3 for A, C, G, U/T; 4 (N, never identical) for anything else."""
    return _CODE[np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)]


def max_gap_columns(length: int, threshold: float) -> int:
    """Most non-identical aligned columns an alignment with identity > ``threshold`` can
    have when the shorter sequence has ``length`` residues.

    With m identical columns and span s, identity > t means m > t * max(length, s, F)
    >= t s (F the denominator floor), so the e = s - m other columns satisfy
    e < m (1 - t) / t <= length (1 - t) / t. The
    aligned path changes diagonal only at gap columns, so all its cells lie within
    ``max_gap_columns`` diagonals of any one of its cells.
    """
    return int(math.floor(length * (1.0 - threshold) / threshold + 1e-9))


_SCALE = 1000  # integer scale of the identity-score bound


def identity_score_params(threshold: float) -> tuple[int, int]:
    """(match score, cost of any other column) of the identity-score bound, scaled by
    1,000 and rounded in the permissive direction (see :func:`identity_bound`)."""
    half = threshold * 0.5
    return math.ceil(_SCALE * (1.0 - half)), math.floor(_SCALE * half)


def can_link(length: int, threshold: float, min_length: int = MIN_IDENTITY_LENGTH) -> bool:
    """Whether a sequence of ``length`` residues (the shorter of a pair) can have identity
    > ``threshold`` with a different sequence: m <= L identical columns over a
    denominator D >= F give m / D <= L / F, so L / F <= t rules it out (same float
    division as :func:`sequence_identity`, so the test is exact)."""
    return min_length <= 0 or length / min_length > threshold


def identity_bound(length: int, threshold: float, min_length: int = MIN_IDENTITY_LENGTH) -> int:
    """Local score a window must reach for an alignment with identity > ``threshold``.

    Identity > t means m > t D with D = max(L, s, F) >= (L' + s) / 2, L' = max(L, F)
    (L the shorter length, F ``min_length``, s the span, m identical columns,
    e = s - m other columns). So m (1 - t/2) - (t/2) e > (t/2) L': the span, a local
    alignment, scores above (t/2) L' with +(1 - t/2) per identical column and -t/2 per
    other column (mismatch, N, gap; linear gaps). If no local alignment in the window reaches it, no alignment through
    the window has identity > t. Exact; rounding in :func:`identity_score_params` and
    here only lets more pairs through.
    """
    return math.floor(_SCALE * threshold * 0.5 * max(length, min_length))


def local_scores(queries: np.ndarray, targets: np.ndarray, match: int,
                 other: int) -> np.ndarray:
    """Optimal local alignment scores (Smith & Waterman 1981) of a batch of pairs at
    once with numpy, score only: +``match`` for an identical non-N pair, -``other`` for
    any other pair and per gap column (linear gaps).

    ``queries`` [P, la] and ``targets`` [P, lb] hold codes (:func:`_codes`), padded at
    the end with code 5. Padding and N never count as identical, and padding lies at
    the end of both sequences, so every column of a path after its first padding cell
    scores -``other``: trimming them raises the score, so padding never changes it.
    Row by row over the query, with the batch as the contiguous last axis (each step is
    a vectorised operation over all pairs); the horizontal-gap recurrence is a running
    maximum, F[j] = max_{k < j} (H[k] - (j - k) other). Scores are divided by
    gcd(match, other) and kept in int16 when they cannot overflow it (int32 otherwise),
    then scaled back: the same integers. Tested against biotite's
    ``align_optimal(local=True)``.
    """
    n_pairs, la = queries.shape
    lb = targets.shape[1]
    g = math.gcd(match, other) or 1
    m, o = match // g, other // g
    dtype = np.int16 if m * la + o * (lb + 1) < 30_000 else np.int32
    # query N / padding -> 6 / 7, target N / padding stay 4 / 5: never equal
    q = np.ascontiguousarray(np.where(queries >= 4, queries + 2, queries).astype(np.int8).T)
    t = np.ascontiguousarray(targets.astype(np.int8).T)
    h = np.zeros((lb + 1, n_pairs), dtype=dtype)
    best = np.zeros((lb + 1, n_pairs), dtype=dtype)
    ramp = (np.arange(lb + 1, dtype=dtype) * dtype(o))[:, None]
    diag = np.empty((lb, n_pairs), dtype=dtype)
    up = np.empty((lb, n_pairs), dtype=dtype)
    run = np.empty((lb + 1, n_pairs), dtype=dtype)
    eq = np.empty((lb, n_pairs), dtype=bool)
    step = dtype(m + o)
    rowwise = n_pairs >= 64
    for i in range(la):
        np.equal(t, q[i], out=eq)
        np.multiply(eq, step, out=diag, casting="unsafe")
        diag += h[:-1]
        diag -= dtype(o)
        np.subtract(h[1:], dtype(o), out=up)
        np.maximum(diag, up, out=diag)
        np.maximum(diag, 0, out=h[1:])
        np.add(h, ramp, out=run)
        if rowwise:  # running maximum down the rows: contiguous rows, vectorised
            for j in range(1, lb + 1):
                np.maximum(run[j], run[j - 1], out=run[j])
        else:
            np.maximum.accumulate(run, axis=0, out=run)
        np.subtract(run[:-1], ramp[1:], out=up)
        np.maximum(h[1:], up, out=h[1:])
        np.maximum(best, h, out=best)
    return best.max(axis=0).astype(np.int64) * g


def _kmers(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k-mer values, start positions) of every window of ``codes`` without an N."""
    if codes.size < k:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    win = np.lib.stride_tricks.sliding_window_view(codes.astype(np.int64), k)
    ok = (win < 4).all(axis=1)
    values = win[ok] @ (4 ** np.arange(k - 1, -1, -1, dtype=np.int64))
    return values, np.nonzero(ok)[0].astype(np.int64)


SEED_FRACTION = 0.25  # share of the expected seeds a window must hold (heuristic path)


def _min_seed_count(length: int, threshold: float, k: int) -> int:
    """Seeds (shared k-mers) a band of a query of ``length`` >= 3 k residues must hold:
    at least ``SEED_FRACTION`` (a quarter) of the (length - k + 1) t^k k-mers expected
    to survive at identity t = ``threshold`` with uniformly placed substitutions,
    rounded down, at least 1. Heuristic; its recall is measured
    (benchmarks/bench_split.py ``--recall``: the lowest seeds / expected ratio of a pair
    above 0.8 was 0.42 at 1,000 chains). Rounding up (at least 2 seeds for every query
    that can link) cuts the windows scored at 5,000 chains threefold with the same
    clusters there, but changes the demo report's prefilter counts; not adopted yet."""
    expected = max(length - k + 1, 0) * threshold ** k
    return max(1, int(SEED_FRACTION * expected))


def exact_seed_length(length: int, threshold: float,
                      min_length: int = MIN_IDENTITY_LENGTH) -> int:
    """Longest k such that every alignment with identity > ``threshold`` of a sequence of
    ``length`` residues (the shorter one) has k consecutive identical columns.

    Its m identical columns form at most e + 1 runs, e < m (1 - t) / t the other
    columns, so one run has >= ceil(m / (e + 1)) columns; minimum over
    t max(length, F) < m <= length (F = ``min_length``). ``length`` itself when there is
    no such m (:func:`can_link` false: only an identical sequence qualifies).
    A shared k-mer of this length is then a necessary condition (pigeonhole, as in the
    q-gram lemma of Jokinen & Ukkonen 1991 with one q-gram).
    """
    m_min = math.floor(threshold * max(length, min_length) - 1e-9) + 1
    best = length
    for m in range(max(m_min, 1), length + 1):
        e_max = math.ceil(m * (1.0 - threshold) / threshold - 1e-9) - 1
        best = min(best, math.ceil(m / (max(e_max, 0) + 1)))
    return max(best, 1)


class _KmerIndex:
    """Inverted index of every k-mer of every sequence: sorted value, sequence, start."""

    def __init__(self, codes: Sequence[np.ndarray], k: int, rank: np.ndarray) -> None:
        values, seqs, starts = [], [], []
        for s, c in enumerate(codes):
            v, p = _kmers(c, k)
            values.append(v)
            starts.append(p)
            seqs.append(np.full(v.size, s, dtype=np.int64))
        self.query_values, self.query_starts = values, starts
        self.n = len(codes)
        seq = np.concatenate(seqs)
        # sorted by (k-mer, rank of the sequence): the postings of one k-mer in sequences
        # ranked after the query are one contiguous slice
        self.keys = np.concatenate(values) * self.n + rank[seq]
        order = np.argsort(self.keys, kind="stable")
        self.keys = self.keys[order]
        self.seq = seq[order]
        self.start = np.concatenate(starts)[order]


def seed_windows(codes: Sequence[np.ndarray], threshold: float, k: int,
                 group: Sequence[int] | None = None,
                 min_length: int = MIN_IDENTITY_LENGTH) -> dict[str, np.ndarray]:
    """Seed stage of the prefilter: windows where two sequences may align.

    Inverted k-mer index (k-mer -> sequence, start; sorted numpy arrays,
    ``searchsorted``). Each sequence a is looked up against every sequence b that is
    longer (ties by index), so each pair is seen once with a the shorter; a query that
    cannot link (:func:`can_link`, floor ``min_length``) is skipped. A hit is a
    shared k-mer at (i, j), on diagonal j - i; hits are counted in bins of
    B = min(max_gap_columns + 1, 16) diagonals and a pair is kept where 3 adjacent bins
    hold at least :func:`_min_seed_count` hits (diagonal seeding as in FASTA and BLAST:
    Pearson & Lipman 1988; Altschul et al. 1997). A query shorter than 3 k uses the
    k-mer length of :func:`exact_seed_length` and needs 1 hit: for it, this stage drops
    no pair above ``threshold``. For each kept run of bins the window of b that an
    alignment through those diagonals can touch (``max_gap_columns`` either side) is
    returned: arrays ``a, b, lo, hi, seeds`` (indices into ``codes``).

    With ``group`` given, only pairs from different groups are kept (queries vs
    references).
    """
    n = len(codes)
    lengths = np.array([c.size for c in codes], dtype=np.int64)
    rank_order = np.lexsort((np.arange(n), lengths))
    rank = np.empty(n, dtype=np.int64)
    rank[rank_order] = np.arange(n)
    groups = None if group is None else np.asarray(group, dtype=np.int64)
    indexes: dict[int, _KmerIndex] = {}
    out: dict[str, list[np.ndarray]] = {key: [] for key in ("a", "b", "lo", "hi", "seeds")}
    max_len = int(lengths.max()) if n else 0
    for a in tqdm(rank_order.tolist(), desc="split: seeds", unit="seq", disable=n < 500):
        la = int(lengths[a])
        if not can_link(la, threshold, min_length):
            continue
        short = la < 3 * k
        kq = min(k, exact_seed_length(la, threshold, min_length)) if short else k
        if kq not in indexes:
            indexes[kq] = _KmerIndex(codes, kq, rank)
        index = indexes[kq]
        va, pa = index.query_values[a], index.query_starts[a]
        if va.size == 0:
            continue
        lo = np.searchsorted(index.keys, va * n + rank[a] + 1, side="left")
        cnt = np.searchsorted(index.keys, va * n + n, side="left") - lo
        total = int(cnt.sum())
        if total == 0:
            continue
        rep = np.repeat(np.arange(va.size), cnt)
        idx = lo[rep] + np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        if groups is not None:
            keep = groups[index.seq[idx]] != groups[a]
            idx, rep = idx[keep], rep[keep]
            if idx.size == 0:
                continue
        gap = max_gap_columns(la, threshold)
        width = min(gap + 1, _NARROW_BIN)
        n_bins = (max_len + la) // width + 3
        b = index.seq[idx]
        bins = (index.start[idx] - pa[rep] + la) // width + 1
        ukey, ucount = np.unique(b * n_bins + bins, return_counts=True)

        def count_at(keys: np.ndarray) -> np.ndarray:
            at = np.clip(np.searchsorted(ukey, keys), 0, ukey.size - 1)
            return np.where(ukey[at] == keys, ucount[at], 0)

        band = ucount + count_at(ukey - 1) + count_at(ukey + 1)
        need = 1 if short else _min_seed_count(la, threshold, k)
        passed = band >= need
        if not passed.any():
            continue
        pkey, pband = ukey[passed], band[passed]
        start = np.ones(pkey.size, dtype=bool)
        start[1:] = pkey[1:] != pkey[:-1] + 1
        starts = np.nonzero(start)[0]
        first = pkey[starts]
        last = pkey[np.r_[starts[1:] - 1, pkey.size - 1]]
        bseq = first // n_bins
        lb = lengths[bseq]
        d_lo = (first % n_bins - 2) * width - la - gap
        d_hi = (last % n_bins + 1) * width - la + gap
        out["a"].append(np.full(first.size, a, dtype=np.int64))
        out["b"].append(bseq)
        out["lo"].append(np.clip(d_lo, 0, lb))
        out["hi"].append(np.clip(la + d_hi, 0, lb))
        out["seeds"].append(np.maximum.reduceat(pband, starts).astype(np.int64))
    return {key: (np.concatenate(v) if v else np.zeros(0, np.int64)) for key, v in out.items()}


def _window_scores(codes: Sequence[np.ndarray], win: dict[str, np.ndarray],
                   max_cells: int, threshold: float) -> np.ndarray:
    """Local alignment score of each seed window (whole query vs the window of the
    target); -1 where the window is larger than ``max_cells`` (not computed).

    Batches hold queries of one length class (lengths within a factor 1.25) sorted by
    window width, so the padded batch does little more work than its windows' cells."""
    n_win = win["a"].size
    la = np.array([codes[a].size for a in win["a"]], dtype=np.int64)
    lw = win["hi"] - win["lo"]
    scores = np.full(n_win, -1, dtype=np.int64)
    todo = np.nonzero(la * lw <= max_cells)[0]
    length_class = np.floor(np.log(np.maximum(la, 1)) / math.log(1.25)).astype(np.int64)
    todo = todo[np.lexsort((lw[todo], length_class[todo]))]
    batch_cells = 1 << 21
    start = 0
    with tqdm(total=todo.size, desc="split: windows", unit="win",
              disable=todo.size < 2000) as bar:
        while start < todo.size:
            wmax = int(lw[todo[start]])
            stop = start
            cls = length_class[todo[start]]
            while stop < todo.size:  # grow the batch while its padded rows stay small
                wmax_next = max(wmax, int(lw[todo[stop]]))
                if stop > start and (length_class[todo[stop]] != cls or
                                     (stop - start + 1) * (wmax_next + 1) > batch_cells):
                    break
                wmax = wmax_next
                stop += 1
            sel = todo[start:stop]
            qmax = int(la[sel].max())
            qs = np.full((sel.size, qmax), _PAD, dtype=np.int8)
            ts = np.full((sel.size, wmax), _PAD, dtype=np.int8)
            for r, w in enumerate(sel):
                qa = codes[win["a"][w]]
                qs[r, :qa.size] = qa
                tw = codes[win["b"][w]][win["lo"][w]:win["hi"][w]]
                ts[r, :tw.size] = tw
            scores[sel] = local_scores(qs, ts, *identity_score_params(threshold))
            bar.update(sel.size)
            start = stop
    return scores


def _passing_windows(codes: Sequence[np.ndarray], win: dict[str, np.ndarray], threshold: float,
                     max_cells: int, min_length: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, priority) of the seed windows that pass the exact local-score test."""
    scores = _window_scores(codes, win, max_cells, threshold)
    la = np.array([codes[a].size for a in win["a"]], dtype=np.int64)
    bound = np.array([identity_bound(int(n), threshold, min_length) for n in la],
                     dtype=np.int64)
    keep = (scores < 0) | (scores >= bound)
    priority = np.where(scores < 0, np.iinfo(np.int32).max, scores)
    return win["a"][keep], win["b"][keep], priority[keep]


def _best_per_pair(a: np.ndarray, b: np.ndarray, priority: np.ndarray, n: int) -> np.ndarray:
    """[C, 3] rows (i < j, j, priority): one per pair, its best priority, best first."""
    key = np.minimum(a, b) * n + np.maximum(a, b)
    order = np.lexsort((key, -priority))
    key, priority = key[order], priority[order]
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    return np.stack([key[first] // n, key[first] % n, priority[first]], axis=1).astype(np.int64)


def _subset(win: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, np.ndarray]:
    return {key: v[sel] for key, v in win.items()}


def candidate_pairs(codes: Sequence[np.ndarray], threshold: float, k: int,
                    group: Sequence[int] | None = None,
                    max_window_cells: int = 250_000,
                    min_length: int = MIN_IDENTITY_LENGTH) -> tuple[np.ndarray, dict[str, int]]:
    """Pairs that may have identity > ``threshold``: [C, 3] int64 rows (i, j, priority),
    highest priority first, and counts per stage.

    Seed windows (:func:`seed_windows`) are scored by local alignment
    (:func:`local_scores`) and dropped when the score cannot reach
    :func:`identity_bound` -- an exact test for an alignment through the window.
    Windows over ``max_window_cells`` cells skip the score test (it would cost about as
    much as the alignment itself) and are kept.
    """
    win = seed_windows(codes, threshold, k, group, min_length)
    a, b, priority = _passing_windows(codes, win, threshold, max_window_cells, min_length)
    rows = _best_per_pair(a, b, priority, len(codes))
    stats = {"seed_windows": int(win["a"].size),
             "seed_pairs": int(np.unique(win["a"] * len(codes) + win["b"]).size),
             "scored_windows": int(win["a"].size), "candidate_pairs": int(rows.shape[0])}
    return rows, stats


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return sorted(out.values())


def _unique_sequences(seqs: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct sequences (identity 1: same cleaned letters, no N) and each record's one."""
    first: dict[str, int] = {}
    uniq: list[str] = []
    owner = np.empty(len(seqs), dtype=np.int64)
    for r, seq in enumerate(seqs):
        clean = _clean(seq)
        key = clean if clean and "N" not in clean else f"\0{r}"
        if key not in first:
            first[key] = len(uniq)
            uniq.append(seq)
        owner[r] = first[key]
    return uniq, owner


def identity_edges(seqs: Sequence[str], threshold: float, kmer: int,
                   max_window_cells: int = 250_000, chunk: int = 50_000,
                   min_length: int = MIN_IDENTITY_LENGTH
                   ) -> tuple[list[list[int]], dict[tuple[int, int], float], dict[str, int]]:
    """Single-linkage clusters at identity > ``threshold`` without aligning every pair.

    Identical sequences are joined directly. Seed windows (:func:`seed_windows`) are
    taken most seeds first, in chunks; a window whose two sequences are already in one
    cluster is dropped (no identity can change the clusters), the rest get the exact
    local-score test (:func:`identity_bound`), and the pairs that pass are aligned with
    :func:`sequence_identity`, best first, again skipping pairs already joined.
    Returns (clusters as sorted record-index lists, the identity of every aligned pair
    keyed by record indices, counts).
    """
    uniq, owner = _unique_sequences(seqs)
    codes = [_codes(s) for s in uniq]
    n = len(uniq)
    win = seed_windows(codes, threshold, kmer, min_length=min_length)
    order = np.lexsort((win["b"], win["a"], -win["seeds"]))
    uf = _UnionFind(n)
    aligned: dict[tuple[int, int], float] = {}
    scored = candidates = 0
    with tqdm(total=order.size, desc="split: windows", unit="win",
              disable=order.size < 20_000) as bar:
        start, size = 0, 2_000
        while start < order.size:  # chunks grow: early unions prune later windows
            sel = order[start:start + size]
            roots = np.array([uf.find(x) for x in range(n)], dtype=np.int64)
            sel = sel[roots[win["a"][sel]] != roots[win["b"][sel]]]
            scored += sel.size
            a, b, priority = _passing_windows(codes, _subset(win, sel), threshold,
                                              max_window_cells, min_length)
            rows = _best_per_pair(a, b, priority, n)
            candidates += rows.shape[0]
            for i, j, _ in rows.tolist():
                if uf.find(i) == uf.find(j):
                    continue
                ident = sequence_identity(uniq[i], uniq[j], min_length)
                aligned[(i, j)] = ident
                if ident > threshold:
                    uf.union(i, j)
            bar.update(min(size, order.size - start))
            start, size = start + size, min(2 * size, chunk)
    records = _UnionFind(len(seqs))
    by_root: dict[int, int] = {}
    for r, u in enumerate(owner.tolist()):
        records.union(r, by_root.setdefault(uf.find(u), r))
    members: dict[int, list[int]] = {}
    for r, u in enumerate(owner.tolist()):
        members.setdefault(u, []).append(r)
    edges = {}
    for (i, j), ident in aligned.items():
        for ri in members[i]:
            for rj in members[j]:
                edges[(min(ri, rj), max(ri, rj))] = ident
    stats = {"records": len(seqs), "unique_sequences": n, "all_pairs": n * (n - 1) // 2,
             "seed_windows": int(win["a"].size),
             "seed_pairs": int(np.unique(win["a"] * n + win["b"]).size),
             "scored_windows": int(scored), "candidate_pairs": int(candidates),
             "aligned_pairs": len(aligned)}
    return records.groups(), edges, stats


def max_identity_to(seqs: Sequence[str], reference_seqs: Sequence[str],
                    threshold: float = 0.8, kmer: int = 6,
                    min_length: int = MIN_IDENTITY_LENGTH) -> np.ndarray:
    """For each of ``seqs``, the highest :func:`sequence_identity` to any of
    ``reference_seqs``, using the split's prefilter (float64 array, 0.0 where nothing
    passes it).

    Pairs the prefilter drops are not aligned; the exact local-score test proves them
    <= ``threshold`` (given the seed step's recall, module docstring), so a value above
    ``threshold`` is exact and a value <= ``threshold`` means "no reference above it".
    A query identical to a reference (same letters, no N) gets 1.0 whatever its length.
    Use the split's ``max_identity``, ``kmer`` and ``min_identity_length`` as
    ``threshold``, ``kmer`` and ``min_length``.
    """
    queries = list(seqs)
    refs = list(reference_seqs)
    out = np.zeros(len(queries), dtype=np.float64)
    if not queries or not refs:
        return out
    ref_keys = {c for c in map(_clean, refs) if c and "N" not in c}
    for q, seq in enumerate(queries):
        if _clean(seq) in ref_keys:
            out[q] = 1.0
    codes = [_codes(s) for s in queries + refs]
    group = [0] * len(queries) + [1] * len(refs)
    rows, _ = candidate_pairs(codes, threshold, kmer, group, min_length=min_length)
    for i, j, _ in rows.tolist():
        q, r = (i, j - len(queries)) if i < len(queries) else (j, i - len(queries))
        if out[q] < 1.0:
            out[q] = max(out[q], sequence_identity(queries[q], refs[r], min_length))
    return out


def cluster(identity: np.ndarray, threshold: float) -> list[list[int]]:
    """Single-linkage clusters (index lists, sorted) of pairs with identity > threshold."""
    uf = _UnionFind(identity.shape[0])
    for i, j in zip(*np.nonzero(np.triu(identity > threshold, k=1))):
        uf.union(int(i), int(j))
    return uf.groups()


def assign(sizes: Sequence[int], fractions: Sequence[float], seed: int,
           min_per_split: int) -> list[int]:
    """Split index (0 train, 1 val, 2 test) for each cluster of the given sizes."""
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise SplitError(f"split.fractions must be 3 non-negative numbers, got {list(fractions)}")
    total = int(sum(sizes))
    if total < 3 * min_per_split:
        raise SplitError(f"{total} records cannot give 3 splits of >= {min_per_split}")
    targets = [f / sum(fractions) * total for f in fractions]
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda c: -sizes[c])  # stable: seeded order among equal sizes
    where = [0] * len(sizes)
    counts = [0, 0, 0]
    for c in order:
        k = max(range(3), key=lambda s: (targets[s] - counts[s], -s))
        where[c] = k
        counts[k] += sizes[c]
    rank = {c: r for r, c in enumerate(order)}
    while True:  # repair: each move lowers the total shortfall, so this terminates
        short = [k for k in range(3) if counts[k] < min_per_split]
        if not short:
            return where
        k = short[0]
        need = min_per_split - counts[k]
        movable = [c for c in order if where[c] != k
                   and counts[where[c]] - sizes[c] >= min_per_split]
        if not movable:
            raise SplitError(
                f"cannot give every split >= {min_per_split} records without breaking an "
                f"identity cluster; cluster sizes {sorted(sizes, reverse=True)}")
        fits = [c for c in movable if sizes[c] >= need]
        pick = (min(fits, key=lambda c: (sizes[c], rank[c])) if fits
                else max(movable, key=lambda c: (sizes[c], -rank[c])))
        counts[where[pick]] -= sizes[pick]
        where[pick] = k
        counts[k] += sizes[pick]


def make_split(ids: Sequence[str], seqs: Sequence[str], fractions: Sequence[float],
               seed: int, max_identity: float, min_per_split: int,
               kmer: int = 6, min_identity_length: int = MIN_IDENTITY_LENGTH) -> dict[str, Any]:
    """Split records; returns ``{"splits": {name: [ids]}, "report": {...}}``."""
    if not 0.0 < max_identity <= 1.0:
        raise SplitError(f"split.max_identity must be in (0, 1], got {max_identity}")
    if kmer < 1:
        raise SplitError(f"split.kmer must be a positive k-mer length, got {kmer}")
    if min_identity_length < 0:
        raise SplitError("split.min_identity_length must be >= 0 residues, "
                         f"got {min_identity_length}")
    clusters, edges, counts = identity_edges(seqs, max_identity, kmer,
                                             min_length=min_identity_length)
    where = assign([len(c) for c in clusters], fractions, seed, min_per_split)
    label = np.empty(len(ids), dtype=np.int64)
    for c, members in zip(where, clusters):
        label[members] = c
    splits = {name: sorted(ids[i] for i in np.nonzero(label == k)[0])
              for k, name in enumerate(SPLITS)}
    max_cross, pair, n_cross = None, None, 0
    for (i, j), ident in sorted(edges.items()):  # aligned pairs; the rest are <= threshold
        if label[i] != label[j]:
            n_cross += 1
            if max_cross is None or ident > max_cross:
                max_cross, pair = float(ident), sorted([ids[i], ids[j]])
    if max_cross is not None and max_cross > max_identity:
        raise RuntimeError("internal error: cross-split identity above threshold")
    sizes = {name: {"records": len(splits[name]),
                    "nucleotides": int(sum(len(seqs[i]) for i in np.nonzero(label == k)[0])),
                    "clusters": int(sum(1 for w in where if w == k))}
             for k, name in enumerate(SPLITS)}
    report = {
        "identity_definition": IDENTITY_DEFINITION,
        "max_identity": float(max_identity),
        "min_identity_length": int(min_identity_length),
        "fractions": [float(f) for f in fractions],
        "min_per_split": int(min_per_split),
        "seed": int(seed),
        "n_records": len(ids),
        "sizes": sizes,
        "max_cross_split_identity": None if max_cross is None else round(max_cross, 6),
        "max_cross_split_pair": pair,
        "aligned_cross_split_pairs": n_cross,
        "cross_split_identity_note": CROSS_SPLIT_NOTE,
        "prefilter": {"kmer": int(kmer), **counts},
        "clusters": [{"ids": sorted(ids[i] for i in members), "split": SPLITS[w]}
                     for members, w in sorted(zip(clusters, where),
                                              key=lambda mw: min(ids[i] for i in mw[0]))],
    }
    return {"splits": splits, "report": report}


def run_split(cfg: Any) -> Path:
    """Write ``{train,val,test}.csv`` and ``split_report.json``; return the out dir.

    Records are those ``ok`` in both the angles and the features manifests: a record the
    features stage skipped cannot be trained on, so it is left out here (listed in the
    report's ``without_features``) rather than failing ``train`` when it is first loaded.
    """
    angles_dir, out_dir = Path(cfg.angles.out_dir), Path(cfg.split.out_dir)
    with_features = set(ok_record_ids(cfg.features.out_dir, "features"))
    angle_ids = ok_record_ids(angles_dir)
    ids = [rid for rid in angle_ids if rid in with_features]
    without_features = [rid for rid in angle_ids if rid not in with_features]
    if without_features:
        log.warning("split: %d record(s) with angles are not ok in %s/manifest.json (the "
                    "features stage skipped them), left out: %s", len(without_features),
                    cfg.features.out_dir, ", ".join(without_features[:20])
                    + (" ..." if len(without_features) > 20 else ""))
    seqs = [str(load_record(Path(angles_dir) / f"{rid}.pt", SEQUENCE_KEYS)["sequence"]) for rid in
            tqdm(ids, desc="split: load", unit="rec")]
    log.info("split: %d ok records, %d nt, max_identity %.2f, seed %d",
             len(ids), sum(map(len, seqs)), cfg.split.max_identity, cfg.seed)
    result = make_split(ids, seqs, list(cfg.split.fractions), int(cfg.seed),
                        float(cfg.split.max_identity), int(cfg.split.min_per_split),
                        int(cfg.split.kmer), int(cfg.split.min_identity_length))
    result["report"]["without_features"] = without_features
    length = dict(zip(ids, map(len, seqs)))
    for name in SPLITS:
        rows = "".join(f"{rid},{length[rid]}\n" for rid in result["splits"][name])
        write_text(out_dir / f"{name}.csv", "id,length\n" + rows)
    write_json(out_dir / "split_report.json", result["report"])
    sizes = result["report"]["sizes"]
    log.info("split: train %d / val %d / test %d records, max aligned cross-split identity %s",
             sizes["train"]["records"], sizes["val"]["records"], sizes["test"]["records"],
             result["report"]["max_cross_split_identity"])
    return out_dir


__all__ = ["MIN_IDENTITY_LENGTH", "SplitError", "assign", "can_link", "candidate_pairs",
           "cluster", "identity_edges",
           "identity_matrix", "local_scores", "make_split", "max_identity_to",
           "read_split_ids", "run_split", "sequence_identity", "IDENTITY_DEFINITION"]
