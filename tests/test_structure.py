"""Structure reading: real demo structures and every kind of bad input."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from rna_predict.data.atom_layout import BB, SLOT
from rna_predict.data.modified import parent_base
from rna_predict.data.structure import StructureError, StructureFileError, read_structure


def test_demo_set_has_912_nucleotides(demo_raw_dir):
    total = sum(len(read_structure(p)) for p in sorted(demo_raw_dir.glob("*.pdb")))
    assert total == 912


def test_modified_nucleotides_map_through_the_ccd(demo_raw_dir):
    assert [parent_base(n) for n in ("5MC", "YYG", "A2M", "PSU", "1MA", "OMG")] == list("CGAUAG")
    assert parent_base("DA") is None and parent_base("ALA") is None and parent_base("HOH") is None
    s = read_structure(demo_raw_dir / "1EHZ.pdb")
    assert len(s) == 76
    assert s.sequence == ("GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA")
    by_num = dict(zip(s.resnums, zip(s.resnames, s.sequence)))
    assert by_num[37] == ("YYG", "G") and by_num[40] == ("5MC", "C") and by_num[39] == ("PSU", "U")


def test_mmcif_and_pdb_give_the_same_record(demo_raw_dir, wheel_extra):
    pdb = read_structure(demo_raw_dir / "1EHZ.pdb")
    cif = read_structure(wheel_extra("1EHZ_CIF"))
    assert cif.sequence == pdb.sequence
    both = pdb.atom_mask & cif.atom_mask
    assert both.sum() > 0.98 * pdb.atom_mask.sum()
    assert np.abs(pdb.coords[both] - cif.coords[both]).max() < 1e-3


def test_free_gtp_linked_into_the_chain_is_kept(demo_raw_dir):
    s = read_structure(demo_raw_dir / "1XJR.pdb")
    assert s.resnames[0] == "GTP" and s.sequence[0] == "G" and s.linked_prev[1]


def test_gzipped_mmcif(tmp_path, wheel_extra):
    gz = tmp_path / "1ehz.cif.gz"
    with open(wheel_extra("1EHZ_CIF"), "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert len(read_structure(gz)) == 76


def _write(path, text):
    path.write_text(text)
    return path


def _atoms(path):
    return [l for l in path.read_text().splitlines() if l.startswith(("ATOM", "HETATM"))]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d, src: d / "missing.pdb", "no such file"),
        (lambda d, src: _write(d / "empty.pdb", ""), "empty file"),
        (lambda d, src: (d / "garbled.pdb").write_text("this is not\na structure file\n") and d / "garbled.pdb",
         "no atoms"),
        (lambda d, src: (d / "protein.pdb").write_text(
            "ATOM      1  N   ALA A   1      11.104   6.134  -6.504  1.00  0.00           N\n"
            "ATOM      2  CA  ALA A   1      11.639   6.071  -5.147  1.00  0.00           C\nEND\n")
         and d / "protein.pdb", "no RNA nucleotides found (residues seen: 1 protein)"),
        (lambda d, src: (d / "dna.pdb").write_text("\n".join(
            l[:17] + " DC" + l[20:] for l in _atoms(src)[:60] if l[12:16].strip() != "O2'") + "\nEND\n")
         and d / "dna.pdb", "DNA"),
        (lambda d, src: (d / "unknown.pdb").write_text("\n".join(
            l[:17] + "QZ9" + l[20:] for l in _atoms(src)[:40]) + "\nEND\n")
         and d / "unknown.pdb", "not in the PDB Chemical Component Dictionary"),
        (lambda d, src: (d / "trace.pdb").write_text("\n".join(
            l for l in _atoms(src) if l[12:16].strip() in ("P", "N1", "N9")) + "\nEND\n")
         and d / "trace.pdb", "missing backbone atoms"),
    ],
    ids=["missing", "empty", "garbled", "protein-only", "dna-only", "unknown-residue", "trace-only"],
)
def test_bad_input_names_file_and_reason(tmp_path, demo_raw_dir, make, message):
    path = make(tmp_path, demo_raw_dir / "434D.pdb")
    with pytest.raises(StructureError) as err:
        read_structure(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_truncated_file_is_reported(tmp_path, demo_raw_dir):
    lines = (demo_raw_dir / "1EHZ.pdb").read_text().splitlines()
    atoms = [i for i, l in enumerate(lines) if l.startswith("ATOM")]
    cut = tmp_path / "cut.pdb"
    cut.write_text("\n".join(lines[: atoms[300]]) + "\nATOM    301  C4'   G A  15      1")
    with pytest.raises(StructureError, match=f"{cut}: cannot parse structure file: .*line"):
        read_structure(cut)


def _cut_cif(text: str, keep: int) -> str:
    """First ``keep`` characters of the line that holds the 300th atom, and all before it."""
    start = [i for i in range(len(text)) if text.startswith("\nATOM ", i)][299] + 1
    return text[: start + keep]


@pytest.mark.parametrize("name, make, message", [
    ("cut_after_ATO.pdb", lambda pdb, cif: pdb[:3000],
     "truncated at line 38: 'ATO' is not a PDB record"),
    ("short_atom.pdb", lambda pdb, cif: pdb[:2960],
     "truncated at line 37: ATOM record has 44 of the 54 characters up to the z coordinate"),
    ("cut_mid_line.cif", lambda pdb, cif: _cut_cif(cif, 40),
     "line 1322 ends mid-line ('ATOM   364  P  P     . G   A 1 18 ? 81.8')"),
    ("partial_row.cif", lambda pdb, cif: _cut_cif(cif, 40) + "\n",
     "Wrong number of values in loop _atom_site"),
    ("open_text_field.cif", lambda pdb, cif: cif[: cif.index("\n;") + 12] + "\n",
     "unterminated text field"),
    ("cut.cif.gz", lambda pdb, cif: gzip.compress(cif.encode(), mtime=0)[:20000], "cannot read file"),
])
def test_truncated_files_name_the_file(tmp_path, demo_raw_dir, wheel_extra, name, make, message):
    """A file that ends inside a record is an error (gemmi alone would read a partial file)."""
    pdb = (demo_raw_dir / "434D.pdb").read_text()
    cif = wheel_extra("1EHZ_CIF").read_text()
    body = make(pdb, cif)
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(StructureFileError) as err:
        read_structure(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_torsions_cli_on_truncated_file_exits_nonzero_without_traceback(tmp_path, demo_raw_dir):
    import subprocess
    import sys

    cut = tmp_path / "434D_3000.pdb"
    cut.write_bytes((demo_raw_dir / "434D.pdb").read_bytes()[:3000])
    proc = subprocess.run([sys.executable, "-m", "rna_predict.cli", "torsions", str(cut)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"ERROR rna_predict: {cut}: cannot parse structure file: truncated at line 38: "
        "'ATO' is not a PDB record"]


def test_complete_files_without_final_newline_are_accepted(tmp_path, demo_raw_dir, wheel_extra):
    pdb = tmp_path / "434D.pdb"
    pdb.write_text((demo_raw_dir / "434D.pdb").read_text().rstrip("\n"))
    assert len(read_structure(pdb)) == 14
    cif = tmp_path / "1EHZ.cif"
    cif.write_text(wheel_extra("1EHZ_CIF").read_text().rstrip())  # ends with the '#' separator
    assert len(read_structure(cif)) == 76


def test_model_and_chain_selection(tmp_path, demo_raw_dir):
    atoms = _atoms(demo_raw_dir / "434D.pdb")
    shifted = [l[:30] + f"{float(l[30:38]) + 50:8.3f}" + l[38:] for l in atoms]
    nmr = tmp_path / "nmr.pdb"
    nmr.write_text("MODEL        1\n" + "\n".join(atoms) + "\nENDMDL\nMODEL        2\n"
                   + "\n".join(shifted) + "\nENDMDL\nEND\n")
    one, two = read_structure(nmr, model=1), read_structure(nmr, model=2)
    assert np.allclose(two.coords[two.atom_mask][:, 0] - one.coords[one.atom_mask][:, 0], 50)
    assert two.warnings == [] and len(two) == 14
    assert len(read_structure(nmr, chains=["B"], model=2)) == 7
    with pytest.raises(StructureError, match=r"nmr.pdb: model 3 not found \(has \[1, 2\]\)"):
        read_structure(nmr, model=3)
    with pytest.raises(StructureError, match=r"chains \['C'\] not found \(has \['A', 'B'\]\)"):
        read_structure(nmr, chains=["A", "C"])


def test_first_model_and_altloc_a_only(tmp_path, demo_raw_dir):
    atoms = _atoms(demo_raw_dir / "434D.pdb")[:45]
    shifted = [l[:30] + f"{float(l[30:38]) + 50:8.3f}" + l[38:] for l in atoms]
    nmr = tmp_path / "nmr.pdb"
    nmr.write_text("MODEL        1\n" + "\n".join(atoms) + "\nENDMDL\nMODEL        2\n"
                   + "\n".join(shifted) + "\nENDMDL\nEND\n")
    s = read_structure(nmr)
    assert s.n_models == 2 and "2 models" in s.warnings[0]
    first = read_structure(demo_raw_dir / "434D.pdb")
    assert np.allclose(s.coords[0][s.atom_mask[0]], first.coords[0][first.atom_mask[0]])
    # duplicate every atom as altloc A (original) and B (moved by 50 A): B must be ignored
    alt = tmp_path / "alt.pdb"
    alt.write_text("\n".join(l[:16] + "A" + l[17:] + "\n" + s2[:16] + "B" + s2[17:]
                             for l, s2 in zip(atoms, shifted)) + "\nEND\n")
    a = read_structure(alt)
    assert np.allclose(a.coords[0][a.atom_mask[0]], first.coords[0][first.atom_mask[0]])


def test_missing_atoms_are_masked_not_zero(tmp_path, demo_raw_dir):
    lines = [l for l in _atoms(demo_raw_dir / "434D.pdb")
             if not (l[22:26].strip() == "3" and l[12:16].strip() in ("C1'", "N9"))]
    p = tmp_path / "gap.pdb"
    p.write_text("\n".join(lines) + "\nEND\n")
    s = read_structure(p)
    i = s.resnums.index(3)
    assert not s.atom_mask[i, BB["C1'"]] and np.isnan(s.coords[i, BB["C1'"]]).all()
    assert not s.atom_mask[i, SLOT[s.sequence[i]]["N9"]]
    assert "lack sugar atoms" in s.warnings[0]


def test_chain_breaks_from_o3p_distance(demo_raw_dir):
    s = read_structure(demo_raw_dir / "4QLM.pdb")  # one chain id, three segments
    assert len(set(s.chain_ids)) == 1 and int((~s.linked_prev).sum()) == 3
