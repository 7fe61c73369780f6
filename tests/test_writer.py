"""PDB / mmCIF writer (rna_predict.data.writer): round trips through MDAnalysis and gemmi."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from rna_predict.data.atom_layout import (
    ATOM_NAMES,
    BASE_INDEX,
    ELEMENTS,
    SLOT_MASK,
    base_type_index,
)
from rna_predict.data.structure import read_structure
from rna_predict.data.writer import write_mmcif, write_pdb, write_structure


@pytest.fixture(scope="module")
def ehz(demo_raw_dir):
    return read_structure(demo_raw_dir / "1EHZ.pdb")


@pytest.fixture(scope="module")
def two_chains(demo_raw_dir):
    st = read_structure(demo_raw_dir / "1DQF.pdb")
    assert len(set(st.chain_ids)) == 2
    return st


def _expected_atoms(st):
    rows = []
    for i, base in enumerate(st.sequence):
        for slot in np.flatnonzero(st.atom_mask[i]):
            rows.append((i, ATOM_NAMES[base][slot], ELEMENTS[BASE_INDEX[base], slot], st.coords[i, slot]))
    return rows


def _universe(path):
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(str(path))


@pytest.mark.parametrize("fmt", ["pdb", "cif"])
def test_round_trip_1ehz_mdanalysis_and_gemmi(ehz, tmp_path, fmt):
    import gemmi

    path = tmp_path / f"1ehz.{fmt}"
    write = write_pdb if fmt == "pdb" else write_mmcif
    write(path, ehz.sequence, ehz.coords, ehz.atom_mask, ehz.chain_ids, ehz.resnums)
    expected = _expected_atoms(ehz)
    assert len(expected) == ehz.atom_mask.sum()

    u = _universe(path)
    assert len(u.atoms) == ehz.atom_mask.sum()
    np.testing.assert_allclose(u.atoms.positions, np.array([e[3] for e in expected]), atol=1e-3)
    assert list(u.atoms.names) == [e[1] for e in expected]
    assert list(u.atoms.elements) == [e[2] for e in expected]
    assert list(u.residues.resnames) == list(ehz.sequence)
    assert list(u.residues.resids) == ehz.resnums
    assert set(u.atoms.chainIDs) == set(ehz.chain_ids)

    st = gemmi.read_structure(str(path))
    assert len(st) == 1 and [ch.name for ch in st[0]] == ["A"]
    residues = [r for ch in st[0] for r in ch]
    assert [r.name for r in residues] == list(ehz.sequence)
    assert [r.seqid.num for r in residues] == ehz.resnums
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in residues for a in r])
    np.testing.assert_allclose(xyz, np.array([e[3] for e in expected]), atol=1e-3)

    back = read_structure(path)  # the project's own reader gives the same record
    assert back.sequence == ehz.sequence and back.resnums == ehz.resnums
    np.testing.assert_array_equal(back.atom_mask, ehz.atom_mask)
    np.testing.assert_allclose(back.coords[back.atom_mask], ehz.coords[ehz.atom_mask], atol=1e-3)


def test_two_chains_ter_records_and_chain_ids(two_chains, tmp_path):
    st = two_chains
    path = write_pdb(tmp_path / "two.pdb", st.sequence, st.coords, st.atom_mask, st.chain_ids, st.resnums)
    lines = path.read_text().splitlines()
    ter = [i for i, line in enumerate(lines) if line.startswith("TER")]
    assert len(ter) == 2 and lines[-1].startswith("END")
    before = [line for line in lines[: ter[0]] if line.startswith("ATOM")]
    assert {line[21] for line in before} == {st.chain_ids[0]}
    u = _universe(path)
    assert list(u.atoms.chainIDs) == [st.chain_ids[i] for i, *_ in _expected_atoms(st)]
    assert list(u.residues.resids) == st.resnums
    cif = write_mmcif(tmp_path / "two.cif", st.sequence, st.coords, st.atom_mask, st.chain_ids, st.resnums)
    back = read_structure(cif)
    assert back.chain_ids == st.chain_ids and back.resnums == st.resnums


def test_bfactors_defaults_and_long_chain_ids(tmp_path):
    import gemmi

    seq = "GACU"
    coords = np.random.default_rng(0).normal(size=(4, 23, 3)) * 5
    mask = SLOT_MASK[base_type_index(seq)]
    path = write_pdb(tmp_path / "x.pdb", seq, coords, mask, bfactors=np.array([10.0, 20.0, 30.0, 40.0]))
    st = gemmi.read_structure(str(path))
    res = list(st[0]["A"])
    assert [r.seqid.num for r in res] == [1, 2, 3, 4]
    assert [r[0].b_iso for r in res] == [10.0, 20.0, 30.0, 40.0]
    with pytest.raises(ValueError, match="one character"):
        write_pdb(tmp_path / "y.pdb", seq, coords, mask, chain_ids=["AB"] * 4)
    cif = write_structure(
        tmp_path / "y.cif", seq, coords, mask, chain_ids=["AB"] * 4, resnames=["G", "A", "C", "PSU"]
    )
    st = gemmi.read_structure(str(cif))
    assert [ch.name for ch in st[0]] == ["AB"] and st[0]["AB"][3].name == "PSU"


def test_rejects_bad_input_and_writes_atomically(tmp_path):
    seq = "GA"
    coords = np.zeros((2, 23, 3))
    mask = SLOT_MASK[base_type_index(seq)]
    bad = coords.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_pdb(tmp_path / "a.pdb", seq, bad, mask)
    with pytest.raises(ValueError, match="expected coords"):
        write_pdb(tmp_path / "a.pdb", seq, coords[:1], mask)
    with pytest.raises(ValueError, match="non-ACGU"):
        write_pdb(tmp_path / "a.pdb", "GX", coords, mask)
    padded = mask.copy()
    padded[1, -1] = True  # A has 22 slots: the last one is padding
    with pytest.raises(ValueError, match="padding slot"):
        write_pdb(tmp_path / "a.pdb", seq, coords, padded)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    write_pdb(tmp_path / "a.pdb", seq, coords, mask)
    assert [p.name for p in tmp_path.iterdir()] == ["a.pdb"]


def test_writer_imports_no_torch():
    code = "import sys, rna_predict.data.writer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_nerf_output_round_trip(tmp_path):
    """A Stage C build written as PDB reads back through the project's reader unchanged."""
    import torch

    from rna_predict.model.nerf import build_from_angles, ideal_angles

    seq = "GGCUAGCC"
    bt = torch.as_tensor(base_type_index(seq))[None]
    x = build_from_angles(ideal_angles((1, len(seq))), bt)[0].double().numpy()
    mask = SLOT_MASK[base_type_index(seq)].copy()
    mask[0, :3] = False  # no 5' phosphate
    path = write_pdb(tmp_path / "nerf.pdb", seq, x, mask)
    back = read_structure(path)
    assert back.sequence == seq and back.linked_prev[1:].all()
    np.testing.assert_array_equal(back.atom_mask, mask)
    np.testing.assert_allclose(back.coords[mask], x[mask], atol=1e-3)


@pytest.mark.parametrize("name, fmt", [("a.pdb", "pdb"), ("a.ent", "pdb"), ("A.PDB", "pdb"),
                                       ("a.cif", "mmcif"), ("a.mmcif", "mmcif"), ("A.CIF", "mmcif")])
def test_write_structure_picks_the_format_by_suffix(tmp_path, name, fmt):
    import gemmi

    from rna_predict.data.writer import structure_format

    seq = "GACU"
    coords = np.random.default_rng(1).normal(size=(4, 23, 3)) * 5
    mask = SLOT_MASK[base_type_index(seq)]
    assert structure_format(name) == fmt
    path = write_structure(tmp_path / name, seq, coords, mask)
    text = path.read_text()
    if fmt == "mmcif":
        block = gemmi.cif.read(str(path)).sole_block()
        assert len(block.find_values("_atom_site.Cartn_x")) == mask.sum()
    else:
        assert not text.startswith("data_") and text.splitlines()[0].startswith("ATOM")
        with pytest.raises(Exception):
            gemmi.cif.read(str(path))
    assert gemmi.read_structure(str(path))[0].count_atom_sites() == mask.sum()


@pytest.mark.parametrize("name", ["a.txt", "a.cif.gz", "a", "a.pdbx"])
def test_write_structure_rejects_unknown_suffix(tmp_path, name):
    from rna_predict.data.writer import structure_format

    seq = "GA"
    coords = np.zeros((2, 23, 3))
    mask = SLOT_MASK[base_type_index(seq)]
    with pytest.raises(ValueError, match=r"\.pdb, \.ent, \.cif, \.mmcif"):
        structure_format(name)
    with pytest.raises(ValueError, match="structure format"):
        write_structure(tmp_path / name, seq, coords, mask)
    assert list(tmp_path.iterdir()) == []
