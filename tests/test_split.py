"""Stage `split`: identity-aware, seeded train/val/test split on the real demo sequences."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rna_predict.config import Config
from rna_predict.data.split import (
    SplitError, assign, cluster, identity_matrix, run_split, sequence_identity,
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


def write_angles(root: Path, seqs: dict[str, str], skipped: tuple[str, ...] = ()) -> None:
    root.mkdir(parents=True, exist_ok=True)
    records = {}
    for rid, seq in seqs.items():
        torch.save({"id": rid, "sequence": seq,
                    "chain_index": torch.zeros(len(seq), dtype=torch.int64)},
                   root / f"{rid}.pt")
        records[rid] = {"status": "ok"}
    records.update({rid: {"status": "skipped: no RNA chain"} for rid in skipped})
    (root / "manifest.json").write_text(json.dumps({"records": records}))


def make_cfg(tmp: Path, out: str = "splits", seed: int = 0) -> Config:
    cfg = Config(seed=seed)
    cfg.angles.out_dir = str(tmp / "angles")
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
    assert report["max_cross_split_identity"] == pytest.approx(cross, abs=1e-6)
    assert report["n_records"] == 19
    assert sum(v["records"] for v in report["sizes"].values()) == 19
    assert sum(v["nucleotides"] for v in report["sizes"].values()) == 912 + 76 + 60
    assert {"1EHZ", "1EVV"} <= set(next(c["ids"] for c in report["clusters"]
                                        if "1EHZ" in c["ids"]))


def test_run_split_seeded_determinism(tmp_path):
    write_angles(tmp_path / "angles", DEMO)
    a = run_split(make_cfg(tmp_path, "a", seed=0))
    b = run_split(make_cfg(tmp_path, "b", seed=0))
    for name in ("train.csv", "val.csv", "test.csv", "split_report.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    others = [run_split(make_cfg(tmp_path, f"s{s}", seed=s)) for s in (1, 2, 3)]
    assert any((o / "test.csv").read_bytes() != (a / "test.csv").read_bytes() for o in others)
