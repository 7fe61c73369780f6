"""Helpers for tests that run DVC in a throw-away clone of this repository.

A clone holds only committed files; the ``rna-predict`` the stages call is the package
this test session imports (an editable install of the working tree). Stages run with the
virtual environment's ``bin`` first on ``PATH`` and without ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: repository under test
REPO = Path(__file__).resolve().parents[1]
#: the data stages (fetch the demo set, angles, features, split): about 30 s
DATA_STAGES = ("fetch", "angles", "features", "split")
#: a tiny model and budget for model stages run in a test (seconds, not minutes)
TINY_TRAIN = (
    "model.c_s=16", "model.c_z=8", "model.c_token=16", "model.c_atom=8", "model.c_atompair=4",
    "model.pairformer_blocks=1", "model.diffusion_blocks=1", "model.torsion_layers=1",
    "training.crop=16", "training.noise_copies=1", "training.batch_size=4",
    "training.max_epochs=1", "training.max_steps=2",
)


def env() -> dict[str, str]:
    """Environment for DVC/git in a clone: venv first on PATH, fixed git identity."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_STAGE")}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0",
             GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.org",
             GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.org")
    return e


def run(args: list[str], cwd: Path, timeout: float = 600) -> str:
    """Run a command in ``cwd``; return stdout; fail with its output on a non-zero exit."""
    out = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}) in {cwd}:\n"
                             f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def dvc(*args: str, cwd: Path, timeout: float = 600) -> str:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd, timeout)


def clone(src: Path, dest: Path) -> Path:
    """``git clone src dest`` (committed files only)."""
    run(["git", "clone", "--quiet", str(src), str(dest)], dest.parent)
    return dest


def clone_with_data(dest: Path) -> Path:
    """A clone of the repository with the data stages reproduced and committed
    (``dvc repro split``; ``dvc.lock`` committed if it changed)."""
    clone(REPO, dest)
    dvc("repro", "--quiet", *DATA_STAGES, cwd=dest)
    commit(dest, "data stages")
    return dest


def commit(repo: Path, message: str) -> None:
    """Commit every change in a test clone (nothing if clean)."""
    run(["git", "add", "-A"], repo)
    if run(["git", "status", "--porcelain"], repo).strip():
        run(["git", "commit", "--quiet", "-m", message], repo)
