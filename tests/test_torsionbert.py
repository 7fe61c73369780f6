"""Stage B on a pretrained checkpoint (``model.torsion_backbone=torsionbert``).

Tiny BERT checkpoints are written with ``transformers`` to temporary directories
(``tiny_checkpoints``) and loaded through ``AutoTokenizer`` / ``AutoModel``; no network.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from rna_predict.config import ModelConfig
from tiny_checkpoints import VOCAB, write_bert, write_probe, write_remote_code

TINY_MODEL = dict(c_s=16, c_z=8, c_atom=8, c_atompair=4, c_token=16, pairformer_blocks=1,
                  pairformer_heads=2, diffusion_blocks=1, diffusion_heads=2, atom_heads=1)
HEAD_ANGLES = [-150.0, 170.0, 55.0, 82.0, -160.0, -70.0, -165.0, 10.0, 20.0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("torsionbert")
    return {"bert": write_bert(root / "bert"), "probe": write_probe(root / "probe"),
            "remote": write_remote_code(root / "remote", HEAD_ANGLES)}


def encoder(path, **kw):
    from rna_predict.model.torsionbert import TorsionBertEncoder

    return TorsionBertEncoder(ModelConfig(torsion_backbone="torsionbert", torsionbert_path=str(path), **kw))


def minimal_batch(chains_per_seq: list[list[str]]) -> tuple[dict, list[str]]:
    """Padded encoder inputs for records given as lists of chain sequences."""
    letters = "ACGU"
    length = max(sum(len(c) for c in chains) for chains in chains_per_seq)
    b = len(chains_per_seq)
    batch = {"base_type": torch.zeros(b, length, dtype=torch.long),
             "chain_index": torch.zeros(b, length, dtype=torch.long),
             "residue_mask": torch.zeros(b, length, dtype=torch.bool)}
    for i, chains in enumerate(chains_per_seq):
        pos = 0
        for c, seq in enumerate(chains):
            n = len(seq)
            batch["base_type"][i, pos:pos + n] = torch.tensor([letters.index(x) for x in seq])
            batch["chain_index"][i, pos:pos + n] = c
            batch["residue_mask"][i, pos:pos + n] = True
            pos += n
    return batch, ["".join(c) for c in chains_per_seq]


def expected_token(chain: str, i: int) -> int:
    """Token id residue ``i`` must read: the 3-mer starting at ``i`` (RNA-TorsionBERT's
    helper labels k-mer j with residue j), the last 3-mer for the last two residues,
    [UNK] for a chain shorter than 3; U written as T."""
    if len(chain) < 3:
        return VOCAB.index("[UNK]")
    j = min(i, len(chain) - 3)
    return VOCAB.index(chain[j:j + 3].replace("U", "T"))


def test_three_mer_offsets_residue_by_residue(checkpoints):
    """Every residue of random sequences of length 3..200 (chunked: 64 tokens per BERT row)
    and of multi-chain records reads the hidden state of its own 3-mer token."""
    enc = encoder(checkpoints["probe"])
    assert enc.k == 3 and enc.max_tokens == 64
    rng = random.Random(0)
    records = [["".join(rng.choice("ACGU") for _ in range(n))] for n in range(3, 201)]
    records += [["GGCA", "UUC", "AC", "G", "CUAGU"], ["AU", "GCGCAUU"]]
    batch, _ = minimal_batch(records)
    with torch.no_grad():
        got = enc.residue_hidden(batch).argmax(-1)
    checked = 0
    for b, chains in enumerate(records):
        pos = 0
        for chain in chains:
            for i in range(len(chain)):
                assert int(got[b, pos + i]) == expected_token(chain, i), (b, chain, i)
                checked += 1
            pos += len(chain)
    assert checked == sum(range(3, 201)) + 15 + 9


def test_encoder_outputs_unit_sincos_per_residue(checkpoints):
    enc = encoder(checkpoints["bert"], c_token=16).eval()
    batch, seqs = minimal_batch([["GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"],
                                 ["ACG"]])
    with torch.no_grad():
        sincos, hidden = enc(batch)
    assert sincos.shape == (2, 76, 7, 2) and hidden.shape == (2, 76, 16)
    mask = batch["residue_mask"]
    assert torch.allclose(sincos[mask].norm(dim=-1), torch.ones(int(mask.sum()), 7), atol=1e-5)
    assert torch.equal(sincos[~mask], torch.tensor([0.0, 1.0]).expand(int((~mask).sum()), 7, 2))
    assert float(hidden[~mask].abs().max()) == 0.0


def test_pretrained_head_maps_cos_sin_channels_to_our_torsions(checkpoints):
    """The public layout (channel 2a = cos, 2a+1 = sin of alpha..zeta, chi, eta, theta)
    comes out as (sin, cos) of our seven torsions, for every residue."""
    enc = encoder(checkpoints["remote"], trust_remote_code=True).eval()
    assert enc.regressor is not None and enc.head is None
    batch, _ = minimal_batch([["ACGUACGUAGG"], ["GC", "AUG"]])
    with torch.no_grad():
        sincos, _ = enc(batch)
    got = torch.rad2deg(torch.atan2(sincos[..., 0], sincos[..., 1]))[batch["residue_mask"]]
    want = torch.tensor(HEAD_ANGLES[:7])
    diff = (got - want + 180) % 360 - 180
    assert float(diff.abs().max()) < 1e-3


def test_remote_code_stays_off_unless_set(checkpoints):
    from rna_predict.model.torsionbert import TorsionBertError

    assert ModelConfig().trust_remote_code is False and ModelConfig().torsion_backbone == "native"
    with pytest.raises(TorsionBertError, match="trust_remote_code=true"):
        encoder(checkpoints["remote"])
    with pytest.raises(TorsionBertError, match="torsionbert_path is empty"):
        encoder("")


def test_rna_model_with_torsionbert_backbone_round_trips(checkpoints, tmp_path):
    """Full model on a real sequence: trunk torsions per residue; saved and reloaded
    through ``load_model`` it gives the same outputs."""
    from rna_predict.data.dataset import batch_from_sequence
    from rna_predict.inference.predict import load_model
    from rna_predict.model.rna_model import RNAModel
    from rna_predict.train.run_train import save_model

    cfg = ModelConfig(torsion_backbone="torsionbert", torsionbert_path=str(checkpoints["bert"]), **TINY_MODEL)
    torch.manual_seed(0)
    model = RNAModel(cfg).eval()
    seq = "GGCGCUUAGCGCC&GGAUCC"
    batch = batch_from_sequence(seq)
    with torch.no_grad():
        out = model.trunk(batch)
    n = len(seq) - 1
    assert out["sincos"].shape == (1, n, 7, 2) and out["s_trunk"].shape == (1, n, 16)
    save_model(model, cfg, tmp_path)
    loaded = load_model(tmp_path)
    with torch.no_grad():
        again = loaded.trunk(batch)
    for key in ("sincos", "s_trunk", "z_trunk"):
        assert torch.equal(out[key], again[key]), key
    assert not math.isnan(float(out["nerf_coords"].sum()))
