"""Stage D: the AlphaFold 3 diffusion module (AF3 supplement Algorithms 20-26), small.

- :class:`FourierEmbedding`      AF3 Alg 22 (fixed random frequencies, stored as buffers)
- :class:`DiffusionConditioning` AF3 Alg 21 (pair: trunk z + relative position; single:
                                 s_trunk + s_inputs + Fourier(c_noise); 2 transitions each)
- :class:`DiffusionTransformer`  AF3 Alg 23 (AttentionPairBias Alg 24 + conditioned
                                 transition Alg 25, residual as in Protenix)
- :class:`DiffusionModule`       AF3 Alg 20 with EDM preconditioning (SCIENCE.md 4,
                                 :mod:`rna_predict.model.preconditioning`).

The module is split into :meth:`DiffusionModule.prepare` (everything that depends only on
the trunk: atom layout, Stage C reference conformer, conditioned pair z, atom features
c_l and atom-pair features p_lm, token pair biases) and :meth:`DiffusionModule.denoise`
(one call per noise level, on K copies at once), so that the training loss's noised
copies and the sampler's 200 steps reuse the trunk-side work.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rna_predict.config import ModelConfig
from rna_predict.model.atom_attention import (
    AtomAttentionDecoder,
    AtomAttentionEncoder,
    flatten_atoms,
    slots_to_atoms,
)
from rna_predict.model.embedding import RelativePositionEncoding
from rna_predict.model.preconditioning import (
    c_in,
    c_noise,
    c_out,
    c_skip,
    masked_centre,
)
from rna_predict.model.primitives import (
    AttentionPairBias,
    ConditionedTransitionBlock,
    PairBias,
    Transition,
    linear_no_bias,
    maybe_checkpoint,
)

FOURIER_DIM = 256


class FourierEmbedding(nn.Module):
    """AF3 Alg 22: ``cos(2 pi (t w + b))`` with w, b ~ N(0, 1) drawn once at construction."""

    def __init__(self, dim: int = FOURIER_DIM) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(dim))
        self.register_buffer("b", torch.randn(dim))

    def forward(self, t: Tensor) -> Tensor:
        return torch.cos(2 * math.pi * (t[..., None] * self.w + self.b))


class DiffusionConditioning(nn.Module):
    """AF3 Alg 21. ``pair`` is noise-independent, ``single`` adds the noise embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.relpos = RelativePositionEncoding(cfg.relpos_max, cfg.c_z)
        self.z_norm = nn.LayerNorm(2 * cfg.c_z)
        self.z_proj = linear_no_bias(2 * cfg.c_z, cfg.c_z)
        self.z_trans = nn.ModuleList(Transition(cfg.c_z, 2) for _ in range(2))
        self.s_norm = nn.LayerNorm(2 * cfg.c_s)
        self.s_proj = linear_no_bias(2 * cfg.c_s, cfg.c_s)
        self.fourier = FourierEmbedding()
        self.n_norm = nn.LayerNorm(FOURIER_DIM)
        self.n_proj = linear_no_bias(FOURIER_DIM, cfg.c_s)
        self.s_trans = nn.ModuleList(Transition(cfg.c_s, 2) for _ in range(2))

    def pair(self, z_trunk: Tensor, batch: dict[str, Tensor]) -> Tensor:
        rel = self.relpos(batch["residue_index"], batch["chain_index"])
        z = self.z_proj(self.z_norm(torch.cat([z_trunk, rel], dim=-1)))
        for t in self.z_trans:
            z = z + t(z)
        return z

    def single_base(self, s_trunk: Tensor, s_inputs: Tensor) -> Tensor:
        return self.s_proj(self.s_norm(torch.cat([s_trunk, s_inputs], dim=-1)))

    def single(self, s_base: Tensor, noise: Tensor) -> Tensor:
        """``s_base`` [B, L, c_s], ``noise`` = c_noise(sigma) [B, K] -> [B, K, L, c_s]."""
        s = s_base[:, None] + self.n_proj(self.n_norm(self.fourier(noise)))[:, :, None, :]
        for t in self.s_trans:
            s = s + t(s)
        return s


class DiffusionTransformer(nn.Module):
    """AF3 Alg 23 over tokens: ``a += AttentionPairBias(a, s, z); a += ConditionedTransition(a, s)``.

    ``activation_checkpointing`` (off by default; set by the training module from
    ``training.activation_checkpointing``) recomputes each block during backward.
    """

    def __init__(self, c_token: int, c_s: int, c_z: int, n_blocks: int, n_heads: int) -> None:
        super().__init__()
        self.activation_checkpointing = False
        self.bias = nn.ModuleList(PairBias(c_z, n_heads) for _ in range(n_blocks))
        self.attn = nn.ModuleList(AttentionPairBias(c_token, c_s, n_heads) for _ in range(n_blocks))
        self.trans = nn.ModuleList(ConditionedTransitionBlock(c_token, c_s) for _ in range(n_blocks))

    def pair_biases(self, z: Tensor) -> list[Tensor]:
        """Per-block pair biases [B, 1, H, L, L] (noise-independent, computed once)."""
        return [bias(z)[:, None] for bias in self.bias]

    def forward(self, a: Tensor, s: Tensor, biases: list[Tensor], mask: Tensor) -> Tensor:
        m = mask[:, None, :, None].float()
        key_mask = mask[:, None, :]
        for i, bias in enumerate(biases):
            a = maybe_checkpoint(self._block(i), a, s, bias, key_mask, m,
                                 enabled=self.activation_checkpointing)
        return a

    def _block(self, i: int):
        attn, trans = self.attn[i], self.trans[i]

        def block(a: Tensor, s: Tensor, bias: Tensor, key_mask: Tensor, m: Tensor) -> Tensor:
            a = a + attn(a, s, bias, key_mask) * m
            return a + trans(a, s) * m

        return block


class DiffusionModule(nn.Module):
    """AF3 Alg 20: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise(sigma), trunk)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.sigma_data = cfg.sigma_data
        self.conditioning = DiffusionConditioning(cfg)
        self.encoder = AtomAttentionEncoder(
            cfg.c_atom, cfg.c_atompair, cfg.c_token, cfg.c_s, cfg.c_z,
            cfg.atom_encoder_blocks, cfg.atom_heads,
        )
        self.s_norm = nn.LayerNorm(cfg.c_s)
        self.s_to_a = linear_no_bias(cfg.c_s, cfg.c_token)
        self.transformer = DiffusionTransformer(
            cfg.c_token, cfg.c_s, cfg.c_z, cfg.diffusion_blocks, cfg.diffusion_heads
        )
        self.a_norm = nn.LayerNorm(cfg.c_token)
        self.decoder = AtomAttentionDecoder(
            cfg.c_atom, cfg.c_atompair, cfg.c_token, cfg.atom_decoder_blocks, cfg.atom_heads
        )

    def prepare(self, trunk: dict[str, Tensor], batch: dict[str, Tensor]) -> dict:
        """Noise-independent context from the trunk outputs and the batch."""
        layout = flatten_atoms(batch["base_type"], batch["residue_mask"])
        ref = trunk.get("nerf_coords")
        ref_pos = None
        if ref is not None:
            ref_pos = slots_to_atoms(ref, layout)
            ref_pos = (ref_pos - masked_centre(ref_pos, layout["mask"])) * layout["mask"][..., None]
        z = self.conditioning.pair(trunk["z_trunk"], batch)
        ctx = self.encoder.static(layout, ref_pos, batch["chain_index"], trunk["s_trunk"], z)
        ctx.update(
            layout=layout,
            residue_mask=batch["residue_mask"],
            n_tokens=batch["base_type"].shape[1],
            s_base=self.conditioning.single_base(trunk["s_trunk"], trunk["s_inputs"]),
            token_biases=self.transformer.pair_biases(z),
        )
        return ctx

    def network(self, r: Tensor, noise: Tensor, ctx: dict) -> Tensor:
        """F: scaled positions ``r`` [B, K, N, 3], ``noise`` [B, K] -> update [B, K, N, 3]."""
        s = self.conditioning.single(ctx["s_base"], noise)
        a, q_skip = self.encoder(r, ctx, ctx["n_tokens"])
        a = a + self.s_to_a(self.s_norm(s))
        a = self.transformer(a, s, ctx["token_biases"], ctx["residue_mask"])
        return self.decoder(self.a_norm(a), q_skip, ctx)

    def denoise(self, x_noisy: Tensor, sigma: Tensor, ctx: dict) -> Tensor:
        """Preconditioned denoiser D(x_noisy, sigma): ``x_noisy`` [B, K, N, 3], ``sigma`` [B, K]."""
        sd = self.sigma_data
        sig = sigma[..., None, None]
        update = self.network(x_noisy * c_in(sig, sd), c_noise(sigma, sd), ctx)
        out = c_skip(sig, sd) * x_noisy + c_out(sig, sd) * update
        return out * ctx["atom_mask"][:, None, :, None].to(out.dtype)


__all__ = ["DiffusionConditioning", "DiffusionModule", "DiffusionTransformer", "FourierEmbedding"]
