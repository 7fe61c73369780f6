"""Losses and alignment (SCIENCE.md 4; AF3 Alg 27-28): values on hand-made inputs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rna_predict.model.preconditioning import random_rotation
from rna_predict.model.alignment import (
    aligned_rmsd,
    apply_transform,
    weighted_kabsch,
    weighted_rigid_align,
)
from rna_predict.train.losses import (
    NUCLEOTIDE_ATOM_WEIGHT,
    SMOOTH_LDDT_MIN,
    aligned_mse,
    angle_loss,
    diffusion_loss,
    smooth_lddt,
)


def _points(n: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 10.0 * torch.randn(n, 3, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------ alignment
def test_weighted_kabsch_recovers_known_rotation():
    x = _points()
    rot = random_rotation((), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([3.0, -2.0, 7.5], dtype=torch.float64)
    y = apply_transform(x, rot, t)
    r_est, t_est = weighted_kabsch(x, y, torch.ones(len(x), dtype=torch.float64))
    assert torch.allclose(r_est, rot, atol=1e-10)
    assert torch.allclose(t_est, t, atol=1e-9)
    assert torch.linalg.det(r_est).item() == pytest.approx(1.0, abs=1e-12)


def test_weighted_kabsch_ignores_zero_weight_atoms():
    x = _points()
    rot = random_rotation((), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = apply_transform(x, rot, torch.zeros(3, dtype=torch.float64))
    y[:5] += 50.0  # outliers with zero weight
    w = torch.ones(len(x), dtype=torch.float64)
    w[:5] = 0.0
    r_est, _ = weighted_kabsch(x, y, w)
    assert torch.allclose(r_est, rot, atol=1e-10)


def test_kabsch_never_reflects_a_mirrored_input():
    x = _points()
    mirrored = x * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    rot = random_rotation((), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = apply_transform(mirrored, rot, torch.zeros(3, dtype=torch.float64))
    r_est, _ = weighted_kabsch(x, y, torch.ones(len(x), dtype=torch.float64))
    assert torch.linalg.det(r_est).item() == pytest.approx(1.0, abs=1e-9)
    # a reflection would fit exactly; a proper rotation cannot
    assert aligned_rmsd(x, y, torch.ones(len(x), dtype=torch.bool)).item() > 1.0


def test_rigid_align_is_batched_and_detached():
    x = _points().float().expand(4, -1, -1).clone().requires_grad_(True)
    rots = random_rotation((4,), generator=torch.Generator().manual_seed(4))
    y = (x.detach() @ rots.transpose(-1, -2)) + 1.0
    aligned = weighted_rigid_align(x, y, torch.ones(4, x.shape[1]))
    assert not aligned.requires_grad
    assert torch.allclose(aligned, y, atol=1e-3)


# ---------------------------------------------------------------------- MSE
def test_aligned_mse_zero_for_rigid_motion_and_weighted_value():
    x = _points().float()
    rot = random_rotation((), generator=torch.Generator().manual_seed(5))
    moved = x @ rot.T + 4.0
    mask = torch.ones(len(x), dtype=torch.bool)
    assert aligned_mse(moved, x, mask).item() == pytest.approx(0.0, abs=1e-3)
    # uniform 1 A expansion along z of a centred cloud: alignment cannot remove it
    pred = x - x.mean(0)
    true = pred.clone()
    true[:, 2] += torch.where(pred[:, 2] > 0, 1.0, -1.0)
    rmsd = aligned_rmsd(true, pred, mask).item()
    expected = NUCLEOTIDE_ATOM_WEIGHT * rmsd**2 / 3.0  # (1/3) sum w |dx|^2 / N, w = 6
    assert aligned_mse(pred, true, mask).item() == pytest.approx(expected, rel=1e-4)


def test_aligned_mse_gradient_flows_to_prediction_only():
    x = _points().float()
    pred = (x + torch.randn(x.shape, generator=torch.Generator().manual_seed(6))).requires_grad_(True)
    true = x.clone().requires_grad_(True)
    aligned_mse(pred, true, torch.ones(len(x), dtype=torch.bool)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert true.grad is None


# --------------------------------------------------------------- smooth lDDT
def test_smooth_lddt_minimum_for_identical_coordinates():
    x = _points().float()
    mask = torch.ones(len(x), dtype=torch.bool)
    expected = 1.0 - sum(1 / (1 + math.exp(-t)) for t in (0.5, 1, 2, 4)) / 4
    assert SMOOTH_LDDT_MIN == pytest.approx(expected)
    assert smooth_lddt(x, x, mask).item() == pytest.approx(expected, abs=1e-6)
    # invariant to a rigid motion of the prediction
    rot = random_rotation((), generator=torch.Generator().manual_seed(7))
    assert smooth_lddt(x @ rot.T + 3.0, x, mask).item() == pytest.approx(expected, abs=1e-5)


def test_smooth_lddt_increases_with_perturbation():
    x = _points(60).float() * 0.5  # all pairs within 30 A mostly
    mask = torch.ones(len(x), dtype=torch.bool)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(8))
    values = [smooth_lddt(x + s * noise, x, mask).item() for s in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(b > a for a, b in itertools.pairwise(values)), values
    assert values[-1] > 0.8


def test_smooth_lddt_ignores_far_pairs_and_masked_atoms():
    x = torch.tensor([[0.0, 0, 0], [3.0, 0, 0], [100.0, 0, 0]])
    pred = x.clone()
    pred[2] = torch.tensor([200.0, 50.0, 0.0])  # only pairs with atom 2 change, all > 30 A
    mask = torch.ones(3, dtype=torch.bool)
    assert smooth_lddt(pred, x, mask).item() == pytest.approx(SMOOTH_LDDT_MIN, abs=1e-6)
    pred[1] += 5.0
    mask[1] = False
    # the only pair left (0, 2) is beyond 30 A: no scored pair, loss 1 - 0 = 1 and no gradient
    assert smooth_lddt(pred, x, mask).item() == pytest.approx(1.0, abs=1e-9)


# -------------------------------------------------------------------- angles
def test_angle_loss_values_and_mask():
    angles = torch.tensor([[0.3, -2.0, math.pi, float("nan"), 1.0, 0.0, 2.5]])
    mask = torch.isfinite(angles)
    exact = torch.stack([torch.sin(torch.nan_to_num(angles)), torch.cos(torch.nan_to_num(angles))], -1)
    exact[0, 3] = torch.tensor([0.6, -0.8])  # undefined torsion: anything goes
    assert angle_loss(exact, angles, mask).item() == pytest.approx(0.0, abs=1e-12)
    # predicting angle 0 for a true angle pi: (0-0)^2 + (1-(-1))^2 = 4 over 2 components
    pred = exact.clone()
    pred[0, 2] = torch.tensor([0.0, 1.0])
    assert angle_loss(pred, angles, mask).item() == pytest.approx(4.0 / (2 * 6), rel=1e-6)


def test_diffusion_loss_combines_lambda_mse_and_lddt():
    x = _points(30).float().expand(1, 2, -1, -1).clone()
    pred = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    mask = torch.ones(1, 30, dtype=torch.bool)
    sigma = torch.tensor([[16.0, 1.0]])
    out = diffusion_loss(pred, x, mask, sigma, 16.0)
    mse = aligned_mse(pred, x, mask[:, None].expand(1, 2, 30))
    lddt = smooth_lddt(pred, x, mask[:, None].expand(1, 2, 30))
    lam = (sigma**2 + 256) / (sigma * 16) ** 2
    assert out["diffusion"].item() == pytest.approx((lam * mse + lddt).mean().item(), rel=1e-6)
    assert out["mse"].item() == pytest.approx(mse.mean().item(), rel=1e-6)
