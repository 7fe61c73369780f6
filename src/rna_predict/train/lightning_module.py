"""LightningModule wrapping :class:`rna_predict.model.rna_model.RNAModel`.

Training step: ``total = w_angle * L_angle + w_diffusion * L_diffusion`` from
``RNAModel.loss`` (SCIENCE.md section 4); the diffusion noise is drawn from a generator
seeded by (seed, global step, rank), so a run resumed from an epoch checkpoint draws the
same noise as an uninterrupted one. Logged per step: ``train/total``, ``train/L_angle``,
``train/L_diffusion`` (+ the MSE and smooth-lDDT parts). Logged per epoch: ``val/loss``,
``val/L_angle``, ``val/L_diffusion``, ``val/angle_mae`` (degrees, mean of the seven
per-torsion MAEs) and ``val/mae_<torsion>``.

The per-epoch history (the rows of ``reports/train/history.csv``) lives in the module
and is stored in checkpoints, so a resumed run reports every epoch.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch

from rna_predict.data.atom_layout import TORSIONS
from rna_predict.model.angles import angles_from_sincos, circular_difference
from rna_predict.model.primitives import set_activation_checkpointing


def process_group_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``.

    Read when a sampler is iterated (after Lightning's DDP strategy has set the group up),
    not when the DataLoader is built (before the launcher has started the other ranks).
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles ``n`` indices with a permutation seeded by (seed, epoch); rank-aware.

    Lightning calls :meth:`set_epoch` before each epoch, so the order of epoch ``k`` does
    not depend on how many epochs this process has run (exact after a resume). The epoch
    is forwarded to ``dataset.set_epoch`` (the crop windows of ``RecordDataset``).

    Under DDP (``world_size`` W > 1) every rank draws the same permutation and takes every
    W-th index starting at its rank, the split of ``torch.utils.data.DistributedSampler``
    (which Lightning would otherwise wrap around this sampler; ``fit`` turns that off):
    each record is seen once per epoch across ranks. When W does not divide ``n`` the
    permutation is padded with its own first indices (as DistributedSampler does), so
    that every rank runs the same number of steps; those few records are seen twice.
    On one process the order is the plain permutation.
    """

    def __init__(self, n: int, seed: int, dataset: Any = None) -> None:
        self.n, self.seed, self.epoch, self.dataset = n, seed, 0, dataset

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        rank, world = process_group_rank()
        if world == 1:
            return iter(order)
        padded = order + order[: len(self) * world - self.n]
        return iter(padded[rank::world])

    def __len__(self) -> int:
        return -(-self.n // process_group_rank()[1])


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + W, ...`` of ``0 .. n-1`` in order, without padding (validation).

    Each validation record is evaluated by exactly one rank, so the sums that
    :meth:`RNALightningModule.on_validation_epoch_end` reduces over ranks count every
    record once (DistributedSampler pads with repeats, which would count some twice).
    Ranks may run a different number of validation batches; no collective runs per batch.
    On one process: ``0 .. n-1``, the order of ``shuffle=False``.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        rank, world = process_group_rank()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        rank, world = process_group_rank()
        return len(range(rank, self.n, world))


class RNALightningModule(L.LightningModule):
    """Optimises every trainable stage of :class:`RNAModel` with the combined loss."""

    def __init__(self, model_cfg: Any, training_cfg: Any, seed: int) -> None:
        super().__init__()
        from rna_predict.model.rna_model import RNAModel

        self.model = RNAModel(model_cfg)
        set_activation_checkpointing(self.model, bool(getattr(training_cfg, "activation_checkpointing", False)))
        self.tcfg = training_cfg
        self.seed = int(seed)
        self.history: list[dict[str, float]] = []
        self._reset("train")
        self._reset("val")
        self._last_val: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def _reset(self, split: str) -> None:
        setattr(self, f"_{split}_sums", {"n": 0.0, "total": 0.0, "angle": 0.0, "diffusion": 0.0})
        if split == "val":
            self._val_ang = torch.zeros(len(TORSIONS), dtype=torch.float64)
            self._val_cnt = torch.zeros(len(TORSIONS), dtype=torch.float64)

    def _generator(self, offset: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + int(offset)) * 64 + int(self.global_rank))
        return g

    def _loss(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        from rna_predict.train.losses import training_loss

        return training_loss(
            self.model,
            batch,
            w_angle=float(self.tcfg.w_angle),
            w_diffusion=float(self.tcfg.w_diffusion),
            noise_copies=int(self.tcfg.noise_copies),
            generator=generator,
        )

    def _accumulate(self, split: str, out: dict[str, torch.Tensor], n: int) -> None:
        sums = getattr(self, f"_{split}_sums")
        sums["n"] += n
        for key in ("total", "angle", "diffusion"):
            sums[key] += float(out[key].detach()) * n

    def _reduce(self, values: list[float]) -> list[float]:
        """Sum ``values`` over processes (identity on one device)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.trainer is not None and self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(t, reduce_op="sum")
        return [float(v) for v in t.cpu()]

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self._loss(batch, self._generator(self.global_step))
        n = int(batch["base_type"].shape[0])
        self._accumulate("train", out, n)
        self.log_dict(
            {
                "train/total": out["total"].detach(),
                "train/L_angle": out["angle"].detach(),
                "train/L_diffusion": out["diffusion"].detach(),
                "train/mse": out["mse"].detach(),
                "train/lddt": out["lddt"].detach(),
            },
            on_step=True, on_epoch=False, prog_bar=False, batch_size=n,
        )
        self.log("loss", out["total"].detach(), on_step=True, prog_bar=True, logger=False, batch_size=n)
        return out["total"]

    def on_train_epoch_start(self) -> None:
        self._reset("train")
        # crop windows depend on the epoch: set the dataset's epoch here as well, in case
        # a sampler that does not forward set_epoch (Lightning's wrappers) is in use
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    # -------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._reset("val")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self._loss(batch, self._generator(10_000_019 + batch_idx))
        n = int(batch["base_type"].shape[0])
        self._accumulate("val", out, n)
        sincos = self.model.trunk(batch)["sincos"]
        pred = angles_from_sincos(sincos.float())
        mask = batch["angle_mask"].bool() & batch["residue_mask"].bool()[..., None]
        true = torch.nan_to_num(batch["angles"].float())
        diff = torch.where(mask, circular_difference(pred, true), torch.zeros_like(pred))
        self._val_ang += diff.sum(dim=(0, 1)).double().cpu()
        self._val_cnt += mask.sum(dim=(0, 1)).double().cpu()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._reset("val")
            return
        s = self._val_sums
        red = self._reduce([s["n"], s["total"], s["angle"], s["diffusion"]]
                           + self._val_ang.tolist() + self._val_cnt.tolist())
        n, k = max(red[0], 1.0), len(TORSIONS)
        ang, cnt = red[4:4 + k], red[4 + k:]
        maes = {t: (math.degrees(a / c) if c else float("nan")) for t, a, c in zip(TORSIONS, ang, cnt)}
        finite = [v for v in maes.values() if math.isfinite(v)]
        vals = {
            "val/loss": red[1] / n,
            "val/L_angle": red[2] / n,
            "val/L_diffusion": red[3] / n,
            "val/angle_mae": sum(finite) / len(finite) if finite else float("nan"),
        }
        vals.update({f"val/mae_{t}": v for t, v in maes.items()})
        self._last_val = vals
        # already summed over processes: sync_dist averages identical values (no-op)
        self.log_dict({k: v for k, v in vals.items() if math.isfinite(v)},
                      on_epoch=True, prog_bar=False, sync_dist=True)

    # ----------------------------------------------------------------- history
    def close_epoch(self) -> None:
        """Append this epoch's row (train means + last validation) to :attr:`history`."""
        s = self._train_sums
        red = self._reduce([s["n"], s["total"], s["angle"], s["diffusion"]])
        n = max(red[0], 1.0)
        row = {
            "epoch": float(self.current_epoch),
            "step": float(self.global_step),
            "train/total": red[1] / n,
            "train/L_angle": red[2] / n,
            "train/L_diffusion": red[3] / n,
        }
        row.update(self._last_val)
        self.history.append(row)
        self._last_val = {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rna_predict_history"] = [dict(r) for r in self.history]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = [dict(r) for r in checkpoint.get("rna_predict_history", [])]

    # --------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.model.parameters(), lr=float(self.tcfg.lr), weight_decay=float(self.tcfg.weight_decay)
        )


class HistoryCallback(L.Callback):
    """Closes each epoch's history row before checkpoint callbacks save the epoch.

    Lightning runs checkpoint callbacks last, so the row is inside ``last.ckpt``.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(pl_module, RNALightningModule):
            pl_module.close_epoch()


# ------------------------------------------------------------------- logging
#: loggers to which Lightning and torchmetrics attach their own console handlers on import
_LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                    "lightning_fabric", "torchmetrics")
#: Lightning's rank-zero loggers, through which its INFO lines (and its tips) go
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                      "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class AdvertisementFilter(logging.Filter):
    """Drops Lightning's product tips ("💡 Tip: ... try installing [litlogger] / [litmodels]")."""

    MARKERS = ("💡 Tip:", "litlogger", "litmodels", "Lightning Experiments platform")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(m in msg for m in self.MARKERS)


def route_lightning_logging() -> None:
    """Make every Lightning log line appear once, without advertisements.

    ``import lightning`` attaches a console handler to the ``lightning`` logger (and
    ``torchmetrics`` to its own) while those loggers still propagate to the root logger,
    so under a configured root handler (the CLI's ``logging.basicConfig``, pytest) each
    line is printed twice in two formats. When the root logger has handlers, the plain
    stream handlers of those library loggers are removed and their records propagate to
    the root handler alone; otherwise (a bare library call) Lightning keeps its own
    console output. Either way :class:`AdvertisementFilter` drops the product tips.
    Idempotent; call after importing lightning, before building a ``Trainer``.
    """
    if logging.getLogger().handlers:
        for name in _LIBRARY_LOGGERS:
            lib = logging.getLogger(name)
            for handler in list(lib.handlers):
                if type(handler) is logging.StreamHandler:  # not file or capture handlers
                    lib.removeHandler(handler)
            lib.propagate = True
    for name in _RANK_ZERO_LOGGERS:
        rz = logging.getLogger(name)
        if not any(isinstance(f, AdvertisementFilter) for f in rz.filters):
            rz.addFilter(AdvertisementFilter())


__all__ = [
    "AdvertisementFilter",
    "EpochSampler",
    "HistoryCallback",
    "RNALightningModule",
    "ShardSampler",
    "process_group_rank",
    "route_lightning_logging",
]
