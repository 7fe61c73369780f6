"""Structured configuration: ``params.yaml`` composed with Hydra against dataclasses.

ARCHITECTURE.md section 6. ``params.yaml`` is the single source of truth that DVC tracks.
:func:`load_config` composes it with Hydra's compose API (so command-line overrides use
the same ``key=value`` grammar as ``dvc exp run -S``) and validates it against
:class:`Config`: a misspelt key or a wrong type raises :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rna_predict.data.atom_layout import LINK_CUTOFF


class ConfigError(ValueError):
    """params.yaml or an override does not match the schema."""


@dataclass
class DataConfig:
    source: str = "demo"  # demo | local | rcsb
    raw_dir: str = "data/raw"
    local_dir: str = ""
    pdb_ids: list[str] = field(default_factory=list)
    id_list: str = ""  # BGSU representative-set CSV, or one PDBID / PDBID_CHAIN per line
    workers: int = 4  # concurrent rcsb downloads
    rcsb_url: str = "https://files.rcsb.org/download"
    file_format: str = "cif"  # for rcsb: cif | pdb | cif.gz | pdb.gz
    timeout_s: float = 60.0
    retries: int = 3


@dataclass
class AnglesConfig:
    backend: str = "mdanalysis"  # mdanalysis | dssr
    out_dir: str = "data/angles"
    link_cutoff: float = LINK_CUTOFF  # O3'(i-1)-P(i) distance (A) under which residues are linked
    workers: int = 2  # worker processes; outputs are byte-identical for any count


@dataclass
class FeaturesConfig:
    out_dir: str = "data/features"
    temperature: float = 37.0
    workers: int = 2  # worker processes; outputs are byte-identical for any count
    max_global_len: int = 1000  # longer records use local (windowed) base-pair probabilities
    window: int = 240  # RNAplfold-style window size W for local probabilities
    max_bp_span: int = 160  # largest base-pair span L for local probabilities


@dataclass
class SplitConfig:
    out_dir: str = "data/splits"
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    max_identity: float = 0.8
    min_per_split: int = 2
    kmer: int = 6  # seed length of the split's identity prefilter (data/split.py)
    min_identity_length: int = 30  # identity denominator floor (data/split.py)


@dataclass
class LoRAConfig:
    """LoRA adapters (Hu et al. 2021) through ``peft``; see ``rna_predict.model.lora``."""

    enabled: bool = False
    r: int = 8  # adapter rank
    alpha: float = 16.0  # scaling alpha / r
    dropout: float = 0.0
    # module-name suffixes matched inside the torsion backbone: BERT query/key/value,
    # the native encoder's fused qkv and its attention output projection
    targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "qkv", "out"])
    pairformer: bool = False  # also adapt every nn.Linear of the Pairformer


@dataclass
class ModelConfig:
    c_s: int = 64
    c_z: int = 32
    c_atom: int = 32
    c_atompair: int = 16
    c_token: int = 64
    kmer: int = 1
    torsion_layers: int = 1
    torsion_heads: int = 4
    torsion_dropout: float = 0.3
    torsion_pairing: bool = True
    torsion_cond_grad: float = 0.05
    pairformer_blocks: int = 2
    pairformer_heads: int = 4
    diffusion_blocks: int = 2
    diffusion_heads: int = 4
    atom_encoder_blocks: int = 1
    atom_decoder_blocks: int = 1
    atom_heads: int = 2
    relpos_max: int = 32
    dropout: float = 0.0
    sigma_data: float = 16.0
    use_nerf_coords: bool = True
    chunk_size: int = 0  # rows per chunk in triangle attention / multiplication (0 = off)
    torsion_backbone: str = "native"  # native | torsionbert (pretrained transformers checkpoint)
    torsionbert_path: str = ""  # local directory or hub id of the TorsionBERT checkpoint
    trust_remote_code: bool = False  # run the checkpoint's own Python code (needed by the public one)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class TrainingConfig:
    w_angle: float = 1.0
    w_diffusion: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 120
    max_steps: int = -1
    batch_size: int = 2
    crop: int = 48
    crop_mode: str = "contiguous"  # contiguous | spatial | mixed (data/dataset.py, AF3 SI 2.7)
    spatial_crop_fraction: float = 0.5  # mixed: share of records cropped spatially
    noise_copies: int = 4
    precision: str = "32-true"
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1  # multi-node DDP: nodes launched by torchrun or SLURM
    num_threads: int = 2
    activation_checkpointing: bool = False  # recompute Pairformer / diffusion blocks in backward
    grad_clip: float = 1.0
    checkpoint_dir: str = "checkpoints"
    out_dir: str = "models"
    report_dir: str = "reports/train"
    # MLFLOW_TRACKING_URI wins; '' = off; a relative sqlite:/// path is relative to the repository
    # root ($DVC_ROOT, also inside `dvc exp run --queue/--temp` copies), with a 60 s busy timeout
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "rna-predict"
    init_from: str = ""  # model.safetensors of a trained model to start from (fine-tuning)


@dataclass
class EvalConfig:
    samples: int = 5
    steps: int = 100
    refine_steps: int = 200
    out_dir: str = "reports/eval"
    max_targets: int = -1
    bootstrap_samples: int = 10000  # paired bootstrap resamples for every model-vs-baseline interval


@dataclass
class SweepConfig:
    n_trials: int = 4
    max_epochs: int = 4
    space: dict[str, list[float]] = field(
        default_factory=lambda: {"w_angle": [0.1, 2.0], "w_diffusion": [0.1, 2.0]}
    )
    # a path: Optuna journal file (several processes on one machine); sqlite:///...: SQLite
    # with a 60 s busy timeout; any other RDB URL (postgresql://...): workers on several machines
    storage: str = ".optuna/sweep.journal"
    study_name: str = "rna-predict-sweep"
    out_dir: str = "reports/sweep"
    eval_samples: int = 1
    eval_steps: int = 20
    # worker processes sharing the study and the n_trials budget (1: sequential, reproducible)
    workers: int = 1


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    angles: AnglesConfig = field(default_factory=AnglesConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def load_config(overrides: list[str] | None = None, params: str | Path = "params.yaml") -> Config:
    """Compose ``params`` with Hydra ``overrides`` and validate it against :class:`Config`.

    Hydra's compose API applies the overrides (``training.w_angle=0.2``); the result is
    then merged into the structured schema so that an unknown key or a value of the
    wrong type fails with a message naming it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    path = Path(params).resolve()
    if not path.is_file():
        raise ConfigError(f"{params}: no such parameter file")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base="1.3"):
            composed = compose(config_name=path.stem, overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"{params}: bad override: {exc}") from None
    finally:
        GlobalHydra.instance().clear()
    return validate(composed, source=str(params))


def validate(raw: DictConfig | dict, source: str = "config") -> Config:
    """Merge ``raw`` into the :class:`Config` schema; raise :class:`ConfigError` on mismatch."""
    schema = OmegaConf.structured(Config)
    OmegaConf.set_struct(schema, True)
    try:
        merged = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def to_flat_dict(cfg: Config) -> dict[str, Any]:
    """Flatten to ``{"training.w_angle": 1.0, ...}`` for MLflow params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k in sorted(node):
                walk(f"{prefix}.{k}" if prefix else str(k), node[k])
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    return out


__all__ = ["Config", "ConfigError", "load_config", "validate", "to_flat_dict"]
