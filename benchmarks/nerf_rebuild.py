"""Rebuild real RNA structures from their own torsions with the Stage C NeRF.

Prints, over the demo structures (``rna_predict`` demo set, fetched into the cache):

- 1EHZ global RMSD after Kabsch superposition of the rebuilt backbone (12 sugar-phosphate
  slots) with the structure's own bond lengths/angles (``geometry_from_coords``; exact up
  to the float32 precision of the torsions) and with the ideal geometry (drifts: torsions
  alone do not pin global coordinates, SCIENCE.md 3);
- the distribution (quantiles) of local RMSDs of every linked residue triplet i-1..i+1
  superposed on its own, backbone and all atoms, with the ideal geometry (the default,
  pucker-dependent one, and the single-set angles of SCIENCE.md 3, "parkinson");
- the time of one forward + backward pass.

``--derive`` prints the constants of ``rna_predict.model.geometry`` fitted on its
``GEOMETRY_FIT_IDS`` (the demo training split; medians / circular means / mean base
templates) so they can be checked or regenerated.

Usage: python benchmarks/nerf_rebuild.py [--raw-dir DIR] [--derive]
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from rna_predict.data.atom_layout import BASE_ATOMS, BASES, N_BACKBONE, base_type_index
from rna_predict.data.structure import Structure, read_structure
from rna_predict.data.torsions import compute_torsions
from rna_predict.evaluate.metrics import rmsd
from rna_predict.model.alignment import aligned_rmsd
from rna_predict.model import geometry as G
from rna_predict.model.nerf import build_coords, build_from_angles, geometry_from_coords

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def demo_raw_dir() -> Path:
    """The demo structures (fetched once into the rna-predict cache)."""
    from rna_predict.data.fetch import default_cache_dir, fetch_demo

    raw = default_cache_dir() / "demo_raw"
    fetch_demo(raw)
    return raw


def load_structures(raw_dir: str | Path) -> dict[str, tuple[Structure, np.ndarray]]:
    """{id: (structure, torsions [L, 7] radians)} for every ``*.pdb``/``*.cif`` in ``raw_dir``."""
    out = {}
    for path in sorted(Path(raw_dir).iterdir()):
        if path.suffix in (".pdb", ".cif"):
            st = read_structure(path)
            out[path.stem] = (st, compute_torsions(st).angles)
    return out


def rebuild(
    st: Structure,
    angles: np.ndarray,
    own_geometry: bool = False,
    dtype: torch.dtype = torch.float64,
    source: str = "demo",
) -> np.ndarray:
    """NeRF coordinates [L, 23, 3] from the structure's torsions (NaN -> IDEAL_A_FORM).

    ``own_geometry`` feeds the structure's own bond lengths/angles; otherwise the ideal
    geometry of ``source`` ("demo": the default of ``build_coords``; "parkinson").
    """
    bt = torch.as_tensor(base_type_index(st.sequence))[None]
    ang = torch.as_tensor(angles, dtype=dtype)[None]
    geo = None
    if own_geometry:
        geo = geometry_from_coords(st.coords[None], st.atom_mask[None], bt, st.linked_prev[None]).to(dtype)
    elif source != "demo":
        delta = torch.nan_to_num(ang[..., 3], nan=math.radians(G.IDEAL_A_FORM["delta"]))
        geo = G.ideal_geometry(bt, G.pucker_weight(torch.cos(delta)), dtype=dtype, source=source)
    with torch.no_grad():
        x = build_from_angles(ang, bt, geo)
    return x[0].double().numpy()


def batched_rmsd(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """RMSD of x onto y [S, N, 3] after Kabsch over the points with w [S, N] > 0
    (the package's one Kabsch, :func:`rna_predict.model.alignment.aligned_rmsd`)."""
    as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    return aligned_rmsd(as_t(x), as_t(y), torch.as_tensor(np.asarray(w) > 0)).numpy()


def triplet_rmsds(pred: np.ndarray, st: Structure, slots: slice = slice(None)) -> np.ndarray:
    """Local RMSD of every linked triplet i-1..i+1 over ``slots`` (present atoms only)."""
    n = len(st)
    centre = np.arange(1, n - 1)
    centre = centre[st.linked_prev[centre] & st.linked_prev[centre + 1]]
    if centre.size == 0:
        return np.zeros(0)
    win = centre[:, None] + np.arange(-1, 2)[None]  # [S, 3]
    mask = st.atom_mask[:, slots][win].reshape(len(centre), -1)
    x = pred[:, slots][win].reshape(len(centre), -1, 3)
    y = np.nan_to_num(st.coords[:, slots][win].reshape(len(centre), -1, 3))
    return batched_rmsd(x, y, mask.astype(np.float64))


def quantile_line(name: str, values: np.ndarray) -> str:
    """One line: n, quantiles and mean of ``values``."""
    qs = " ".join(f"q{int(q * 100):02d}={np.quantile(values, q):.3f}" for q in QUANTILES)
    return f"{name:<26} n={len(values):5d}  {qs}  mean={values.mean():.3f}"


def fit_structures(structures: dict[str, tuple[Structure, np.ndarray]]) -> dict:
    """The structures the constants are fitted on: ``geometry.GEOMETRY_FIT_IDS`` only
    (the demo training split), so no validation or test target shapes Stage C."""
    missing = sorted(set(G.GEOMETRY_FIT_IDS) - set(structures))
    if missing:
        raise SystemExit(f"nerf_rebuild: fit structures missing from the raw dir: {missing}")
    return {sid: structures[sid] for sid in G.GEOMETRY_FIT_IDS}


def derive_constants(structures: dict[str, tuple[Structure, np.ndarray]]) -> dict:
    """The demo-derived constants of ``rna_predict.model.geometry``.

    Angles (medians) and fixed dihedrals (circular means), in degrees, per sugar pucker
    class (delta below / at or above ``geometry.PUCKER_DELTA``), per base type for the
    base terms; base templates as the mean local coordinates of every complete base.
    Returns {"_ANGLES": {name: (c3, c2)}, "_DIHEDRALS": {...}, "BASE_TEMPLATES": {base:
    [n, 3] array}, "counts": {...}}.
    """
    vals: dict[str, list[np.ndarray]] = {"angle": [], "dihedral": []}
    oks: dict[str, list[np.ndarray]] = {"angle": [], "dihedral": []}
    bts, deltas, locs, lmasks = [], [], [], []
    for st, ang in structures.values():
        bt = torch.as_tensor(base_type_index(st.sequence))
        geo, mask = geometry_from_coords(st.coords, st.atom_mask, bt, st.linked_prev, with_mask=True)
        for k, field in ((1, "angle"), (2, "dihedral")):
            vals[field].append(getattr(geo, field).numpy())
            oks[field].append(mask[k].numpy())
        bts.append(bt.numpy())
        deltas.append(ang[:, 3])
        loc, lm = G.base_frame_coords(st.coords, st.atom_mask, bt)
        locs.append(loc.numpy())
        lmasks.append(lm.numpy())
    bt, delta = np.concatenate(bts), np.concatenate(deltas)
    classes = (delta < math.radians(G.PUCKER_DELTA), delta >= math.radians(G.PUCKER_DELTA))
    out: dict = {
        "counts": {
            "structures": len(structures),
            "nucleotides": len(bt),
            "C3'-endo": int(classes[0].sum()),
            "C2'-endo": int(classes[1].sum()),
        }
    }
    for field, names in (("angle", G.ANGLE_NAMES), ("dihedral", G.DIHEDRAL_NAMES)):
        v, ok = np.concatenate(vals[field]), np.concatenate(oks[field])
        table = out[f"_{field.upper()}S"] = {}
        for k, name in enumerate(names):
            types = range(len(BASES)) if name in G.PER_TYPE else (None,)
            rows = [
                [
                    math.degrees(_summary(v[ok[:, k] & cls & (True if t is None else bt == t), k], field))
                    for t in types
                ]
                for cls in classes
            ]
            if field == "dihedral":  # C2'-endo value within 180 deg of the C3'-endo one
                rows[1] = [b + 360 * round((a - b) / 360) for a, b in zip(*rows)]
            table[name] = (tuple(rows[0]), tuple(rows[1]))
    loc, lm = np.concatenate(locs), np.concatenate(lmasks)
    out["BASE_TEMPLATES"] = {}
    for t, b in enumerate(BASES):
        n_atoms = len(BASE_ATOMS[b])
        sel = (bt == t) & lm[:, :n_atoms].all(1)
        out["BASE_TEMPLATES"][b] = loc[sel, :n_atoms].mean(0)
        out["counts"][b] = int(sel.sum())
    return out


def print_constants(const: dict) -> None:
    """Print :func:`derive_constants` as the Python literals of ``geometry.py``."""
    print(f"# {const['counts']}")
    for key in ("_ANGLES", "_DIHEDRALS"):
        print(f"{key} = {{")
        for name, rows in const[key].items():
            c3, c2 = (", ".join(f"{x:.2f}" for x in row) + ("," if len(row) == 1 else "") for row in rows)
            print(f'    "{name}": (({c3}), ({c2})),')
        print("}")
    print("BASE_TEMPLATES = {")
    for b, mean in const["BASE_TEMPLATES"].items():
        rows = ", ".join(f"({x:.3f}, {y:.3f}, {z:.3f})" for x, y, z in mean).replace("-0.000", "0.000")
        print(f'    "{b}": ({rows}),  # {const["counts"][b]} residues')
    print("}")


def _summary(v: np.ndarray, field: str) -> float:
    if len(v) == 0:
        return float("nan")
    if field == "dihedral":
        return float(np.arctan2(np.sin(v).mean(), np.cos(v).mean()))
    return float(np.median(v))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw-dir", default=None, help="directory of PDB/mmCIF files (default: demo set)")
    parser.add_argument("--derive", action="store_true",
                        help="print the geometry constants fitted on geometry.GEOMETRY_FIT_IDS "
                             "(the demo training split)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    structures = load_structures(args.raw_dir or demo_raw_dir())
    if args.derive:
        print_constants(derive_constants(fit_structures(structures)))
        return
    print("local RMSD (A) of residue triplets i-1..i+1, ideal geometry, own torsions, local Kabsch")
    for source in ("demo", "parkinson"):
        bb, aa = [], []
        for sid, (st, ang) in structures.items():
            pred = rebuild(st, ang, source=source)
            r_bb, r_aa = triplet_rmsds(pred, st, slice(0, N_BACKBONE)), triplet_rmsds(pred, st)
            bb.append(r_bb)
            aa.append(r_aa)
            if source == "demo":
                print(
                    f"{sid:6s} L={len(st):4d}  backbone median {np.median(r_bb):.3f}  "
                    f"all-atom median {np.median(r_aa):.3f}"
                )
        print(quantile_line(f"ALL backbone [{source}]", np.concatenate(bb)))
        print(quantile_line(f"ALL all-atom [{source}]", np.concatenate(aa)))
    if "1EHZ" in structures:
        st, ang = structures["1EHZ"]
        m = st.atom_mask[:, :N_BACKBONE]
        for own, label in ((True, "own bonds/angles"), (False, "ideal geometry")):
            for dtype in (torch.float64, torch.float32):
                x = rebuild(st, ang, own_geometry=own, dtype=dtype)
                r_bb = rmsd(x[:, :N_BACKBONE], st.coords[:, :N_BACKBONE], m)
                r_aa = rmsd(x, st.coords, st.atom_mask)
                print(
                    f"1EHZ global, {label:16s} {dtype!s:14s} backbone RMSD {r_bb:.4f} A, all-atom {r_aa:.4f} A"
                )
    _timing()


def _timing(batch: int = 8, length: int = 200, reps: int = 5) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sincos = torch.randn(batch, length, 7, 2, requires_grad=True)
    bt = torch.randint(0, 4, (batch, length))
    build_coords(sincos, bt).sum().backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        build_coords(sincos, bt).square().mean().backward()
    dt = (time.perf_counter() - t0) / reps
    print(f"forward+backward B={batch} L={length} (CPU, 1 thread): {dt * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
