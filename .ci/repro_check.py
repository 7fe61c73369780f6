#!/usr/bin/env python3
"""Reproducibility check (`make repro-check`, run by `.ci/run` after the tests).

1. `dvc repro` of the whole default pipeline on this clone;
2. the data-stage outputs (fetch, angles, features, split) must have the md5s committed
   in `dvc.lock` (they are machine-independent);
3. `dvc repro --force` of the model stages, after removing training checkpoints and the
   sweep's study storage (so nothing resumes), must give byte-identical outputs to step 1;
4. `dvc status` must be clean at the end.
Prints what differed and exits 1 on any failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

DATA_STAGES = ("fetch", "angles", "features", "split")
ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str) -> str:
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"repro-check: `{' '.join(cmd)}` failed with exit code {proc.returncode}")
    return proc.stdout


def lock_outs(lock: dict) -> dict[str, dict[str, str]]:
    """stage -> {out path: md5} from a parsed dvc.lock."""
    return {
        name: {o["path"]: o.get("md5", "") for o in stage.get("outs", [])}
        for name, stage in lock.get("stages", {}).items()
    }


def file_hashes(paths: list[str]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (relative names)."""
    out: dict[str, str] = {}
    for p in paths:
        base = ROOT / p
        files = [base] if base.is_file() else sorted(f for f in base.rglob("*") if f.is_file())
        for f in files:
            out[str(f.relative_to(ROOT))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def report(title: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    diffs = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            diffs.append(f"  {key}: {before.get(key, '<absent>')} -> {after.get(key, '<absent>')}")
    if diffs:
        print(f"DIFFERENCE {title}:", *diffs, sep="\n")
    return diffs


def clear_resume_state() -> None:
    """Remove training checkpoints and the sweep's study storage so the forced re-run
    recomputes from scratch instead of resuming the finished runs."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    targets = [ROOT / params["training"]["checkpoint_dir"], ROOT / ".optuna"]
    storage = params["sweep"]["storage"]
    if storage.startswith("sqlite:///"):
        targets.append(ROOT / storage[len("sqlite:///"):])
    for target in targets:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.is_file():
            target.unlink()
        else:
            continue
        print(f"repro-check: removed {target.relative_to(ROOT)} (forced re-run starts from scratch)")


def main() -> int:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    # the stages call `dvc` and `rna-predict` from this interpreter's environment
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text()) if (ROOT / "dvc.lock").is_file() else {}
    committed_outs = lock_outs(committed)
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    model_stages = [s for s in stages if s not in DATA_STAGES]

    run("dvc", "repro")
    first = lock_outs(yaml.safe_load((ROOT / "dvc.lock").read_text()))
    failures: list[str] = []
    for stage in DATA_STAGES:
        if stage not in stages:
            continue
        if not committed_outs.get(stage):
            failures.append(f"dvc.lock committed without outputs of stage {stage!r}")
            continue
        failures += report(f"data stage {stage!r}: committed dvc.lock vs this run",
                           committed_outs[stage], first.get(stage, {}))

    if model_stages:
        paths = [p for s in model_stages for p in first.get(s, {})]
        before = file_hashes(paths)
        clear_resume_state()
        run("dvc", "repro", "--force", *model_stages)
        after = file_hashes(paths)
        failures += report("model stages: first run vs `dvc repro --force`", before, after)

    status = run("dvc", "status", "--json").strip()
    if json.loads(status or "{}"):
        failures.append(f"`dvc status` not clean: {status}")
    if failures:
        print(f"repro-check FAILED ({len(failures)} difference(s))", file=sys.stderr)
        return 1
    print(f"repro-check OK: data stages match dvc.lock; {len(model_stages)} model stage(s) byte-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
