"""Stage D numerics: EDM preconditioning, training noise, sampler schedule (SCIENCE.md 4)."""

from __future__ import annotations

import math

import pytest
import torch

from rna_predict.model.preconditioning import (
    c_in,
    c_noise,
    c_out,
    c_skip,
    centre_random_augmentation,
    loss_weight,
    random_rotation,
    sample_training_sigma,
)
from rna_predict.model.sampler import noise_schedule, sample_diffusion

SD = 16.0


@pytest.mark.parametrize(
    "sigma, skip, out, inp, noise",
    [
        (16.0, 0.5, 256 / math.sqrt(512), 1 / math.sqrt(512), 0.0),
        (1.0, 256 / 257, 16 / math.sqrt(257), 1 / math.sqrt(257), math.log(1 / 16) / 4),
        (160.0, 256 / (256 + 25600), 2560 / math.sqrt(25856), 1 / math.sqrt(25856), math.log(10) / 4),
    ],
)
def test_preconditioning_values(sigma, skip, out, inp, noise):
    s = torch.tensor(sigma, dtype=torch.float64)
    assert c_skip(s, SD).item() == pytest.approx(skip, rel=1e-12)
    assert c_out(s, SD).item() == pytest.approx(out, rel=1e-12)
    assert c_in(s, SD).item() == pytest.approx(inp, rel=1e-12)
    assert c_noise(s, SD).item() == pytest.approx(noise, abs=1e-12)


def test_preconditioning_identity_c_skip2_plus_c_out2_over_sd2():
    # EDM: the skip and output scales keep the target at unit variance: c_skip^2 s^2 + ... ;
    # in particular c_skip + (c_out / sd)^2 = 1 for every sigma
    s = torch.logspace(-3, 3, 50, dtype=torch.float64)
    assert torch.allclose(c_skip(s, SD) + (c_out(s, SD) / SD) ** 2, torch.ones_like(s))


def test_loss_weight_values():
    assert loss_weight(torch.tensor(16.0), SD).item() == pytest.approx(2 / 256)
    assert loss_weight(torch.tensor(1.0), SD).item() == pytest.approx(257 / 256)
    # lambda = 1 / c_out^2
    s = torch.tensor([0.3, 4.0, 40.0], dtype=torch.float64)
    assert torch.allclose(loss_weight(s, SD), 1 / c_out(s, SD) ** 2)


def test_training_sigma_distribution_and_determinism():
    g = torch.Generator().manual_seed(0)
    sig = sample_training_sigma((20000,), SD, generator=g)
    logn = (torch.log(sig / SD) + 1.2) / 1.5
    assert abs(logn.mean().item()) < 0.03 and abs(logn.std().item() - 1.0) < 0.03
    again = sample_training_sigma((20000,), SD, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sig, again)


def test_random_rotation_is_proper_and_augmentation_centres():
    rot = random_rotation((100,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(100, dtype=torch.float64))
    x = torch.randn(2, 50, 3, dtype=torch.float64) + 30.0
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 40:] = False
    y = centre_random_augmentation(x, mask, s_trans=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.all(y[1, 40:] == 0)
    centre = (y * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert centre.abs().max() < 1e-4
    # pairwise distances preserved
    assert torch.allclose(torch.cdist(y[0], y[0]), torch.cdist(x[0], x[0]), atol=1e-3)


def test_noise_schedule_endpoints_and_formula():
    c = noise_schedule(200, SD)
    assert c.shape == (201,)
    assert c[0].item() == pytest.approx(SD * 160.0, rel=1e-12)
    assert c[-1].item() == 0.0
    assert torch.all(c[1:] < c[:-1])
    k = 100
    expect = SD * (160 ** (1 / 7) + k / 200 * (4e-4 ** (1 / 7) - 160 ** (1 / 7))) ** 7
    assert c[k].item() == pytest.approx(expect, rel=1e-12)
    short = noise_schedule(10, SD)
    assert short[0].item() == pytest.approx(2560.0) and short[-1].item() == 0.0 and len(short) == 11
    # the step before the last is the formula's s_min end
    assert noise_schedule(1, SD)[0].item() == pytest.approx(2560.0)
    with pytest.raises(ValueError):
        noise_schedule(0)


def test_sampler_with_ideal_denoiser_converges_and_is_deterministic():
    target = 8.0 * torch.randn(1, 1, 40, 3, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[0, 35:] = False
    target = target * mask[:, None, :, None]
    calls = []

    def denoise(x, sigma):
        calls.append(float(sigma.flatten()[0]))
        return target.expand_as(x)

    def run():
        return sample_diffusion(denoise, (1, 3, 40, 3), mask, steps=20, sigma_data=SD,
                                generator=torch.Generator().manual_seed(4), augment=False)

    x = run()
    assert x.shape == (1, 3, 40, 3)
    assert torch.all(x[:, :, 35:] == 0)
    assert (x - target).abs().max() < 0.2
    # t_hat = c_{k-1} (1 + gamma), gamma = 0.8 while c_k > 1
    c = noise_schedule(20, SD)
    assert calls[0] == pytest.approx(float(c[0]) * 1.8)
    assert calls[-1] == pytest.approx(float(c[-2]))
    assert torch.equal(x, run())
