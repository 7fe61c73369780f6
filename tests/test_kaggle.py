"""Kaggle Stanford RNA 3D format: `predict --kaggle` submissions and `score` against
US-align's values on the shared fixture; every malformed input is a clear error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rna_predict.cli import main
from rna_predict.inference.kaggle import KaggleFormatError

USALIGN_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "usalign"
TARGETS = ("1A51", "1XJR", "1EHZ")


def c1_file(name: str) -> tuple[str, np.ndarray]:
    """(sequence, [L, 3] C1' coordinates) of a fixture PDB (one chain, C1' atoms only)."""
    import gemmi

    st = gemmi.read_structure(str(USALIGN_DIR / name))
    res = [r for ch in st[0] for r in ch]
    return "".join(r.name.strip() for r in res), np.array([[*r["C1'"][0].pos.tolist()] for r in res])


def coord_csv(path: Path, targets: dict[str, tuple[str, list[np.ndarray]]]) -> Path:
    """Labels/submission CSV: {target: (sequence, [conformation [L, 3] (NaN = -1e18)])}."""
    n = len(next(iter(targets.values()))[1])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "resname", "resid"] + [f"{a}_{k}" for k in range(1, n + 1) for a in "xyz"])
        for tid, (seq, confs) in targets.items():
            for i, base in enumerate(seq):
                vals = np.concatenate([c[i] for c in confs])
                w.writerow([f"{tid}_{i + 1}", base, i + 1]
                           + [("-1e18" if not np.isfinite(v) else f"{v:.3f}") for v in vals])
    return path


def rigid(x: np.ndarray, seed: int) -> np.ndarray:
    """``x`` rotated and translated (a random proper rotation)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return x @ q.T + rng.normal(scale=20, size=3)


def usalign(model: str, native: str) -> float:
    pairs = json.loads((USALIGN_DIR / "usalign_scores.json").read_text())["pairs"]
    return next(p["sequence_dependent"]["tm_norm_native"] for p in pairs
                if p["model"] == model and p["native"] == native)


def test_submission_of_the_natives_scores_one_against_two_conformations(tmp_path, capsys):
    labels, sub = {}, {}
    for tid in TARGETS:
        seq, native = c1_file(f"{tid}_native_c1.pdb")
        _, noisy = c1_file(f"{tid}_noise3_c1.pdb")
        partial = native.copy()
        partial[[0, 3, 7, 8, 11]] = np.nan  # unobserved in the second conformation
        labels[tid] = (seq, [noisy, partial])
        _, model = c1_file(f"{tid}_noise6_c1.pdb")
        sub[tid] = (seq, [model, rigid(native, 1), model, model, model])
    lab = coord_csv(tmp_path / "labels.csv", labels)
    subm = coord_csv(tmp_path / "submission.csv", sub)
    out = tmp_path / "scores.csv"
    assert main(["score", "--labels", str(lab), "--submission", str(subm), "--out", str(out)]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["target_id"] for r in rows] == list(TARGETS)
    # normalised by the 5-residue-short reference's observed residues: exactly 1, not (L-5)/L
    assert all(float(r["score"]) == pytest.approx(1.0, abs=1e-5) for r in rows)
    assert all(r["n_references"] == "2" for r in rows)
    printed = capsys.readouterr().out
    assert "1XJR" in printed and "mean" in printed and "1.0000" in printed


def test_noisy_submissions_reproduce_usalign(tmp_path):
    from rna_predict.evaluate.kaggle_score import run_score

    labels, sub, expected = {}, {}, {}
    models = ("noise6", "hinge40", "noise3", "noise6", "hinge40")
    for tid in TARGETS:
        seq, native = c1_file(f"{tid}_native_c1.pdb")
        labels[tid] = (seq, [native])
        sub[tid] = (seq, [c1_file(f"{tid}_{m}_c1.pdb")[1] for m in models])
        expected[tid] = max(usalign(f"{tid}_{m}_c1.pdb", f"{tid}_native_c1.pdb") for m in models)
    rows, mean = run_score(coord_csv(tmp_path / "l.csv", labels),
                           coord_csv(tmp_path / "s.csv", sub), tmp_path / "scores.csv")
    for r in rows:
        assert r["score"] == pytest.approx(expected[r["target_id"]], abs=0.01), r
        assert r["length"] == len(labels[r["target_id"]][0])
    assert mean == pytest.approx(np.mean(list(expected.values())), abs=0.01)
    assert 0.2 < min(expected.values()) < max(expected.values()) < 0.95  # a real spread


SEQUENCES = """target_id,sequence,temporal_cutoff,description,all_sequences
R1107,GGGGGCCACAGCAGAAGCGUUCACGUCGCAGCCCCUGUCAGAUUCUGGUGAAUCUGCGAAUUCUGCUG,2022-05-28,CPEB3 ribozyme,">R1107_1|Chains A|RNA|Homo sapiens
GGGGGCCACAGCAGAAGCGUUCACGUCGCAGCCCCUGUCAGAUUCUGGUGAAUCUGCGAAUUCUGCUG"
DUPLEX,GGCGCUUAGCCGCUAAGCGCC,2022-06-01,two strands,">DUPLEX_1|Chains A|RNA|
GGCGCUUAGC
>DUPLEX_2|Chains B|RNA|
CGCUAAGCGCC"
HAIRPIN,GGGAAACCC,2022-06-02,hairpin,
"""


def test_predict_kaggle_writes_a_submission_that_score_accepts(model_dir, tmp_path):
    from rna_predict.evaluate.kaggle_score import run_score
    from rna_predict.inference.kaggle import read_coordinates, read_sequences

    seqs = tmp_path / "test_sequences.csv"
    seqs.write_text(SEQUENCES)
    targets = read_sequences(seqs)
    assert [t.target_id for t in targets] == ["R1107", "DUPLEX", "HAIRPIN"]
    assert [len(t.strands) for t in targets] == [1, 2, 1]  # the duplex is a complex
    out = tmp_path / "submission.csv"
    assert main(["predict", "--kaggle", str(seqs), "--out", str(out), "--steps", "2",
                 "--refine-steps", "0", "--model-dir", str(model_dir)]) == 0
    with open(out) as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header == ["ID", "resname", "resid"] + [f"{a}_{k}" for k in range(1, 6) for a in "xyz"]
    assert len(rows) == 68 + 21 + 9
    assert [r[0] for r in rows[:3]] == ["R1107_1", "R1107_2", "R1107_3"]
    assert rows[68][:3] == ["DUPLEX_1", "G", "1"] and rows[-1][:3] == ["HAIRPIN_9", "C", "9"]
    table = read_coordinates(out, n_models=5)
    c1 = table.targets["R1107"][3]  # [5, L, 3]
    assert np.isfinite(c1).all()
    assert all(np.abs(c1[0] - c1[k]).max() > 0.1 for k in range(1, 5))  # five predictions
    # labels made from prediction 1: score accepts the file and best-of-5 finds it
    labels = coord_csv(tmp_path / "labels.csv", {
        t: (("".join(table.targets[t][1])), [table.targets[t][3][0]]) for t in table.targets})
    rows, mean = run_score(labels, out, tmp_path / "scores.csv")
    assert [r["target_id"] for r in rows] == ["R1107", "DUPLEX", "HAIRPIN"]
    assert mean == pytest.approx(1.0, abs=1e-3)
    # same seed, same file
    again = tmp_path / "again.csv"
    main(["predict", "--kaggle", str(seqs), "--out", str(again), "--steps", "2",
          "--refine-steps", "0", "--model-dir", str(model_dir)])
    assert again.read_bytes() == out.read_bytes()


def test_kaggle_prediction_rejects_samples(tmp_path):
    # The format has five predictions per residue; a --samples the run would ignore is an error.
    seqs = tmp_path / "test_sequences.csv"
    seqs.write_text(SEQUENCES)
    out = tmp_path / "submission.csv"
    with pytest.raises(SystemExit, match="always has 5 predictions per residue; drop --samples"):
        main(["predict", "--kaggle", str(seqs), "--out", str(out), "--samples", "3"])
    assert not out.exists()


@pytest.mark.parametrize("text, problem", [
    ("target_id,description\nT1,x\n", "row 1: missing column(s) sequence"),
    ("target_id,sequence\nT1,GGGAAACCC\nT2,GGAXACC\n", "row 3: target T2: sequence letters outside "
                                                     "ACGU: 'X' at position 4"),
    ("target_id,sequence\nT1,GGGAAACCC\nT1,GGAAACC\n", "row 3: target_id 'T1' repeats row 2"),
    ("target_id,sequence\nT1,\n", "row 2: target T1: empty sequence"),
])
def test_bad_sequence_files_fail_before_anything_is_written(model_dir, tmp_path, text, problem):
    from rna_predict.inference.kaggle import predict_kaggle

    seqs = tmp_path / "test_sequences.csv"
    seqs.write_text(text)
    out = tmp_path / "submission.csv"
    with pytest.raises(KaggleFormatError) as exc:
        predict_kaggle(model_dir, seqs, out, steps=1, refine_steps=0)
    assert f"{seqs}: {problem}" in str(exc.value)
    assert main(["predict", "--kaggle", str(seqs), "--out", str(out), "--steps", "1",
                 "--refine-steps", "0", "--model-dir", str(model_dir)]) == 2  # no traceback
    assert not out.exists()


def _good(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """Labels for 1A51 and 1XJR and the rows of a matching submission."""
    labels, sub = {}, {}
    for tid in ("1A51", "1XJR"):
        seq, native = c1_file(f"{tid}_native_c1.pdb")
        labels[tid] = (seq, [native])
        sub[tid] = (seq, [native] * 5)
    lab = coord_csv(tmp_path / "labels.csv", labels)
    with open(coord_csv(tmp_path / "sub0.csv", sub)) as fh:
        rows = list(csv.reader(fh))
    return lab, rows


def _drop_z5(rows):
    k = rows[0].index("z_5")
    return [r[:k] + r[k + 1:] for r in rows]


def _rename(rows):
    for r in rows[42:]:  # every 1XJR row (1A51 has 41 residues)
        r[0] = r[0].replace("1XJR", "1XJX")
    return rows


def _swap(rows):
    rows[5], rows[6] = rows[6], rows[5]
    return rows


def _nan(rows):
    rows[9][4] = "nan"
    return rows


def _inf(rows):
    rows[9][6] = "inf"
    return rows


def _drop_row(rows):
    del rows[44]  # 1XJR_3 (1A51 has 41 residues: rows 1..41)
    return rows


def _id_resid(rows):
    rows[7][2] = "8"  # ID 1A51_7 with resid 8
    return rows


def _interleave(rows):
    rows.insert(3, rows.pop(50))  # a 1XJR row among the 1A51 rows
    return rows


@pytest.mark.parametrize("edit, problem", [
    (_drop_z5, "row 1: missing column(s) z_5"),
    (_rename, "row 43: ID '1XJX_1' is not in the labels"),
    (_swap, "row 7: residues out of order: 1A51_5 after 1A51_6"),
    (_nan, "row 10: y_1 = nan is not a finite coordinate"),
    (_inf, "row 10: x_2 = inf is not a finite coordinate"),
    (_drop_row, "no row for ID '1XJR_3'"),
    (_id_resid, "row 8: ID '1A51_7' is not <target_id>_<resid> with resid 8"),
    (_interleave, "row 5: residues out of order: target 1A51 resumes after target 1XJR"),
])
def test_bad_submissions_name_file_row_and_problem(tmp_path, edit, problem):
    from rna_predict.evaluate.kaggle_score import run_score

    lab, rows = _good(tmp_path)
    sub = tmp_path / "submission.csv"
    with open(sub, "w", newline="") as fh:
        csv.writer(fh).writerows(edit(rows))
    out = tmp_path / "scores.csv"
    with pytest.raises(KaggleFormatError) as exc:
        run_score(lab, sub, out)
    assert f"{sub}: {problem}" in str(exc.value)
    assert main(["score", "--labels", str(lab), "--submission", str(sub), "--out", str(out)]) == 2
    assert not out.exists()


def test_bad_labels_are_named_too(tmp_path):
    from rna_predict.evaluate.kaggle_score import score_submission

    lab, rows = _good(tmp_path)
    sub = tmp_path / "submission.csv"
    with open(sub, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    text = lab.read_text().splitlines()
    bad = tmp_path / "bad_labels.csv"
    bad.write_text("\n".join(text[:4] + [text[4].replace(text[4].split(",")[3], "NaN", 1)]
                             + text[5:]) + "\n")
    with pytest.raises(KaggleFormatError, match=r"bad_labels.csv: row 5: x_1 = NaN is not a finite"):
        score_submission(bad, sub)
    bad.write_text(text[0].replace(",z_1", "") + "\n")
    with pytest.raises(KaggleFormatError, match=r"row 1: coordinate columns of conformation 1 incomplete"):
        score_submission(bad, sub)


@pytest.mark.parametrize("command, reads, writes", [
    (["benchmark"], "--natives DIR", "summary.json, per_target.csv"),
    (["score"], "--submission", "target_id,length,n_references,score"),
    (["predict"], "Kaggle Stanford RNA 3D sequences CSV", "x_1,y_1,z_1..x_5,y_5,z_5"),
])
def test_help_says_what_it_reads_and_writes(capsys, command, reads, writes):
    with pytest.raises(SystemExit) as exc:
        main(command + ["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("reads :", "params:", "writes:", reads, writes):
        assert " ".join(part.split()) in text, part
