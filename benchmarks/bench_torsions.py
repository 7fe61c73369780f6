#!/usr/bin/env python3
"""Benchmark: vectorised torsions vs a per-residue MDAnalysis ``nuclinfo.tors`` loop.

For each structure, in one run: time to load it into an MDAnalysis Universe (baseline
for "just reading the file"), time of ``read_structure`` + ``compute_torsions`` (this
package), and time of a ``nuclinfo.tors`` loop over every residue. Then whole processes:
``rna-predict torsions FILE --json`` against ``python -c 'mda.Universe(FILE)'``.
Prints a table; the structures come from the pinned rna-tools wheel (1Z58 = 23S rRNA,
2766 nt; 3JBV = 16S rRNA crop, 1530 nt; 1EHZ = tRNA-Phe, 76 nt).

    python benchmarks/bench_torsions.py [--repeats 3] [--skip-nuclinfo]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from rna_predict.data.fetch import default_cache_dir, extract_extra
from rna_predict.data.structure import read_structure
from rna_predict.data.torsions import compute_torsions


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def load_universe(path: Path):
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(str(path))


def nuclinfo_loop(path: Path) -> int:
    """Per-residue reference: nuclinfo.tors on every residue with both neighbours."""
    from MDAnalysis.analysis import nuclinfo

    u = load_universe(path)
    n = 0
    for seg in u.segments:
        resids = seg.residues.resids
        for resid in resids[1:-1]:
            try:
                nuclinfo.tors(u, seg.segid, int(resid))
                n += 1
            except Exception:  # noqa: BLE001 - gaps/missing atoms: nuclinfo cannot do them
                pass
    return n


def process_time(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-nuclinfo", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    extras = default_cache_dir() / "extras"
    files = {name: extract_extra(name, extras) for name in ("1EHZ_CIF", "3JBV", "1Z58")}

    print(f"{'structure':<10} {'nt':>5} {'load Universe s':>16} {'ours s':>8} {'ours nt/s':>10} "
          f"{'nuclinfo s':>11} {'nuclinfo nt/s':>14} {'speed-up':>9}")
    for name, path in files.items():
        n = len(read_structure(path))
        try:
            t_load = best_of(lambda: load_universe(path), args.repeats)
        except ValueError as exc:  # MDAnalysis' PDB reader rejects some files (3JBV)
            print(f"{name:<10} {n:>5} MDAnalysis cannot load it: {str(exc)[:60]}")
            continue
        t_ours = best_of(lambda: compute_torsions(read_structure(path)), args.repeats)
        if args.skip_nuclinfo:
            t_ref, n_ref = float("nan"), n
        else:
            t = time.perf_counter()
            n_ref = nuclinfo_loop(path)
            t_ref = time.perf_counter() - t
        print(f"{name:<10} {n:>5} {t_load:>16.3f} {t_ours:>8.3f} {n / t_ours:>10.0f} "
              f"{t_ref:>11.2f} {n_ref / t_ref:>14.0f} {(t_ref / n_ref) / (t_ours / n):>8.0f}x")

    big = files["1Z58"]
    exe = Path(sys.executable).with_name("rna-predict")
    t_cli = process_time([str(exe), "torsions", str(big), "--json"], args.repeats)
    t_mda = process_time([sys.executable, "-c", f"import MDAnalysis as m; m.Universe({str(big)!r})"],
                         args.repeats)
    print(f"\nwhole process on 1Z58 (median of {args.repeats}): `rna-predict torsions --json` "
          f"{t_cli:.2f} s, load-only Universe {t_mda:.2f} s, ratio {t_cli / t_mda:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
