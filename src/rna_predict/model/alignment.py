"""Weighted rigid alignment (AF3 supplement Alg 28; Kabsch 1976 with the det sign fix).

:func:`weighted_kabsch` returns the proper rotation R (det +1, never a reflection) and
translation t minimising sum_l w_l |R x_l + t - y_l|^2. :func:`weighted_rigid_align`
superposes ``x`` onto ``y`` and detaches the result: the diffusion MSE aligns the ground
truth onto the prediction with no gradient through the alignment (SCIENCE.md 4).
All functions are batched over leading axes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def weighted_kabsch(x: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation [..., 3, 3] and translation [..., 3] with ``R x + t ~ y``.

    ``x``, ``y`` [..., N, 3]; ``weights`` [..., N] (0 = ignore). Computed in float64.
    """
    dtype = x.dtype
    x, y, w = x.double(), y.double(), weights.double()[..., None]
    wsum = w.sum(-2, keepdim=True).clamp(min=1e-12)
    mx = (w * x).sum(-2, keepdim=True) / wsum
    my = (w * y).sum(-2, keepdim=True) / wsum
    h = ((x - mx) * w).transpose(-1, -2) @ (y - my)  # [..., 3, 3] = sum w x^T y
    u, _, vh = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vh.transpose(-1, -2) @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    rot = vh.transpose(-1, -2) @ fix @ u.transpose(-1, -2)
    t = my[..., 0, :] - (rot @ mx[..., 0, :, None])[..., 0]
    return rot.to(dtype), t.to(dtype)


def apply_transform(x: Tensor, rot: Tensor, t: Tensor) -> Tensor:
    """``R x + t`` for ``x`` [..., N, 3]."""
    return x @ rot.transpose(-1, -2) + t[..., None, :]


def weighted_rigid_align(x: Tensor, y: Tensor, weights: Tensor) -> Tensor:
    """AF3 Alg 28: ``x`` superposed onto ``y`` (weighted, proper rotation), detached."""
    with torch.no_grad():
        rot, t = weighted_kabsch(x.detach(), y.detach(), weights.detach())
        return apply_transform(x.detach(), rot, t)


def aligned_rmsd(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """RMSD [...] between ``x`` and ``y`` [..., N, 3] over ``mask`` after optimal superposition."""
    m = mask.to(x.dtype)
    xa = weighted_rigid_align(x, y, m)
    sq = ((xa - y.detach()) ** 2).sum(-1)
    return torch.sqrt((sq * m).sum(-1) / m.sum(-1).clamp(min=1.0))


__all__ = ["aligned_rmsd", "apply_transform", "weighted_kabsch", "weighted_rigid_align"]
