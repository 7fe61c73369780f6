"""Stage `split`: identity-aware, seeded train/val/test split on the real demo sequences,
and its prefilter (seeds + exact local-score bound) against all-pairs alignment."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rna_predict.config import Config
from rna_predict.data.split import (
    CROSS_SPLIT_NOTE, SplitError, _codes, assign, can_link, candidate_pairs, make_split, cluster,
    exact_seed_length,
    identity_bound, identity_edges, identity_matrix, identity_score_params, local_scores,
    max_identity_to, run_split, sequence_identity,
)

# The 17 demo records (ARCHITECTURE.md section 3), strands concatenated in file order,
# modified nucleotides as parent bases; 912 nt in all.
DEMO = {
    "1A51": "GGCCGAUGGUAGUGUGGGGUCUCCCCAUGCGAGAGUAGGCC",
    "1A9N": "CCUGGUAUUGCAGUACCUCCAGGU",
    "1DQF": "GCCACCCUGCAGGGUCGGC",
    "1DUQ": "GCUGGGCGCAGGCCUGACGGUACAGC",
    "1EHZ": "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA",
    "1KXK": "GUCUACCUAUCGGGCUAAGGAGCCGUAUGCGAUGAAAGUCGCACGUACGGUUCUAUGCCCGGGGGAAAAC",
    "1Q9A": "UGCUCCUAGUACGAGAGGACCGGAGUG",
    "1XJR": "GGAGUUCACCGAGGCCACGCGGAGUACGAUCGAGGGUACAGUGAAUU",
    "1Y26": "CGCUUCAUAUAAUCCUAAUGAUAUGGUUUGGGAGUUUCUACCAAGAGCCUUAAACUCUUGAUUAUGAAGUG",
    "1YKQ": "GGAGCUCGCCCGGGCGAGGCCGUGCCAGCUCUUCGGAGCAAUACUCGGC",
    "1ZHO": "GGGAGUGAAGGAGGCUUCGGCCGCGAAACUUCACUCCC",
    "2A43": "GCGGCACCGUCCGCUCAAACAAACGG",
    "2GDI": "GGACUCGGGGUGCCCUUCUGCGUGAAGGCUGAGAAAUACCCGUAUCACCUGAUCUGGAUAAUGCCAGCGUAGG"
            "GAAGUUC",
    "434D": "UAGCUCCGGGGCUA",
    "4QK8": "GUUGCCGAAUCCGAAAGGUACGGAGGAACCGCUUUUUGGGGUUAAUCUGCAGUGAAGCUGCAGUAGGGAUACC"
            "UUCUGUCCCGCACCCGACAGCUAACUCCGGAGGCAAUAAAGGAAGGA",
    "4QLM": "AUCGCUGAACGCGGGGGACCCAGGGGGCGAAUCUCUUCCGAAAGGAAGAGUAGGGUUACUCCUUCGACCCGA"
            "GCCCGUCAGCUAACCUCGCAAGCGUCCGAAGGAGAA",
    "6Y2L": "GCCCGGAUAGCUCAGUCGGUAGAGCAGGGGAUUGAAAAUCCCCGUGUCCUUGGUUCGAUUCCGAGUCCGGGCACCA",
}
# Redundant entries as a larger PDB set has them: 1EVV is yeast tRNA-Phe again (same
# sequence as 1EHZ); FRAG_4QLM is the first 60 nt of 4QLM (a domain crop).
EXTRA = {"1EVV": DEMO["1EHZ"], "FRAG_4QLM": DEMO["4QLM"][:60]}


def write_angles(root: Path, seqs: dict[str, str], skipped: tuple[str, ...] = (),
                 no_features: tuple[str, ...] = ()) -> None:
    """Angles records and manifest in ``root``, and the features manifest beside it
    (``root.parent / "features"``): every ok record has features but ``no_features``."""
    root.mkdir(parents=True, exist_ok=True)
    records = {}
    for rid, seq in seqs.items():
        torch.save({"id": rid, "sequence": seq,
                    "chain_index": torch.zeros(len(seq), dtype=torch.int64)},
                   root / f"{rid}.pt")
        records[rid] = {"status": "ok"}
    records.update({rid: {"status": "skipped: no RNA chain"} for rid in skipped})
    (root / "manifest.json").write_text(json.dumps({"records": records}))
    features = root.parent / "features"
    features.mkdir(exist_ok=True)
    feats = {rid: {"status": "skipped: RNAfold failed" if rid in no_features else "ok"}
             for rid in seqs}
    (features / "manifest.json").write_text(json.dumps({"records": feats}))


def make_cfg(tmp: Path, out: str = "splits", seed: int = 0) -> Config:
    cfg = Config(seed=seed)
    cfg.angles.out_dir = str(tmp / "angles")
    cfg.features.out_dir = str(tmp / "features")
    cfg.split.out_dir = str(tmp / out)
    return cfg


def read_split(folder: Path) -> dict[str, list[dict[str, str]]]:
    out = {}
    for name in ("train", "val", "test"):
        with open(folder / f"{name}.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            assert reader.fieldnames == ["id", "length"]
            out[name] = list(reader)
    return out


def test_identity_definition_on_real_sequences():
    trna = DEMO["1EHZ"]
    assert sequence_identity(trna, trna) == 1.0
    assert sequence_identity(trna, trna[10:50]) == 1.0  # an exact fragment
    one_snp = trna[:30] + ("A" if trna[30] != "A" else "C") + trna[31:]
    assert sequence_identity(trna, one_snp) == pytest.approx(75 / 76)
    # Two different tRNAs (yeast tRNA-Phe vs 6Y2L) are homologous but below 0.8.
    assert 0.5 < sequence_identity(trna, DEMO["6Y2L"]) < 0.8
    # A 14-nt duplex scattered through a riboswitch with gaps is not a hit (the plain
    # matches / shorter-length measure gives 12/14 = 0.86 here).
    assert sequence_identity(DEMO["434D"], DEMO["4QLM"]) <= 0.8
    assert sequence_identity("GGGGAAAACCCC", "CCCCAAAAGGGG") < 0.5
    # Denominator floor of 30 (split.min_identity_length): exact fragments of 20 / 26 nt.
    assert sequence_identity(trna, trna[10:30]) == pytest.approx(20 / 30)
    assert sequence_identity(trna, trna[10:36]) == pytest.approx(26 / 30)
    assert sequence_identity(trna, trna[10:30], min_length=0) == 1.0
    assert sequence_identity(DEMO["434D"], DEMO["434D"]) == 1.0  # identical: 1 at any length
    assert [can_link(n, 0.8) for n in (20, 24, 25, 26)] == [False, False, True, True]


def test_short_fragments_link_only_above_the_floor():
    # A 20-nt exact fragment of tRNA-Phe (20/30 identity) stays apart, a 26-nt one links
    # (26/30); identical short sequences (434D, 14 nt, twice) always share a cluster.
    trna = DEMO["1EHZ"]
    seqs = [trna, trna[10:30], trna[40:66], DEMO["434D"], DEMO["434D"], DEMO["1DQF"],
            DEMO["4QLM"]]
    clusters, edges, counts = identity_edges(seqs, 0.8, kmer=6)
    assert clusters == [[0, 2], [1], [3, 4], [5], [6]]
    assert edges[(0, 2)] == pytest.approx(26 / 30)
    # Chains of <= 24 nt are not seeded: only 1EHZ, its 26-nt fragment and 4QLM are.
    assert all(i in (0, 2, 6) and j in (0, 2, 6) for i, j in edges)
    assert cluster(identity_matrix(seqs), 0.8) == clusters
    # With no floor the 20-nt fragment links too (the old definition).
    assert identity_edges(seqs, 0.8, kmer=6, min_length=0)[0] == [[0, 1, 2], [3, 4], [5], [6]]
    # The leakage check agrees: identical short query 1.0, 20-nt fragment <= 0.8.
    got = max_identity_to([DEMO["434D"], trna[10:30], trna[40:66]], [trna, DEMO["434D"]])
    assert got[0] == 1.0 and got[1] <= 0.8 and got[2] == pytest.approx(26 / 30)


def test_cluster_single_linkage():
    ident = np.array([[1, .9, .1, .1], [.9, 1, .85, .1], [.1, .85, 1, .1], [.1, .1, .1, 1]])
    assert cluster(ident, 0.8) == [[0, 1, 2], [3]]
    assert cluster(ident, 0.95) == [[0], [1], [2], [3]]


def test_assign_sizes_and_errors():
    where = assign([1] * 17, [0.7, 0.15, 0.15], seed=0, min_per_split=2)
    counts = np.bincount(where, minlength=3)
    assert counts.sum() == 17 and counts.min() >= 2 and counts[0] >= 11
    # One big cluster would starve val: repair moves small clusters into it.
    where = assign([10, 1, 1, 1, 1], [0.5, 0.25, 0.25], seed=3, min_per_split=2)
    assert np.bincount(np.repeat(where, [10, 1, 1, 1, 1]), minlength=3).min() >= 2
    with pytest.raises(SplitError):
        assign([1] * 5, [0.7, 0.15, 0.15], seed=0, min_per_split=2)  # 5 < 3 x 2
    with pytest.raises(SplitError, match="cluster"):
        assign([6, 1, 1], [0.7, 0.15, 0.15], seed=0, min_per_split=2)


def test_run_split_demo_constraints(tmp_path):
    seqs = {**DEMO, **EXTRA}
    write_angles(tmp_path / "angles", seqs, skipped=("9ZZZ",))
    out = run_split(make_cfg(tmp_path))
    split = read_split(out)
    ids = {name: [r["id"] for r in rows] for name, rows in split.items()}
    assert sorted(sum(ids.values(), [])) == sorted(seqs)  # each ok record exactly once
    for name, rows in split.items():
        assert len(rows) >= 2, name
        assert ids[name] == sorted(ids[name])
        assert all(int(r["length"]) == len(seqs[r["id"]]) for r in rows)
    where = {rid: name for name, lst in ids.items() for rid in lst}
    assert where["1EVV"] == where["1EHZ"]
    assert where["FRAG_4QLM"] == where["4QLM"]
    # Recompute identities independently of the report: no cross-split pair above 0.8.
    order = sorted(seqs)
    ident = identity_matrix([seqs[i] for i in order])
    label = np.array([where[i] for i in order])
    cross = ident[label[:, None] != label[None, :]].max()
    assert cross <= 0.8
    report = json.loads((out / "split_report.json").read_text())
    # The report's maximum is over the pairs the prefilter let through and aligned.
    assert report["max_cross_split_identity"] is None or \
        report["max_cross_split_identity"] <= cross + 1e-9
    assert report["min_identity_length"] == 30
    # 18 distinct sequences (1EVV repeats 1EHZ and is joined without an alignment).
    assert report["prefilter"]["aligned_pairs"] < report["prefilter"]["all_pairs"] == 18 * 17 // 2
    assert report["n_records"] == 19
    assert sum(v["records"] for v in report["sizes"].values()) == 19
    assert sum(v["nucleotides"] for v in report["sizes"].values()) == 912 + 76 + 60
    assert {"1EHZ", "1EVV"} <= set(next(c["ids"] for c in report["clusters"]
                                        if "1EHZ" in c["ids"]))


def test_records_without_features_are_left_out(tmp_path, caplog):
    # 1EHZ has angles but the features stage skipped it: train would fail loading it.
    write_angles(tmp_path / "angles", DEMO, no_features=("1EHZ",))
    with caplog.at_level("WARNING", logger="rna_predict.data.split"):
        out = run_split(make_cfg(tmp_path))
    ids = sorted(r["id"] for rows in read_split(out).values() for r in rows)
    assert ids == sorted(set(DEMO) - {"1EHZ"})
    report = json.loads((out / "split_report.json").read_text())
    assert report["without_features"] == ["1EHZ"]
    assert report["n_records"] == len(DEMO) - 1
    assert "1 record(s) with angles are not ok in" in caplog.text and "1EHZ" in caplog.text
    # The full set splits with an empty list; no features manifest is a clear error.
    write_angles(tmp_path / "angles", DEMO)
    assert json.loads((run_split(make_cfg(tmp_path, "all")) / "split_report.json")
                      .read_text())["without_features"] == []
    (tmp_path / "features" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no features manifest; run `rna-predict features`"):
        run_split(make_cfg(tmp_path, "none"))


def test_run_split_seeded_determinism(tmp_path):
    write_angles(tmp_path / "angles", DEMO)
    a = run_split(make_cfg(tmp_path, "a", seed=0))
    b = run_split(make_cfg(tmp_path, "b", seed=0))
    for name in ("train.csv", "val.csv", "test.csv", "split_report.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    others = [run_split(make_cfg(tmp_path, f"s{s}", seed=s)) for s in (1, 2, 3)]
    assert any((o / "test.csv").read_bytes() != (a / "test.csv").read_bytes() for o in others)


# data/splits/*.csv as committed before the prefilter (all-pairs clustering), seed 0.
COMMITTED = {
    "train": ["1A9N", "1DQF", "1DUQ", "1KXK", "1Y26", "1YKQ", "1ZHO", "2A43", "434D", "4QK8",
              "4QLM", "6Y2L"],
    "val": ["1EHZ", "1Q9A", "2GDI"],
    "test": ["1A51", "1XJR"],
}


def test_demo_split_unchanged_by_prefilter(tmp_path):
    write_angles(tmp_path / "angles", DEMO)
    out = run_split(make_cfg(tmp_path))
    for name, ids in COMMITTED.items():
        expected = "id,length\n" + "".join(f"{i},{len(DEMO[i])}\n" for i in ids)
        assert (out / f"{name}.csv").read_text() == expected, name
    report = json.loads((out / "split_report.json").read_text())
    # No cross-split pair passes the prefilter, so nothing was measured: null, not 0.0
    # (all-pairs maximum with the floor of 30: 0.671, 1EHZ vs 6Y2L; 0.6875 without it).
    assert report["max_cross_split_identity"] is None
    assert report["max_cross_split_pair"] is None
    assert report["aligned_cross_split_pairs"] == 0
    assert report["cross_split_identity_note"] == CROSS_SPLIT_NOTE
    assert report["prefilter"]["aligned_pairs"] <= 5


def _families(n: int, seed: int) -> list[str]:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_split.py"
    spec = importlib.util.spec_from_file_location("bench_split", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [s for s in module.synthetic_families(4 * n, seed) if len(s) <= 120][:n]


# (threshold, pairs, longest): 40 short pairs take the int16 / accumulate path; 80 pairs of
# up to 150 nt at 0.77 (scores 615 / 385, gcd 5) take the int32 / row-by-row path
@pytest.mark.parametrize("threshold,n_pairs,longest", [(0.8, 40, 40), (0.77, 80, 150)])
def test_local_scores_match_biotite(threshold, n_pairs, longest):
    from biotite.sequence import Alphabet, GeneralSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal

    match, other = identity_score_params(threshold)
    assert (match, other) == {0.8: (600, 400), 0.77: (615, 385)}[threshold]
    alph = Alphabet(list("ACGTN"))
    scores = np.full((5, 5), -other)
    scores[np.arange(4), np.arange(4)] = match
    matrix = SubstitutionMatrix(alph, alph, scores)
    rng = np.random.default_rng(3)
    pairs = []
    for trial in range(n_pairs):
        a = "".join(rng.choice(list("ACGTN" if trial % 4 == 0 else "ACGT"),
                               rng.integers(3, longest)))
        b = ((a[2:] + "GAUC") if trial % 2 else
             "".join(rng.choice(list("ACGT"), rng.integers(3, longest))))
        pairs.append((a, b.replace("U", "T")))
    qa = np.full((len(pairs), longest), 5, dtype=np.int8)
    tb = np.full((len(pairs), longest + 4), 5, dtype=np.int8)
    for r, (a, b) in enumerate(pairs):
        qa[r, :len(a)], tb[r, :len(b)] = _codes(a), _codes(b)
    got = local_scores(qa, tb, match, other)  # one padded batch
    for r, (a, b) in enumerate(pairs):
        ref = align_optimal(GeneralSequence(alph, a), GeneralSequence(alph, b), matrix,
                            gap_penalty=-other, local=True, max_number=1)[0].score
        assert got[r] == ref, (a, b)


def test_bounds_hold_on_pairs_above_threshold():
    # Every generated pair above 0.8 must pass both exact tests of the prefilter: its local
    # identity score reaches identity_bound, and it shares a k-mer of exact_seed_length;
    # with the floor of 30 (default) and without it (min_length=0, the old definition).
    seqs = _families(60, seed=5)
    checked = {30: 0, 0: 0}
    for floor in checked:
        for i in range(len(seqs)):
            for j in range(i + 1, len(seqs)):
                a, b = sorted((seqs[i], seqs[j]), key=len)
                if a == b or sequence_identity(a, b, floor) <= 0.8:
                    continue  # identical sequences are joined without the prefilter
                checked[floor] += 1
                assert can_link(len(a), 0.8, floor)
                score = local_scores(_codes(a)[None], _codes(b)[None],
                                     *identity_score_params(0.8))
                assert score[0] >= identity_bound(len(a), 0.8, floor)
                k = exact_seed_length(len(a), 0.8, floor)
                assert any(a[p:p + k] in b for p in range(len(a) - k + 1))
    # The floor removes the chance links of short chains: 9 of 22 pairs remain.
    assert checked == {30: 9, 0: 22}
    # 10 nt: >= 9 identical columns, <= 2 others -> a run of 3; 20 nt: 17 in 5 runs -> 4.
    # Without the floor (min_length=0), as used for other settings:
    assert [exact_seed_length(n, 0.8, 0) for n in (5, 7, 10, 20, 100)] == [3, 3, 3, 4, 4]
    # With the floor of 30 the bound is that of a 30-nt chain up to 30 nt.
    assert identity_bound(10, 0.8) == identity_bound(30, 0.8) == 12_000
    assert identity_bound(10, 0.8, 0) == 4_000


@pytest.mark.parametrize("floor", [30, 0])  # default; no floor (exact short-chain seeds)
def test_prefilter_gives_all_pairs_clusters(floor):
    seqs = _families(110, seed=1)
    lengths = [len(s) for s in seqs]
    assert min(lengths) < 15 and max(lengths) > 100
    full = identity_matrix(seqs, floor)
    reference = cluster(full, 0.8)
    clusters, edges, counts = identity_edges(seqs, 0.8, kmer=6, min_length=floor)
    assert clusters == reference
    assert sum(len(c) > 1 for c in clusters) >= 10
    assert counts["aligned_pairs"] < counts["all_pairs"] / 10
    # Every aligned identity is the all-pairs one.
    for (i, j), ident in edges.items():
        assert ident == full[i, j]
    # Pair-level recall of seeds + bound (no pruning of joined pairs): every pair of
    # different sequences above 0.8 is a candidate.
    rows, _ = candidate_pairs([_codes(s) for s in seqs], 0.8, 6, min_length=floor)
    cand = {(int(i), int(j)) for i, j, _ in rows.tolist()}
    above = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(full, 1) > 0.8))
             if seqs[i] != seqs[j]}
    assert len(above) >= 10 and above <= cand


def test_max_identity_to_matches_all_pairs():
    seqs = _families(70, seed=2)
    # every third chain queries the rest (families are consecutive in the list)
    queries, refs = seqs[0::3], [s for i, s in enumerate(seqs) if i % 3]
    got = max_identity_to(queries, refs, threshold=0.8)
    truth = np.array([max(sequence_identity(q, r) for r in refs) for q in queries])
    above = truth > 0.8
    assert above.sum() >= 3
    assert np.array_equal(got[above], truth[above])
    assert (got[~above] <= 0.8).all() and (got <= truth + 1e-12).all()


def test_bad_prefilter_settings_are_errors():
    ids, seqs = list(DEMO)[:6], list(DEMO.values())[:6]
    with pytest.raises(SplitError, match="split.kmer"):
        make_split(ids, seqs, [0.7, 0.15, 0.15], 0, 0.8, 1, kmer=0)
    with pytest.raises(SplitError, match="split.max_identity"):
        make_split(ids, seqs, [0.7, 0.15, 0.15], 0, 0.0, 1)
    with pytest.raises(SplitError, match="split.min_identity_length"):
        make_split(ids, seqs, [0.7, 0.15, 0.15], 0, 0.8, 1, min_identity_length=-1)
