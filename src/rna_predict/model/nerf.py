"""Stage C: differentiable NeRF from torsions to all-atom RNA coordinates.

Natural Extension Reference Frame (NeRF; Parsons, Holmes, Rojas, Tsai & Strauss 2005,
J Comput Chem 26:1063): atom D is placed from three placed atoms A, B, C, bond length
l = |CD|, bond angle theta = B-C-D and dihedral chi = A-B-C-D (SCIENCE.md section 3)::

    bc = C - B,  n = (B - A) x bc,  m = n x bc,  M = [bc/|bc|, m/|m|, n/|n|]
    D  = C + l M [-cos theta, sin theta cos chi, sin theta sin chi]^T

The torsions enter only through their (sin, cos), so gradients are smooth everywhere.

Sugar-phosphate chain. Along the chain alpha places C5', beta C4', gamma C3', delta O3',
epsilon P(i+1) and zeta O5'(i+1). Because ``M`` of the next placement is ``M`` of this
one times a rotation that depends only on (theta, chi), every placement is a rigid
transform ``T = (Q(theta, chi), l Q e1)`` of the frame of the previous atom (the same
algebra as the formula above; ``tests/test_nerf.py`` checks the two agree). The six
transforms of each residue are composed for all residues at once and chained along the
residues with a parallel prefix (Hillis-Steele) scan: log2(L) batched matrix products
instead of 6 L sequential placements (the idea of pNeRF, AlQuraishi 2019, J Comput
Chem 40:885). Residue 0 starts from a fixed canonical frame: O5'(0)
at the origin, P(0) on the -x axis, alpha(0) measured against a virtual O3'(-1) in the
xy plane.

The other atoms are placed in parallel over all residues from the chain: O4', C2' and
O2' by improper dihedrals at their tetrahedral centres, C1' by closing the ring (its
two ring bonds O4'-C1' and C2'-C1' exact, law of cosines), OP1/OP2 by alpha plus a fixed
offset, the glycosidic N by an improper at C1', the chi atom X (C4 purines, C2
pyrimidines) by chi, and the rest of the base as a rigid template in the (C1', N, X)
frame. Values and their sources: :mod:`rna_predict.model.geometry`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rna_predict.data.atom_layout import (
    BACKBONE_ATOMS,
    BASES,
    N_BACKBONE,
    N_SLOTS,
    SLOT_MASK,
    TORSIONS,
)
from rna_predict.model.geometry import (
    ANGLE,
    BOND,
    DIHEDRAL,
    IDEAL_A_FORM,
    X_SLOT,
    Geometry,
    base_template_table,
    frame_axes,
    geometry_from_coords,
    ideal_geometry,
    pucker_weight,
)

__all__ = [
    "IDEAL_A_FORM",
    "Geometry",
    "build_coords",
    "build_from_angles",
    "geometry_from_coords",
    "ideal_angles",
    "ideal_geometry",
    "place_atom",
    "pucker_weight",
]

#: ideal A-form torsions in radians, TORSIONS order
IDEAL_A_FORM_RAD = np.radians([IDEAL_A_FORM[name] for name in TORSIONS])
_EPS = 1e-8


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def place_atom(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    bond: Tensor,
    cos_angle: Tensor,
    sin_angle: Tensor,
    cos_tors: Tensor,
    sin_tors: Tensor,
) -> Tensor:
    """Place D from A, B, C [..., 3] by the NeRF formula (SCIENCE.md 3); scalars [...]."""
    bc = _unit(c - b)
    n = _unit(torch.linalg.cross(b - a, bc))
    m = torch.linalg.cross(n, bc)
    d0, d1, d2 = -cos_angle, sin_angle * cos_tors, sin_angle * sin_tors
    return c + bond[..., None] * (bc * d0[..., None] + m * d1[..., None] + n * d2[..., None])


def _step(bond: Tensor, angle: Tensor, cos_t: Tensor, sin_t: Tensor) -> tuple[Tensor, Tensor]:
    """Rigid transform (R [..., 3, 3], t [..., 3]) from the frame of C to that of D.

    Columns of R: the new bond direction x' = (-cos th, sin th cos chi, sin th sin chi), the
    new normal z' = (0, -sin chi, cos chi) and y' = z' x x', i.e. the matrix M of the
    formula above expressed in the previous M.
    """
    ca, sa = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(ca)
    x = torch.stack([-ca, sa * cos_t, sa * sin_t], dim=-1)
    y = torch.stack([-sa, -ca * cos_t, -ca * sin_t], dim=-1)
    z = torch.stack([zero, -sin_t, cos_t], dim=-1)
    return torch.stack([x, y, z], dim=-1), bond[..., None] * x


def _compose(ra: Tensor, ta: Tensor, rb: Tensor, tb: Tensor) -> tuple[Tensor, Tensor]:
    """(ra, ta) o (rb, tb): apply b first, then a."""
    return ra @ rb, (ra @ tb[..., None])[..., 0] + ta


def _prefix_scan(r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Inclusive prefix compositions T_0 o T_1 o ... o T_i along dim 1 (Hillis-Steele)."""
    length, off = r.shape[1], 1
    while off < length:
        r2, t2 = _compose(r[:, :-off], t[:, :-off], r[:, off:], t[:, off:])
        r = torch.cat([r[:, :off], r2], dim=1)
        t = torch.cat([t[:, :off], t2], dim=1)
        off *= 2
    return r, t


def _rotate_sincos(s: Tensor, c: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    """(cos, sin) of (angle + offset) from the angle's (sin, cos)."""
    co, so = torch.cos(offset), torch.sin(offset)
    return c * co - s * so, s * co + c * so


def build_coords(sincos: Tensor, base_type: Tensor, geometry: Geometry | None = None) -> Tensor:
    """All-atom coordinates [B, L, 23, 3] from torsion (sin, cos) [B, L, 7, 2].

    ``sincos`` holds (sin, cos) of alpha, beta, gamma, delta, epsilon, zeta, chi (need not
    be unit; normalised here; undefined torsions must already hold a default such as
    :data:`IDEAL_A_FORM`). ``base_type`` [B, L] indexes ``atom_layout.BASES``.
    ``geometry`` None uses the ideal geometry, its sugar values blended between C3'-endo
    and C2'-endo by delta (:func:`pucker_weight`; differentiable). The residues form one
    continuous chain built from residue 0, so residues after position i (e.g. padding)
    never move residue i; padded slots of each base type are 0; base_type outside 0..3
    (padding ids) is built as A. Leading dims other than [B] also work.
    """
    lead, length = base_type.shape[:-1], base_type.shape[-1]
    dtype = sincos.dtype if sincos.is_floating_point() else torch.float32
    if base_type.numel() == 0:
        return torch.zeros(*lead, length, N_SLOTS, 3, dtype=dtype, device=sincos.device)
    sincos = sincos.to(dtype).reshape(-1, length, len(TORSIONS), 2)
    bt = base_type.reshape(-1, length).long().clamp(0, len(BASES) - 1)  # padding ids -> A
    norm = sincos.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    sin_t, cos_t = (sincos / norm).unbind(-1)  # [N, L, 7]
    if geometry is None:  # sugar geometry follows the pucker implied by delta
        geometry = ideal_geometry(bt, pucker_weight(cos_t[..., TORSIONS.index("delta")]), dtype=dtype)
    bond, ang, dih = (
        g.to(dtype).reshape(bt.shape[0], length, -1)
        for g in (geometry.bond, geometry.angle, geometry.dihedral)
    )

    def nxt(v: Tensor) -> Tensor:  # value of residue i+1 (last residue repeats; unused)
        return torch.cat([v[:, 1:], v[:, -1:]], dim=1)

    # ---- chain: six transforms per residue, frame of O5'(i) -> frame of O5'(i+1)
    chain_bonds = [bond[..., BOND[k]] for k in ("O5'-C5'", "C5'-C4'", "C4'-C3'", "C3'-O3'", "O3'-P+")]
    chain_bonds.append(nxt(bond[..., BOND["P-O5'"]]))
    chain_angles = [
        ang[..., ANGLE[k]] for k in ("P-O5'-C5'", "O5'-C5'-C4'", "C5'-C4'-C3'", "C4'-C3'-O3'", "C3'-O3'-P+")
    ]
    chain_angles.append(nxt(ang[..., ANGLE["O3'-P-O5'"]]))
    partial_r, partial_t = [], []
    r = t = None
    for k in range(6):
        rk, tk = _step(chain_bonds[k], chain_angles[k], cos_t[..., k], sin_t[..., k])
        r, t = (rk, tk) if r is None else _compose(r, t, rk, tk)
        partial_r.append(r)
        partial_t.append(t)
    g_r, g_t = _prefix_scan(r, t)  # frame of O5'(i+1)
    eye = torch.eye(3, dtype=dtype, device=sincos.device).expand(g_r.shape[0], 1, 3, 3)
    g_r = torch.cat([eye, g_r[:, :-1]], dim=1)  # frame of O5'(i)
    g_t = torch.cat([torch.zeros_like(g_t[:, :1]), g_t[:, :-1]], dim=1)
    atoms: dict[str, Tensor] = {"O5'": g_t}
    atoms["P"] = g_t - bond[..., BOND["P-O5'"], None] * g_r[..., 0]
    for k, name in enumerate(("C5'", "C4'", "C3'", "O3'")):
        atoms[name] = g_t + (g_r @ partial_t[k][..., None])[..., 0]

    def place(
        a: str, b: str, c: str, bond_name: str, angle_name: str, cos_tors: Tensor, sin_tors: Tensor
    ) -> Tensor:
        th = ang[..., ANGLE[angle_name]]
        return place_atom(
            atoms[a],
            atoms[b],
            atoms[c],
            bond[..., BOND[bond_name]],
            torch.cos(th),
            torch.sin(th),
            cos_tors,
            sin_tors,
        )

    def fixed(name: str) -> tuple[Tensor, Tensor]:
        return torch.cos(dih[..., DIHEDRAL[name]]), torch.sin(dih[..., DIHEDRAL[name]])

    # ---- sugar ring, O2', phosphate oxygens
    atoms["O4'"] = place("C5'", "C3'", "C4'", "C4'-O4'", "C3'-C4'-O4'", *fixed("C5'-C3'-C4'-O4'"))
    atoms["C2'"] = place("O3'", "C4'", "C3'", "C3'-C2'", "C4'-C3'-C2'", *fixed("O3'-C4'-C3'-C2'"))
    l1, l2 = bond[..., BOND["O4'-C1'"]], bond[..., BOND["C2'-C1'"]]
    d = (atoms["O4'"] - atoms["C2'"]).norm(dim=-1).clamp_min(_EPS)
    cos_th = ((l1 * l1 + d * d - l2 * l2) / (2 * l1 * d)).clamp(-1 + 1e-6, 1 - 1e-6)
    sin_th = torch.sqrt(1 - cos_th * cos_th)
    atoms["C1'"] = place_atom(
        atoms["C4'"], atoms["C2'"], atoms["O4'"], l1, cos_th, sin_th, *fixed("C4'-C2'-O4'-C1'")
    )
    atoms["O2'"] = place("C1'", "C3'", "C2'", "C2'-O2'", "C3'-C2'-O2'", *fixed("C1'-C3'-C2'-O2'"))
    for op in ("OP1", "OP2"):
        cos_op, sin_op = _rotate_sincos(sin_t[..., 0], cos_t[..., 0], dih[..., DIHEDRAL[f"alpha>{op}"]])
        atoms[op] = place("C5'", "O5'", "P", f"P-{op}", f"O5'-P-{op}", cos_op, sin_op)

    # ---- base: glycosidic N, chi atom X, rigid template in the (C1', N, X) frame
    atoms["N"] = place("C2'", "O4'", "C1'", "C1'-N", "O4'-C1'-N", *fixed("C2'-O4'-C1'-N"))
    x_atom = place("O4'", "C1'", "N", "N-X", "C1'-N-X", cos_t[..., 6], sin_t[..., 6])
    e1, e2, e3 = frame_axes(atoms["C1'"], atoms["N"], x_atom)
    tmpl = torch.as_tensor(base_template_table(), dtype=dtype, device=sincos.device)[bt]  # [N, L, 11, 3]
    base = atoms["N"][..., None, :] + sum(
        tmpl[..., k, None] * e[..., None, :] for k, e in enumerate((e1, e2, e3))
    )
    is_x = torch.as_tensor(
        np.arange(N_SLOTS - N_BACKBONE)[None] == (X_SLOT - N_BACKBONE)[:, None], device=sincos.device
    )[bt]  # [N, L, 11]
    base = torch.where(is_x[..., None], x_atom[..., None, :], base)

    backbone = torch.stack([atoms[name] for name in BACKBONE_ATOMS], dim=-2)
    coords = torch.cat([backbone, base], dim=-2)
    present = torch.as_tensor(SLOT_MASK, device=sincos.device)[bt]
    coords = coords * present[..., None].to(dtype)
    return coords.reshape(*lead, length, N_SLOTS, 3)


def ideal_angles(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """IDEAL_A_FORM torsions (radians) broadcast to [*shape, 7]."""
    return torch.as_tensor(IDEAL_A_FORM_RAD, dtype=dtype, device=device).expand(*shape, len(TORSIONS))


def build_from_angles(angles: Tensor, base_type: Tensor, geometry: Geometry | None = None) -> Tensor:
    """:func:`build_coords` from torsions in radians [B, L, 7]; NaN takes IDEAL_A_FORM."""
    angles = torch.as_tensor(angles)
    if not angles.is_floating_point():
        angles = angles.float()
    ideal = ideal_angles(angles.shape[:-1], dtype=angles.dtype, device=angles.device)
    angles = torch.where(torch.isnan(angles), ideal, angles)
    return build_coords(torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1), base_type, geometry)
