"""The full model: Stage B (torsion encoder + Pairformer), Stage C (NeRF), merger, Stage D.

ARCHITECTURE.md section 5. Data flow of :meth:`RNAModel.trunk`:

    batch --InputEmbedder--> s_inputs [B, L, c_s], z [B, L, L, c_z] (relpos + Stage A bpp)
          --TorsionEncoder--> sincos [B, L, 7, 2], h_tor [B, L, c_token]
            (model.torsion_backbone=torsionbert: rna_predict.model.torsionbert.TorsionBertEncoder)
          --Pairformer (AF3 Alg 17)--> s, z
          --NeRF (Stage C, rna_predict.model.nerf.build_coords)--> nerf_coords [B, L, 23, 3]
          --Merger--> s_trunk = s + MLP(LN(s), h_tor, sincos, pairing prob)
                      z_trunk = z + Linear(LN(z), P_ij, 1[P_ij > 0.5])

:meth:`RNAModel.denoise_noised_copies` runs the AF3 diffusion training pass (SCIENCE.md 4)
on ``noise_copies`` noised copies per trunk pass (the loss itself is
:func:`rna_predict.train.losses.training_loss`); :meth:`RNAModel.sample` runs the AF3 sampler (AF3 Alg 18).
The trunk's outputs condition the diffusion module (and, through the NeRF reference
conformer and the merger, the torsion encoder receives gradient from L_diffusion too).
That conditioning path carries the torsion outputs through :func:`scale_gradient` with
``ModelConfig.torsion_cond_grad`` (forward unchanged, backward multiplied): at full
strength the diffusion loss, 10-100x larger than L_angle, drags the torsion head away from
the measured torsions. After 20 epochs on the demo split the validation torsion MAE
(whole records) is 19.8 deg at 1.0, 19.0 deg at 0.05 and 19.1 deg at 0 (per-nucleotide
mean baseline 19.6 deg); AF3 likewise stops gradients from its heads into the trunk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rna_predict.config import ConfigError, ModelConfig
from rna_predict.model.atom_attention import atoms_to_slots, slots_to_atoms
from rna_predict.model.diffusion import DiffusionModule
from rna_predict.model.embedding import (
    N_RESIDUE_FEATURES,
    InputEmbedder,
    residue_features,
)
from rna_predict.model.pairformer import Pairformer
from rna_predict.model.preconditioning import (
    centre_random_augmentation,
    masked_centre,
    sample_training_sigma,
)
from rna_predict.model.ranking import torsion_consistency
from rna_predict.model.sampler import sample_diffusion
from rna_predict.model.torsion_encoder import N_TORSIONS, TorsionEncoder


def scale_gradient(x: Tensor, factor: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``factor`` in the backward."""
    if factor == 1.0:
        return x
    return x * factor + x.detach() * (1.0 - factor)


class Merger(nn.Module):
    """s_trunk = s + f(s, torsion features, Stage A pairing), z_trunk = z + g(z, Stage A)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.s_norm = nn.LayerNorm(cfg.c_s)
        self.t_norm = nn.LayerNorm(cfg.c_token)
        c_in = cfg.c_s + cfg.c_token + 2 * N_TORSIONS + N_RESIDUE_FEATURES
        self.s_mlp = nn.Sequential(nn.Linear(c_in, cfg.c_s), nn.SiLU(), nn.Linear(cfg.c_s, cfg.c_s))
        self.z_norm = nn.LayerNorm(cfg.c_z)
        self.z_lin = nn.Linear(cfg.c_z + 2, cfg.c_z)

    def forward(self, s: Tensor, z: Tensor, h_tor: Tensor, sincos: Tensor,
                batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        mask = batch["residue_mask"].to(s.dtype)
        feats = torch.cat(
            [self.s_norm(s), self.t_norm(h_tor), sincos.flatten(-2), residue_features(batch)], -1
        )
        s_trunk = (s + self.s_mlp(feats)) * mask[..., None]
        bpp = batch["bpp"]
        z_feats = torch.cat([self.z_norm(z), bpp[..., None], (bpp > 0.5).to(z.dtype)[..., None]], -1)
        z_trunk = (z + self.z_lin(z_feats)) * (mask[..., :, None] * mask[..., None, :])[..., None]
        return s_trunk, z_trunk


class RNAModel(nn.Module):
    """Multi-stage RNA structure model. Parameter groups: ``torsion_encoder``,
    ``pairformer`` (with the input embedder in ``embedder``), ``merger``, ``diffusion``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedder = InputEmbedder(cfg.c_s, cfg.c_z, cfg.relpos_max)
        if cfg.torsion_backbone == "native":
            self.torsion_encoder = TorsionEncoder(cfg)
        elif cfg.torsion_backbone == "torsionbert":  # pretrained checkpoint (transformers)
            from rna_predict.model.torsionbert import TorsionBertEncoder

            self.torsion_encoder = TorsionBertEncoder(cfg)
        else:
            raise ConfigError(f"model.torsion_backbone={cfg.torsion_backbone!r}: expected native or torsionbert")
        self.pairformer = Pairformer(cfg)
        self.merger = Merger(cfg)
        self.diffusion = DiffusionModule(cfg)

    # ------------------------------------------------------------------ trunk
    def trunk(self, batch: dict[str, Tensor]) -> dict[str, Tensor | None]:
        """Stages B, C and the merger. See the module docstring for the outputs."""
        mask = batch["residue_mask"]
        s_inputs, z = self.embedder(batch)
        sincos, h_tor = self.torsion_encoder(batch)
        s, z = self.pairformer(s_inputs, z, mask)
        g = self.cfg.torsion_cond_grad
        sincos_c, h_tor_c = scale_gradient(sincos, g), scale_gradient(h_tor, g)
        nerf_coords = None
        if self.cfg.use_nerf_coords:
            from rna_predict.model.nerf import build_coords  # Stage C

            nerf_coords = build_coords(sincos_c, batch["base_type"])
        s_trunk, z_trunk = self.merger(s, z, h_tor_c, sincos_c, batch)
        return {
            "sincos": sincos, "s": s, "z": z, "s_trunk": s_trunk, "z_trunk": z_trunk,
            "nerf_coords": nerf_coords, "s_inputs": s_inputs, "torsion_hidden": h_tor,
        }

    # ------------------------------------------------------- diffusion training
    def denoise_noised_copies(self, out: dict, batch: dict[str, Tensor], noise_copies: int,
                              generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """AF3 diffusion training inputs (SCIENCE.md 4): ``noise_copies`` centred, randomly
        rotated and translated copies of the ground truth per trunk pass, noised with
        sigma = sigma_data exp(-1.2 + 1.5 N(0, 1)) and denoised.

        Returns ``x_denoised`` [B, K, N, 3], ``x_target`` (the augmented truth, same shape),
        ``mask`` [B, N] (atoms with ground truth) and ``sigma`` [B, K]; the losses of
        :mod:`rna_predict.train.losses` turn them into L_diffusion.
        """
        ctx = self.diffusion.prepare(out, batch)
        layout = ctx["layout"]
        x_true, true_mask = self.ground_truth_atoms(batch, layout)
        b, n = true_mask.shape
        k = int(noise_copies)
        x = x_true[:, None].expand(b, k, n, 3)
        x_aug = centre_random_augmentation(x, layout["mask"][:, None].expand(b, k, n), generator=generator)
        sigma = sample_training_sigma((b, k), self.cfg.sigma_data, generator=generator, device=x.device)
        noise = torch.randn(x_aug.shape, generator=generator, device=x.device)
        x_noisy = (x_aug + sigma[..., None, None] * noise) * layout["mask"][:, None, :, None]
        x_den = self.diffusion.denoise(x_noisy, sigma, ctx)
        return {"x_denoised": x_den, "x_target": x_aug, "mask": true_mask, "sigma": sigma}

    @staticmethod
    def ground_truth_atoms(batch: dict[str, Tensor], layout: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Flat true coordinates [B, N, 3] and their mask [B, N].

        Template atoms without ground truth (unresolved in the file) are placed on the
        centroid of their residue's resolved atoms, so the noised input stays sensible;
        the losses ignore them through the mask.
        """
        coords, amask = batch["coords"], batch["atom_mask"] & batch["residue_mask"][..., None]
        m = amask.to(coords.dtype)[..., None]
        centroid = (coords * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp(min=1.0)
        filled = torch.where(amask[..., None], coords, centroid.expand_as(coords))
        x = slots_to_atoms(filled, layout)
        true_mask = slots_to_atoms(amask[..., None].to(coords.dtype), layout)[..., 0] > 0.5
        true_mask = true_mask & layout["mask"]
        x = (x - masked_centre(x, true_mask)) * layout["mask"][..., None]
        return x, true_mask

    # ----------------------------------------------------------------- sample
    @torch.no_grad()
    def sample(self, batch: dict[str, Tensor], steps: int, n_samples: int,
               generator: torch.Generator | None = None, rank: bool = True,
               refine_steps: int = 0) -> Tensor:
        """AF3 sampler (Alg 18): [n_samples, B, L, 23, 3] coordinates, 0 where no atom.

        With ``rank`` the samples of each batch element are ordered best first by
        :func:`rna_predict.model.ranking.torsion_consistency` (agreement with the Stage B
        torsions; no ground truth), so sample 0 is the model's top-1 prediction. With
        ``refine_steps`` > 0 every sample is then refined onto ideal covalent geometry
        (:func:`rna_predict.model.refine.refine_structure`).
        """
        was_training = self.training
        self.eval()
        try:
            out = self.trunk(batch)
            ctx = self.diffusion.prepare(out, batch)
            layout = ctx["layout"]
            b, n = layout["mask"].shape
            x = sample_diffusion(
                lambda xn, sig: self.diffusion.denoise(xn, sig, ctx),
                (b, n_samples, n, 3), layout["mask"], steps, self.cfg.sigma_data, generator,
            )
            slots = atoms_to_slots(x.transpose(0, 1), layout, batch["base_type"].shape[1])
            if rank and n_samples > 1:
                order = torsion_consistency(slots, out["sincos"], batch).argsort(dim=0)  # [n, B]
                slots = torch.gather(slots, 0, order[..., None, None, None].expand_as(slots))
            if refine_steps > 0:
                slots = self._refine(slots, out["sincos"], batch, int(refine_steps))
            return slots
        finally:
            self.train(was_training)

    @staticmethod
    def _refine(slots: Tensor, sincos: Tensor, batch: dict[str, Tensor], steps: int) -> Tensor:
        """Each sample's residues refined in torsion space; padding stays 0."""
        from rna_predict.model.refine import refine_structure

        out = torch.zeros_like(slots)
        for b in range(slots.shape[1]):
            keep = batch["residue_mask"][b]
            for k in range(slots.shape[0]):
                out[k, b, keep] = refine_structure(
                    slots[k, b, keep], sincos[b, keep], batch["base_type"][b, keep],
                    batch["chain_index"][b, keep], steps=steps,
                ).to(slots.dtype)
        return out


__all__ = ["Merger", "RNAModel", "scale_gradient"]
