"""Stage B pair track: the AlphaFold 3 Pairformer (AF3 supplement Alg 17).

Per block (pre-LayerNorm residual updates, masked to real residues):

    z += TriangleMultiplicationOutgoing(z)      AF3 Alg 12
    z += TriangleMultiplicationIncoming(z)      AF3 Alg 13
    z += TriangleAttentionStartingNode(z)       AF3 Alg 14
    z += TriangleAttentionEndingNode(z)         AF3 Alg 15 (= Alg 14 on z transposed)
    z += Transition(z)                          AF3 Alg 11
    s += AttentionPairBias(s, None, z, beta=0)  AF3 Alg 24 (no conditioning)
    s += Transition(s)                          AF3 Alg 11

Dropout (``ModelConfig.dropout``) replaces AF3's row/column-wise dropout by plain dropout.
Memory: triangle attention holds [B, L, H, L, L] logits. ``ModelConfig.chunk_size`` > 0
computes triangle attention and multiplication over chunks of that many rows of the
output (:func:`~rna_predict.model.primitives.row_chunks`; rows are independent, so the
result is the same up to float rounding), and :attr:`Pairformer.activation_checkpointing`
(``training.activation_checkpointing``) recomputes each block in the backward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rna_predict.config import ModelConfig
from rna_predict.model.primitives import (
    AttentionPairBias,
    PairBias,
    Transition,
    attention,
    linear_no_bias,
    maybe_checkpoint,
    row_chunks,
)


class TriangleMultiplication(nn.Module):
    """AF3 Alg 12 (``outgoing=True``: sum_k a_ik b_jk) and Alg 13 (incoming: sum_k a_ki b_kj)."""

    def __init__(self, c_z: int, outgoing: bool, c_hidden: int | None = None, chunk_size: int = 0) -> None:
        super().__init__()
        c = c_hidden or c_z
        self.outgoing = outgoing
        self.chunk_size = int(chunk_size)
        self.norm_in = nn.LayerNorm(c_z)
        self.a_gate, self.a_proj = linear_no_bias(c_z, c), linear_no_bias(c_z, c)
        self.b_gate, self.b_proj = linear_no_bias(c_z, c), linear_no_bias(c_z, c)
        self.g = linear_no_bias(c_z, c_z)
        self.norm_out = nn.LayerNorm(c)
        self.out = linear_no_bias(c, c_z)

    def forward(self, z: Tensor, pair_mask: Tensor) -> Tensor:
        """``z`` [B, L, L, c_z], ``pair_mask`` [B, L, L] float."""
        x = self.norm_in(z)
        m = pair_mask[..., None]
        a = torch.sigmoid(self.a_gate(x)) * self.a_proj(x) * m
        b = torch.sigmoid(self.b_gate(x)) * self.b_proj(x) * m
        if self.chunk_size > 0:
            return row_chunks(lambda i, j: self._rows(x, a, b, i, j), z.shape[1], self.chunk_size)
        if self.outgoing:
            prod = torch.einsum("bikc,bjkc->bijc", a, b)
        else:
            prod = torch.einsum("bkic,bkjc->bijc", a, b)
        return torch.sigmoid(self.g(x)) * self.out(self.norm_out(prod))

    def _rows(self, x: Tensor, a: Tensor, b: Tensor, i: int, j: int) -> Tensor:
        """Output rows ``i:j`` (the update of z_ij for those i): a chunk of the full product."""
        if self.outgoing:
            prod = torch.einsum("bikc,bjkc->bijc", a[:, i:j], b)
        else:
            prod = torch.einsum("bkic,bkjc->bijc", a[:, :, i:j], b)
        return torch.sigmoid(self.g(x[:, i:j])) * self.out(self.norm_out(prod))


class TriangleAttention(nn.Module):
    """AF3 Alg 14 (starting node) / Alg 15 (ending node, applied to z transposed).

    Starting node: o_ij = g_ij * sum_k softmax_k(q_ij . k_ik / sqrt(c) + b_jk) v_ik.
    """

    def __init__(self, c_z: int, n_heads: int, starting: bool, chunk_size: int = 0) -> None:
        super().__init__()
        self.starting = starting
        self.chunk_size = int(chunk_size)
        self.h = n_heads
        self.norm = nn.LayerNorm(c_z)
        self.q = linear_no_bias(c_z, c_z)
        self.k = linear_no_bias(c_z, c_z)
        self.v = linear_no_bias(c_z, c_z)
        self.bias = linear_no_bias(c_z, n_heads)
        self.g = linear_no_bias(c_z, c_z)
        self.out = linear_no_bias(c_z, c_z)

    def forward(self, z: Tensor, mask: Tensor) -> Tensor:
        """``z`` [B, L, L, c_z], ``mask`` [B, L] bool (residues)."""
        if not self.starting:
            z = z.transpose(1, 2)
        x = self.norm(z)

        def heads(t: Tensor) -> Tensor:  # [B, I, J, C] -> [B, I, H, J, d]
            return t.unflatten(-1, (self.h, -1)).transpose(2, 3)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        bias = self.bias(x).permute(0, 3, 1, 2)[:, None]  # [B, 1, H, J, K]: b_jk
        key_mask = mask[:, None, None, None, :]  # key k must be a residue
        if self.chunk_size > 0:  # rows i are independent: attention over chunks of rows
            o = row_chunks(lambda i, j: attention(q[:, i:j], k[:, i:j], v[:, i:j], bias, key_mask),
                           q.shape[1], self.chunk_size)
        else:
            o = attention(q, k, v, bias, key_mask)
        o = o.transpose(2, 3).flatten(-2)  # [B, I, J, C]
        out = self.out(torch.sigmoid(self.g(x)) * o)
        return out if self.starting else out.transpose(1, 2)


class PairformerBlock(nn.Module):
    """One block of AF3 Alg 17."""

    def __init__(self, c_s: int, c_z: int, n_heads: int, dropout: float, chunk_size: int = 0) -> None:
        super().__init__()
        self.tri_mul_out = TriangleMultiplication(c_z, outgoing=True, chunk_size=chunk_size)
        self.tri_mul_in = TriangleMultiplication(c_z, outgoing=False, chunk_size=chunk_size)
        self.tri_att_start = TriangleAttention(c_z, n_heads, starting=True, chunk_size=chunk_size)
        self.tri_att_end = TriangleAttention(c_z, n_heads, starting=False, chunk_size=chunk_size)
        self.pair_transition = Transition(c_z)
        self.pair_bias = PairBias(c_z, n_heads)
        self.single_attention = AttentionPairBias(c_s, 0, n_heads)
        self.single_transition = Transition(c_s)
        self.drop = nn.Dropout(dropout)

    def forward(self, s: Tensor, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        fmask = mask.float()
        pair_mask = fmask[:, :, None] * fmask[:, None, :]
        pm = pair_mask[..., None]
        z = z + self.drop(self.tri_mul_out(z, pair_mask)) * pm
        z = z + self.drop(self.tri_mul_in(z, pair_mask)) * pm
        z = z + self.drop(self.tri_att_start(z, mask)) * pm
        z = z + self.drop(self.tri_att_end(z, mask)) * pm
        z = z + self.pair_transition(z) * pm
        s = s + self.drop(self.single_attention(s, None, self.pair_bias(z), mask)) * fmask[..., None]
        s = s + self.single_transition(s) * fmask[..., None]
        return s, z


class Pairformer(nn.Module):
    """AF3 Alg 17: a stack of :class:`PairformerBlock` over (s [B, L, c_s], z [B, L, L, c_z]).

    ``activation_checkpointing`` (off by default; set by the training module from
    ``training.activation_checkpointing``) recomputes each block during backward.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.activation_checkpointing = False
        self.blocks = nn.ModuleList(
            PairformerBlock(cfg.c_s, cfg.c_z, cfg.pairformer_heads, cfg.dropout, cfg.chunk_size)
            for _ in range(cfg.pairformer_blocks)
        )

    def forward(self, s: Tensor, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.blocks:
            s, z = maybe_checkpoint(block, s, z, mask, enabled=self.activation_checkpointing)
        return s, z


__all__ = ["Pairformer", "PairformerBlock", "TriangleAttention", "TriangleMultiplication"]
