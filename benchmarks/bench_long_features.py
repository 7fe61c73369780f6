#!/usr/bin/env python3
"""Benchmark: the ``features`` stage on long rRNAs, global vs local base-pair probabilities.

The structures are the two long rRNAs of the pinned rna-tools wheel: 1Z58 (23S rRNA,
2,766 nt) and 3JBV (16S rRNA crop, 1,530 nt). They go through the real stages as
processes (``rna-predict fetch data.source=local``, ``rna-predict angles``); then, for
each record on its own and each mode, ``rna-predict features features.workers=1`` runs
with ``features.max_global_len`` set so that the record takes the global McCaskill path
(O(L^3) time, O(L^2) memory) or the local sliding-window path (RNAplfold; linear).
Wall time, CPU time (user + system; the fairer figure on a shared machine) and peak RSS
come from ``os.wait4`` on the stage process (whole process: Python, torch, ViennaRNA). The table also
compares the two matrices on the pairs the local mode can see (span <= max_bp_span):
Pearson correlation and the largest absolute difference.

    python benchmarks/bench_long_features.py [--ids 1Z58 3JBV] [--skip-global] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rna_predict.config import Config
from rna_predict.data.fetch import default_cache_dir, extract_extra

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "rna_predict.cli"]


def run_stage(args: list[str]) -> tuple[float, float, float]:
    """Run ``rna-predict ARGS`` in the repository; (wall s, CPU s, peak RSS MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([*CLI, *args], cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"rna-predict {' '.join(args)} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def single_record_angles(angles: Path, rid: str, dest: Path) -> Path:
    """An angles dir holding only ``rid`` (its .pt and a one-record manifest)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(angles / f"{rid}.pt", dest / f"{rid}.pt")
    manifest = json.loads((angles / "manifest.json").read_text())
    manifest["records"] = {rid: manifest["records"][rid]}
    (dest / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", nargs="+", default=["1Z58", "3JBV"])
    parser.add_argument("--skip-global", action="store_true", help="only the local mode")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: temporary)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_long_features_"))
    work.mkdir(parents=True, exist_ok=True)
    local = work / "local"
    local.mkdir(exist_ok=True)
    for rid in args.ids:
        extract_extra(rid, default_cache_dir() / "extras")
        shutil.copy(default_cache_dir() / "extras" / f"{rid}.pdb", local / f"{rid}.pdb")
    raw, angles = work / "raw", work / "angles"
    run_stage(["fetch", "data.source=local", f"data.local_dir={local}", f"data.raw_dir={raw}"])
    run_stage(["angles", f"data.raw_dir={raw}", f"angles.out_dir={angles}", "angles.workers=1"])
    span = Config().features.max_bp_span
    print("| record | L | method | wall (s) | CPU (s) | peak RSS (MiB) |")
    print("|---|---:|---|---:|---:|---:|")
    bpps: dict[tuple[str, str], np.ndarray] = {}
    modes = [("local", 1)] + ([] if args.skip_global else [("global", 100_000)])
    for rid in args.ids:
        one = single_record_angles(angles, rid, work / f"angles_{rid}")
        for mode, max_len in modes:
            out = work / f"features_{rid}_{mode}"
            wall, cpu, rss = run_stage(["features", f"angles.out_dir={one}", f"features.out_dir={out}",
                                   "features.workers=1", f"features.max_global_len={max_len}"])
            entry = json.loads((out / "manifest.json").read_text())["records"][rid]
            assert entry["method"] == mode, entry
            bpps[rid, mode] = torch.load(out / f"{rid}.pt", weights_only=True)["bpp"].numpy()
            print(f"| {rid} | {entry['length']} | {mode} | {wall:.1f} | {cpu:.1f} | {rss:.0f} |", flush=True)
    if not args.skip_global:
        print(f"\nlocal vs global on pairs with span <= {span}:")
        for rid in args.ids:
            g, loc = bpps[rid, "global"], bpps[rid, "local"]
            idx = np.arange(g.shape[0])
            near = (np.abs(idx[:, None] - idx[None, :]) <= span) & (idx[:, None] != idx[None, :])
            corr = np.corrcoef(g[near], loc[near])[0, 1]
            print(f"  {rid}: Pearson r = {corr:.3f}, max |diff| = {np.abs(g - loc)[near].max():.3f}, "
                  f"global mass beyond the span = {g[~near].sum() / max(g.sum(), 1e-9):.1%}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
