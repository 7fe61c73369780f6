#!/usr/bin/env python3
"""Geometry check of `rna-predict predict` output (issue 4 acceptance).

Predicts a 40-nt sequence with the trained model in ``models/``, twice from the same
diffusion samples: raw (``--refine-steps 0``, the baseline) and refined (the default,
:mod:`rna_predict.model.refine`). Each PDB is read back with MDAnalysis
(:func:`rna_predict.evaluate.validity.link_and_clash_stats`) and the table reports the
fraction of O3'(i)-P(i+1) links within 1.6 +/- 0.2 A, their median, and the fraction of
residue pairs (neighbours included) whose closest atoms are >= 1.5 A apart.

    python benchmarks/check_prediction.py [--sequence SEQ] [--samples 3] [--steps 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# a 40-nt hairpin-rich test sequence (not in the demo set)
DEFAULT_SEQUENCE = "GGCGCUUAGCGUAGCCUAGGCUACGCAAGCGCCAUGCAGC"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default=DEFAULT_SEQUENCE)
    parser.add_argument("--model-dir", default="models")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--refine-steps", type=int, default=200)
    args = parser.parse_args()

    from rna_predict.evaluate.validity import link_and_clash_stats
    from rna_predict.inference.predict import run_predict

    print(f"{'output':<9} {'sample':>6} {'nt':>4} {'O3-P in 1.6+/-0.2':>18} {'median O3-P':>12} "
          f"{'pairs >= 1.5 A':>15} {'s/sample':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, refine in (("raw", 0), ("refined", args.refine_steps)):
            t0 = time.perf_counter()
            paths = run_predict(Path(args.model_dir), args.sequence, Path(tmp) / f"{label}.pdb",
                                samples=args.samples, steps=args.steps, seed=0, refine_steps=refine)
            per = (time.perf_counter() - t0) / args.samples
            for k, path in enumerate(paths):
                s = link_and_clash_stats(path)
                print(f"{label:<9} {k + 1:>6} {int(s['residues']):>4} {s['links_ok_fraction']:>18.1%} "
                      f"{s['link_median_A']:>12.2f} {s['pairs_without_clash_fraction']:>15.1%} {per:>9.1f}")
    print("targets: >= 90% of links within 1.6 +/- 0.2 A; >= 95% of residue pairs without a < 1.5 A contact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
