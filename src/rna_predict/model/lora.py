"""LoRA adapters for Stage B (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
Models") through ``peft``.

``model.lora.enabled`` injects ``peft`` LoRA layers (``peft.inject_adapter_in_model``; the
layer computes ``W x + (alpha / r) B A x`` with A Kaiming-initialised and B zero, so a fresh
adapter leaves the model's outputs unchanged) into:

- the torsion backbone's linear layers whose name ends with one of ``model.lora.targets``
  (default: BERT's attention ``query``/``key``/``value`` of a TorsionBERT checkpoint, or the
  native encoder's fused ``qkv`` and attention ``out`` projections);
- with ``model.lora.pairformer``, every ``nn.Linear`` of the Pairformer.

Files (``train.run_train.save_model`` with :func:`split_state_dict` and
:func:`save_adapters`; :func:`load_weights`): ``model.safetensors`` holds the base
weights under their plain names (loadable without peft); ``adapters.safetensors`` beside it
holds the adapter matrices (``...<layer>.lora_A.default.weight``, ``lora_B``), with the
rank, alpha, dropout and the adapted module names in its metadata, so it describes itself.
Without LoRA the adapters file holds no tensors. :func:`merge_lora` folds the adapters into
the base weights with peft's own merge (``W += (alpha / r) B A``) and removes the LoRA
layers, for inference with the same outputs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rna_predict.data.atomic import atomic_path

log = logging.getLogger(__name__)

#: the adapters file written beside ``model.safetensors``
ADAPTERS_FILE = "adapters.safetensors"
_ADAPTER_NAME = "default"  # peft's adapter name


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key belongs to a LoRA adapter."""
    return ".lora_A." in key or ".lora_B." in key


def lora_target_names(model: nn.Module, lora_cfg: Any) -> list[str]:
    """Full names of the linear layers that get adapters (see the module docstring)."""
    names = []
    targets = list(lora_cfg.targets)
    for name, mod in model.torsion_encoder.named_modules():
        if isinstance(mod, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            names.append(f"torsion_encoder.{name}")
    if lora_cfg.pairformer:
        names += [f"pairformer.{n}" for n, m in model.pairformer.named_modules() if isinstance(m, nn.Linear)]
    return names


def inject_lora(model: nn.Module, names: list[str], r: int, alpha: float, dropout: float) -> None:
    """Put peft LoRA layers (rank ``r``, scaling ``alpha / r``) on the modules ``names``, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    if not names:
        raise ValueError("model.lora: no module to adapt (model.lora.targets matched no linear layer "
                         "of the torsion backbone and model.lora.pairformer is false)")
    if int(r) < 1:
        raise ValueError(f"model.lora.r={r}: must be >= 1")
    config = LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout),
                        target_modules=list(names), bias="none")
    inject_adapter_in_model(config, model, adapter_name=_ADAPTER_NAME)
    # peft copies its config onto the model; keep the model a plain nn.Module
    if hasattr(model, "peft_config"):
        del model.peft_config


def apply_lora(model: nn.Module, lora_cfg: Any) -> list[str]:
    """Inject adapters per ``model.lora`` (a :class:`rna_predict.config.LoRAConfig`); return their modules."""
    names = lora_target_names(model, lora_cfg)
    inject_lora(model, names, lora_cfg.r, lora_cfg.alpha, lora_cfg.dropout)
    n = sum(p.numel() for k, p in model.named_parameters() if is_adapter_key(k))
    log.info("lora: %d adapted layers, %d adapter parameters (r=%d, alpha=%g)", len(names), n,
             lora_cfg.r, lora_cfg.alpha)
    return names


def adapted_modules(model: nn.Module) -> list[str]:
    """Names of the modules that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def split_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(base, adapters)``: base weights under their plain names (peft's ``.base_layer``
    removed), adapter matrices under their peft names. Without LoRA: ``(state_dict, {})``."""
    base, adapters = {}, {}
    for key, value in model.state_dict().items():
        if is_adapter_key(key):
            adapters[key] = value
        else:
            base[key.replace(".base_layer.", ".")] = value
    return base, adapters


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters (possibly none) and their LoRA settings to ``path`` (atomic)."""
    from safetensors.torch import save_file

    _, adapters = split_state_dict(model)
    meta = {"format": "pt"}
    if adapters:
        from peft.tuners.lora import LoraLayer

        layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
        first = next(iter(layers.values()))
        drop = first.lora_dropout[_ADAPTER_NAME]
        meta.update({
            "r": str(int(first.r[_ADAPTER_NAME])),
            "alpha": repr(float(first.lora_alpha[_ADAPTER_NAME])),
            "dropout": repr(float(drop.p) if isinstance(drop, nn.Dropout) else 0.0),
            "modules": json.dumps(sorted(layers)),
        })
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(_cpu(adapters), str(tmp), metadata=meta)
    return path


def load_weights(model: nn.Module, weights: str | Path, adapters: str | Path | None = None) -> list[str]:
    """Load base ``weights`` into ``model`` and, when ``adapters`` exists and holds tensors,
    inject the LoRA layers it describes and load them (unmerged). Returns the adapted modules.

    Raises ``ValueError`` naming the file when the tensors do not fit the model.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    base = load_file(str(weights), device="cpu")
    _load(model, base, weights)
    adapters = Path(adapters) if adapters else None
    if adapters is None or not adapters.is_file():
        return []
    with safe_open(str(adapters), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if not tensors:
        return []
    try:
        names = json.loads(meta["modules"])
        r, alpha, dropout = int(meta["r"]), float(meta["alpha"]), float(meta.get("dropout", "0.0"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{adapters}: adapter metadata missing or malformed ({exc})") from None
    inject_lora(model, names, r, alpha, dropout)
    result = model.load_state_dict(tensors, strict=False)
    missing = sorted(k for k in result.missing_keys if is_adapter_key(k))
    if missing or result.unexpected_keys:
        raise ValueError(f"{adapters}: does not fit the model (missing {missing[:3]}, "
                         f"unexpected {sorted(result.unexpected_keys)[:3]})")
    return names


def _load(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load of plain (adapter-free) ``tensors`` with an error naming ``source``."""
    current = model.state_dict()
    missing = sorted(set(current) - set(tensors))
    unexpected = sorted(set(tensors) - set(current))
    shapes = sorted(k for k in set(current) & set(tensors) if current[k].shape != tensors[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"shape mismatch in {', '.join(shapes[:3])}")
        raise ValueError(f"{source}: weights do not fit this model ({'; '.join(parts)}); "
                         "are model.* the settings it was trained with?")
    model.load_state_dict(tensors, strict=True)


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base layer (peft ``merge``) and drop the LoRA layers.

    Returns the number of merged layers; afterwards the state dict has the plain names.
    """
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
            merged += 1
    return merged


def freeze_for_lora(model: nn.Module, trainable_prefixes: tuple[str, ...] = ()) -> tuple[int, int]:
    """Freeze every parameter except the adapters and those under ``trainable_prefixes``.

    Returns ``(trainable, frozen)`` parameter counts.
    """
    trainable = frozen = 0
    for key, p in model.named_parameters():
        keep = is_adapter_key(key) or any(key == t or key.startswith(t + ".") for t in trainable_prefixes)
        p.requires_grad_(keep)
        if keep:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


__all__ = [
    "ADAPTERS_FILE",
    "adapted_modules",
    "apply_lora",
    "freeze_for_lora",
    "inject_lora",
    "is_adapter_key",
    "load_weights",
    "lora_target_names",
    "merge_lora",
    "save_adapters",
    "split_state_dict",
]
