#!/usr/bin/env python3
"""Benchmark: the data stages (fetch -> angles -> features -> split) at PDB scale.

The real PDB is not reachable from the machines this repository is developed and tested
on, so this is a LOAD TEST ON SYNTHETIC DATA, and the output says so:

- the N structures (default 2,000) are the 17 demo structures (plus, every
  ``--long-every`` structures, the 2,766-nt 23S rRNA 1Z58 and the 1,530-nt 16S crop
  3JBV from the same pinned wheel), replicated under new PDB-style ids (``9xxx``) and
  written as mmCIF;
- their sequences are mutated into families (``--family-size`` members share a family
  consensus made with transitions A<->G, C<->U at ``--family-rate``; each member adds
  ``--member-rate`` of its own), so the split has real clusters to find. Transitions
  keep every atom the torsions need (purines keep N9/C4, pyrimidines N1/C2);
- a local HTTP server (``tests/fault_server.py``, the one the fetch tests use) serves
  them under the RCSB URL layout; ``--fault-rate`` of the ids get one HTTP 500 first.

Each stage runs as the real ``rna-predict <stage>`` process with ``data.id_list``
pointing at a BGSU-format CSV of the ids, and is measured by ``os.wait4`` (wall time,
peak RSS of the largest process) and by a sampler of the summed RSS of the stage's whole
process tree (workers included). The table gives time per 1,000 structures, peak
memory, the slowest single ``features`` record, and an extrapolation to a full set
(``--full-set`` structures of the same length distribution: a few thousand for the BGSU
representative set, 21,005 for RNA3DB's structures). The baseline in the same run is
the issue's goal: 10 min per 1,000 structures, 4 GB, 30 s per ``features`` record.

    python benchmarks/bench_scale.py [--n 2000] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fault_server import FaultServer  # noqa: E402  (the fetch tests' server)

from rna_predict.data.fetch import default_cache_dir, extract_extra, fetch_demo  # noqa: E402

LOG = logging.getLogger("bench_scale")
GOAL_S_PER_1000 = 600.0
GOAL_PEAK_GB = 4.0
GOAL_RECORD_S = 30.0
TRANSITION = {"A": "G", "G": "A", "C": "U", "U": "C"}
STAGES = ("fetch", "angles", "features", "split")


# ------------------------------------------------------------------ synthetic PDB set
def _templates(cache: Path) -> tuple[list[Path], list[Path]]:
    """The 17 demo structures and the two long rRNA extras (files from the pinned wheel)."""
    rows = fetch_demo(cache / "demo_raw")
    demo = [cache / "demo_raw" / r.file for r in rows]
    long = [extract_extra(name, cache / "extras") for name in ("1Z58", "3JBV")]
    return demo, long


def _mutate(structure, rate: float, rng: np.random.Generator) -> int:
    """Rename a ``rate`` fraction of standard nucleotides to their transition partner."""
    changed = 0
    for chain in structure[0]:
        for res in chain:
            if res.name in TRANSITION and rng.random() < rate:
                res.name = TRANSITION[res.name]
                changed += 1
    return changed


def make_structures(out: Path, n: int, family_size: int, family_rate: float,
                    member_rate: float, long_every: int, seed: int) -> list[tuple[str, int, str]]:
    """Write ``n`` mutated replicas as ``out/<ID>.cif``; return ``(id, residues, IFE)``.

    The IFE joins every chain holding nucleotides (``9ABC|1|A+9ABC|1|B``), as BGSU
    writes a multi-chain representative.
    """
    import gemmi

    demo, long = _templates(default_cache_dir())
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        family = i // family_size
        if long_every and i % long_every == long_every - 1:
            template = long[(i // long_every) % len(long)]
        else:
            template = demo[family % len(demo)]
        st = gemmi.read_structure(str(template))
        st.setup_entities()
        _mutate(st, family_rate, np.random.default_rng([seed, family]))
        _mutate(st, member_rate, np.random.default_rng([seed, family, i]))
        pid = "9" + np.base_repr(i, 36).rjust(3, "0")
        st.name = pid
        doc = st.make_mmcif_document()
        doc.write_file(str(out / f"{pid}.cif"))
        chains = [ch.name for ch in st[0] if any(r.name in TRANSITION for r in ch)]
        residues = sum(1 for ch in st[0] for r in ch if r.name in TRANSITION)
        made.append((pid, residues, "+".join(f"{pid}|1|{c}" for c in chains)))
    return made


def write_bgsu_csv(path: Path, ifes: list[str]) -> None:
    """A BGSU-representative-set-style CSV: class, representative IFE, members."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        for k, ife in enumerate(ifes):
            writer.writerow([f"NR_all_{k + 1:05d}.1", ife, ife])


# ------------------------------------------------------------------ measurement
class TreeRss:
    """Samples the summed RSS of a process and its descendants (psutil) every 0.2 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_stage(stage: str, overrides: list[str], cwd: Path, log: Path) -> dict[str, float]:
    """Run ``rna-predict <stage> overrides`` in ``cwd``; wall time and peak memory."""
    exe = shutil.which("rna-predict", path=str(Path(sys.executable).parent)) or "rna-predict"
    t0 = time.perf_counter()
    with log.open("ab") as fh:
        proc = subprocess.Popen([exe, stage, *overrides], cwd=cwd, stdout=fh, stderr=fh)
        tree = TreeRss(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    tree_peak = tree.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed with exit code {proc.returncode}; see {log}")
    return {"wall_s": wall, "max_rss_gb": usage.ru_maxrss / 2**20, "tree_rss_gb": tree_peak / 2**30}


def slowest_features_record(work: Path) -> tuple[str, int, float]:
    """Time ``featurize`` on the longest record again, alone (the per-record goal)."""
    import json

    import torch

    from rna_predict.config import load_config
    from rna_predict.data.features import featurize

    records = json.loads((work / "data/angles/manifest.json").read_text())["records"]
    rid = max((r for r in records if records[r]["status"] == "ok"),
              key=lambda r: records[r]["residues"])
    length = records[rid]["residues"]
    cfg = load_config([], params=work / "params.yaml")
    rec = torch.load(work / "data/angles" / f"{rid}.pt", weights_only=True)
    f = cfg.features
    t0 = time.perf_counter()
    featurize(rec, f.temperature, f.max_global_len, f.window, f.max_bp_span)
    return rid, length, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="structures served (default 2000)")
    ap.add_argument("--workers", type=int, default=2, help="data.workers / angles / features workers")
    ap.add_argument("--family-size", type=int, default=4)
    ap.add_argument("--family-rate", type=float, default=0.15)
    ap.add_argument("--member-rate", type=float, default=0.04)
    ap.add_argument("--long-every", type=int, default=250,
                    help="every k-th structure is a 1,530- or 2,766-nt rRNA (0: none)")
    ap.add_argument("--fault-rate", type=float, default=0.01,
                    help="fraction of ids whose first request gets HTTP 500")
    ap.add_argument("--full-set", type=int, nargs="*", default=[3000, 21005],
                    help="structure counts to extrapolate to (BGSU ~ a few thousand; RNA3DB 21,005)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: temporary)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    served = work / "served"
    t0 = time.perf_counter()
    made = make_structures(served, args.n, args.family_size, args.family_rate, args.member_rate,
                           args.long_every, args.seed)
    LOG.info("generated %d synthetic structures in %.0f s (%s)", len(made),
             time.perf_counter() - t0, served)
    ids = [m[0] for m in made]
    write_bgsu_csv(work / "ids.csv", [m[2] for m in made])
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    rng = np.random.default_rng(args.seed)
    faulty = [pid for pid in ids if rng.random() < args.fault_rate]
    faults = {pid: ["500"] for pid in faulty}

    results: dict[str, dict[str, float]] = {}
    with FaultServer(served, faults) as server:
        common = [f"data.id_list={work / 'ids.csv'}", "data.source=rcsb",
                  f"data.rcsb_url={server.url}", f"data.workers={max(4, args.workers)}",
                  f"angles.workers={args.workers}", f"features.workers={args.workers}"]
        for stage in STAGES:
            LOG.info("running %s ...", stage)
            results[stage] = run_stage(stage, common, work, work / "stages.log")
            LOG.info("%s: %.1f s", stage, results[stage]["wall_s"])
    rid, length, record_s = slowest_features_record(work)

    lengths = np.array([m[1] for m in made])
    total = sum(r["wall_s"] for r in results.values())
    per_1000 = total / len(made) * 1000
    peak = max(max(r["tree_rss_gb"], r["max_rss_gb"]) for r in results.values())
    print()
    print(f"SYNTHETIC LOAD TEST: {len(made)} replicas of the demo set and two rRNAs under new ids,")
    print(f"sequences mutated into families of {args.family_size}; {len(faulty)} ids served HTTP 500 first.")
    print(f"lengths: mean {lengths.mean():.0f} nt, median {np.median(lengths):.0f}, max {lengths.max()}; "
          f"workers {args.workers}; {os.cpu_count()} CPUs")
    print()
    print(f"{'stage':<10}{'wall s':>9}{'s/1000':>9}{'peak RSS GB':>13}{'tree RSS GB':>13}")
    for stage, r in results.items():
        print(f"{stage:<10}{r['wall_s']:>9.1f}{r['wall_s'] / len(made) * 1000:>9.1f}"
              f"{r['max_rss_gb']:>13.2f}{r['tree_rss_gb']:>13.2f}")
    print(f"{'total':<10}{total:>9.1f}{per_1000:>9.1f}{peak:>13.2f}")
    print()
    print(f"{'check':<52}{'measured':>10}{'goal':>8}")
    checks = [("end to end, s per 1,000 structures", per_1000, GOAL_S_PER_1000),
              ("peak memory, GB", peak, GOAL_PEAK_GB),
              (f"slowest features record ({rid}, {length} nt), s", record_s, GOAL_RECORD_S)]
    for name, value, goal in checks:
        print(f"{name:<52}{value:>10.2f}{goal:>8.0f}{'ok' if value <= goal else 'MISS':>6}")
    print()
    for full in args.full_set:
        print(f"extrapolated to {full:,} structures of this length mix: "
              f"{per_1000 * full / 1000 / 60:.0f} min on {os.cpu_count()} CPUs")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(v <= g for _, v, g in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
