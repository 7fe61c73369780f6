#!/usr/bin/env python3
"""Geometry check of `rna-predict predict` output (issue: predict acceptance).

Predicts a sequence with the trained model in ``models/``, reads the PDB back with
MDAnalysis and reports: the fraction of O3'(i)-P(i+1) links within 1.6 +/- 0.2 A, and
the fraction of residue pairs whose closest inter-residue atom distance is >= 1.5 A
(bonded neighbours i, i+1 excluded from the clash count: their O3'-P bond is ~1.6 A).

    python benchmarks/check_prediction.py [--sequence SEQ] [--samples 1] [--steps 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

# a 40-nt hairpin-rich test sequence (not in the demo set)
DEFAULT_SEQUENCE = "GGCGCUUAGCGUAGCCUAGGCUACGCAAGCGCCAUGCAGC"


def link_and_clash_stats(pdb: Path) -> dict[str, float]:
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(pdb))
    residues = u.residues
    links = []
    for a, b in zip(residues[:-1], residues[1:]):
        o3, p = a.atoms.select_atoms("name O3'"), b.atoms.select_atoms("name P")
        if len(o3) and len(p):
            links.append(float(np.linalg.norm(o3.positions[0] - p.positions[0])))
    links_arr = np.array(links)
    pos = [r.atoms.positions for r in residues]
    n, ok, total = len(pos), 0, 0
    for i in range(n):
        for j in range(i + 2, n):
            d = np.linalg.norm(pos[i][:, None] - pos[j][None], axis=-1).min()
            ok += d >= 1.5
            total += 1
    return {
        "residues": len(residues),
        "links": len(links_arr),
        "links_ok_fraction": float(np.mean(np.abs(links_arr - 1.6) <= 0.2)) if len(links_arr) else 0.0,
        "link_median_A": float(np.median(links_arr)) if len(links_arr) else float("nan"),
        "pairs_without_clash_fraction": ok / max(total, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default=DEFAULT_SEQUENCE)
    parser.add_argument("--model-dir", default="models")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    from rna_predict.train.predict import run_predict

    with tempfile.TemporaryDirectory() as tmp:
        paths = run_predict(Path(args.model_dir), args.sequence, Path(tmp) / "pred.pdb",
                            samples=args.samples, steps=args.steps, seed=0)
        print(f"{'sample':<8} {'nt':>4} {'O3-P in 1.6+/-0.2':>18} {'median O3-P':>12} {'pairs >= 1.5 A':>15}")
        for k, path in enumerate(paths):
            s = link_and_clash_stats(path)
            print(f"{k:<8} {s['residues']:>4} {s['links_ok_fraction']:>18.1%} {s['link_median_A']:>12.2f} "
                  f"{s['pairs_without_clash_fraction']:>15.1%}")
    print("targets: >= 90% of links within 1.6 +/- 0.2 A; >= 95% of residue pairs without a < 1.5 A contact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
