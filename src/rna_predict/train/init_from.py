"""Fine-tuning set-up: ``training.init_from`` and ``model.lora`` applied to a fresh model.

:func:`prepare_model` runs once on the freshly built :class:`RNAModel`, before the optimiser
is created (and before a Lightning checkpoint of the same configuration is resumed):

1. ``training.init_from`` (a ``model.safetensors`` written by ``train``): its weights, and
   the adapters saved beside it (merged into the weights, :func:`rna_predict.model.lora.merge_lora`),
   are loaded; the model settings (``model.*``) must be the ones it was trained with.
2. ``model.lora.enabled``: LoRA adapters are injected (:mod:`rna_predict.model.lora`) and the
   pretrained weights are frozen. With ``init_from`` every base weight is pretrained, so only
   the adapters train (the "trained model + new RNA family" workflow). Without it only the
   TorsionBERT checkpoint is pretrained: its weights are frozen and get adapters, while the
   layers that start from random values (new heads, Pairformer, diffusion) train normally.
   The native encoder without ``init_from`` has nothing pretrained to adapt: an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from rna_predict.config import Config, ConfigError
from rna_predict.model.lora import (
    ADAPTERS_FILE,
    apply_lora,
    freeze_for_lora,
    load_weights,
    merge_lora,
)

log = logging.getLogger(__name__)


def load_init_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` (and merge the adapters beside it, if any) into ``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training.init_from={path}: no such file; train a model first")
    adapted = load_weights(model, path, path.parent / ADAPTERS_FILE)
    if adapted:
        merge_lora(model)
    log.info("init_from: loaded %s%s", path, f" (+{len(adapted)} merged adapters)" if adapted else "")


def prepare_model(model: nn.Module, cfg: Config) -> None:
    """Apply ``training.init_from`` and ``model.lora`` to ``model`` in place (module docstring)."""
    init_from, lora = cfg.training.init_from, cfg.model.lora
    if init_from:
        load_init_weights(model, init_from)
    if not lora.enabled:
        return
    if not init_from and cfg.model.torsion_backbone == "native":
        raise ConfigError("model.lora.enabled=true needs pretrained weights to adapt: set "
                          "training.init_from (a trained model.safetensors) or "
                          "model.torsion_backbone=torsionbert")
    apply_lora(model, lora)
    if init_from:
        keep: tuple[str, ...] = ()
    else:  # only the TorsionBERT checkpoint is pretrained; the rest starts from random values
        pretrained = {f"torsion_encoder.{p}" for p in model.torsion_encoder.pretrained_prefixes}
        top = {name.split(".")[0] for name, _ in model.named_parameters()}
        keep = tuple(sorted(t for t in top if t != "torsion_encoder"))
        keep += tuple(sorted(f"torsion_encoder.{n}" for n, _ in model.torsion_encoder.named_children()
                             if f"torsion_encoder.{n}" not in pretrained))
    trainable, frozen = freeze_for_lora(model, keep)
    log.info("lora: %d trainable / %d frozen parameters", trainable, frozen)


__all__ = ["load_init_weights", "prepare_model"]
