"""Training losses (SCIENCE.md 4; AF3 supplement 4.1-4.2, Algorithms 27-28).

- :func:`angle_loss`: L_angle = masked mean squared error between predicted and true
  (sin, cos) of the seven torsions, averaged over defined (residue, torsion, component)
  entries (undefined torsions are excluded through ``angle_mask``, never compared to 0).
- :func:`aligned_mse`: the ground truth is superposed onto the prediction by weighted
  Kabsch (AF3 Alg 28, proper rotation, no gradient through the alignment), then
  L_MSE = (1/3) sum_l w_l |x_l - x_l^aligned|^2 / N with w_l = 1 + 5 = 6 for nucleotide
  atoms (:data:`NUCLEOTIDE_ATOM_WEIGHT`) and N the number of atoms with ground truth.
- :func:`smooth_lddt`: AF3 Alg 27, eps_lm = 1/4 sum_{t in 0.5, 1, 2, 4} sigmoid(t - |d_pred - d_true|),
  over atom pairs l != m with d_true < 30 A (nucleotide cutoff); L = 1 - sum c eps / sum c.
  Note the AF3 formula's minimum is not 0: for identical coordinates every pair scores
  mean_t sigmoid(t) = 0.804, so L = :data:`SMOOTH_LDDT_MIN` = 0.196; the constant has no
  effect on gradients.
- :func:`diffusion_loss`: per noised copy ``lambda(sigma) * L_MSE + L_smooth_lddt``
  (AF3's internal weights: MSE and smooth lDDT 1:1, lambda on the MSE only; no bond term),
  averaged over copies and batch. AF3's outer factor 4 is left to ``training.w_diffusion``.

- :func:`training_loss`: the total ``w_angle * L_angle + w_diffusion * L_diffusion`` of
  one batch for :class:`rna_predict.model.rna_model.RNAModel`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rna_predict.model.preconditioning import loss_weight
from rna_predict.model.alignment import weighted_rigid_align

NUCLEOTIDE_ATOM_WEIGHT = 1.0 + 5.0
LDDT_CUTOFF = 30.0
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
#: |x|^2 + |y|^2 - 2 x.y loses ~0.02 A on near pairs 30 A from the origin in float32
EXACT_CDIST = "donot_use_mm_for_euclid_dist"
SMOOTH_LDDT_MIN = 1.0 - sum(torch.sigmoid(torch.tensor(t)).item() for t in LDDT_THRESHOLDS) / 4


def angle_loss(sincos: Tensor, angles: Tensor, angle_mask: Tensor) -> Tensor:
    """``sincos`` [..., 7, 2] (sin, cos), ``angles`` [..., 7] radians, ``angle_mask`` [..., 7] bool."""
    angles = torch.nan_to_num(angles)
    target = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)
    m = angle_mask.to(sincos.dtype)[..., None]
    sq = ((sincos - target) ** 2) * m
    return sq.sum() / (2.0 * m.sum()).clamp(min=1.0)


def aligned_mse(x_pred: Tensor, x_true: Tensor, mask: Tensor,
                weights: Tensor | float = NUCLEOTIDE_ATOM_WEIGHT) -> Tensor:
    """Per-structure weighted aligned MSE [...] (Angstrom^2) for ``x`` [..., N, 3], ``mask`` [..., N]."""
    m = mask.to(x_pred.dtype)
    w = m * weights
    x_aligned = weighted_rigid_align(x_true, x_pred, w)
    sq = ((x_pred - x_aligned) ** 2).sum(-1)
    return (w * sq).sum(-1) / (3.0 * m.sum(-1).clamp(min=1.0))


def smooth_lddt(x_pred: Tensor, x_true: Tensor, mask: Tensor, cutoff: float = LDDT_CUTOFF) -> Tensor:
    """AF3 Alg 27 smooth lDDT loss per structure [...] for ``x`` [..., N, 3], ``mask`` [..., N].

    Dense over atom pairs: memory O(N^2) per structure (about 4 MB per 1000 atoms).
    """
    mask = mask.expand(x_pred.shape[:-1])
    d_pred = torch.cdist(x_pred, x_pred, compute_mode=EXACT_CDIST)
    with torch.no_grad():
        d_true = torch.cdist(x_true, x_true, compute_mode=EXACT_CDIST)
        n = mask.shape[-1]
        pair = mask[..., :, None] & mask[..., None, :]
        pair = pair & ~torch.eye(n, dtype=torch.bool, device=mask.device)
        c = (pair & (d_true < cutoff)).to(x_pred.dtype)
    delta = (d_pred - d_true).abs()
    eps = sum(torch.sigmoid(t - delta) for t in LDDT_THRESHOLDS) / len(LDDT_THRESHOLDS)
    return 1.0 - (c * eps).sum((-1, -2)) / c.sum((-1, -2)).clamp(min=1.0)


def diffusion_loss(x_denoised: Tensor, x_true: Tensor, mask: Tensor, sigma: Tensor,
                   sigma_data: float) -> dict[str, Tensor]:
    """L_diffusion over noised copies. ``x`` [B, K, N, 3], ``mask`` [B, N] or [B, K, N], ``sigma`` [B, K].

    Returns ``diffusion`` (mean of lambda * MSE + smooth lDDT), ``mse`` (mean aligned MSE,
    not lambda-weighted, Angstrom^2) and ``lddt`` (mean smooth-lDDT loss).
    """
    if mask.dim() == x_denoised.dim() - 2:
        mask = mask[:, None, :]
    mask = mask.expand(x_denoised.shape[:-1])
    mse = aligned_mse(x_denoised, x_true, mask)
    lddt = smooth_lddt(x_denoised, x_true, mask)
    per_copy = loss_weight(sigma, sigma_data) * mse + lddt
    return {"diffusion": per_copy.mean(), "mse": mse.mean(), "lddt": lddt.mean()}


def training_loss(model, batch: dict[str, Tensor], w_angle: float, w_diffusion: float,
                  noise_copies: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """``total = w_angle * angle + w_diffusion * diffusion`` (SCIENCE.md 4) of ``model``
    (an :class:`~rna_predict.model.rna_model.RNAModel`) on ``batch``; scalars.

    With ``w_diffusion == 0`` the diffusion terms are computed without gradient (reported,
    not trained).
    """
    out = model.trunk(batch)
    mask = batch["residue_mask"]
    l_angle = angle_loss(out["sincos"], batch["angles"], batch["angle_mask"] & mask[..., None])

    def diffusion_terms() -> dict[str, Tensor]:
        d = model.denoise_noised_copies(out, batch, noise_copies, generator)
        return diffusion_loss(d["x_denoised"], d["x_target"], d["mask"], d["sigma"],
                              model.cfg.sigma_data)

    if w_diffusion == 0.0:
        with torch.no_grad():  # the diffusion module then gets no gradient at all
            diff = {k: v.detach() for k, v in diffusion_terms().items()}
        total = w_angle * l_angle
    else:
        diff = diffusion_terms()
        total = w_angle * l_angle + w_diffusion * diff["diffusion"]
    return {"total": total, "angle": l_angle, **diff}

__all__ = [
    "LDDT_CUTOFF",
    "LDDT_THRESHOLDS",
    "NUCLEOTIDE_ATOM_WEIGHT",
    "SMOOTH_LDDT_MIN",
    "aligned_mse",
    "angle_loss",
    "diffusion_loss",
    "smooth_lddt",
    "training_loss",
]
