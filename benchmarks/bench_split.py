"""Benchmark of the ``split`` stage's identity clustering at PDB scale, on SYNTHETIC data.

The chains are not PDB sequences: a seeded generator draws family roots with a
PDB-like length mix (most 8-200 nt, tRNA-like 70-95 nt, some 200-600 nt, about 1% of
1,500-2,900 nt) and derives each family's members by random substitutions (0-30%) and
a few insertions/deletions, so many pairs sit near the 0.8 identity threshold.

    .venv/bin/python benchmarks/bench_split.py [--n 5000] [--baseline 300] [--seed 0]
        [--min-identity-length 30]

Prints one table: chains, unique sequences, seed pairs, candidate pairs, aligned
pairs, clusters, wall time and peak resident memory (``ru_maxrss``) of
:func:`rna_predict.data.split.identity_edges` at N; then the all-pairs baseline
(:func:`identity_matrix` + :func:`cluster`) on a seeded subsample of ``--baseline``
chains, its time extrapolated to N by the number of pairs, and whether the prefilter
gives the same clusters on that subsample.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import resource

import numpy as np

log = logging.getLogger("bench_split")


def synthetic_families(n: int, seed: int = 0, with_families: bool = False):
    """``n`` SYNTHETIC RNA sequences in mutated families (seeded; not real chains);
    with ``with_families``, (sequences, family index of each)."""
    rng = np.random.default_rng(seed)
    seqs: list[str] = []
    family: list[int] = []
    n_families = 0
    while len(seqs) < n:
        r = rng.random()
        if r < 0.30:
            length = int(rng.integers(8, 30))
        elif r < 0.75:
            length = int(rng.integers(30, 200))
        elif r < 0.90:
            length = int(rng.integers(70, 95))
        elif r < 0.99:
            length = int(rng.integers(200, 600))
        else:
            length = int(rng.integers(1500, 2901))
        root = rng.integers(0, 4, length)
        for _ in range(int(min(rng.geometric(0.4), n - len(seqs)))):
            member = root.copy()
            rate = rng.uniform(0.0, 0.3)
            sub = rng.random(length) < rate
            member[sub] = (member[sub] + rng.integers(1, 4, int(sub.sum()))) % 4
            letters = list(member)
            for _ in range(int(rng.poisson(rate * length * 0.1))):
                at = int(rng.integers(0, len(letters)))
                if rng.random() < 0.5:
                    letters.insert(at, int(rng.integers(0, 4)))
                elif len(letters) > 5:
                    del letters[at]
            seqs.append("".join("ACGU"[c] for c in letters))
            family.append(n_families)
        n_families += 1
    return (seqs, family) if with_families else seqs


def _cluster_run(seqs: list[str], threshold: float, kmer: int, min_length: int
                 ) -> tuple[list, dict, float, float]:
    from rna_predict.data.split import identity_edges

    start, cpu = time.perf_counter(), time.process_time()
    clusters, _, counts = identity_edges(seqs, threshold, kmer, min_length=min_length)
    return clusters, counts, time.perf_counter() - start, time.process_time() - cpu


def recall(seqs: list[str], family: list[int], threshold: float, kmer: int,
           min_length: int) -> str:
    """Recall of the prefilter on the pairs inside the generated families (where the
    pairs above ``threshold`` are): every such pair is aligned, and the pairs above
    ``threshold`` are looked up among :func:`candidate_pairs` (seed + exact bound, no
    pruning of joined pairs). Also compares the prefilter's clusters with single
    linkage over the within-family edges."""
    from rna_predict.data.split import (_UnionFind, _codes, _unique_sequences,
                                        candidate_pairs, identity_edges, sequence_identity)

    uniq, owner = _unique_sequences(seqs)
    members: dict[int, list[int]] = {}
    for r, f in enumerate(family):
        members.setdefault(f, []).append(r)
    above = set()
    n_pairs = 0
    uf = _UnionFind(len(seqs))
    for rs in members.values():
        for x, i in enumerate(rs):
            for j in rs[x + 1:]:
                n_pairs += 1
                if sequence_identity(seqs[i], seqs[j], min_length) > threshold:
                    uf.union(i, j)
                    if owner[i] != owner[j]:
                        above.add((min(owner[i], owner[j]), max(owner[i], owner[j])))
    rows, _ = candidate_pairs([_codes(s) for s in uniq], threshold, kmer,
                              min_length=min_length)
    cand = {(int(i), int(j)) for i, j, _ in rows.tolist()}
    found = len(above & cand)
    clusters, _, _ = identity_edges(seqs, threshold, kmer, min_length=min_length)
    # identical sequences are joined without alignment on both sides
    for r, u in enumerate(owner.tolist()):
        uf.union(r, int(np.nonzero(owner == u)[0][0]))
    same = clusters == uf.groups()
    return (f"recall on within-family pairs: {n_pairs} pairs aligned, {len(above)} distinct "
            f"sequence pairs above {threshold}, {found} of them candidates "
            f"({100.0 * found / max(len(above), 1):.2f}%); prefilter clusters == "
            f"within-family single linkage: {same}")


def main(argv: list[str] | None = None) -> int:
    from rna_predict.data.split import cluster, identity_matrix

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="synthetic chains (5000)")
    parser.add_argument("--baseline", type=int, default=300,
                        help="chains in the all-pairs subsample (300; 0 skips it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--kmer", type=int, default=6)
    parser.add_argument("--recall", action="store_true",
                        help="also measure recall on every within-family pair")
    parser.add_argument("--min-identity-length", type=int, default=30,
                        help="identity denominator floor (split.min_identity_length, 30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seqs = synthetic_families(args.n, args.seed)
    lengths = np.array([len(s) for s in seqs])
    print(f"SYNTHETIC benchmark data: {args.n} chains in mutated families (seed {args.seed}),"
          f" not PDB sequences; lengths median {int(np.median(lengths))}, "
          f"{int((lengths >= 1500).sum())} of 1,500-2,900 nt, {int(lengths.sum())} nt; "
          f"identity > {args.threshold}, min_identity_length {args.min_identity_length}")
    clusters, counts, seconds, cpu = _cluster_run(seqs, args.threshold, args.kmer,
                                                  args.min_identity_length)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows = [("chains", args.n), ("unique sequences", counts["unique_sequences"]),
            ("all pairs", counts["all_pairs"]), ("seed pairs", counts["seed_pairs"]),
            ("seed windows", counts["seed_windows"]),
            ("windows scored (pair not yet joined)", counts["scored_windows"]),
            ("candidate pairs", counts["candidate_pairs"]),
            ("aligned pairs", counts["aligned_pairs"]), ("clusters", len(clusters)),
            ("largest cluster", max(len(c) for c in clusters)),
            ("wall time (s)", f"{seconds:.1f}"), ("CPU time (s)", f"{cpu:.1f}"),
            ("peak RSS (GiB)", f"{peak:.2f}")]
    print("| quantity | prefilter + exact check |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.recall:
        seqs_f, family = synthetic_families(args.n, args.seed, with_families=True)
        print(recall(seqs_f, family, args.threshold, args.kmer, args.min_identity_length))
    if args.baseline:
        pick = np.sort(np.random.default_rng(args.seed).choice(
            args.n, size=min(args.baseline, args.n), replace=False))
        sub = [seqs[i] for i in pick]
        start, cpu0 = time.perf_counter(), time.process_time()
        reference = cluster(identity_matrix(sub, args.min_identity_length), args.threshold)
        base_s, base_cpu = time.perf_counter() - start, time.process_time() - cpu0
        sub_clusters, _, sub_s, sub_cpu = _cluster_run(sub, args.threshold, args.kmer,
                                                       args.min_identity_length)
        n_sub = len(sub)
        scale = (args.n * (args.n - 1)) / (n_sub * (n_sub - 1))
        print(f"all-pairs baseline on {n_sub} of the chains: {base_s:.1f} s wall, "
              f"{base_cpu:.1f} s CPU ({n_sub * (n_sub - 1) // 2} alignments); extrapolated "
              f"to {args.n} chains: {base_cpu * scale / 3600:.1f} CPU hours; prefilter on the "
              f"same {n_sub}: {sub_s:.1f} s wall, {sub_cpu:.1f} s CPU; same clusters: "
              f"{sub_clusters == reference}")
        if sub_clusters != reference:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
