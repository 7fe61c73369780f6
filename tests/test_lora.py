"""LoRA adapters (``model.lora``) and fine-tuning from a trained model (``training.init_from``).

Real inputs: demo structures (rna-tools wheel, ``demo_raw_dir``) run through the angles
and features code; a tiny BERT checkpoint written with ``transformers`` (no network).
"""

from __future__ import annotations

import csv
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from rna_predict.config import Config, ConfigError, validate
from tiny_checkpoints import write_bert

TINY = ["model.c_s=16", "model.c_z=8", "model.c_atom=8", "model.c_atompair=4", "model.c_token=16",
        "model.pairformer_blocks=1", "model.pairformer_heads=2", "model.diffusion_blocks=1",
        "model.diffusion_heads=2", "model.atom_heads=1", "training.crop=16", "training.batch_size=2",
        "training.noise_copies=1", "training.num_threads=1"]
IDS = ["1DQF", "1A9N", "434D"]  # 19, 24 and 14 nt


@pytest.fixture(scope="module")
def small_set(demo_raw_dir, tmp_path_factory):
    """angles/, features/ and splits/ (train 1DQF, 1A9N; val 434D) from three demo structures."""
    from rna_predict.data.angles_stage import run_angles
    from rna_predict.data.features import run_features

    root = tmp_path_factory.mktemp("lora_set")
    raw = root / "raw"
    raw.mkdir()
    with open(demo_raw_dir / "index.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["id"] in IDS]
    with open(raw / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        shutil.copy(demo_raw_dir / r["file"], raw / r["file"])
    cfg = make_cfg(root, [])
    run_angles(cfg)
    run_features(cfg)
    (root / "splits").mkdir()
    (root / "splits/train.csv").write_text("id,length\n1DQF,19\n1A9N,24\n")
    (root / "splits/val.csv").write_text("id,length\n434D,14\n")
    return root


def make_cfg(root, overrides: list[str], out=None) -> Config:
    out = out or root
    paths = {"data": {"raw_dir": str(root / "raw")}, "angles": {"out_dir": str(root / "angles"), "workers": 1},
             "features": {"out_dir": str(root / "features"), "workers": 1},
             "split": {"out_dir": str(root / "splits")},
             "training": {"checkpoint_dir": str(out / "ckpt"), "out_dir": str(out / "models"),
                          "report_dir": str(out / "reports")}}
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(paths),
                             OmegaConf.from_dotlist(TINY + overrides))
    return validate(merged)


@pytest.fixture(scope="module")
def real_batch(small_set):
    """A training batch (crops of 16) of the two training records."""
    from rna_predict.data.dataset import RecordDataset, collate

    ds = RecordDataset(small_set / "angles", small_set / "features", ["1DQF", "1A9N"], 16, 0)
    return collate([ds[0], ds[1]])


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return write_bert(tmp_path_factory.mktemp("lora_bert") / "bert")


def loss_of(model, batch, step: int):
    from rna_predict.train.losses import training_loss

    gen = torch.Generator().manual_seed(step)
    return training_loss(model, batch, w_angle=1.0, w_diffusion=1.0, noise_copies=1, generator=gen)["total"]


def lora_model(small_set, bert_dir, tmp_path):
    """TorsionBERT-backbone model started from a saved model, LoRA on BERT and Pairformer."""
    from rna_predict.model.rna_model import RNAModel
    from rna_predict.train.init_from import prepare_model
    from rna_predict.train.run_train import save_model

    tb = ["model.torsion_backbone=torsionbert", f"model.torsionbert_path={bert_dir}"]
    base_cfg = make_cfg(small_set, tb, out=tmp_path)
    torch.manual_seed(0)
    save_model(RNAModel(base_cfg.model), base_cfg.model, tmp_path / "base")
    cfg = make_cfg(small_set, tb + ["model.lora.enabled=true", "model.lora.pairformer=true",
                                    "model.lora.r=4", f"training.init_from={tmp_path / 'base/model.safetensors'}"],
                   out=tmp_path)
    model = RNAModel(cfg.model)
    prepare_model(model, cfg)
    return model, cfg


def test_lora_gradient_reaches_every_adapter_and_base_weights_stay(small_set, bert_dir, real_batch, tmp_path):
    from rna_predict.model.lora import adapted_modules, is_adapter_key

    model, _ = lora_model(small_set, bert_dir, tmp_path)
    layers = adapted_modules(model)
    bert_layers = [n for n in layers if n.startswith("torsion_encoder.bert.")]
    assert len(bert_layers) == 2 * 3  # query, key, value of two BERT layers
    assert {n.rsplit(".", 1)[1] for n in bert_layers} == {"query", "key", "value"}
    assert sum(n.startswith("pairformer.") for n in layers) >= 20
    adapters = {k: p for k, p in model.named_parameters() if is_adapter_key(k)}
    base = {k: p.detach().clone() for k, p in model.named_parameters() if not is_adapter_key(k)}
    assert all(p.requires_grad for p in adapters.values())
    assert not any(p.requires_grad for k, p in model.named_parameters() if k in base)
    # the optimiser the Lightning module builds: AdamW over every parameter, with decay
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    for step in range(2):
        opt.zero_grad()
        loss_of(model, real_batch, step).backward()
        for k, p in adapters.items():
            assert p.grad is not None and torch.isfinite(p.grad).all(), k
            if step == 1 or ".lora_B." in k:  # B = 0 at init, so A's gradient starts at step 2
                assert float(p.grad.abs().sum()) > 0, (step, k)
        opt.step()
    for k, p in model.named_parameters():
        if k in base:
            assert torch.equal(p.detach(), base[k]), k
    assert all(float(p.detach().abs().sum()) > 0 for k, p in adapters.items() if ".lora_B." in k)


def test_merged_and_unmerged_adapters_give_the_same_outputs(small_set, bert_dir, real_batch, tmp_path):
    from safetensors import safe_open

    from rna_predict.inference.predict import load_model
    from rna_predict.model.lora import ADAPTERS_FILE, adapted_modules
    from rna_predict.train.run_train import save_model

    model, cfg = lora_model(small_set, bert_dir, tmp_path)
    with torch.no_grad():  # trained-looking adapters: B away from its zero start
        for k, p in model.named_parameters():
            if ".lora_B." in k:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(k))))
    save_model(model, cfg.model, tmp_path / "tuned")
    with safe_open(str(tmp_path / "tuned" / ADAPTERS_FILE), "pt") as fh:
        assert fh.metadata()["r"] == "4" and len(list(fh.keys())) == 2 * len(adapted_modules(model))
    with safe_open(str(tmp_path / "tuned/model.safetensors"), "pt") as fh:
        assert not any("lora" in k or "base_layer" in k for k in fh.keys())
    unmerged = load_model(tmp_path / "tuned", merge=False)
    merged = load_model(tmp_path / "tuned")
    assert adapted_modules(unmerged) and not adapted_modules(merged)
    with torch.no_grad():
        a, b = unmerged.trunk(real_batch), merged.trunk(real_batch)
        base = load_model(tmp_path / "base").trunk(real_batch)
        for key in ("sincos", "s_trunk", "z_trunk"):  # the model's outputs: 1e-5
            assert float((a[key] - b[key]).abs().max()) <= 1e-5, key
        # coordinates built from them: NeRF levers a 1e-5 torsion difference over up to
        # ~20 A of chain (float32 rounding of merged vs separate products), so 1e-3 A
        assert float((a["nerf_coords"] - b["nerf_coords"]).abs().max()) <= 1e-3
        assert not torch.allclose(a["s_trunk"], base["s_trunk"], atol=1e-3)  # the adapters matter
        xa = unmerged.sample(real_batch, steps=3, n_samples=1, generator=torch.Generator().manual_seed(1))
        xb = merged.sample(real_batch, steps=3, n_samples=1, generator=torch.Generator().manual_seed(1))
    assert float((xa - xb).abs().max()) <= 1e-3


def test_init_from_with_lora_trains_only_the_adapters(small_set, tmp_path):
    """The issue's workflow on the native encoder: train, then fine-tune adapters only."""
    from safetensors.torch import load_file

    from rna_predict.inference.predict import load_model
    from rna_predict.model.lora import ADAPTERS_FILE, adapted_modules, is_adapter_key
    from rna_predict.train.run_train import fit, save_model

    cfg = make_cfg(small_set, ["training.max_steps=1", "training.max_epochs=1"], out=tmp_path / "a")
    module, _ = fit(cfg, enable_progress_bar=False)
    save_model(module.model, cfg.model, tmp_path / "a/models")
    assert load_file(str(tmp_path / "a/models" / ADAPTERS_FILE)) == {}  # no LoRA: no tensors
    init = tmp_path / "a/models/model.safetensors"
    with pytest.raises(ConfigError, match="needs pretrained weights"):
        fit(make_cfg(small_set, ["model.lora.enabled=true", "training.max_steps=1"], out=tmp_path / "x"),
            enable_progress_bar=False)
    tuned_cfg = make_cfg(small_set, ["model.lora.enabled=true", f"training.init_from={init}",
                                     "training.max_steps=2", "training.max_epochs=1", "training.lr=0.01"],
                         out=tmp_path / "b")
    tuned, _ = fit(tuned_cfg, enable_progress_bar=False)
    trainable = sorted(k for k, p in tuned.model.named_parameters() if p.requires_grad)
    assert trainable and all(is_adapter_key(k) for k in trainable)
    assert {n.rsplit(".", 1)[1] for n in adapted_modules(tuned.model)} == {"qkv", "out"}
    save_model(tuned.model, tuned_cfg.model, tmp_path / "b/models")
    before, after = load_file(str(init)), load_file(str(tmp_path / "b/models/model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    adapters = load_file(str(tmp_path / "b/models" / ADAPTERS_FILE))
    assert adapters and any(float(v.abs().sum()) > 0 for k, v in adapters.items() if ".lora_B." in k)
    assert load_model(tmp_path / "b/models") is not None
