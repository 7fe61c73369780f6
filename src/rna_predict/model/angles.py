"""Angle arithmetic shared by the model, the losses and the metrics (SCIENCE.md 2).

- :func:`circular_difference`: d(a, b) = min(|a - b| mod P, P - |a - b| mod P), written
  with arithmetic operators only so the one implementation serves numpy arrays (metrics)
  and torch tensors (training-time validation).
- :func:`angles_from_sincos`: the torsion recovered from a predicted (sin, cos) pair by
  atan2, as RNA-TorsionBERT does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def circular_difference(a, b, period: float = 2 * math.pi):
    """Shortest distance on the circle between ``a`` and ``b`` (same unit as ``period``);
    numpy arrays or torch tensors. Uses min(d, P - d) = P/2 - |d - P/2| for d in [0, P)."""
    d = abs(a - b) % period
    return period / 2 - abs(d - period / 2)


def angles_from_sincos(sincos: Tensor) -> Tensor:
    """[..., K, 2] (sin, cos) -> [..., K] radians in (-pi, pi] by atan2."""
    return torch.atan2(sincos[..., 0], sincos[..., 1])


__all__ = ["angles_from_sincos", "circular_difference"]
