"""Shared neural-network building blocks of the AlphaFold 3 trunk and diffusion module.

References are to the AlphaFold 3 supplementary information (Abramson et al. 2024,
Nature 630:493), "AF3 Alg N" below, cross-checked against Protenix:

- :class:`Transition`                  AF3 Alg 11 (SwiGLU transition)
- :class:`AdaLN`                       AF3 Alg 26 (adaptive LayerNorm)
- :class:`ConditionedTransitionBlock`  AF3 Alg 25 (SwiGLU transition with adaLN-Zero gate)
- :class:`AttentionPairBias`           AF3 Alg 24 (gated attention with pair bias, optional
                                       conditioning on a single representation)
- :func:`attention`                    masked scaled dot-product attention over the
                                       second-to-last axis, used by all of the above.
- :func:`row_chunks`                   evaluate a row-independent function in chunks of
                                       rows (AF2 supplement 1.11.8, memory reduction)
- :func:`maybe_checkpoint`             activation checkpointing of one block
                                       (``torch.utils.checkpoint``, non-reentrant)

Tensors carry arbitrary leading batch axes (``[B, ...]`` or ``[B, K, ...]`` for K noised
copies); every layer acts on the last axis, so conditioning tensors with a size-1 copy
axis broadcast against activations with K copies.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: additive logit for masked keys (finite, so fully masked rows stay finite)
NEG_INF = -1e9


def linear_no_bias(c_in: int, c_out: int) -> nn.Linear:
    """AF3 ``LinearNoBias``."""
    return nn.Linear(c_in, c_out, bias=False)


def gate_linear(c_in: int, c_out: int, bias_init: float = -2.0) -> nn.Linear:
    """Linear layer feeding a sigmoid gate, bias initialised to ``bias_init`` (AF3 biasinit=-2)."""
    layer = nn.Linear(c_in, c_out)
    nn.init.constant_(layer.bias, bias_init)
    return layer


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, key_mask: Tensor | None) -> Tensor:
    """Softmax attention, heads on axis -3.

    ``q`` [..., H, Q, d], ``k``/``v`` [..., H, K, d], ``bias`` broadcastable to
    [..., H, Q, K], ``key_mask`` bool broadcastable to [..., H, Q, K] (True = attend).
    """
    logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask, NEG_INF)
    return torch.matmul(torch.softmax(logits, dim=-1), v)


def row_chunks(fn, n_rows: int, chunk_size: int, dim: int = 1) -> Tensor:
    """``cat([fn(i, min(i + chunk_size, n_rows)) for i in range(0, n_rows, chunk_size)], dim)``.

    ``fn(start, stop)`` computes rows ``start:stop`` (along ``dim``) of an output whose
    rows are independent of each other, so peak memory holds one chunk of intermediates
    (the subbatching of AF2 supplement section 1.11.8, applied to AF3 Alg 12-15).
    ``chunk_size <= 0`` or ``>= n_rows``: one call over all rows.
    """
    if chunk_size <= 0 or chunk_size >= n_rows:
        return fn(0, n_rows)
    return torch.cat([fn(i, min(i + chunk_size, n_rows)) for i in range(0, n_rows, chunk_size)], dim=dim)


def maybe_checkpoint(fn, *args: Tensor, enabled: bool):
    """``fn(*args)``, through ``torch.utils.checkpoint.checkpoint(use_reentrant=False)`` when
    ``enabled`` and autograd is recording: the block's activations are dropped after the
    forward pass and recomputed during backward (Chen et al. 2016, "Training deep nets
    with sublinear memory cost"). The RNG state is restored for the recomputation, so
    dropout draws the same masks; results equal the plain call up to float rounding.
    """
    if enabled and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Switch activation checkpointing of every submodule that supports it
    (an ``activation_checkpointing`` attribute: Pairformer, diffusion transformer)."""
    for module in model.modules():
        if hasattr(module, "activation_checkpointing"):
            module.activation_checkpointing = bool(enabled)


class Transition(nn.Module):
    """AF3 Alg 11: ``LinearNoBias(swish(LinearNoBias(a)) * LinearNoBias(a))`` after LayerNorm."""

    def __init__(self, c: int, n: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.a = linear_no_bias(c, n * c)
        self.b = linear_no_bias(c, n * c)
        self.out = linear_no_bias(n * c, c)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return self.out(F.silu(self.a(x)) * self.b(x))


class AdaLN(nn.Module):
    """AF3 Alg 26: ``sigmoid(Linear(s)) * LN(a) + LinearNoBias(s)``."""

    def __init__(self, c_a: int, c_s: int) -> None:
        super().__init__()
        self.norm_a = nn.LayerNorm(c_a, elementwise_affine=False)
        self.norm_s = nn.LayerNorm(c_s, bias=False)
        self.scale = nn.Linear(c_s, c_a)
        self.shift = linear_no_bias(c_s, c_a)

    def forward(self, a: Tensor, s: Tensor) -> Tensor:
        s = self.norm_s(s)
        return torch.sigmoid(self.scale(s)) * self.norm_a(a) + self.shift(s)


class ConditionedTransitionBlock(nn.Module):
    """AF3 Alg 25: SwiGLU transition on ``AdaLN(a, s)`` with an adaLN-Zero output gate."""

    def __init__(self, c_a: int, c_s: int, n: int = 2) -> None:
        super().__init__()
        self.adaln = AdaLN(c_a, c_s)
        self.a = linear_no_bias(c_a, n * c_a)
        self.b = linear_no_bias(c_a, n * c_a)
        self.out = linear_no_bias(n * c_a, c_a)
        self.gate = gate_linear(c_s, c_a)

    def forward(self, a: Tensor, s: Tensor) -> Tensor:
        x = self.adaln(a, s)
        return torch.sigmoid(self.gate(s)) * self.out(F.silu(self.a(x)) * self.b(x))


class AttentionPairBias(nn.Module):
    """AF3 Alg 24: gated multi-head self-attention over tokens with a bias from pairs.

    With ``c_s > 0`` the input is normalised by :class:`AdaLN` on ``s`` and the output is
    gated by ``sigmoid(Linear(s))`` (diffusion transformer); with ``c_s == 0`` a plain
    LayerNorm is used (Pairformer single track, AF3 Alg 17 line 8). The pair bias is
    computed by the caller (``pair_bias``) so that one implementation serves full token
    attention and sequence-local atom attention (AF3 Alg 7).
    """

    def __init__(self, c_a: int, c_s: int, n_heads: int) -> None:
        super().__init__()
        if c_a % n_heads:
            raise ValueError(f"channels {c_a} not divisible by {n_heads} heads")
        self.h = n_heads
        self.conditioned = c_s > 0
        self.norm = AdaLN(c_a, c_s) if self.conditioned else nn.LayerNorm(c_a)
        self.q = nn.Linear(c_a, c_a)
        self.k = linear_no_bias(c_a, c_a)
        self.v = linear_no_bias(c_a, c_a)
        self.g = linear_no_bias(c_a, c_a)
        self.out = linear_no_bias(c_a, c_a)
        if self.conditioned:
            self.out_gate = gate_linear(c_s, c_a)

    def split(self, x: Tensor) -> Tensor:
        """[..., N, C] -> [..., H, N, C/H]."""
        return x.unflatten(-1, (self.h, -1)).transpose(-2, -3)

    def normed(self, a: Tensor, s: Tensor | None) -> Tensor:
        return self.norm(a, s) if self.conditioned else self.norm(a)

    def finish(self, a_norm: Tensor, o: Tensor, s: Tensor | None) -> Tensor:
        """Gate the merged heads ``o`` [..., N, C], project, apply the adaLN-Zero gate."""
        out = self.out(torch.sigmoid(self.g(a_norm)) * o)
        if self.conditioned:
            out = torch.sigmoid(self.out_gate(s)) * out
        return out

    def forward(self, a: Tensor, s: Tensor | None, pair_bias: Tensor, mask: Tensor) -> Tensor:
        """Full attention. ``a`` [..., N, c_a], ``pair_bias`` [..., H, N, N], ``mask`` [..., N]."""
        x = self.normed(a, s)
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        key_mask = mask[..., None, None, :]
        o = attention(q, k, v, pair_bias, key_mask).transpose(-2, -3).flatten(-2)
        return self.finish(x, o, s)


class PairBias(nn.Module):
    """``LinearNoBias(LayerNorm(z))`` -> per-head additive bias with heads moved to axis -3."""

    def __init__(self, c_z: int, n_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c_z)
        self.proj = linear_no_bias(c_z, n_heads)

    def forward(self, z: Tensor) -> Tensor:
        """[..., Q, K, c_z] -> [..., H, Q, K]."""
        return self.proj(self.norm(z)).movedim(-1, -3)


__all__ = [
    "NEG_INF",
    "AdaLN",
    "AttentionPairBias",
    "ConditionedTransitionBlock",
    "PairBias",
    "Transition",
    "attention",
    "gate_linear",
    "linear_no_bias",
    "maybe_checkpoint",
    "row_chunks",
    "set_activation_checkpointing",
]
