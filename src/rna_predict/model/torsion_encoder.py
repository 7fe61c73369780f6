"""Stage B torsion encoder: nucleotide k-mers -> transformer encoder -> (sin, cos) of 7 torsions.

TorsionBERT-style (Sun et al. 2024, "RNA-TorsionBERT"; SCIENCE.md 2): every residue is a
token, the centred k-mer around it (:func:`rna_predict.model.embedding.kmer_tokens`);
a pre-LayerNorm transformer encoder (Vaswani et al. 2017) contextualises the tokens; a
linear head predicts an unnormalised 2-vector per torsion which is projected onto the unit
circle, giving ``(sin, cos)`` of alpha, beta, gamma, delta, epsilon, zeta, chi
(``atom_layout.TORSIONS`` order).

Positions enter as a learned per-head relative-position attention bias over the same
chain-aware bins as AF3 Alg 3 (:func:`rna_predict.model.embedding.relpos_bins`), rather
than BERT's absolute positions, so random crops see the same encoding as full chains.

With ``ModelConfig.torsion_pairing`` the token embedding also receives a linear map of
:func:`rna_predict.model.embedding.residue_features` (base one-hot and the Stage A
pairing probability p_i = sum_j P_ij): whether a residue sits in a helix is what most
separates A-form torsions from loop torsions. ``torsion_dropout`` applies inside the
encoder only. On the 12 demo training structures a 1-mer, one-layer encoder with pairing
input and dropout 0.3 is the configuration that does not overfit (benchmark in README).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rna_predict.config import ModelConfig
from rna_predict.data.atom_layout import TORSIONS
from rna_predict.model.embedding import (
    N_BASES,
    N_RESIDUE_FEATURES,
    kmer_tokens,
    relpos_bins,
    residue_features,
)
from rna_predict.model.primitives import attention

N_TORSIONS = len(TORSIONS)


class EncoderLayer(nn.Module):
    """Pre-LN transformer encoder layer with a relative-position attention bias."""

    def __init__(self, c: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h = n_heads
        self.norm1 = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.ff = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, bias: Tensor, mask: Tensor) -> Tensor:
        """``x`` [B, L, c], ``bias`` [B, H, L, L], ``mask`` [B, L] bool."""
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.h, -1)).permute(2, 0, 3, 1, 4)
        o = attention(q, k, v, bias, mask[:, None, None, :]).transpose(1, 2).flatten(-2)
        x = x + self.drop(self.out(o))
        return x + self.drop(self.ff(self.norm2(x)))


class TorsionEncoder(nn.Module):
    """Stage B torsion branch. ``forward(batch) -> (sincos [B, L, 7, 2], hidden [B, L, c_token])``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.c_token
        self.k = cfg.kmer
        self.r_max = cfg.relpos_max
        self.h = cfg.torsion_heads
        self.embed = nn.Embedding((N_BASES + 1) ** cfg.kmer, c)
        self.pairing = nn.Linear(N_RESIDUE_FEATURES, c) if cfg.torsion_pairing else None
        self.relpos = nn.Embedding(2 * cfg.relpos_max + 2, cfg.torsion_heads)
        self.layers = nn.ModuleList(
            EncoderLayer(c, cfg.torsion_heads, cfg.torsion_dropout) for _ in range(cfg.torsion_layers)
        )
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, N_TORSIONS * 2)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        mask = batch["residue_mask"]
        tokens = kmer_tokens(batch["base_type"], batch["chain_index"], mask, self.k)
        x = self.embed(tokens)
        if self.pairing is not None:
            x = x + self.pairing(residue_features(batch))
        d_res, _ = relpos_bins(batch["residue_index"], batch["chain_index"], self.r_max)
        bias = self.relpos(d_res).permute(0, 3, 1, 2)
        for layer in self.layers:
            x = layer(x, bias, mask)
        hidden = self.norm(x) * mask[..., None].float()
        raw = self.head(hidden).unflatten(-1, (N_TORSIONS, 2))
        # project onto the unit circle; padded residues get (0, 1) (angle 0), masked out later
        raw = torch.where(mask[..., None, None], raw, torch.tensor([0.0, 1.0], device=raw.device))
        sincos = F.normalize(raw, dim=-1, eps=1e-6)
        return sincos, hidden


__all__ = ["N_TORSIONS", "TorsionEncoder"]
