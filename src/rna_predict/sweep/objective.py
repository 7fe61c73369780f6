"""One Optuna trial: train with the trial's loss weights, score on the validation split.

The score must not depend on the loss weights it tunes (a weighted loss would favour
small weights), so a trial is scored on structures it samples for the validation
records: ``score = (1 - mean best-of C1' lDDT) + 1e-3 * MCQ / 180`` (lower is better;
lDDT decides, torsion MCQ breaks ties). Unpromising trials are pruned per epoch through
optuna-integration's :class:`PyTorchLightningPruningCallback` on the validation torsion
MAE, which is also independent of the weights.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rna_predict.config import Config

log = logging.getLogger(__name__)

#: per-epoch metric the pruner watches (lower is better, like the study's objective)
PRUNING_METRIC = "val/angle_mae"


def trial_config(cfg: Config, params: dict[str, float], work_dir: Path) -> Config:
    """``cfg`` with the trial's weights, the sweep's epoch budget and private output dirs."""
    tcfg = copy.deepcopy(cfg)
    t = tcfg.training
    for name, value in params.items():
        if not hasattr(t, name):
            raise ValueError(f"sweep.space: {name!r} is not a training parameter")
        setattr(t, name, float(value))
    t.max_epochs = int(cfg.sweep.max_epochs)
    t.max_steps = -1
    t.checkpoint_dir = str(work_dir / "checkpoints")
    t.out_dir = str(work_dir / "model")
    t.report_dir = str(work_dir / "reports")
    return tcfg


@torch.no_grad()
def validation_score(model: torch.nn.Module, cfg: Config) -> dict[str, float]:
    """Mean best-of C1' lDDT and mean MCQ of sampled structures on the validation split."""
    from rna_predict.evaluate import baselines
    from rna_predict.evaluate.run_evaluate import _seed_for, evaluate_target
    from rna_predict.data.dataset import RecordDataset, collate
    from rna_predict.data.split_files import read_split_ids

    val_ids = read_split_ids(cfg.split.out_dir, "val")
    table = baselines.fit_from_split(cfg.angles.out_dir, read_split_ids(cfg.split.out_dir, "train"))
    dataset = RecordDataset(cfg.angles.out_dir, cfg.features.out_dir, val_ids, 0, cfg.seed)
    device = next(model.parameters()).device
    lddts, mcqs = [], []
    model.eval()
    for i, rid in enumerate(val_ids):
        rec = baselines.load_angles_record(cfg.angles.out_dir, rid)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in collate([dataset[i]]).items()}
        row = evaluate_target(model, batch, rec, table, cfg.sweep.eval_samples, cfg.sweep.eval_steps,
                              _seed_for(cfg.seed, rid))["row"]
        lddts.append(row["model_lddt_c1_best"])
        mcqs.append(row["model_mcq"])
    lddt, mcq = float(np.nanmean(lddts)), float(np.nanmean(mcqs))
    return {"val_lddt_c1": lddt, "val_mcq": mcq, "score": (1.0 - lddt) + 1e-3 * mcq / 180.0}


def run_trial(trial: Any, cfg: Config, work_root: Path) -> float:
    """Optuna objective body: sample weights, train (with pruning), score."""
    from optuna_integration import PyTorchLightningPruningCallback

    from rna_predict.train.run_train import fit

    space = cfg.sweep.space
    params = {
        name: trial.suggest_float(name, float(lo), float(hi), log=True)
        for name, (lo, hi) in sorted(space.items())
    }
    tcfg = trial_config(cfg, params, work_root / f"trial_{trial.number:03d}")
    pruning = PyTorchLightningPruningCallback(trial, monitor=PRUNING_METRIC)
    module, trainer = fit(tcfg, callbacks=[pruning], enable_progress_bar=False)
    result = validation_score(module.model, tcfg)
    for key, value in result.items():
        trial.set_user_attr(key, round(value, 6))
    trial.set_user_attr("epochs", int(trainer.current_epoch))
    log.info("sweep: trial %d %s -> score %.4f (lDDT %.3f, MCQ %.1f)", trial.number,
             {k: round(v, 4) for k, v in params.items()}, result["score"], result["val_lddt_c1"],
             result["val_mcq"])
    return result["score"]
