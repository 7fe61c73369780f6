"""Stage C NeRF (rna_predict.model.nerf): exactness, local accuracy, gradients, batching.

Numbers on real structures (demo set): the 1EHZ backbone rebuilt from its own torsions
and own bond lengths/angles, and the local (residue triplet) accuracy with the ideal
geometry; ``benchmarks/nerf_rebuild.py`` prints the full distributions.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rna_predict.data.atom_layout import (
    BASES,
    BB,
    N_BACKBONE,
    SLOT,
    SLOT_MASK,
    TORSIONS,
    base_type_index,
)
from rna_predict.data.structure import Structure
from rna_predict.data.torsions import compute_torsions
from rna_predict.evaluate.metrics import rmsd
from rna_predict.model import geometry as G
from rna_predict.model.geometry import _angle, dihedral
from rna_predict.model.nerf import (
    IDEAL_A_FORM,
    _compose,
    _step,
    build_coords,
    build_from_angles,
    geometry_from_coords,
    ideal_angles,
    ideal_geometry,
    place_atom,
)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "nerf_rebuild.py"


def _bench():
    spec = importlib.util.spec_from_file_location("nerf_rebuild", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def demo(bench, demo_raw_dir):
    """{id: (Structure, torsions [L, 7])} for the demo structures (lead's reader/torsions)."""
    return bench.load_structures(demo_raw_dir)


# --------------------------------------------------------------------- the formula
def _frame(a, b, c):
    bc = (c - b) / (c - b).norm(dim=-1, keepdim=True)
    n = torch.linalg.cross(b - a, bc)
    n = n / n.norm(dim=-1, keepdim=True)
    return torch.stack([bc, torch.linalg.cross(n, bc), n], dim=-1)


def test_place_atom_internal_coordinates():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(64, 3, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    bond = 1.0 + torch.rand(64, generator=g, dtype=torch.float64)
    th = 1.5 + torch.rand(64, generator=g, dtype=torch.float64)
    chi = (torch.rand(64, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    d = place_atom(a, b, c, bond, torch.cos(th), torch.sin(th), torch.cos(chi), torch.sin(chi))
    torch.testing.assert_close((d - c).norm(dim=-1), bond)
    torch.testing.assert_close(_angle(b, c, d), th)
    torch.testing.assert_close(dihedral(a, b, c, d), chi)  # IUPAC sign convention


def test_frame_transform_equals_formula():
    """The chain's rigid-transform form is the SCIENCE.md 3 formula, frame by frame."""
    g = torch.Generator().manual_seed(1)
    pts = [torch.randn(32, 3, generator=g, dtype=torch.float64) * 2 for _ in range(3)]
    r, t = _frame(*pts), pts[2]
    for _ in range(5):
        bond = 1.0 + torch.rand(32, generator=g, dtype=torch.float64)
        th = 1.5 + torch.rand(32, generator=g, dtype=torch.float64)
        chi = (torch.rand(32, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
        d = place_atom(*pts, bond, torch.cos(th), torch.sin(th), torch.cos(chi), torch.sin(chi))
        rk, tk = _step(bond, th, torch.cos(chi), torch.sin(chi))
        r, t = _compose(r, t, rk, tk)
        torch.testing.assert_close(t, d)
        pts = [pts[1], pts[2], d]
        torch.testing.assert_close(r, _frame(*pts))


# ------------------------------------------------------------ round trips, shapes
def _as_structure(coords: np.ndarray, sequence: str) -> Structure:
    n = len(sequence)
    mask = SLOT_MASK[base_type_index(sequence)]
    linked = np.ones(n, dtype=bool)
    linked[0] = False
    return Structure(
        path="",
        sequence=sequence,
        resnames=list(sequence),
        chain_ids=["A"] * n,
        resnums=list(range(1, n + 1)),
        icodes=[""] * n,
        coords=coords,
        atom_mask=mask,
        linked_prev=linked,
        c_glycosidic=np.zeros(n, dtype=bool),
    )


def test_torsions_round_trip_through_lead_torsions():
    """Random torsions -> NeRF -> rna_predict.data.torsions gives the same angles."""
    seq = "GACUGGAUCCAUGCAG"
    g = torch.Generator().manual_seed(2)
    angles = (torch.rand(1, len(seq), 7, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    bt = torch.as_tensor(base_type_index(seq))[None]
    x = build_from_angles(angles, bt)[0].numpy()
    got = compute_torsions(_as_structure(x, seq)).angles
    want = angles[0].numpy()
    defined = np.isfinite(got)
    assert defined.sum() == 7 * len(seq) - 3  # alpha(0), epsilon/zeta(L-1) undefined
    diff = np.angle(np.exp(1j * (got[defined] - want[defined])))
    assert np.abs(diff).max() < 1e-4  # MDAnalysis computes dihedrals in float32


def test_geometry_round_trip_on_ideal_build():
    """geometry_from_coords of an ideal build returns the ideal geometry it was built with."""
    seq = "ACGUAGCU"
    bt = torch.as_tensor(base_type_index(seq))[None]
    angles = ideal_angles((1, len(seq)), dtype=torch.float64)
    x = build_from_angles(angles, bt)
    geo = geometry_from_coords(x, torch.as_tensor(SLOT_MASK)[bt], bt)
    want = ideal_geometry(bt, G.pucker_weight(torch.cos(angles[..., 3])), dtype=torch.float64)
    for field in ("bond", "angle"):
        torch.testing.assert_close(getattr(geo, field), getattr(want, field))
    d = geo.dihedral - want.dihedral
    assert torch.atan2(torch.sin(d), torch.cos(d)).abs().max() < 1e-9


def test_shapes_padding_and_dtype():
    bt = torch.tensor([[0, 1, 2, 3, 0]])
    x = build_from_angles(ideal_angles((1, 5)), bt)
    assert x.shape == (1, 5, 23, 3) and x.dtype == torch.float32
    present = torch.as_tensor(SLOT_MASK)[bt]
    assert (x[~present] == 0).all() and (x[present].norm(dim=-1) > 0).sum() >= present.sum() - 1
    assert build_from_angles(ideal_angles((5,), dtype=torch.float64), bt[0]).shape == (5, 23, 3)
    assert build_coords(torch.zeros(2, 0, 7, 2), torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, 23, 3)
    # zero (sin, cos) (e.g. padding) stays finite
    out = build_coords(torch.zeros(1, 4, 7, 2), torch.tensor([[0, 1, 2, 3]]))
    assert torch.isfinite(out).all()


def test_aform_is_not_collapsed():
    """The old repository stacked every residue on one point: consecutive C4' must be 5-7 A apart."""
    seq = "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"
    bt = torch.as_tensor(base_type_index(seq))[None]
    x = build_from_angles(ideal_angles((1, len(seq))), bt)[0]
    c4 = x[:, BB["C4'"]]
    d = (c4[1:] - c4[:-1]).norm(dim=-1)
    assert ((d > 5.0) & (d < 7.0)).all(), d
    # A-form: about 11 residues per turn, rise ~2.8 A; P(i)-P(i+1) ~5.9 A; no atom clashes
    p = x[:, BB["P"]]
    assert ((p[1:] - p[:-1]).norm(dim=-1) - 5.9).abs().max() < 0.5
    present = torch.as_tensor(SLOT_MASK)[bt[0]]
    atoms = x[present]
    dist = torch.cdist(atoms, atoms) + torch.eye(len(atoms)) * 10
    assert dist.min() > 1.1
    # the helix extends: end-to-end C4' distance grows with length
    assert (c4[-1] - c4[0]).norm() > 60


# ----------------------------------------------------------------- gradients, batch
def test_gradients_reach_every_torsion():
    g = torch.Generator().manual_seed(3)
    sincos = torch.randn(2, 6, 7, 2, generator=g, requires_grad=True)
    bt = torch.tensor([[0, 1, 2, 3, 0, 2], [3, 3, 1, 0, 2, 1]])
    target = torch.randn(2, 6, 23, 3, generator=g)
    loss = ((build_coords(sincos, bt) - target) ** 2).mean()
    loss.backward()
    grad = sincos.grad.norm(dim=-1)  # [2, 6, 7]
    assert torch.isfinite(sincos.grad).all()
    used = torch.ones_like(grad, dtype=torch.bool)
    used[:, -1, TORSIONS.index("epsilon")] = used[:, -1, TORSIONS.index("zeta")] = False  # place nothing
    assert (grad[used] > 0).all()
    assert (grad[~used] == 0).all()


def test_gradcheck_double():
    g = torch.Generator().manual_seed(4)
    sincos = torch.randn(1, 3, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor([[0, 3, 2]])
    assert torch.autograd.gradcheck(lambda s: build_coords(s, bt), (sincos,), eps=1e-6, atol=1e-5)


def test_batch_equals_single_calls():
    g = torch.Generator().manual_seed(5)
    sincos = torch.randn(2, 9, 7, 2, generator=g)
    bt = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 0], [2, 2, 3, 1, 1, 0, 3, 0, 2]])
    both = build_coords(sincos, bt)
    for b in range(2):
        torch.testing.assert_close(both[b], build_coords(sincos[b : b + 1], bt[b : b + 1])[0])
    # a residue is unaffected by what follows it (padding at the end is harmless)
    torch.testing.assert_close(build_coords(sincos[:, :5], bt[:, :5]), both[:, :5])


# ------------------------------------------------------------------ real structures
def test_1ehz_own_geometry_rebuild_is_exact(demo):
    st, angles = demo["1EHZ"]
    assert len(st) == 76 and st.linked_prev[1:].all()  # one chain, every residue linked
    bt = torch.as_tensor(base_type_index(st.sequence))[None]
    geo = geometry_from_coords(st.coords[None], st.atom_mask[None], bt, st.linked_prev[None])
    x = build_from_angles(torch.as_tensor(angles, dtype=torch.float32)[None], bt, geo.to(torch.float32))
    x = x[0].double().numpy()
    m = st.atom_mask[:, :N_BACKBONE]
    assert m.sum() >= 76 * 12 - 3
    r = rmsd(x[:, :N_BACKBONE], st.coords[:, :N_BACKBONE], m)
    assert r < 0.05, r  # measured 0.0004 A (float32 torsions of MDAnalysis)
    # ideal geometry drifts globally (SCIENCE.md 3: about 3 A), torsions alone do not pin it
    x_ideal = build_from_angles(torch.as_tensor(angles)[None], bt)[0].numpy()
    assert 1.0 < rmsd(x_ideal[:, :N_BACKBONE], st.coords[:, :N_BACKBONE], m) < 6.0


@pytest.mark.parametrize("sid", ["1DQF", "1YKQ", "434D"])
def test_own_geometry_exact_per_segment_across_breaks(demo, sid):
    """Chain breaks (two chains, missing links): each linked segment is still rebuilt exactly."""
    st, angles = demo[sid]
    bt = torch.as_tensor(base_type_index(st.sequence))[None]
    geo = geometry_from_coords(st.coords[None], st.atom_mask[None], bt)  # links from O3'-P distance
    x = build_from_angles(torch.as_tensor(angles)[None], bt, geo)[0].numpy()
    starts = np.flatnonzero(~st.linked_prev)
    assert len(starts) >= 2
    for lo, hi in zip(starts, list(starts[1:]) + [len(st)]):
        m = st.atom_mask[lo:hi, :N_BACKBONE]
        r = rmsd(x[lo:hi, :N_BACKBONE], st.coords[lo:hi, :N_BACKBONE], m)
        assert r < 0.01, (sid, lo, hi, r)


def test_ideal_geometry_triplets_6y2l(demo, bench):
    st, angles = demo["6Y2L"]
    x = bench.rebuild(st, angles, dtype=torch.float32)
    bb = bench.triplet_rmsds(x, st, slice(0, N_BACKBONE))
    aa = bench.triplet_rmsds(x, st)
    assert len(bb) >= 70
    assert np.median(bb) < 0.1, np.median(bb)  # measured 0.048
    assert np.median(aa) < 0.3, np.median(aa)  # measured 0.158


def test_ideal_geometry_triplets_demo_set(demo, bench):
    """Pooled over the 17 demo structures (lower-resolution ones included): regression guard."""
    bb, aa = [], []
    for st, angles in demo.values():
        x = bench.rebuild(st, angles)
        bb.append(bench.triplet_rmsds(x, st, slice(0, N_BACKBONE)))
        aa.append(bench.triplet_rmsds(x, st))
    bb, aa = np.concatenate(bb), np.concatenate(aa)
    assert len(bb) > 800
    assert np.median(bb) < 0.15, np.median(bb)  # measured 0.123
    assert np.median(aa) < 0.35, np.median(aa)  # measured 0.295


def test_geometry_fitted_on_training_split_only(demo_records):
    """No leakage: the structures Stage C's geometry is fitted on are exactly the training
    split the pipeline's split stage makes, and none is a validation or test target."""
    from rna_predict.data.split import read_split_ids

    splits = {name: read_split_ids(demo_records / "splits", name) for name in ("train", "val", "test")}
    assert sorted(G.GEOMETRY_FIT_IDS) == sorted(splits["train"])
    assert not set(G.GEOMETRY_FIT_IDS) & (set(splits["val"]) | set(splits["test"]))
    assert G.GEOMETRY_SOURCE["fit_ids"] == list(G.GEOMETRY_FIT_IDS)


def test_constants_match_training_split_derivation(demo, bench):
    """The constants in geometry.py are what the derivation on GEOMETRY_FIT_IDS gives."""
    const = bench.derive_constants(bench.fit_structures(demo))
    assert const["counts"]["structures"] == len(G.GEOMETRY_FIT_IDS)
    for key, names, table in (
        ("_ANGLES", G.ANGLE_NAMES, G.IDEAL_ANGLE_TABLE),
        ("_DIHEDRALS", G.DIHEDRAL_NAMES, G.IDEAL_DIHEDRAL_TABLE),
    ):
        for k, name in enumerate(names):
            for cls in (0, 1):
                got = np.radians(np.array(const[key][name][cls]))
                want = table[cls, :, k] if len(got) > 1 else table[cls, :1, k]
                diff = np.angle(np.exp(1j * (got - want)))
                assert np.abs(diff).max() < np.radians(0.01), (name, cls, np.degrees(got), np.degrees(want))
    for t, b in enumerate(BASES):
        np.testing.assert_allclose(const["BASE_TEMPLATES"][b], np.array(G.BASE_TEMPLATES[b]), atol=6e-4)
        x_slot = SLOT[b][("C4" if b in "AG" else "C2")] - N_BACKBONE
        assert abs(G.BASE_TEMPLATES[b][x_slot][0] - G.IDEAL_BOND_TABLE[t, G.BOND["N-X"]]) < 1e-9


def test_ideal_a_form_constant():
    assert tuple(IDEAL_A_FORM) == TORSIONS
    assert IDEAL_A_FORM["alpha"] == -68.0 and IDEAL_A_FORM["chi"] == -158.0
