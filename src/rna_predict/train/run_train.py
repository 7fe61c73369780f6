"""Pipeline stage ``train``: fit the model with Lightning, write weights and reports.

Outputs (declared in dvc.yaml, byte-identical on a re-run with the same inputs):
- ``<training.out_dir>/model.safetensors``: the :class:`RNAModel` state dict, written
  with ``safetensors.torch.save_file`` to a temporary sibling and moved onto its final
  path with ``os.replace``;
- ``<training.out_dir>/model_config.json``: ``{"model": <model config>}``, sorted keys;
- ``<training.report_dir>/metrics.json``: final-epoch train/val metrics (DVC metrics);
- ``<training.report_dir>/history.csv``: one row per epoch (DVC plots).

Lightning checkpoints go to ``training.checkpoint_dir`` (not a declared output). A run
resumes from ``last.ckpt`` there when the hash of everything that shapes the result
(seed, model, training settings, data files and the package's source code) matches
``config_hash.txt``; otherwise the stale checkpoint is discarded, so a code change never
resumes a run trained by older code. Accelerator, devices, strategy and precision come from
the config, so ``training.accelerator=gpu training.devices=2 training.strategy=ddp``
runs on a GPU box without code changes. MLflow (``tracking.py``) records params, per
step losses, per epoch validation metrics and the metrics file as an artifact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rna_predict.config import Config
from rna_predict.data.atomic import atomic_path, sha256_file, write_json, write_text

log = logging.getLogger(__name__)

#: training fields that do not change the trained weights
_NOT_HASHED = ("checkpoint_dir", "out_dir", "report_dir", "tracking_uri", "experiment")


def source_digest(package_dir: str | Path) -> str:
    """sha256 over the relative paths and contents of every ``*.py`` file under ``package_dir``."""
    root = Path(package_dir)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(f"{path.relative_to(root).as_posix()}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def config_hash(cfg: Config, train_ids: list[str], val_ids: list[str]) -> str:
    """sha256 over seed, model, result-shaping training fields, the input data files and
    the source of the ``rna_predict`` package (:func:`source_digest`)."""
    training = {k: v for k, v in asdict(cfg.training).items() if k not in _NOT_HASHED}
    h = hashlib.sha256()
    h.update(source_digest(Path(__file__).resolve().parents[1]).encode())
    h.update(json.dumps({"seed": cfg.seed, "model": asdict(cfg.model), "training": training,
                         "train": train_ids, "val": val_ids}, sort_keys=True, default=str).encode())
    for rid in sorted(set(train_ids) | set(val_ids)):
        for folder in (cfg.angles.out_dir, cfg.features.out_dir):
            path = Path(folder) / f"{rid}.pt"
            h.update(f"{path.name}:{sha256_file(path) if path.is_file() else '-'};".encode())
    init = Path(cfg.training.init_from) if cfg.training.init_from else None
    if init is not None:  # the starting weights (and adapters beside them) shape the result
        for path in (init, init.parent / "adapters.safetensors"):
            h.update(f"init:{path.name}:{sha256_file(path) if path.is_file() else '-'};".encode())
    return h.hexdigest()


def save_model(model: torch.nn.Module, model_cfg: Any, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` (atomic, deterministic bytes) and ``model_config.json``
    (the model dims and the provenance of Stage C's ideal geometry)."""
    from safetensors.torch import save_file

    from rna_predict.model.geometry import GEOMETRY_SOURCE

    out_dir = Path(out_dir)
    from rna_predict.model.lora import ADAPTERS_FILE, save_adapters, split_state_dict

    base, _ = split_state_dict(model)  # plain names; LoRA adapters go to adapters.safetensors
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in base.items()}
    target = out_dir / "model.safetensors"
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(out_dir / "model_config.json", {"model": asdict(model_cfg), "geometry": GEOMETRY_SOURCE})
    save_adapters(model, out_dir / ADAPTERS_FILE)  # no tensors without LoRA
    return target


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def write_reports(history: list[dict[str, float]], report_dir: str | Path,
                  extra: dict[str, Any]) -> Path:
    """``metrics.json`` (last epoch, nested by split) and ``history.csv`` (every epoch)."""
    report_dir = Path(report_dir)
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {k: _round(v) for k, v in extra.items()}
    for key, val in last.items():
        if key in ("epoch", "step"):
            continue
        split, name = key.split("/", 1)
        metrics.setdefault(split, {})[name] = _round(float(val))
    metrics_path = report_dir / "metrics.json"
    write_json(metrics_path, metrics)
    columns = ["epoch", "step"] + sorted({k for r in history for k in r} - {"epoch", "step"})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.replace("/", "_") for c in columns])
    for row in history:
        cells = []
        for c in columns:
            v = row.get(c)
            if c in ("epoch", "step"):
                cells.append(str(int(v)) if v is not None else "")
            else:
                cells.append("" if v is None or not math.isfinite(v) else f"{v:.6f}")
        writer.writerow(cells)
    write_text(report_dir / "history.csv", buf.getvalue())
    return metrics_path


def _dataloaders(cfg: Config, train_ids: list[str], val_ids: list[str]):
    from torch.utils.data import DataLoader

    from rna_predict.data.dataset import RecordDataset, collate
    from rna_predict.train.lightning_module import EpochSampler, ShardSampler

    a_dir, f_dir = cfg.angles.out_dir, cfg.features.out_dir
    crop = int(cfg.training.crop)
    train_ds = RecordDataset(a_dir, f_dir, train_ids, crop, cfg.seed, cfg.training.crop_mode,
                             cfg.training.spatial_crop_fraction)
    train = DataLoader(train_ds, batch_size=cfg.training.batch_size, collate_fn=collate,
                       sampler=EpochSampler(len(train_ds), cfg.seed, train_ds), num_workers=0)
    val = None
    if val_ids:
        val_ds = RecordDataset(a_dir, f_dir, val_ids, crop, cfg.seed + 1)
        val = DataLoader(val_ds, batch_size=cfg.training.batch_size, collate_fn=collate,
                         sampler=ShardSampler(len(val_ds)), num_workers=0)
    return train, val


def _resume_path(ckpt_dir: Path, digest: str) -> Path | None:
    """``last.ckpt`` if it belongs to this configuration, else None (stale files removed).

    Under DDP only rank 0 removes stale checkpoints and writes the stamp; the other ranks
    only read, so none of them deletes the checkpoint rank 0 is about to resume from.
    """
    last = ckpt_dir / "last.ckpt"
    stamp = ckpt_dir / "config_hash.txt"
    if last.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        log.info("train: resuming from %s", last)
        return last
    if launcher_rank() != 0:
        return None
    if last.is_file():
        log.warning("train: %s belongs to another configuration; starting afresh", last)
        for old in ckpt_dir.glob("*.ckpt"):
            old.unlink()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")
    return None


def fit(cfg: Config, callbacks: list | None = None, logger: Any = None, enable_progress_bar: bool = True):
    """Train per ``cfg`` with Lightning; return ``(module, trainer)``.

    Shared by the ``train`` stage and the sweep's trials (which add Optuna's pruning
    callback and log to their own MLflow runs). Resumes from ``last.ckpt`` in
    ``training.checkpoint_dir`` when it belongs to this configuration.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rna_predict.data.split_files import read_split_ids
    from rna_predict.train.lightning_module import (
        HistoryCallback,
        RNALightningModule,
        route_lightning_logging,
    )

    route_lightning_logging()  # each Lightning line once, through the root handler; no tips
    t = cfg.training
    torch.set_num_threads(int(t.num_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train_ids = read_split_ids(cfg.split.out_dir, "train")
    val_ids = read_split_ids(cfg.split.out_dir, "val")
    if not train_ids:
        raise ValueError(f"{cfg.split.out_dir}/train.csv lists no records")
    log.info("train: %d train / %d val records, seed %d", len(train_ids), len(val_ids), cfg.seed)
    ckpt_dir = Path(t.checkpoint_dir)
    resume = _resume_path(ckpt_dir, config_hash(cfg, train_ids, val_ids))
    train_dl, val_dl = _dataloaders(cfg, train_ids, val_ids)

    module = RNALightningModule(cfg.model, t, cfg.seed)
    from rna_predict.train.init_from import prepare_model

    prepare_model(module.model, cfg)  # training.init_from, model.lora (before the optimiser)
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), filename="epoch{epoch:04d}",
                                 auto_insert_metric_name=False, save_last=True, save_top_k=0,
                                 every_n_epochs=1, save_on_train_epoch_end=True)
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, precision=t.precision,
        num_nodes=int(t.num_nodes),
        max_epochs=int(t.max_epochs), max_steps=int(t.max_steps), deterministic=True,
        gradient_clip_val=float(t.grad_clip) if t.grad_clip > 0 else None,
        logger=logger if logger is not None else False,
        callbacks=[HistoryCallback(), checkpoint, *(callbacks or [])], default_root_dir=str(ckpt_dir),
        num_sanity_val_steps=0, log_every_n_steps=1, enable_model_summary=False,
        enable_progress_bar=enable_progress_bar,
        use_distributed_sampler=False,  # EpochSampler / ShardSampler split the data by rank
    )
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl,
                ckpt_path=str(resume) if resume else None)
    if val_dl is not None and module.history and "val/loss" not in module.history[-1]:
        # max_steps ended the run inside an epoch, before its validation: validate now
        trainer.validate(module, dataloaders=val_dl, verbose=False)
        module.history[-1].update(module._last_val)
    return module, trainer


def launcher_rank() -> int:
    """Global rank of this process as set by the launcher before any process group exists.

    Lightning's DDP launcher re-runs the command for ranks 1.. with ``LOCAL_RANK`` set;
    torchrun sets ``RANK``, SLURM ``SLURM_PROCID``. Lightning reads these when imported
    (``rank_zero_only.rank``); 0 for a plain single-process run.
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def run_train(cfg: Config, callbacks: list | None = None) -> Path:
    """Stage ``train``: fit, then write the weights, reports and MLflow run; return the weights path.

    Under DDP only rank 0 creates the MLflow run, writes files and logs INFO lines; the
    other ranks train and log warnings only. ``callbacks`` are passed on to :func:`fit`.
    """
    import time

    from rna_predict.tracking import flatten_metrics, lightning_logger, log_artifacts

    started_at = time.time()  # the MLflow run spans the whole stage
    t = cfg.training
    rank = launcher_rank()
    if rank != 0:
        logging.getLogger("rna_predict").setLevel(logging.WARNING)
    logger = lightning_logger(cfg, stage="train", started_at=started_at) if rank == 0 else None
    module, trainer = fit(cfg, callbacks=callbacks, logger=logger)

    target = Path(t.out_dir) / "model.safetensors"
    if trainer.is_global_zero:
        save_model(module.model, cfg.model, t.out_dir)
        n_params = sum(p.numel() for p in module.model.parameters())
        extra = {"epochs": len(module.history), "steps": int(trainer.global_step),
                 "n_parameters": int(n_params)}
        metrics_path = write_reports(module.history, t.report_dir, extra)
        log.info("train: wrote %s and %s", target, metrics_path)
        if logger is not None:
            metrics = json.loads(metrics_path.read_text())
            logger.log_metrics({f"final/{k}": v for k, v in flatten_metrics(metrics).items()},
                               step=int(trainer.global_step))
            log_artifacts(logger, [metrics_path, Path(t.report_dir) / "history.csv",
                                   Path(t.out_dir) / "model_config.json"])
            logger.finalize("success")
    return target


__all__ = ["config_hash", "fit", "launcher_rank", "run_train", "save_model", "source_digest",
           "write_reports"]
