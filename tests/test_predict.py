"""``run_predict``: PDB / mmCIF output for a user sequence, input validation, FASTA reading."""

from __future__ import annotations

import pytest
import torch


SEQ40 = "GGCGCUUAGCACGUACGAUCGAUGCAUCGAUGCGCUAGCC"


def test_predict_writes_pdb_that_mdanalysis_reads(model_dir, tmp_path):
    import MDAnalysis as mda

    from rna_predict.inference.predict import run_predict

    assert len(SEQ40) == 40
    paths = run_predict(model_dir, SEQ40.replace("U", "T").lower(), tmp_path / "pred.pdb",
                        samples=1, steps=3, seed=0, refine_steps=20)
    assert paths == [tmp_path / "pred.pdb"]
    u = mda.Universe(str(paths[0]))
    assert len(u.residues) == 40
    assert "".join(r.resname.strip() for r in u.residues) == SEQ40
    c1 = u.select_atoms("name C1'")
    assert len(c1) == 40
    assert torch.isfinite(torch.as_tensor(u.atoms.positions)).all()
    # same seed, same file
    again = run_predict(model_dir, SEQ40, tmp_path / "again.pdb", samples=1, steps=3, seed=0,
                        refine_steps=20)
    assert again[0].read_bytes() == paths[0].read_bytes()


def test_predicted_40mer_has_valid_bonds_and_no_clashes(model_dir, tmp_path):
    """Issue 4 acceptance on the output file: O3'-P 1.6 +/- 0.2 A for >= 90% of links and
    >= 95% of residue pairs without a contact under 1.5 A. The untrained model's raw
    diffusion output fails both; the refined output (the default) passes."""
    from rna_predict.evaluate.validity import link_and_clash_stats
    from rna_predict.inference.predict import run_predict

    raw = link_and_clash_stats(run_predict(model_dir, SEQ40, tmp_path / "raw.pdb", samples=1,
                                           steps=10, seed=0, refine_steps=0)[0])
    assert raw["links_ok_fraction"] < 0.5
    refined = link_and_clash_stats(run_predict(model_dir, SEQ40, tmp_path / "ref.pdb", samples=1,
                                               steps=10, seed=0)[0])
    assert refined["links"] == 39
    assert refined["links_ok_fraction"] >= 0.9
    assert refined["pairs_without_clash_fraction"] >= 0.95


def test_predict_several_samples(model_dir, tmp_path):
    from rna_predict.inference.predict import run_predict

    paths = run_predict(model_dir, SEQ40[:20], tmp_path / "multi.pdb", samples=2, steps=2, seed=1,
                        refine_steps=20)
    assert [p.name for p in paths] == ["multi_1.pdb", "multi_2.pdb"]
    assert all(p.is_file() for p in paths)
    assert paths[0].read_bytes() != paths[1].read_bytes()


def test_predict_cli_writes_mmcif_for_cif_and_pdb_for_pdb(model_dir, tmp_path):
    """`rna-predict predict --out x.cif` writes mmCIF (it used to write PDB text into the
    .cif file); `--out x.pdb` stays PDB. Same coordinates either way."""
    import gemmi
    import numpy as np

    from rna_predict.cli import main
    from rna_predict.data.atom_layout import slot_mask_for

    seq = SEQ40[:12]
    n_atoms = int(slot_mask_for(seq).sum())
    common = ["predict", "--sequence", seq, "--model-dir", str(model_dir), "--steps", "2",
              "--refine-steps", "0"]
    assert main(common + ["--out", str(tmp_path / "x.cif")]) == 0
    assert main(common + ["--out", str(tmp_path / "x.pdb")]) == 0

    cif = tmp_path / "x.cif"
    assert cif.read_text().startswith("data_")
    block = gemmi.cif.read(str(cif)).sole_block()  # raises on PDB text
    table = block.find("_atom_site.", ["label_atom_id", "label_comp_id", "Cartn_x", "Cartn_y",
                                       "Cartn_z"])
    assert len(table) == n_atoms
    assert [r[1] for r in table if gemmi.cif.as_string(r[0]) == "C1'"] == list(seq)
    st_cif = gemmi.read_structure(str(cif))
    assert st_cif.input_format == gemmi.CoorFormat.Mmcif

    pdb = tmp_path / "x.pdb"
    assert pdb.read_text().splitlines()[0].startswith("ATOM")
    with pytest.raises(Exception):
        gemmi.cif.read(str(pdb))
    st_pdb = gemmi.read_structure(str(pdb))
    assert st_pdb.input_format == gemmi.CoorFormat.Pdb
    xyz = [np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[0]["A"] for a in r])
           for st in (st_cif, st_pdb)]
    assert xyz[0].shape == (n_atoms, 3)
    np.testing.assert_allclose(xyz[0], xyz[1], rtol=1e-5, atol=1e-3)  # PDB: 8.3f columns


def test_predict_several_samples_as_mmcif(model_dir, tmp_path):
    import gemmi

    from rna_predict.inference.predict import run_predict

    paths = run_predict(model_dir, SEQ40[:10], tmp_path / "multi.mmcif", samples=2, steps=2,
                        seed=1, refine_steps=0)
    assert [p.name for p in paths] == ["multi_1.mmcif", "multi_2.mmcif"]
    for p in paths:
        assert gemmi.read_structure(str(p)).input_format == gemmi.CoorFormat.Mmcif


@pytest.mark.parametrize("out", ["x.txt", "x", "x.cif.gz"])
def test_unknown_output_suffix_is_a_clear_error(model_dir, tmp_path, caplog, out):
    from rna_predict.cli import main
    from rna_predict.inference.predict import run_predict

    with pytest.raises(ValueError, match=r"structure format.*\.pdb, \.ent, \.cif, \.mmcif"):
        run_predict(model_dir, "ACGU", tmp_path / out, samples=1, steps=2)
    assert main(["predict", "--sequence", "ACGU", "--out", str(tmp_path / out),
                 "--model-dir", str(model_dir)]) == 2
    assert "structure format" in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, letter", [("ACGUXACGU", "X"), ("ACGN", "N"), ("AC-GU", "-")])
def test_invalid_sequence_raises_clear_error(model_dir, tmp_path, bad, letter):
    from rna_predict.inference.predict import SequenceError, run_predict

    with pytest.raises(SequenceError, match=f"'{letter}' at position"):
        run_predict(model_dir, bad, tmp_path / "x.pdb", samples=1, steps=2, seed=0)
    assert not (tmp_path / "x.pdb").exists()
    with pytest.raises(SequenceError, match="empty"):
        run_predict(model_dir, "  ", tmp_path / "x.pdb", samples=1, steps=2, seed=0)


def test_missing_model_is_a_clear_error(tmp_path):
    from rna_predict.inference.predict import run_predict

    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        run_predict(tmp_path, "ACGU", tmp_path / "x.pdb")


def test_read_fasta(tmp_path):
    from rna_predict.inference.predict import SequenceError, read_fasta

    fa = tmp_path / "in.fa"
    fa.write_text(">one desc\nACGT\nacgu\n\n>two\nGGGAAACCC\n")
    assert read_fasta(fa) == [("one", "ACGUACGU"), ("two", "GGGAAACCC")]
    fa.write_text(">bad\nACGZ\n")
    with pytest.raises(SequenceError, match="'Z' at position 4"):
        read_fasta(fa)
    fa.write_text("ACGU\n")
    with pytest.raises(SequenceError, match="before the first"):
        read_fasta(fa)
