"""AF3 diffusion sampler (AF3 supplement Alg 18, SampleDiffusion; SCIENCE.md 4).

Noise schedule (EDM, rho = 7), with ``steps`` in place of AF3's 200:

    c_k = sigma_data (s_max^(1/7) + k/steps (s_min^(1/7) - s_max^(1/7)))^7,  k = 0..steps,
    s_max = 160, s_min = 4e-4, and the last level set to 0 (as Protenix does).

Per step k = 1..steps: centre + random rotation/translation (AF3 Alg 19), gamma = 0.8 if
c_k > 1 else 0, t_hat = c_{k-1} (gamma + 1), x_noisy = x + 1.003 sqrt(t_hat^2 - c_{k-1}^2) N(0, I),
delta = (x_noisy - D(x_noisy, t_hat)) / t_hat, x = x_noisy + 1.5 (c_k - t_hat) delta.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rna_predict.model.preconditioning import centre_random_augmentation

S_MAX = 160.0
S_MIN = 4e-4
RHO = 7.0
GAMMA_0 = 0.8
GAMMA_MIN = 1.0
NOISE_SCALE = 1.003
STEP_SCALE = 1.5


def noise_schedule(steps: int, sigma_data: float = 16.0, s_max: float = S_MAX,
                   s_min: float = S_MIN, rho: float = RHO) -> Tensor:
    """[steps + 1] noise levels c_0 = sigma_data s_max > ... > c_steps = 0 (float64)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    k = torch.arange(steps + 1, dtype=torch.float64) / steps
    c = sigma_data * (s_max ** (1 / rho) + k * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    c[-1] = 0.0
    return c


def sample_diffusion(
    denoise: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...],
    mask: Tensor,
    steps: int,
    sigma_data: float = 16.0,
    generator: torch.Generator | None = None,
    augment: bool = True,
) -> Tensor:
    """Run AF3 Alg 18. ``shape`` = (B, K, N, 3); ``denoise(x [B, K, N, 3], sigma [B, K])``;
    ``mask`` [B, N] bool (atoms that exist); returns x [B, K, N, 3] (masked atoms 0)."""
    c = noise_schedule(steps, sigma_data)
    dev = mask.device
    m = mask[:, None, :].expand(shape[:-1])
    mf = m.to(torch.float32)[..., None]
    x = float(c[0]) * torch.randn(shape, generator=generator, device=dev) * mf
    for c_prev, c_k in zip(c[:-1].tolist(), c[1:].tolist()):
        if augment:
            x = centre_random_augmentation(x, m, generator=generator)
        gamma = GAMMA_0 if c_k > GAMMA_MIN else 0.0
        t_hat = c_prev * (gamma + 1.0)
        scale = NOISE_SCALE * max(t_hat**2 - c_prev**2, 0.0) ** 0.5
        eps = scale * torch.randn(shape, generator=generator, device=dev)
        x_noisy = x + eps * mf
        sigma = torch.full(shape[:2], t_hat, device=dev)
        x_den = denoise(x_noisy, sigma)
        delta = (x_noisy - x_den) / t_hat
        x = (x_noisy + STEP_SCALE * (c_k - t_hat) * delta) * mf
    return x


__all__ = ["noise_schedule", "sample_diffusion"]
