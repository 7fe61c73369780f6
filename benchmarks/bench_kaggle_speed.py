#!/usr/bin/env python3
"""Benchmark: Kaggle-format prediction time against length (``predict --kaggle``).

For each length, a seeded random ACGU sequence is predicted with the trained model
(``--model-dir``, default models/) exactly as ``rna-predict predict --kaggle`` does it
(:func:`rna_predict.inference.kaggle.predict_c1`: five samples, ``--steps`` sampler steps,
``--refine-steps`` refinement steps), once with the five samples in one batched sampler
call and once one at a time (``--batches``). Prints wall time, CPU time of this process
(user + system; the fairer figure on a shared machine), the load average and the peak
RSS so far.

    python benchmarks/bench_kaggle_speed.py [--lengths 25 50 100 200] [--steps 200]
        [--refine-steps 200] [--batches 5 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from rna_predict.inference.kaggle import predict_c1
from rna_predict.inference.predict import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--lengths", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--refine-steps", type=int, default=200)
    ap.add_argument("--batches", type=int, nargs="+", default=[5, 1])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model_dir)
    rng = np.random.default_rng(0)
    print("length  batch  wall_s   cpu_s  load  peak_rss_MiB")
    for length in args.lengths:
        seq = "".join(rng.choice(list("ACGU"), length))
        for batch in args.batches:
            t0, c0 = time.perf_counter(), time.process_time()
            predict_c1(model, [seq], args.steps, 0, args.refine_steps, sample_batch=batch)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{length:6d} {batch:6d} {wall:7.1f} {cpu:7.1f} {os.getloadavg()[0]:5.1f} "
                  f"{rss:13.0f}", flush=True)


if __name__ == "__main__":
    main()
