"""EDM preconditioning, training noise and augmentation of the AF3 diffusion (SCIENCE.md 4).

Karras et al. 2022 (EDM) preconditioning as used by AlphaFold 3 (AF3 Alg 20 lines 2, 8)
and Protenix, with ``sigma_data = 16`` Angstrom (coordinates are not rescaled):

    c_in    = 1 / sqrt(sigma^2 + sigma_data^2)
    c_skip  = sigma_data^2 / (sigma_data^2 + sigma^2)
    c_out   = sigma sigma_data / sqrt(sigma_data^2 + sigma^2)
    c_noise = ln(sigma / sigma_data) / 4
    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, conditioning)

Training noise (AF3 supplement 3.7.1): sigma = sigma_data exp(-1.2 + 1.5 N(0, 1)); loss
weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2.
:func:`centre_random_augmentation` is AF3 Alg 19 (centre on the masked mean, uniform
random rotation, translation N(0, s_trans^2 I) with s_trans = 1 Angstrom).

Every random draw takes an optional ``torch.Generator`` (``None`` = global RNG).
"""

from __future__ import annotations

import torch
from torch import Tensor

P_MEAN = -1.2
P_STD = 1.5


def c_in(sigma: Tensor, sigma_data: float) -> Tensor:
    return 1.0 / torch.sqrt(sigma**2 + sigma_data**2)


def c_skip(sigma: Tensor, sigma_data: float) -> Tensor:
    return sigma_data**2 / (sigma_data**2 + sigma**2)


def c_out(sigma: Tensor, sigma_data: float) -> Tensor:
    return sigma * sigma_data / torch.sqrt(sigma_data**2 + sigma**2)


def c_noise(sigma: Tensor, sigma_data: float) -> Tensor:
    return torch.log(sigma / sigma_data) / 4.0


def loss_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_training_sigma(shape: tuple[int, ...], sigma_data: float,
                          generator: torch.Generator | None = None, device=None) -> Tensor:
    """sigma = sigma_data exp(P_MEAN + P_STD N(0, 1))."""
    n = torch.randn(shape, generator=generator, device=device)
    return sigma_data * torch.exp(P_MEAN + P_STD * n)


def random_rotation(shape: tuple[int, ...], generator: torch.Generator | None = None,
                    device=None, dtype=torch.float32) -> Tensor:
    """Uniform random rotations [*shape, 3, 3] from normalised Gaussian quaternions (det +1)."""
    q = torch.randn(*shape, 4, generator=generator, device=device, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def masked_centre(x: Tensor, mask: Tensor) -> Tensor:
    """Masked mean position [..., 1, 3] of ``x`` [..., N, 3] with ``mask`` [..., N]."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp(min=1.0)


def centre_random_augmentation(x: Tensor, mask: Tensor, s_trans: float = 1.0,
                               generator: torch.Generator | None = None) -> Tensor:
    """AF3 Alg 19 on ``x`` [..., N, 3]: centre (masked mean), rotate, translate; masked atoms stay 0."""
    lead = x.shape[:-2]
    rot = random_rotation(lead, generator=generator, device=x.device, dtype=x.dtype)
    trans = s_trans * torch.randn(*lead, 1, 3, generator=generator, device=x.device, dtype=x.dtype)
    x = x - masked_centre(x, mask)
    x = torch.einsum("...ij,...nj->...ni", rot, x) + trans
    return x * mask.to(x.dtype)[..., None]


__all__ = [
    "P_MEAN",
    "P_STD",
    "c_in",
    "c_noise",
    "c_out",
    "c_skip",
    "centre_random_augmentation",
    "loss_weight",
    "masked_centre",
    "random_rotation",
    "sample_training_sigma",
]
