"""Memory options give the same results: ``model.chunk_size`` (row-chunked triangle
attention / multiplication, AF3 Alg 12-15) and activation checkpointing of the Pairformer
and diffusion transformer blocks, compared with the plain model on a real demo batch —
outputs AND gradients of every parameter."""

from __future__ import annotations

import pytest
import torch

from rna_predict.config import ModelConfig

TINY = dict(c_s=16, c_z=8, c_atom=8, c_atompair=4, c_token=16, torsion_layers=1, torsion_heads=2,
            pairformer_blocks=2, pairformer_heads=2, diffusion_blocks=2, diffusion_heads=2,
            atom_heads=1, torsion_dropout=0.0)


@pytest.fixture(scope="module")
def batch(demo_records):
    """Two real demo records cropped to 37 residues (a crop no chunk size divides)."""
    from rna_predict.data.dataset import RecordDataset, collate
    from rna_predict.data.split import read_split_ids

    ids = read_split_ids(demo_records / "splits", "train")[:2]
    ds = RecordDataset(demo_records / "angles", demo_records / "features", ids, 37, 0)
    return collate([ds[0], ds[1]])


def _model(chunk_size: int = 0, checkpointing: bool = False):
    from rna_predict.model.primitives import set_activation_checkpointing
    from rna_predict.model.rna_model import RNAModel

    torch.manual_seed(0)
    model = RNAModel(ModelConfig(**TINY, chunk_size=chunk_size))
    set_activation_checkpointing(model, checkpointing)
    return model


def _loss_and_grads(model, batch):
    from rna_predict.train.losses import training_loss

    out = training_loss(model, batch, 1.0, 1.0, noise_copies=2,
                        generator=torch.Generator().manual_seed(5))
    out["total"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("chunk_size,checkpointing", [(5, False), (0, True), (16, True)])
def test_memory_options_match_plain_outputs_and_gradients(batch, chunk_size, checkpointing):
    plain_out, plain_grads = _loss_and_grads(_model(), batch)
    out, grads = _loss_and_grads(_model(chunk_size, checkpointing), batch)
    assert len(plain_grads) > 100 and grads.keys() == plain_grads.keys()
    for key in ("total", "angle", "diffusion"):
        assert torch.allclose(out[key], plain_out[key], rtol=1e-5, atol=1e-6), key
    for name, g in plain_grads.items():  # float32 sums in another order: relative to the scale
        scale = float(g.abs().max())
        assert float((grads[name] - g).abs().max()) <= 1e-4 * scale + 1e-7, name
    # gradients reach the Pairformer's triangle layers and the diffusion transformer
    assert plain_grads["pairformer.blocks.1.tri_att_end.q.weight"].abs().sum() > 0
    assert plain_grads["diffusion.transformer.attn.1.q.weight"].abs().sum() > 0


def test_chunked_triangle_layers_match_in_float32(batch):
    """Each triangle layer alone, float32, chunk sizes 1 / 7 / larger than L."""
    from rna_predict.model.pairformer import TriangleAttention, TriangleMultiplication

    torch.manual_seed(1)
    mask = batch["residue_mask"]
    fm = mask.float()
    pair_mask = fm[:, :, None] * fm[:, None, :]
    z = torch.randn(*pair_mask.shape, 8)
    layers = [TriangleMultiplication(8, outgoing=True), TriangleMultiplication(8, outgoing=False),
              TriangleAttention(8, 2, starting=True), TriangleAttention(8, 2, starting=False)]
    for layer in layers:
        args = (pair_mask,) if isinstance(layer, TriangleMultiplication) else (mask,)
        zp = z.clone().requires_grad_(True)
        ref = layer(zp, *args)
        ref.square().sum().backward()
        for chunk in (1, 7, 100):
            layer.chunk_size = chunk
            zc = z.clone().requires_grad_(True)
            got = layer(zc, *args)
            got.square().sum().backward()
            assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
            assert torch.allclose(zc.grad, zp.grad, atol=1e-4, rtol=1e-4)
        layer.chunk_size = 0


def test_checkpointing_is_off_in_no_grad_and_by_default(batch):
    """Default training has no checkpointing; under no_grad (sampling) nothing is recomputed."""
    from rna_predict.config import TrainingConfig
    from rna_predict.train.lightning_module import RNALightningModule

    assert TrainingConfig().activation_checkpointing is False and ModelConfig().chunk_size == 0
    module = RNALightningModule(ModelConfig(**TINY), TrainingConfig(activation_checkpointing=True), 0)
    assert module.model.pairformer.activation_checkpointing
    assert module.model.diffusion.transformer.activation_checkpointing
    plain = _model()
    ckpt = _model(0, True)
    with torch.no_grad():  # the same code path, so bitwise equal
        assert torch.equal(plain.trunk(batch)["z"], ckpt.trunk(batch)["z"])
