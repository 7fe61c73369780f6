"""Shared artifacts: push the data stages' outputs to a local-directory DVC remote from
one clone, pull them into a fresh clone, and nothing is left to recompute there.

Only the data stages (fetch, angles, features, split) are reproduced and pushed here
(about 30 s); ``models/`` travels the same way (``dvc push``/``dvc pull`` of the train
stage's outputs) but needs a trained model, which this test does not spend time on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dvc_clone import DATA_STAGES, clone, clone_with_data, commit, dvc

OUTPUTS = ("data/raw", "data/angles", "data/features", "data/splits")


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under the data outputs, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS for p in sorted((root / out).rglob("*")) if p.is_file()}


def test_push_then_pull_into_fresh_clone_is_up_to_date(tmp_path):
    producer = clone_with_data(tmp_path / "producer")
    remote = tmp_path / "remote"
    dvc("remote", "add", "--default", "shared", str(remote), cwd=producer)
    commit(producer, "remote")
    dvc("push", *DATA_STAGES, cwd=producer)
    assert any(p.is_file() for p in remote.rglob("*"))
    produced = _digest(producer)
    assert len([k for k in produced if k.startswith("data/angles/")]) >= 10

    consumer = clone(producer, tmp_path / "consumer")
    assert not (consumer / "data/angles").exists()
    dvc("pull", *DATA_STAGES, cwd=consumer)
    assert _digest(consumer) == produced  # byte for byte
    status = dvc("status", *DATA_STAGES, cwd=consumer)
    assert "up to date" in status, status
    dry = dvc("repro", "--dry", *DATA_STAGES, cwd=consumer)
    assert "Running stage" not in dry, dry
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in dry, dry
