"""Structure prediction for user sequences (``rna-predict predict``) and model loading.

:func:`run_predict` loads ``model.safetensors`` + ``model_config.json`` written by the
train stage, builds the input batch from the sequence (Stage A base-pair probabilities
are computed on the fly), draws ``samples`` structures with the diffusion sampler and
refines each onto ideal covalent geometry (:mod:`rna_predict.model.refine`) and
writes one structure file per sample: ``OUT.pdb`` for one sample, ``OUT_1.pdb``,
``OUT_2.pdb``, ... for several. The suffix of ``OUT`` picks the format: ``.pdb``/``.ent``
write PDB, ``.cif``/``.mmcif`` write mmCIF; any other suffix (or none) is an error raised
before the model is loaded. Sequences may use T for U and lower case, and ``&`` between
strands of a complex (chains A, B, ...); anything else outside ACGU is an error that
names the letter and its position.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

_VALID = set("ACGU")
_CHAINS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class SequenceError(ValueError):
    """A sequence that the model cannot take (letters outside ACGU/T, empty)."""


def normalise_sequence(sequence: str, name: str = "sequence") -> str:
    """Upper-case, drop whitespace, map T -> U; raise :class:`SequenceError` otherwise.

    ``&`` separates strands and is kept (not at either end, never doubled).
    """
    seq = re.sub(r"\s+", "", sequence).upper().replace("T", "U")
    if not seq.replace("&", ""):
        raise SequenceError(f"{name}: empty sequence")
    if seq.startswith("&") or seq.endswith("&") or "&&" in seq:
        raise SequenceError(f"{name}: '&' must separate two non-empty strands")
    bad = [(i + 1, c) for i, c in enumerate(seq) if c not in _VALID and c != "&"]
    if bad:
        shown = ", ".join(f"{c!r} at position {i}" for i, c in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise SequenceError(
            f"{name}: only A, C, G, U (or T) are allowed; found {shown}{more}")
    return seq


def read_fasta(path: str | Path) -> list[tuple[str, str]]:
    """``[(name, sequence), ...]`` from a FASTA file; sequences normalised and checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such FASTA file")
    entries: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            entries.append((line[1:].split()[0] if line[1:].split() else f"seq{len(entries) + 1}", []))
        elif not entries:
            raise SequenceError(f"{path}:{lineno}: sequence line before the first '>' header")
        else:
            entries[-1][1].append(line)
    if not entries:
        raise SequenceError(f"{path}: no FASTA records")
    return [(name, normalise_sequence("".join(parts), f"{path}:{name}")) for name, parts in entries]


def load_model(model_dir: str | Path, device: str | torch.device = "cpu",
               merge: bool = True) -> torch.nn.Module:
    """:class:`RNAModel` from ``model_dir/model.safetensors`` and ``model_config.json``, with
    the LoRA adapters of ``adapters.safetensors`` (if it holds any) merged in (``merge``)
    or kept as separate layers."""
    from rna_predict.config import LoRAConfig, ModelConfig
    from rna_predict.model.lora import ADAPTERS_FILE, load_weights, merge_lora
    from rna_predict.model.rna_model import RNAModel

    model_dir = Path(model_dir)
    weights, conf = model_dir / "model.safetensors", model_dir / "model_config.json"
    for p in (weights, conf):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; run `rna-predict train` first")
    raw = json.loads(conf.read_text())["model"]
    known = ModelConfig.__dataclass_fields__
    fields = {k: v for k, v in raw.items() if k in known}
    if isinstance(fields.get("lora"), dict):
        fields["lora"] = LoRAConfig(**fields["lora"])
    model_cfg = ModelConfig(**fields)
    model = RNAModel(model_cfg)
    if load_weights(model, weights, model_dir / ADAPTERS_FILE) and merge:
        merge_lora(model)
    return model.to(device).eval()


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def output_paths(out: str | Path, samples: int) -> list[Path]:
    """``out`` for one sample; ``<stem>_<k><suffix>`` (k = 1..samples) for several.

    Raises ``ValueError`` when the suffix names no structure format (see
    :func:`rna_predict.data.writer.structure_format`).
    """
    from rna_predict.data.writer import structure_format

    out = Path(out)
    structure_format(out)
    if samples == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(1, samples + 1)]


@torch.no_grad()
def predict_structures(model: torch.nn.Module, sequence: str, samples: int, steps: int,
                       seed: int, progress: bool = True, refine_steps: int = 200) -> torch.Tensor:
    """[samples, L, 23, 3] coordinates for ``sequence`` (normalised; ``&`` between strands).

    Each diffusion sample is refined onto ideal covalent geometry with ``refine_steps``
    steps (:mod:`rna_predict.model.refine`; 0 returns the raw diffusion samples).
    """
    from rna_predict.data.dataset import batch_from_sequence

    device = next(model.parameters()).device
    batch = _to_device(batch_from_sequence(sequence), device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    out = []
    for _ in tqdm(range(samples), desc="predict", unit="sample", disable=not progress):
        x = model.sample(batch, steps=int(steps), n_samples=1, generator=gen,
                         refine_steps=int(refine_steps))  # [1, 1, L, 23, 3]
        out.append(x[0, 0].float().cpu())
    return torch.stack(out)


def run_predict(model_dir: Path, sequence: str, out: Path, samples: int = 1, steps: int = 50,
                seed: int = 0, device: str = "cpu", refine_steps: int = 200) -> list[Path]:
    """Predict ``samples`` structures of ``sequence`` and write them to ``out``.

    The suffix of ``out`` picks the format: ``.pdb``/``.ent`` PDB, ``.cif``/``.mmcif``
    mmCIF (:func:`rna_predict.data.writer.write_structure`). ``device`` ("cpu", "cuda",
    ...) runs the model there; CPU gives reproducible files.

    Returns the written paths (see :func:`output_paths`). Raises :class:`SequenceError`
    for a sequence with letters outside ACGU/T, ``ValueError`` for an output suffix that
    names no structure format and ``FileNotFoundError`` without a model; all three before
    any sampling.
    """
    from rna_predict.data.atom_layout import slot_mask_for
    from rna_predict.data.writer import write_structure

    seq = normalise_sequence(sequence)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    paths = output_paths(out, samples)
    model = load_model(model_dir, device=device)
    coords = predict_structures(model, seq, samples, steps, seed, refine_steps=refine_steps)
    strands = seq.split("&")
    flat = "".join(strands)
    chains = [_CHAINS[i % len(_CHAINS)] for i, s in enumerate(strands) for _ in s]
    resnums = [k + 1 for s in strands for k in range(len(s))]
    for path, xyz in zip(paths, coords):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_structure(path, flat, xyz.numpy(), slot_mask_for(flat), chain_ids=chains,
                        resnums=resnums)
        log.info("predict: wrote %s (%d nt, %d strand(s))", path, len(flat), len(strands))
    return paths


__all__ = [
    "SequenceError",
    "load_model",
    "normalise_sequence",
    "output_paths",
    "predict_structures",
    "read_fasta",
    "run_predict",
]
