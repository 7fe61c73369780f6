"""Entry point of the DDP test (``tests/test_distributed.py``), run as a script.

``python tests/ddp_train_worker.py PARAMS_YAML IDS_DIR`` runs the ``train`` stage
(:func:`rna_predict.train.run_train.run_train`, as ``rna-predict train`` does) with the
parameters in ``PARAMS_YAML`` and a callback that writes the record ids each rank
trained and validated on to ``IDS_DIR/rank<R>.json``. Lightning's DDP launcher re-runs
this script for rank 1, as it re-runs ``rna-predict train`` in real use.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import lightning as L


class RecordIds(L.Callback):
    """Collects ``batch["ids"]`` per epoch (train) and per validation run, per rank."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.seen: dict[str, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault(f"train/{trainer.current_epoch}", []).extend(batch["ids"])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.seen.setdefault(f"val/{trainer.current_epoch}", []).extend(batch["ids"])

    def on_fit_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"world_size": trainer.world_size, "seen": self.seen}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(payload, sort_keys=True))


def main(params: str, ids_dir: str) -> int:
    from rna_predict.config import load_config
    from rna_predict.train.run_train import run_train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_train(load_config([], params=params), callbacks=[RecordIds(ids_dir)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
