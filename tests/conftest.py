"""Shared pytest fixtures.

``demo_raw_dir`` runs the real demo fetch (rna-tools wheel via pip, hash-checked) once
into the cache (``$RNA_PREDICT_CACHE`` or ``~/.cache/rna-predict``) and is shared by
every test session; later sessions reuse the verified files without touching the wheel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The rna-predict download cache."""
    from rna_predict.data.fetch import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def demo_raw_dir(cache_dir: Path) -> Path:
    """Raw dir holding the 17 demo structures and ``index.csv`` (fetched once, cached)."""
    from rna_predict.config import Config, DataConfig
    from rna_predict.data.fetch import run_fetch

    raw = cache_dir / "demo_raw"
    run_fetch(Config(data=DataConfig(source="demo", raw_dir=str(raw))))
    return raw


@pytest.fixture(scope="session")
def wheel_extra(cache_dir: Path) -> Callable[[str], Path]:
    """Factory: ``wheel_extra("1Z58")`` -> path of that extra file (1Z58, 3JBV, 1EHZ_CIF)."""
    from rna_predict.data.fetch import extract_extra

    def get(name: str) -> Path:
        return extract_extra(name, cache_dir / "extras")

    return get


#: dims of the untrained tiny model the predict / Kaggle tests load (``model_dir``)
TINY_MODEL = {"c_s": 16, "c_z": 8, "c_atom": 8, "c_atompair": 4, "c_token": 16,
              "torsion_layers": 1, "torsion_heads": 2, "pairformer_blocks": 1,
              "pairformer_heads": 2, "diffusion_blocks": 1, "diffusion_heads": 2, "atom_heads": 1}
#: :data:`TINY_MODEL` as Hydra overrides, for tests that compose a Config
TINY_MODEL_OVERRIDES = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, untrained tiny model saved the way the train stage saves it."""
    import torch

    from rna_predict.config import ModelConfig
    from rna_predict.model.rna_model import RNAModel
    from rna_predict.train.run_train import save_model

    torch.manual_seed(0)
    cfg = ModelConfig(**TINY_MODEL)
    out = tmp_path_factory.mktemp("model")
    save_model(RNAModel(cfg), cfg, out)
    return out


@pytest.fixture(scope="session")
def dssr_fixture_dir() -> Path:
    """Real DSSR output in the repository's sibling ``../shared/fixtures/dssr``."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "dssr"


@pytest.fixture(scope="session")
def demo_records(demo_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root dir with the real demo set run through angles, features and split.

    Layout mirrors the pipeline: ``angles/``, ``features/``, ``splits/`` (and ``raw`` is
    ``demo_raw_dir``). Use :func:`demo_config` to get a Config pointing at it.
    """
    from rna_predict.data.angles_stage import run_angles
    from rna_predict.data.features import run_features
    from rna_predict.data.split import run_split

    root = tmp_path_factory.mktemp("demo_pipeline")
    cfg = demo_config(root, demo_raw_dir)
    run_angles(cfg)
    run_features(cfg)
    run_split(cfg)
    return root


def demo_config(root: Path, raw_dir: Path, overrides: list[str] | None = None,
                out_root: Path | None = None):
    """A validated Config: data paths under ``root``, outputs under ``out_root`` (default root)."""
    from omegaconf import OmegaConf

    from rna_predict.config import Config, validate

    base = OmegaConf.structured(Config)
    out = out_root or root
    paths = OmegaConf.create({
        "data": {"raw_dir": str(raw_dir)},
        "angles": {"out_dir": str(root / "angles")},
        "features": {"out_dir": str(root / "features")},
        "split": {"out_dir": str(root / "splits")},
        "training": {"checkpoint_dir": str(out / "checkpoints"), "out_dir": str(out / "models"),
                     "report_dir": str(out / "reports/train"),
                     "tracking_uri": f"sqlite:///{out / 'mlflow.db'}"},
        "eval": {"out_dir": str(out / "reports/eval")},
        "sweep": {"out_dir": str(out / "reports/sweep"),
                  "storage": f"sqlite:///{out / 'optuna.db'}"},
    })
    merged = OmegaConf.merge(base, paths, OmegaConf.from_dotlist(list(overrides or [])))
    return validate(merged)


@pytest.fixture
def demo_cfg(demo_records: Path, demo_raw_dir: Path, tmp_path: Path):
    """Factory: ``demo_cfg(["training.max_steps=2"])`` -> Config reading the demo records,
    writing outputs (models, reports, mlflow.db, checkpoints) under this test's tmp_path."""

    def make(overrides: list[str] | None = None):
        return demo_config(demo_records, demo_raw_dir, overrides, out_root=tmp_path)

    return make
