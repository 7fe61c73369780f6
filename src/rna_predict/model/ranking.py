"""Rank diffusion samples by agreement with the model's own Stage B torsions.

AlphaFold 3 ranks its samples with a confidence head; this project has none. A cheap
self-consistency score stands in: the seven backbone/glycosidic torsions (SCIENCE.md 1,
IUPAC definitions, purine chi O4'-C1'-N9-C4, pyrimidine chi O4'-C1'-N1-C2) are measured
on each sampled structure and compared with the torsion encoder's prediction,

    score = mean over defined (residue, torsion) of 1 - cos(theta_sample - theta_predicted)

(0 = identical, 2 = opposite). A mirror image negates every dihedral, so mirror-image
samples (which an undertrained, non-equivariant denoiser produces) score badly. No ground
truth is used. Neighbour terms (alpha, epsilon, zeta) count only within one chain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rna_predict.data.atom_layout import BASES, BB, CHI_BASE_ATOMS, SLOT, TORSION_ATOMS, TORSIONS
from rna_predict.model.geometry import dihedral

#: (residue offset, backbone atom) quadruples of alpha..zeta (atom_layout.TORSIONS order)
_BACKBONE_TORSIONS = tuple(TORSION_ATOMS[name] for name in TORSIONS[:6])
#: [4, 2] slots of the chi base atoms (N9/C4 purines, N1/C2 pyrimidines) per base type
_CHI_SLOTS = torch.tensor([[SLOT[b][a] for a in CHI_BASE_ATOMS[b]] for b in BASES])


def _shift(x: Tensor, offset: int, dim: int) -> Tensor:
    """x[i + offset] along ``dim`` (wrapping; the caller masks the wrapped ends)."""
    return torch.roll(x, shifts=-offset, dims=dim) if offset else x


def torsions_from_coords(coords: Tensor, base_type: Tensor, chain_index: Tensor,
                         residue_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Torsions [..., B, L, 7] (radians) and their mask of structures [..., B, L, 23, 3]."""
    res_dim = coords.dim() - 3
    same_prev = torch.zeros_like(residue_mask)
    same_prev[:, 1:] = (chain_index[:, 1:] == chain_index[:, :-1]) & residue_mask[:, :-1]
    same_next = torch.zeros_like(residue_mask)
    same_next[:, :-1] = (chain_index[:, :-1] == chain_index[:, 1:]) & residue_mask[:, 1:]
    angles, masks = [], []
    for atoms in _BACKBONE_TORSIONS:
        pts = [_shift(coords[..., BB[name], :], off, res_dim) for off, name in atoms]
        angles.append(dihedral(*pts))
        ok = residue_mask.clone()
        if any(off < 0 for off, _ in atoms):
            ok &= same_prev
        if any(off > 0 for off, _ in atoms):
            ok &= same_next
        masks.append(ok)
    chi_slots = _CHI_SLOTS.to(base_type.device)[base_type.clamp(0, len(BASES) - 1)]  # [B, L, 2]
    idx = chi_slots[..., None].expand(*coords.shape[:-2], 2, 3)
    base_atoms = torch.gather(coords, -2, idx)
    angles.append(dihedral(coords[..., BB["O4'"], :], coords[..., BB["C1'"], :],
                           base_atoms[..., 0, :], base_atoms[..., 1, :]))
    masks.append(residue_mask.clone())
    return torch.stack(angles, -1), torch.stack(masks, -1)


def torsion_consistency(samples: Tensor, sincos: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Score [n, B] (lower = better) of samples [n, B, L, 23, 3] against predicted sincos [B, L, 7, 2]."""
    angles, mask = torsions_from_coords(samples, batch["base_type"], batch["chain_index"],
                                        batch["residue_mask"])
    agree = torch.cos(angles) * sincos[..., 1] + torch.sin(angles) * sincos[..., 0]
    m = mask.to(agree.dtype)
    return ((1.0 - agree) * m).sum((-1, -2)) / m.sum((-1, -2)).clamp(min=1.0)


__all__ = ["torsion_consistency", "torsions_from_coords"]
