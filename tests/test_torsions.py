"""Torsions against independent references: DSSR v2.5.4 output and MDAnalysis nuclinfo."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from rna_predict.data.dssr import parse_nts
from rna_predict.data.structure import read_structure
from rna_predict.data.torsions import compute_torsions

DSSR_KEYS = {
    "alpha": "alpha", "beta": "beta", "gamma": "gamma", "delta": "delta", "epsilon": "epsilon",
    "zeta": "zeta", "chi": "chi", "eta": "eta", "theta": "theta", "nu0": "v0", "nu1": "v1",
    "nu2": "v2", "nu3": "v3", "nu4": "v4", "phase": "phase_angle", "amplitude": "amplitude",
}


def circ(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b)) % 360.0
    return np.minimum(d, 360.0 - d)


@pytest.fixture(scope="module")
def dssr(dssr_fixture_dir):
    structure = read_structure(dssr_fixture_dir / "1A4D_1_A-B.cif")
    nts = json.loads((dssr_fixture_dir / "1A4D_1_A-B-dssr.json").read_text())
    return structure, nts


def test_every_dssr_value_reproduced(dssr):
    structure, dssr_json = dssr
    nts = dssr_json["nts"]
    deg = compute_torsions(structure).degrees()
    assert len(structure) == len(nts) == 41
    compared = 0
    for i, nt in enumerate(nts):
        assert (structure.chain_ids[i], structure.resnums[i]) == (nt["chain_name"], nt["nt_resnum"])
        for ours, key in DSSR_KEYS.items():
            ref, val = nt[key], deg[ours][i]
            if ref is None:
                assert np.isnan(val), f"{nt['nt_id']} {ours}: DSSR undefined, we gave {val}"
            else:
                assert circ(val, ref) < 0.01, f"{nt['nt_id']} {ours}: {val} vs DSSR {ref}"
                compared += 1
    assert compared > 41 * 14  # nearly everything is defined


def test_link_across_chains_follows_dssr(dssr):
    """DSSR links A.C88 to B.U89 (O3'-P 1.61 A): epsilon/zeta of C88 and alpha of U89 exist."""
    structure, _ = dssr
    i = structure.resnums.index(88)
    assert structure.chain_ids[i] == "A" and structure.chain_ids[i + 1] == "B"
    assert structure.linked_prev[i + 1]
    deg = compute_torsions(structure).degrees()
    assert circ(deg["epsilon"][i], -80.809) < 0.01
    assert circ(deg["zeta"][i], -176.114) < 0.01
    assert circ(deg["alpha"][i + 1], -25.343) < 0.01
    assert np.isnan(deg["alpha"][0]) and np.isnan(deg["zeta"][-1])


def test_dssr_parser_matches_mdanalysis_backend(dssr):
    structure, dssr_json = dssr
    ours = compute_torsions(structure)
    parsed = parse_nts(dssr_json, structure)
    a = np.degrees(np.concatenate([ours.angles, ours.extra], 1))
    b = np.degrees(np.concatenate([parsed.angles, parsed.extra], 1))
    assert (np.isfinite(a) == np.isfinite(b)).all()
    assert np.nanmax(circ(a, b)) < 0.01


def test_purine_chi_uses_n9_c4(dssr):
    """The old bug: purine chi from N1/C2 instead of N9/C4 is off by degrees, not 0.01."""
    from MDAnalysis.lib.distances import calc_dihedrals

    from rna_predict.data.atom_layout import BB, SLOT

    structure, dssr_json = dssr
    deg = compute_torsions(structure).degrees()["chi"]
    wrong_diffs = []
    for i, base in enumerate(structure.sequence):
        if base not in "AG":
            continue
        c = structure.coords[i]
        wrong = np.degrees(calc_dihedrals(c[BB["O4'"]], c[BB["C1'"]], c[SLOT[base]["N1"]], c[SLOT[base]["C2"]]))
        assert circ(deg[i], dssr_json["nts"][i]["chi"]) < 0.01
        wrong_diffs.append(circ(wrong, dssr_json["nts"][i]["chi"]))
    assert len(wrong_diffs) == 23 and np.median(wrong_diffs) > 1.0


@pytest.mark.slow
def test_agrees_with_nuclinfo_on_every_demo_structure(demo_raw_dir):
    """MDAnalysis nuclinfo.tors (0..360, neighbours by resid) on standard, linked residues."""
    import MDAnalysis as mda
    from MDAnalysis.analysis import nuclinfo

    standard = set("ACGU")
    total, worst = 0, 0.0
    for path in sorted(demo_raw_dir.glob("*.pdb")):
        structure = read_structure(path)
        deg = np.degrees(compute_torsions(structure).angles)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = mda.Universe(str(path))
        n = len(structure)
        for i in range(1, n - 1):
            same = structure.chain_ids[i - 1] == structure.chain_ids[i] == structure.chain_ids[i + 1]
            consecutive = structure.resnums[i - 1] + 1 == structure.resnums[i] == structure.resnums[i + 1] - 1
            names = {structure.resnames[j] for j in (i - 1, i, i + 1)}
            if not (same and consecutive and names <= standard and structure.linked_prev[i]
                    and structure.linked_prev[i + 1] and structure.atom_mask[i - 1:i + 2].sum() > 0):
                continue
            seg = u.select_atoms(f"chainID {structure.chain_ids[i]}").segids[0]
            sel = u.select_atoms(f"segid {seg} and resid {structure.resnums[i]}")
            if len(sel.select_atoms("name P")) != 1 or not np.isfinite(deg[i]).all():
                continue  # altlocs or missing atoms: nuclinfo cannot handle them
            ref = np.asarray(nuclinfo.tors(u, seg, structure.resnums[i]))
            diff = circ(deg[i], ref)
            assert diff.max() < 0.01, f"{path.name} {structure.chain_ids[i]}:{structure.resnums[i]} {diff}"
            worst = max(worst, float(diff.max()))
            total += 1
    assert total > 700, total
    assert worst < 0.01


def test_undefined_is_nan_never_zero(demo_raw_dir):
    structure = read_structure(demo_raw_dir / "434D.pdb")  # two strands of 7
    result = compute_torsions(structure)
    starts = np.flatnonzero(~structure.linked_prev)
    assert len(starts) == 2
    assert np.isnan(result.angles[starts, 0]).all() and not result.angle_mask[starts, 0].any()
    ends = np.r_[starts[1:] - 1, len(structure) - 1]
    assert np.isnan(result.angles[ends, 4:6]).all()
    assert (result.angles[result.angle_mask] != 0).all()


def test_pseudouridine_chi_is_c_glycosidic(demo_raw_dir):
    """1EHZ has PSU 39 and 55: chi = O4'-C1'-C5-C4, an anti value near -160 deg like U's."""
    structure = read_structure(demo_raw_dir / "1EHZ.pdb")
    psu = [i for i, r in enumerate(structure.resnames) if r == "PSU"]
    assert [structure.resnums[i] for i in psu] == [39, 55]
    assert structure.c_glycosidic[psu].all() and structure.c_glycosidic.sum() == 2
    chi = compute_torsions(structure).degrees()["chi"][psu]
    assert np.all(np.isfinite(chi)) and np.all(np.abs(chi) > 120)
