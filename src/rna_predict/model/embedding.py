"""Input embeddings: residue features, relative positions, nucleotide k-mers, Stage A pairs.

- :func:`relpos_bins` / :class:`RelativePositionEncoding`: AF3 Alg 3 (relative position
  encoding), chain-aware: residues of one chain get a clipped sequence-offset bin in
  ``[0, 2 r_max]``; residues of different chains share the extra bin ``2 r_max + 1``; a
  clipped relative chain index (AF3 ``d_chain``, ``r_max`` 2) is one-hot encoded too.
  (No entity/symmetry features: one record is one complex of distinct chains.)
- :func:`kmer_tokens`: centred nucleotide k-mers (TorsionBERT-style tokens, Sun et al.
  2024); positions outside the chain are the padding letter.
- :class:`InputEmbedder`: AF3 Alg 2 analogue for RNA: per-residue input features
  ``s_inputs`` = base one-hot + Stage A pairing probability; the initial pair
  representation ``z`` (AF3 Alg 1 lines 2-5) = ``LinearNoBias(s_i) + LinearNoBias(s_j)``
  + relative position + a linear embedding of the ViennaRNA base-pair probability.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rna_predict.data.atom_layout import BASES
from rna_predict.model.primitives import linear_no_bias

N_BASES = len(BASES)
#: width of :func:`residue_features`
N_RESIDUE_FEATURES = N_BASES + 2
#: chain offsets are clipped to [-R_CHAIN, R_CHAIN] (AF3 Alg 3, r_max for chains = 2)
R_CHAIN = 2


def residue_features(batch: dict[str, Tensor]) -> Tensor:
    """[B, L, N_BASES + 2]: base one-hot, pairing probability p_i = sum_j P_ij, and 1 - p_i."""
    mask = batch["residue_mask"].float()[..., None]
    onehot = F.one_hot(batch["base_type"].clamp(0, N_BASES - 1), N_BASES).float()
    paired = batch["bpp"].sum(-1).clamp(0.0, 1.0)[..., None]
    return torch.cat([onehot, paired, 1.0 - paired], dim=-1) * mask


def relpos_bins(residue_index: Tensor, chain_index: Tensor, r_max: int) -> tuple[Tensor, Tensor]:
    """AF3 Alg 3 bins [B, L, L]: (position bin in [0, 2 r_max + 1], chain bin in [0, 2 R_CHAIN + 1])."""
    same_chain = chain_index[..., :, None] == chain_index[..., None, :]
    d_res = (residue_index[..., :, None] - residue_index[..., None, :] + r_max).clamp(0, 2 * r_max)
    d_res = torch.where(same_chain, d_res, torch.full_like(d_res, 2 * r_max + 1))
    d_chain = (chain_index[..., :, None] - chain_index[..., None, :] + R_CHAIN).clamp(0, 2 * R_CHAIN)
    d_chain = torch.where(same_chain, torch.full_like(d_chain, 2 * R_CHAIN + 1), d_chain)
    return d_res, d_chain


class RelativePositionEncoding(nn.Module):
    """AF3 Alg 3 (chain-aware relative position encoding) -> [B, L, L, c_out]."""

    def __init__(self, r_max: int, c_out: int) -> None:
        super().__init__()
        self.r_max = r_max
        self.n_res = 2 * r_max + 2
        self.n_chain = 2 * R_CHAIN + 2
        self.proj = linear_no_bias(self.n_res + self.n_chain, c_out)

    def forward(self, residue_index: Tensor, chain_index: Tensor) -> Tensor:
        d_res, d_chain = relpos_bins(residue_index, chain_index, self.r_max)
        feats = torch.cat(
            [F.one_hot(d_res, self.n_res), F.one_hot(d_chain, self.n_chain)], dim=-1
        ).float()
        return self.proj(feats)


def kmer_tokens(base_type: Tensor, chain_index: Tensor, residue_mask: Tensor, k: int) -> Tensor:
    """Centred k-mer token id of every residue, [B, L] long in [0, (N_BASES + 1) ** k).

    Letters are the base index, or ``N_BASES`` (padding) where the window leaves the
    chain, the crop, or the padded batch. Residue ``i`` uses positions
    ``i - k // 2 .. i - k // 2 + k - 1``.
    """
    pad = N_BASES
    letters = torch.where(residue_mask, base_type.clamp(0, N_BASES - 1), torch.full_like(base_type, pad))
    chains = torch.where(residue_mask, chain_index, torch.full_like(chain_index, -1))
    length = letters.shape[-1]
    token = torch.zeros_like(letters)
    for j in range(k):  # loop over the k window offsets (k is small), not over residues
        off = j - k // 2
        idx = (torch.arange(length, device=letters.device) + off).clamp(0, max(length - 1, 0))
        inside = (torch.arange(length, device=letters.device) + off >= 0) & (
            torch.arange(length, device=letters.device) + off < length
        )
        shifted = letters[..., idx]
        ok = inside & (chains[..., idx] == chains) & (chains >= 0)
        letter = torch.where(ok, shifted, torch.full_like(shifted, pad))
        token = token * (N_BASES + 1) + letter
    return token


class InputEmbedder(nn.Module):
    """Residue inputs -> ``s_inputs`` [B, L, c_s] and initial ``z`` [B, L, L, c_z].

    AF3 Alg 1 lines 2-5 / Alg 2 analogue; the MSA and template embedders of AF3 have no
    counterpart here. The Stage A matrix enters z through ``LinearNoBias([P_ij, 1[P_ij > 0.5]])``.
    """

    def __init__(self, c_s: int, c_z: int, r_max: int) -> None:
        super().__init__()
        self.single = nn.Linear(N_RESIDUE_FEATURES, c_s)
        self.left = linear_no_bias(c_s, c_z)
        self.right = linear_no_bias(c_s, c_z)
        self.relpos = RelativePositionEncoding(r_max, c_z)
        self.bpp = linear_no_bias(2, c_z)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        mask = batch["residue_mask"].float()
        s_inputs = self.single(residue_features(batch)) * mask[..., None]
        bpp = batch["bpp"]
        z = (
            self.left(s_inputs)[..., :, None, :]
            + self.right(s_inputs)[..., None, :, :]
            + self.relpos(batch["residue_index"], batch["chain_index"])
            + self.bpp(torch.stack([bpp, (bpp > 0.5).float()], dim=-1))
        )
        z = z * (mask[..., :, None] * mask[..., None, :])[..., None]
        return s_inputs, z


__all__ = [
    "N_RESIDUE_FEATURES",
    "InputEmbedder",
    "RelativePositionEncoding",
    "kmer_tokens",
    "relpos_bins",
    "residue_features",
]
