"""Model building blocks on synthetic inputs: atom layout, embeddings, masking, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rna_predict.config import ModelConfig
from rna_predict.data.atom_layout import BASES, N_SLOTS, SLOT_MASK, atom_to_token
from rna_predict.model.atom_attention import (
    KEY_WINDOW,
    QUERY_BLOCK,
    atoms_to_slots,
    flatten_atoms,
    key_windows,
    slots_to_atoms,
)
from rna_predict.model.embedding import kmer_tokens, relpos_bins
from rna_predict.model.rna_model import RNAModel
from rna_predict.train.losses import training_loss
from rna_predict.data.dataset import collate

SMALL = ModelConfig(c_s=16, c_z=8, c_atom=8, c_atompair=8, c_token=16, torsion_heads=2,
                    pairformer_heads=2, diffusion_heads=2, atom_heads=2, relpos_max=8)


def synthetic_example(seq: str, chains: list[int], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = len(seq)
    bpp = torch.rand(n, n, generator=g) * 0.1
    bpp = (bpp + bpp.T) / 2
    bpp.fill_diagonal_(0)
    base = torch.tensor(["ACGU".index(c) for c in seq])
    atom_mask = torch.as_tensor(SLOT_MASK)[base].clone()
    atom_mask[0, 0:3] = False  # 5' phosphate missing, as in many PDB entries
    angles = torch.rand(n, 7, generator=g) * 6 - 3
    angle_mask = torch.ones(n, 7, dtype=torch.bool)
    angle_mask[0, 0] = angle_mask[-1, 4:6] = False
    return {
        "id": f"syn{seed}", "base_type": base, "residue_index": torch.arange(n),
        "chain_index": torch.tensor(chains), "bpp": bpp,
        "coords": (torch.randn(n, N_SLOTS, 3, generator=g) * 2 + torch.arange(n)[:, None, None] * 3.0)
        * atom_mask[..., None],
        "atom_mask": atom_mask, "angles": angles * angle_mask, "angle_mask": angle_mask,
    }


def test_flatten_atoms_matches_atom_layout_atom_to_token():
    a = synthetic_example("ACGUAG", [0] * 6, 0)
    b = synthetic_example("GGCUUCAAG", [0] * 5 + [1] * 4, 1)
    batch = collate([a, b])
    layout = flatten_atoms(batch["base_type"], batch["residue_mask"])
    assert layout["mask"].shape[1] % QUERY_BLOCK == 0
    for i, ex in enumerate((a, b)):
        tmpl = SLOT_MASK[ex["base_type"].numpy()]
        tok, slot = atom_to_token(tmpl)
        n = len(tok)
        assert int(layout["mask"][i].sum()) == n
        assert np.array_equal(layout["tok"][i, :n].numpy(), tok)
        assert np.array_equal(layout["slot"][i, :n].numpy(), slot)
        assert not layout["mask"][i, n:].any()
    # gather / scatter round trip on template atoms
    x = torch.randn(2, batch["base_type"].shape[1], N_SLOTS, 3)
    tmpl = torch.as_tensor(SLOT_MASK)[batch["base_type"]] & batch["residue_mask"][..., None]
    back = atoms_to_slots(slots_to_atoms(x, layout)[None], layout, x.shape[1])[0]
    assert torch.equal(back, x * tmpl[..., None])


def test_key_windows_are_centred_on_query_blocks():
    idx, valid = key_windows(4 * QUERY_BLOCK, torch.device("cpu"))
    assert idx.shape == (4, KEY_WINDOW)
    for blk in range(4):
        lo = blk * QUERY_BLOCK + QUERY_BLOCK // 2 - KEY_WINDOW // 2
        want = [k for k in range(lo, lo + KEY_WINDOW) if 0 <= k < 4 * QUERY_BLOCK]
        assert idx[blk][valid[blk]].tolist() == want
        # every query of the block sees at least +-48 neighbours
        assert set(range(max(0, blk * 32 - 48), min(128, blk * 32 + 80))) <= set(want)


def test_relpos_bins_are_chain_aware():
    ri = torch.tensor([[0, 1, 2, 40, 0, 1]])
    ci = torch.tensor([[0, 0, 0, 0, 1, 1]])
    d_res, d_chain = relpos_bins(ri, ci, r_max=8)
    assert d_res[0, 0, 1] == 8 - 1 and d_res[0, 1, 0] == 8 + 1 and d_res[0, 2, 2] == 8
    assert d_res[0, 3, 0] == 16 and d_res[0, 0, 3] == 0  # clipped
    assert d_res[0, 0, 4] == 17  # other chain
    assert d_chain[0, 0, 1] == 5 and d_chain[0, 0, 4] == 2 - 1  # same chain bin, offset -1 -> 1


def test_kmer_tokens_centred_and_padded_at_chain_ends():
    base = torch.tensor([[0, 1, 2, 3, 0]])  # A C G U | A
    chain = torch.tensor([[0, 0, 0, 0, 1]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    tok = kmer_tokens(base, chain, mask, k=3)
    pad = len(BASES)
    enc = lambda a, b, c: (a * 5 + b) * 5 + c
    assert tok[0].tolist() == [enc(pad, 0, 1), enc(0, 1, 2), enc(1, 2, 3), enc(2, 3, pad), enc(pad, 0, pad)]


def test_trunk_shapes_unit_sincos_and_padding_invariance():
    torch.manual_seed(0)
    model = RNAModel(SMALL).eval()
    short = synthetic_example("ACGUAGCU", [0] * 8, 2)
    long_ = synthetic_example("GGCAUUCGAAUGCCAAU", [0] * 9 + [1] * 8, 3)
    alone = model.trunk(collate([short]))
    both = model.trunk(collate([short, long_]))
    n = 8
    assert both["sincos"].shape == (2, 17, 7, 2)
    assert both["z_trunk"].shape == (2, 17, 17, SMALL.c_z)
    assert both["nerf_coords"].shape == (2, 17, N_SLOTS, 3)
    assert torch.allclose(both["sincos"].norm(dim=-1), torch.ones(2, 17, 7), atol=1e-5)
    for key in ("sincos", "s_trunk", "z_trunk", "nerf_coords"):
        a = alone[key][0]
        b = both[key][0, :n, :n] if key == "z_trunk" else both[key][0, :n]
        # NeRF chains float32 rotations along the strand: 1e-7 in (sin, cos) -> ~1e-3 A
        assert torch.allclose(a, b, atol=5e-3 if key == "nerf_coords" else 1e-4), key


def test_denoiser_padding_invariance():
    torch.manual_seed(0)
    model = RNAModel(SMALL).eval()
    short = synthetic_example("ACGUAGCU", [0] * 8, 4)
    long_ = synthetic_example("GGCAUUCGAAUGCCAAU", [0] * 17, 5)
    outs = []
    for batch in (collate([short]), collate([short, long_])):
        with torch.no_grad():
            ctx = model.diffusion.prepare(model.trunk(batch), batch)
            x, _ = model.ground_truth_atoms(batch, ctx["layout"])
            xn = x[:, None].repeat(1, 2, 1, 1) + 0.5
            sigma = torch.tensor([[2.0, 30.0]]).expand(x.shape[0], 2)
            outs.append(model.diffusion.denoise(xn, sigma, ctx)[0])
    n = int(outs[0].shape[1])
    k = int(flatten_atoms(collate([short])["base_type"], collate([short])["residue_mask"])["mask"].sum())
    assert torch.allclose(outs[0][:, :k], outs[1][:, :k], atol=1e-4)
    assert n >= k


def test_sample_shape_and_masked_slots():
    torch.manual_seed(0)
    model = RNAModel(SMALL)
    batch = collate([synthetic_example("ACGUAGCU", [0] * 8, 6), synthetic_example("GGCAU", [0] * 5, 7)])
    x = model.sample(batch, steps=3, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 2, 8, N_SLOTS, 3)
    assert torch.isfinite(x).all()
    tmpl = torch.as_tensor(SLOT_MASK)[batch["base_type"]] & batch["residue_mask"][..., None]
    assert torch.all(x[:, ~tmpl] == 0)
    assert (x[:, tmpl].abs().sum(-1) > 0).all()
    assert model.training  # restored
    again = model.sample(batch, steps=3, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


@pytest.mark.parametrize("use_nerf", [True, False])
def test_loss_runs_with_and_without_nerf(use_nerf):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**SMALL.__dict__, "use_nerf_coords": use_nerf})
    model = RNAModel(cfg)
    batch = collate([synthetic_example("ACGUAGCUUA", [0] * 10, 8)])
    out = training_loss(model, batch, 1.0, 1.0, 2, generator=torch.Generator().manual_seed(0))
    assert set(out) >= {"total", "angle", "diffusion", "mse", "lddt"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    out["total"].backward()
