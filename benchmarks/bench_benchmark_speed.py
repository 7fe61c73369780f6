#!/usr/bin/env python3
"""Benchmark: ``rna-predict benchmark`` time per target against length.

Each native (default: the demo structures 1DQF, 1A51, 1EHZ and 4QK8, 19 to 120 nt) is
copied alone into a temporary directory and benchmarked with
:func:`rna_predict.evaluate.benchmark.run_benchmark`, as ``rna-predict benchmark --natives``
runs it: the trained model (``training.out_dir``), the ``eval`` settings of params.yaml
(samples, sampler steps, refinement steps, bootstrap) and the leakage check against the
training split (with ``--include-similar``: some demo natives are training records, and
timing is the point here); MLflow tracking is off (``training.tracking_uri`` empty,
``MLFLOW_TRACKING_URI`` unset) and the outputs go to the temporary directory.
The baseline in the same run is prediction alone: the model's sampler on the same
native's input (:func:`rna_predict.evaluate.benchmark.native_example`) with the same
samples, steps and refinement (the model's ``sample``, one batched call, as
:func:`rna_predict.evaluate.run_evaluate.score_target`), so the table shows what reading
the native, the training-split baselines and identity check, loading the model,
features, metrics, bootstrap and plots add (``ratio``: CPU time of the benchmark over
that of the sampler alone). Prints wall time, CPU time of this process (user + system;
the fairer figure on a shared machine), the load average and the peak RSS so far.

    python benchmarks/bench_benchmark_speed.py [--ids 1DQF,1A51,1EHZ,4QK8]
        [--raw-dir data/raw] [OVERRIDES ...]   e.g. eval.steps=50
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from rna_predict.config import load_config
from rna_predict.data.dataset import collate
from rna_predict.evaluate.benchmark import (native_example, native_files, native_record,
                                            run_benchmark)
from rna_predict.inference.predict import load_model


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", default="1DQF,1A51,1EHZ,4QK8",
                    help="comma-separated structure ids in --raw-dir")
    ap.add_argument("--raw-dir", default="data/raw")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of params.yaml")
    args = ap.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = load_config(list(args.overrides) + ["training.tracking_uri="])
    e = cfg.eval
    torch.set_num_threads(int(cfg.training.num_threads))
    model = load_model(cfg.training.out_dir)
    print(f"eval: {e.samples} samples x {e.steps} steps, {e.refine_steps} refinement steps, "
          f"{e.bootstrap_samples} bootstrap resamples; {torch.get_num_threads()} threads")
    print(f"{'target':8s} {'L':>5s}  {'bench_wall_s':>12s} {'bench_cpu_s':>11s}  "
          f"{'predict_wall_s':>14s} {'predict_cpu_s':>13s}  {'ratio':>8s} {'load':>5s} "
          f"{'peak_rss_MiB':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        for rid in args.ids.split(","):
            src = sorted(Path(args.raw_dir).glob(f"{rid}.*"))
            if not src:
                raise SystemExit(f"{args.raw_dir}: no structure file for {rid}")
            natives = Path(tmp) / rid / "natives"
            natives.mkdir(parents=True)
            shutil.copy(src[0], natives / src[0].name)
            rec = native_record(native_files(natives)[0], rid, cfg)
            bench_wall, bench_cpu = _timed(lambda: run_benchmark(
                cfg, natives, Path(tmp) / rid / "out", include_similar=True))
            batch = collate([native_example(rec, cfg)])
            gen = torch.Generator().manual_seed(int(cfg.seed))
            with torch.no_grad():
                pred_wall, pred_cpu = _timed(lambda: model.sample(
                    batch, steps=int(e.steps), n_samples=int(e.samples), generator=gen,
                    refine_steps=int(e.refine_steps)))
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{rid:8s} {len(rec['sequence']):5d}  {bench_wall:12.1f} {bench_cpu:11.1f}  "
                  f"{pred_wall:14.1f} {pred_cpu:13.1f}  {bench_cpu / pred_cpu:7.2f}x "
                  f"{os.getloadavg()[0]:5.1f} {rss:12.0f}", flush=True)


if __name__ == "__main__":
    main()
