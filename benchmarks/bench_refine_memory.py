#!/usr/bin/env python3
"""Benchmark: memory and time of refinement and of the clash check on a long RNA (issue 10.5).

Input: the first L residues of a large ribosomal RNA from the rna-tools wheel (default
``1Z58``, 2,766 nt, one chain; ``--structure 3JBV`` for 1,530 nt), extracted with
:func:`rna_predict.data.fetch.extract_extra`. Rows:

- ``refine neighbour``: :func:`rna_predict.model.refine.refine_structure` as shipped (clash
  term over the Verlet neighbour list), started from the true coordinates as the sample
  and the measured torsions plus 20 deg of seeded noise as the Stage B prior, ``--steps``
  Adam steps from each of the two starts;
- ``refine dense``: the same call with the clash term evaluated the way it was before the
  neighbour list: weight and minimum-distance matrices over all (23 L)^2 slot pairs
  (from the same rules, :func:`rna_predict.model.refine.clash_rules`) and a full
  ``torch.cdist``; run up to ``--dense-max`` residues, larger sizes extrapolated
  quadratically from the largest size run (marked ``~``);
- ``clash check``: :func:`rna_predict.evaluate.validity.clash_free_fraction` (neighbour
  search) on the true structure, and ``clash check dense``: the same fraction from the
  full atom distance matrix (up to ``--dense-max``, then extrapolated);
- ``link+clash stats``: :func:`rna_predict.evaluate.validity.link_and_clash_stats` on
  the PDB file of the first L residues (what ``evaluate``/``check_prediction`` run).

Each row runs in a fresh process. Peak memory is the process's peak resident set
(``getrusage(RUSAGE_SELF).ru_maxrss``) and its growth above the level just before the
measured call; time is wall-clock of the call (``s/step`` divides by the objective
evaluations, 2 x (steps + 1)). One table on stdout.

    python benchmarks/bench_refine_memory.py [--sizes 100 200 400 800 1600 2766]
        [--dense-max 400] [--steps 5] [--structure 1Z58] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("bench_refine_memory")

KINDS = ("refine neighbour", "refine dense", "clash check", "clash check dense", "link+clash stats")


def _structure(name: str, length: int):
    """Structure and PDB path of the first ``length`` residues of the wheel extra ``name``."""
    from rna_predict.data.fetch import default_cache_dir, extract_extra
    from rna_predict.data.structure import read_structure

    path = extract_extra(name, default_cache_dir() / "extras")
    return read_structure(path), path


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(kind: str, name: str, length: int, steps: int, threads: int) -> dict:
    """Run one row in this process; return its figures."""
    import numpy as np
    import torch

    from rna_predict.data.atom_layout import BB, N_SLOTS, SLOT_MASK, base_type_index

    torch.set_num_threads(threads)
    s, path = _structure(name, length)
    seq = s.sequence[:length]
    coords = s.coords[:length].copy()
    c1 = coords[:, BB["C1'"]]
    c1 = np.where(np.isnan(c1), np.nanmean(c1, axis=0), c1)
    coords = np.where(np.isnan(coords), c1[:, None, :], coords)  # absent atoms on their C1'
    bt = torch.as_tensor(base_type_index(seq))
    present = SLOT_MASK[base_type_index(seq)]
    out: dict = {"kind": kind, "L": length, "atoms": int(present.sum())}

    if kind.startswith("refine"):
        import rna_predict.model.refine as refine
        from rna_predict.data.torsions import compute_torsions

        angles = torch.as_tensor(np.nan_to_num(compute_torsions(s).angles[:length]), dtype=torch.float32)
        gen = torch.Generator().manual_seed(0)
        prior = angles + torch.deg2rad(torch.tensor(20.0)) * torch.randn(angles.shape, generator=gen)
        sincos = torch.stack([prior.sin(), prior.cos()], -1)
        terms = []

        class Counted(refine.ClashNeighbourList):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                terms.append(self)

        class Dense:
            """The clash term before the neighbour list: dense [23 L, 23 L] matrices + cdist."""

            def __init__(self, atom_mask, chain_index, polar, skin=None):
                n = atom_mask.shape[0]
                res = torch.arange(n).repeat_interleave(N_SLOTS)
                slot = torch.arange(N_SLOTS).repeat(n)
                chain = chain_index.repeat_interleave(N_SLOTS)
                pol = polar.reshape(-1)
                m = atom_mask.reshape(-1)
                counted, self.d_min = refine.clash_rules(
                    res[:, None], slot[:, None], chain[:, None], pol[:, None],
                    res[None, :], slot[None, :], chain[None, :], pol[None, :])
                self.weight = (0.5 * (counted & m[:, None] & m[None, :])).float()

            def __call__(self, x):
                x = x.reshape(-1, 3)
                d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
                return (self.weight * torch.relu(self.d_min - d) ** 2).sum()

        refine.ClashNeighbourList = Dense if kind == "refine dense" else Counted
        args = (torch.as_tensor(coords, dtype=torch.float32), sincos, bt,
                torch.as_tensor(s.chain_index[:length]))
        refine.refine_structure(*(a[:4] for a in args), steps=1)  # warm-up: imports, first calls
        terms.clear()
        base = _rss_mb()
        t0 = time.perf_counter()
        refine.refine_structure(*args, steps=steps)
        out["time_s"] = time.perf_counter() - t0
        out["s_per_eval"] = out["time_s"] / (2 * (steps + 1))
        if terms:
            out["list_pairs"] = int(len(terms[0].i))
            out["builds_per_eval"] = terms[0].builds / (2 * (steps + 1))
    elif kind == "link+clash stats":
        import tempfile

        from rna_predict.evaluate.validity import link_and_clash_stats

        import MDAnalysis  # noqa: F401  (imported before the measured call)
        from MDAnalysis.lib.distances import self_capped_distance  # noqa: F401
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.startswith(("ATOM", "HETATM"))]
        keep, seen = [], []
        for ln in lines:  # records of the first ``length`` residues (file order)
            key = ln[21:27]
            if not seen or seen[-1] != key:
                seen.append(key)
            if len(seen) > length:
                break
            keep.append(ln)
        with tempfile.TemporaryDirectory() as tmp:
            sub = Path(tmp) / "sub.pdb"
            sub.write_text("\n".join(keep + ["END", ""]))
            base = _rss_mb()
            t0 = time.perf_counter()
            stats = link_and_clash_stats(sub)
            out["time_s"] = time.perf_counter() - t0
        out["result"] = stats["pairs_without_clash_fraction"]
    else:
        from rna_predict.evaluate.validity import CLASH_DISTANCE, clash_free_fraction

        from MDAnalysis.lib.distances import self_capped_distance  # noqa: F401  (imported first)
        from scipy.spatial.distance import cdist

        positions = [coords[i][present[i]] for i in range(length)]
        base = _rss_mb()
        t0 = time.perf_counter()
        if kind == "clash check":
            out["result"] = clash_free_fraction(positions)
        else:  # every atom pair: the full distance matrix, then the closest pair per residue pair
            xyz = np.concatenate(positions)
            res = np.repeat(np.arange(length), [len(p) for p in positions])
            close = cdist(xyz, xyz) < CLASH_DISTANCE
            hit = np.zeros((length, length), dtype=bool)
            ai, aj = np.nonzero(close)
            hit[res[ai], res[aj]] = True
            clashing = int(np.triu(hit, 1).sum())
            out["result"] = 1.0 - clashing / (length * (length - 1) / 2)
        out["time_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _rss_mb()
    out["growth_mb"] = out["peak_rss_mb"] - base
    return out


def run_row(kind: str, args: argparse.Namespace, length: int) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, str(length), "--steps", str(args.steps),
           "--structure", args.structure, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} L={length} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800, 1600, 2766])
    parser.add_argument("--dense-max", type=int, default=400, help="largest L run densely")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--structure", default="1Z58")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.one:
        print(json.dumps(measure(args.one[0], args.structure, int(args.one[1]), args.steps, args.threads)))
        return 0

    rows = []
    for kind in args.kinds:
        dense = kind.endswith("dense")
        measured = None
        for length in sorted(args.sizes):
            if dense and length > args.dense_max:
                if measured is None:
                    continue
                f = (length / measured["L"]) ** 2  # (23 L)^2 matrices: quadratic in L
                est = {k: measured[k] * f for k in ("s_per_eval",) if k in measured}
                rows.append({**measured, **est, "L": length, "time_s": measured["time_s"] * f,
                             "growth_mb": measured["growth_mb"] * f, "peak_rss_mb": float("nan"),
                             "atoms": None, "extrapolated": True})
                continue
            log.info("%s, L = %d", kind, length)
            row = run_row(kind, args, length)
            rows.append(row)
            measured = row

    print(f"structure {args.structure}, {args.steps} refinement steps per start, {args.threads} thread(s); "
          "~ = extrapolated (x (L / L_dense)^2)")
    print(f"{'kind':<18} {'L':>5} {'atoms':>6} {'time s':>9} {'s/eval':>8} {'peak RSS MB':>12} "
          f"{'growth MB':>10} {'pairs':>8} {'builds/eval':>11} {'result':>8}")
    for r in rows:
        mark = "~" if r.get("extrapolated") else " "
        atoms = "" if r["atoms"] is None else str(r["atoms"])
        peak = "" if r.get("extrapolated") else f"{r['peak_rss_mb']:.0f}"
        res = f"{r['result']:.4f}" if "result" in r and not r.get("extrapolated") else ""
        per = f"{r['s_per_eval']:.2f}" if "s_per_eval" in r else ""
        print(f"{r['kind']:<18} {r['L']:>5} {atoms:>6} {mark}{r['time_s']:>8.1f} {per:>8} {peak:>12} "
              f"{mark}{r['growth_mb']:>9.0f} {r.get('list_pairs', ''):>8} "
              f"{(format(r['builds_per_eval'], '.2f') if 'builds_per_eval' in r else ''):>11} {res:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
