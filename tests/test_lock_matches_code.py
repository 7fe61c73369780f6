"""The committed dvc.lock (and so the committed reports) was computed from this very code
and these params: a source edit without `dvc repro` fails here, before CI's full run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict:
    return yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]


def test_every_source_dep_in_the_lock_matches_the_file():
    stale = []
    for stage, entry in _lock().items():
        for dep in entry.get("deps", []):
            path = ROOT / dep["path"]
            if dep["path"].startswith("src/") and path.is_file():
                if hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                    stale.append(f"{stage}: {dep['path']}")
    assert not stale, "dvc.lock is stale (run `make repro`): " + ", ".join(stale)


def test_every_locked_param_matches_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def lookup(key: str):
        node = params
        for part in key.split("."):
            node = node[part]
        return node

    stale = [f"{stage}: {key}" for stage, entry in _lock().items()
             for key, value in (entry.get("params") or {}).get("params.yaml", {}).items()
             if lookup(key) != value]
    assert not stale, "dvc.lock params differ from params.yaml (run `make repro`): " + ", ".join(stale)
