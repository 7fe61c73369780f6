"""Stage D atom track: atom layout, AtomTransformer, atom attention encoder and decoder.

- :func:`flatten_atoms`: the flat atom list of a batch, per sample exactly
  ``atom_layout.atom_to_token(SLOT_MASK[base_type])`` (the present template atoms in
  residue-then-slot order), padded to a multiple of :data:`QUERY_BLOCK`. Token -> atom
  conditioning gathers token tensors with these indices; nothing loops over atoms.
- :class:`AtomTransformer`: AF3 Alg 7, sequence-local atom attention: queries in blocks of
  32 atoms attend to the 128 atoms centred on their block (AF3 supplement 3.2), so memory
  is O(N_atom x 128) and atom-pair features exist only inside those windows.
- :class:`AtomAttentionEncoder`: AF3 Alg 5 (atom features from the atom layout: element,
  slot, base type, and the Stage C reference conformer; noisy positions; per-token
  aggregation by mean over the token's atoms).
- :class:`AtomAttentionDecoder`: AF3 Alg 6 (broadcast tokens to atoms, AtomTransformer,
  per-atom position update).

Shapes: B batch, K noised copies (size 1 for the noise-independent parts), N atoms,
L tokens (residues), W = :data:`KEY_WINDOW`, Q = :data:`QUERY_BLOCK`, nb = N / Q.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rna_predict.data.atom_layout import ELEMENTS, N_SLOTS, SLOT_MASK
from rna_predict.model.embedding import N_BASES
from rna_predict.model.primitives import (
    AttentionPairBias,
    ConditionedTransitionBlock,
    PairBias,
    attention,
    linear_no_bias,
)

QUERY_BLOCK = 32
KEY_WINDOW = 128
_ELEMENT_SYMBOLS = sorted({e for e in ELEMENTS.ravel() if e})
#: [4, 23] element index per (base, slot); 0 for padding slots (masked anyway)
ELEMENT_INDEX = np.vectorize(lambda e: _ELEMENT_SYMBOLS.index(e) if e else 0)(ELEMENTS).astype(np.int64)
N_ELEMENTS = len(_ELEMENT_SYMBOLS)
#: per-atom input features: element, slot, base type one-hots, reference position (3), flag
N_ATOM_FEATURES = N_ELEMENTS + N_SLOTS + N_BASES + 4
#: reference-conformer positions / offsets (Angstrom) are divided by these before the linears
REF_POS_SCALE = 16.0
REF_OFFSET_SCALE = 8.0


def flatten_atoms(base_type: Tensor, residue_mask: Tensor, block: int = QUERY_BLOCK) -> dict[str, Tensor]:
    """Flat atom layout of a batch.

    Returns ``flat`` [B, N] (index ``l * N_SLOTS + slot`` into [L, N_SLOTS]), ``tok``,
    ``slot``, ``base`` (base type of the atom's residue), ``element`` [B, N] long and
    ``mask`` [B, N] bool; N = the largest atom count in the batch rounded up to ``block``.
    """
    slot_mask = torch.as_tensor(SLOT_MASK, device=base_type.device)[base_type.clamp(0, N_BASES - 1)]
    flat_mask = (slot_mask & residue_mask[..., None]).flatten(1)  # [B, L*23]
    n_max = int(flat_mask.sum(1).max()) if flat_mask.numel() else 0
    n = max(block, -(-n_max // block) * block)
    if flat_mask.shape[1] < n:
        flat_mask = F.pad(flat_mask, (0, n - flat_mask.shape[1]))
    # stable sort puts the present atoms first, in residue-then-slot order
    order = torch.argsort((~flat_mask).to(torch.int8), dim=1, stable=True)[:, :n]
    mask = torch.gather(flat_mask, 1, order)
    length = base_type.shape[1]
    flat = torch.where(mask, order, torch.zeros_like(order))
    tok, slot = flat // N_SLOTS, flat % N_SLOTS
    tok = tok.clamp(max=max(length - 1, 0))
    base = torch.gather(base_type.clamp(0, N_BASES - 1), 1, tok)
    element = torch.as_tensor(ELEMENT_INDEX, device=base_type.device)[base, slot]
    return {"flat": flat, "tok": tok, "slot": slot, "base": base, "element": element, "mask": mask}


def gather_tokens(x: Tensor, tok: Tensor) -> Tensor:
    """Token tensor ``x`` [B, (K,) L, c] -> per-atom [B, (K,) N, c] by ``tok`` [B, N]."""
    if x.dim() == 3:
        return torch.gather(x, 1, tok[..., None].expand(-1, -1, x.shape[-1]))
    idx = tok[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[-1])
    return torch.gather(x, 2, idx)


def atoms_to_slots(x: Tensor, layout: dict[str, Tensor], length: int) -> Tensor:
    """Per-atom ``x`` [..., B, N, c] -> [..., B, L, N_SLOTS, c], zeros where no atom."""
    lead = x.shape[:-3]
    b, n, c = x.shape[-3:]
    x = x.reshape(-1, b, n, c) * layout["mask"][None, ..., None]
    out = x.new_zeros(x.shape[0], b, length * N_SLOTS, c)
    idx = layout["flat"][None, :, :, None].expand(x.shape[0], -1, -1, c)
    out = out.scatter_add(2, idx, x)
    return out.reshape(*lead, b, length, N_SLOTS, c)


def slots_to_atoms(x: Tensor, layout: dict[str, Tensor]) -> Tensor:
    """[B, L, N_SLOTS, c] -> per-atom [B, N, c]."""
    flat = x.flatten(1, 2)
    return torch.gather(flat, 1, layout["flat"][..., None].expand(-1, -1, flat.shape[-1]))


def key_windows(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Key indices [nb, W] of each query block (centred, AF3 32 x 128) and their validity."""
    nb = n // QUERY_BLOCK
    start = torch.arange(nb, device=device) * QUERY_BLOCK + QUERY_BLOCK // 2 - KEY_WINDOW // 2
    idx = start[:, None] + torch.arange(KEY_WINDOW, device=device)
    valid = (idx >= 0) & (idx < n)
    return idx.clamp(0, n - 1), valid


def gather_windows(x: Tensor, idx: Tensor) -> Tensor:
    """[..., N, c] -> [..., nb, W, c] keys of every block."""
    return x[..., idx, :]


def to_blocks(x: Tensor) -> Tensor:
    """[..., N, c] -> [..., nb, Q, c] query blocks."""
    return x.unflatten(-2, (-1, QUERY_BLOCK))


class LocalAtomAttention(AttentionPairBias):
    """AF3 Alg 24 with AF3 Alg 7's sequence-local mask realised by gathered key windows."""

    def forward(  # type: ignore[override]
        self, a: Tensor, s: Tensor, pair_bias: Tensor, key_mask: Tensor, idx: Tensor
    ) -> Tensor:
        """``a`` [B, K, N, c], ``s`` [B, 1, N, c_s], ``pair_bias`` [B, 1, nb, H, Q, W],
        ``key_mask`` [B, 1, nb, 1, 1, W], ``idx`` [nb, W] key indices of each block."""
        x = self.normed(a, s)
        q = self.split(to_blocks(self.q(x)))  # [B, K, nb, H, Q, d]
        k = self.split(gather_windows(self.k(x), idx))  # [B, K, nb, H, W, d]
        v = self.split(gather_windows(self.v(x), idx))
        o = attention(q, k, v, pair_bias, key_mask)  # [B, K, nb, H, Q, d]
        o = o.transpose(-2, -3).flatten(-2).flatten(-3, -2)  # [B, K, N, c]
        return self.finish(x, o, s)


class AtomTransformer(nn.Module):
    """AF3 Alg 7: DiffusionTransformer blocks (Alg 23) over atoms with local attention."""

    def __init__(self, c_atom: int, c_atompair: int, n_blocks: int, n_heads: int) -> None:
        super().__init__()
        self.attn = nn.ModuleList(LocalAtomAttention(c_atom, c_atom, n_heads) for _ in range(n_blocks))
        self.bias = nn.ModuleList(PairBias(c_atompair, n_heads) for _ in range(n_blocks))
        self.trans = nn.ModuleList(ConditionedTransitionBlock(c_atom, c_atom) for _ in range(n_blocks))

    def forward(self, q: Tensor, c: Tensor, p: Tensor, ctx: dict[str, Tensor]) -> Tensor:
        mask = ctx["atom_mask"][:, None, :, None].float()
        for attn, bias, trans in zip(self.attn, self.bias, self.trans):
            q = q + attn(q, c, bias(p), ctx["key_mask"], ctx["key_idx"]) * mask
            q = q + trans(q, c) * mask
        return q


class AtomAttentionEncoder(nn.Module):
    """AF3 Alg 5. :meth:`static` computes the noise-independent c_l, p_lm once per trunk
    pass; :meth:`forward` adds the noisy positions and runs the AtomTransformer."""

    def __init__(self, c_atom: int, c_atompair: int, c_token: int, c_s: int, c_z: int,
                 n_blocks: int, n_heads: int) -> None:
        super().__init__()
        self.embed_atom = nn.Linear(N_ATOM_FEATURES, c_atom)
        self.pair_offset = linear_no_bias(3, c_atompair)
        self.pair_inv_dist = linear_no_bias(1, c_atompair)
        self.pair_flags = linear_no_bias(3, c_atompair)
        self.s_norm = nn.LayerNorm(c_s)
        self.s_proj = linear_no_bias(c_s, c_atom)
        self.z_norm = nn.LayerNorm(c_z)
        self.z_proj = linear_no_bias(c_z, c_atompair)
        self.c_to_p_row = linear_no_bias(c_atom, c_atompair)
        self.c_to_p_col = linear_no_bias(c_atom, c_atompair)
        self.p_mlp = nn.Sequential(
            nn.ReLU(), linear_no_bias(c_atompair, c_atompair),
            nn.ReLU(), linear_no_bias(c_atompair, c_atompair),
            nn.ReLU(), linear_no_bias(c_atompair, c_atompair),
        )
        self.r_proj = linear_no_bias(3, c_atom)
        self.transformer = AtomTransformer(c_atom, c_atompair, n_blocks, n_heads)
        self.to_token = linear_no_bias(c_atom, c_token)

    def static(self, layout: dict[str, Tensor], ref_pos: Tensor | None, chain_index: Tensor,
               s_trunk: Tensor, z_cond: Tensor) -> dict[str, Tensor]:
        """Noise-independent atom tensors (AF3 Alg 5 lines 1-4, 9-14)."""
        tok, amask = layout["tok"], layout["mask"]
        n = tok.shape[1]
        key_idx, key_valid = key_windows(n, tok.device)
        has_ref = ref_pos is not None
        if ref_pos is None:
            ref_pos = tok.new_zeros(tok.shape + (3,), dtype=s_trunk.dtype)
        feats = torch.cat([
            F.one_hot(layout["element"], N_ELEMENTS).float(),
            F.one_hot(layout["slot"], N_SLOTS).float(),
            F.one_hot(layout["base"], N_BASES).float(),
            ref_pos / REF_POS_SCALE,
            torch.full_like(ref_pos[..., :1], float(has_ref)),
        ], dim=-1)
        c = self.embed_atom(feats) + gather_tokens(self.s_proj(self.s_norm(s_trunk)), tok)
        c = c * amask[..., None].float()
        # pair features inside the local windows: [B, nb, Q, W, .]
        def qk(x: Tensor) -> tuple[Tensor, Tensor]:
            """Per-atom [B, N, ...] -> (queries [B, nb, Q, 1, ...], keys [B, nb, 1, W, ...])."""
            return to_blocks(x.unsqueeze(-1))[..., 0].unsqueeze(3), x[:, key_idx].unsqueeze(2)

        kvalid = key_valid[None] & amask[:, key_idx]  # [B, nb, W]
        (qm, _), (qc, kc), (qt, kt) = qk(amask), qk(torch.gather(chain_index, 1, tok)), qk(tok)
        v = (qm & kvalid[:, :, None, :] & (qc == kc)).float()[..., None]  # same chain, both real
        # Stage C reference-conformer geometry (AF3 Alg 5 lines 2-4), Angstrom
        (rq, rk) = (to_blocks(ref_pos).unsqueeze(3), ref_pos[:, key_idx].unsqueeze(2))
        offset = rq - rk
        inv_dist = 1.0 / (1.0 + offset.square().sum(-1, keepdim=True))
        geom = self.pair_offset(offset / REF_OFFSET_SCALE) + self.pair_inv_dist(inv_dist)
        flags = torch.cat([v, (qt == kt).float()[..., None], torch.full_like(v, float(has_ref))], -1)
        p = geom * v * float(has_ref) + self.pair_flags(flags) * v
        # token pair features gathered onto atom pairs (AF3 Alg 5 line 11), no dense N x N copy
        zp = self.z_proj(self.z_norm(z_cond))  # [B, L, L, c_ap]
        pair_idx = (qt * zp.shape[1] + kt).flatten(1)  # [B, nb * Q * W]
        zp = torch.gather(zp.flatten(1, 2), 1, pair_idx[..., None].expand(-1, -1, zp.shape[-1]))
        p = p + zp.reshape(*v.shape[:-1], -1)
        p = p + self.c_to_p_row(F.relu(to_blocks(c))).unsqueeze(3)
        p = p + self.c_to_p_col(F.relu(c[:, key_idx])).unsqueeze(2)
        p = p + self.p_mlp(p)
        return {
            "c": c[:, None], "p": p[:, None],  # size-1 copy axis
            "atom_mask": amask, "tok": tok,
            "key_idx": key_idx, "key_mask": kvalid[:, None, :, None, None, :],
        }

    def forward(self, r: Tensor, ctx: dict[str, Tensor], n_tokens: int) -> tuple[Tensor, Tensor]:
        """``r`` [B, K, N, 3] scaled noisy positions -> (token activations [B, K, L, c_token], q_skip)."""
        q = ctx["c"] + self.r_proj(r)
        q = self.transformer(q, ctx["c"], ctx["p"], ctx)
        b, k, n, _ = q.shape
        mask = ctx["atom_mask"][:, None, :, None].float()
        val = F.relu(self.to_token(q)) * mask
        idx = ctx["tok"][:, None, :, None].expand(b, k, n, val.shape[-1])
        a = val.new_zeros(b, k, n_tokens, val.shape[-1]).scatter_add(2, idx, val)
        count = mask.new_zeros(b, 1, n_tokens, 1).scatter_add(2, ctx["tok"][:, None, :, None], mask)
        return a / count.clamp(min=1.0), q


class AtomAttentionDecoder(nn.Module):
    """AF3 Alg 6: token activations -> atoms (gather) + skip, AtomTransformer, position update."""

    def __init__(self, c_atom: int, c_atompair: int, c_token: int, n_blocks: int, n_heads: int) -> None:
        super().__init__()
        self.from_token = linear_no_bias(c_token, c_atom)
        self.transformer = AtomTransformer(c_atom, c_atompair, n_blocks, n_heads)
        self.norm = nn.LayerNorm(c_atom)
        self.out = linear_no_bias(c_atom, 3)

    def forward(self, a: Tensor, q_skip: Tensor, ctx: dict[str, Tensor]) -> Tensor:
        q = gather_tokens(self.from_token(a), ctx["tok"]) + q_skip
        q = self.transformer(q, ctx["c"], ctx["p"], ctx)
        return self.out(self.norm(q)) * ctx["atom_mask"][:, None, :, None].float()


__all__ = [
    "KEY_WINDOW",
    "QUERY_BLOCK",
    "AtomAttentionDecoder",
    "AtomAttentionEncoder",
    "AtomTransformer",
    "atoms_to_slots",
    "flatten_atoms",
    "gather_tokens",
    "slots_to_atoms",
]
