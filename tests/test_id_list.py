"""Id lists: the BGSU representative-set CSV, PDBID / PDBID_CHAIN lines, record ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from rna_predict.data.id_list import (Entry, IdListError, parse_token, read_id_list,
                                      resolve_entries)

EXAMPLES = Path(__file__).resolve().parents[1] / "lists"


def test_committed_bgsu_example_list():
    entries = read_id_list(EXAMPLES / "bgsu_demo.csv")
    assert [e.record_id for e in entries] == [
        "1DUQ_1_A-B", "1EHZ_1_A", "1Y26_1_X", "434D_1_A-B", "4QLM_1_A"]
    assert entries[0] == Entry("1DUQ", 1, ("A", "B"))


def test_committed_plain_example_list():
    entries = read_id_list(EXAMPLES / "pdb_ids_demo.txt")
    assert [(e.record_id, e.pdb_id, e.model, e.chains) for e in entries] == [
        ("1DUQ_A", "1DUQ", None, ("A",)), ("1EHZ", "1EHZ", None, ()), ("434D", "434D", None, ())]


def test_bgsu_rows_with_member_lists_and_multichain_ifes(tmp_path):
    # the real format: no header, quoted fields, members comma-separated inside one field
    path = tmp_path / "nrlist_3.349_4.0A.csv"
    path.write_text(
        '"NR_4.0_00001.1","4V9D|1|AA+4V9D|1|BA","4V9D|1|AA+4V9D|1|BA,4V9E|1|AA+4V9E|1|BA"\n'
        '"NR_4.0_00002.2","1ehz|1|A","1EHZ|1|A,1EVV|1|A"\n'
        '"NR_4.0_00003.1","6ZJ3|1|S8","6ZJ3|1|S8"\n'
        '"NR_4.0_00004.1","1EHZ|1|A","1EHZ|1|A"\n')  # same IFE twice: one record
    entries = read_id_list(path)
    assert [e.record_id for e in entries] == ["1EHZ_1_A", "4V9D_1_AA-BA", "6ZJ3_1_S8"]
    assert entries[1] == Entry("4V9D", 1, ("AA", "BA"))


def test_plain_lines_comments_and_mixed_case(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# my set\n\n1ehz\n  6Y2L_A  \n7K00_a\npdb_00001abc\npdb_00001abc_B\n")
    entries = read_id_list(path)
    assert [(e.record_id, e.chains) for e in entries] == [
        ("1EHZ", ()), ("6Y2L_A", ("A",)), ("7K00_a", ("a",)),  # chain ids keep their case
        ("pdb_00001ABC", ()), ("pdb_00001ABC_B", ("B",))]


@pytest.mark.parametrize("line, message", [
    ('"NR_1","1EHZ|1|A+2EHZ|1|B","x"', "spans several entries"),
    ('"NR_1","1EHZ|1|A+1EHZ|2|B","x"', "spans several entries or models"),
    ('"NR_1","1EHZ|x|A","x"', "invalid model 'x'"),
    ('"NR_1","1EHZ|1","x"', "expected PDB|model|chain"),
    ('"NR_1","1EHZ|1|A+1EHZ|1|A","x"', "lists a chain twice"),
    ("../etc/passwd", "invalid PDB id"),
    ("1EHZ_A/B", "invalid chain id 'A/B'"),
    ("ABCD", "invalid PDB id 'ABCD'"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"# header comment\n1EHZ\n{line}\n")
    with pytest.raises(IdListError) as err:
        read_id_list(path)
    assert f"{path}:3:" in str(err.value) and message in str(err.value)


def test_empty_and_missing_list(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(IdListError, match="no ids"):
        read_id_list(tmp_path / "empty.txt")
    with pytest.raises(IdListError, match="no such file"):
        read_id_list(tmp_path / "nope.csv")


def test_pdb_ids_and_id_list_are_merged(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("1EHZ\n434D_A\n")
    got = resolve_entries(["1ehz", "4V9D|1|AA+4V9D|1|BA"], path)
    assert [e.record_id for e in got] == ["1EHZ", "434D_A", "4V9D_1_AA-BA"]
    assert [e.record_id for e in resolve_entries(["2GDI"])] == ["2GDI"]
    assert parse_token("1EHZ|1|A").record_id == "1EHZ_1_A"
