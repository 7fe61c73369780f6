#!/usr/bin/env python3
"""Compare tracked report files with other versions of them under `.ci/tolerances.yaml`.

Used by `.ci/repro_check.py` (regenerated reports against the committed ones) and by hand:

    python .ci/compare_reports.py            # working tree against HEAD
    python .ci/compare_reports.py --ref REV  # working tree against REV

Prints one line per differing leaf (path, key, committed -> new, tolerance, verdict) and
exits 1 when a difference is outside its tolerance.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOLERANCES = Path(__file__).resolve().parent / "tolerances.yaml"


def load_rules() -> dict[str, list[dict]]:
    return yaml.safe_load(TOLERANCES.read_text())


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """'/'-joined key paths of every leaf of nested dicts and lists."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}/"))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}/"))
        return out
    return {prefix.rstrip("/"): obj}


def parse(path: str, text: str) -> dict[str, Any]:
    """Leaves of a JSON/YAML file, or of a CSV (key ``<column>/<row>``)."""
    if path.endswith(".json"):
        return flatten(json.loads(text))
    if path.endswith((".yaml", ".yml")):
        return flatten(yaml.safe_load(text))
    if path.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        return {f"{col}/{i}": _number(v) for i, r in enumerate(rows) for col, v in r.items()}
    raise ValueError(f"{path}: no comparison rule for this file type")


def _number(v: str) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def rule_for(rules: list[dict], key: str) -> dict:
    column = key.split("/", 1)[0]
    for rule in rules:
        if fnmatch.fnmatchcase(key, rule["pattern"]) or fnmatch.fnmatchcase(column, rule["pattern"]):
            return rule
    return {"pattern": "<none>", "exact": True}


def within(rule: dict, old: Any, new: Any) -> bool:
    if rule.get("info"):
        return True
    if old == new:
        return True
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if not numeric or rule.get("exact"):
        return False
    if not (math.isfinite(old) and math.isfinite(new)):
        return False
    if "abs" in rule:
        return abs(new - old) <= float(rule["abs"])
    if "rel" in rule:
        return abs(new - old) <= float(rule["rel"]) * max(abs(old), 1e-12)
    return False


def describe(rule: dict) -> str:
    for k in ("abs", "rel"):
        if k in rule:
            return f"{k} {rule[k]}"
    return "info" if rule.get("info") else "exact"


def compare_text(path: str, old_text: str, new_text: str, rules: list[dict]) -> tuple[list[str], list[str]]:
    """(failures, notes): one line per differing leaf."""
    old, new = parse(path, old_text), parse(path, new_text)
    failures, notes = [], []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a == b:
            continue
        rule = rule_for(rules, key)
        line = f"  {path}: {key}: {a} -> {b} ({describe(rule)})"
        (notes if within(rule, a, b) else failures).append(line)
    return failures, notes


def git_show(ref: str, path: str) -> str | None:
    proc = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def compare_to_ref(ref: str = "HEAD") -> tuple[list[str], list[str]]:
    """Compare every file named in tolerances.yaml in the working tree with ``ref``."""
    failures, notes = [], []
    for path, rules in load_rules().items():
        old = git_show(ref, path)
        new_path = ROOT / path
        if old is None or not new_path.is_file():
            failures.append(f"  {path}: missing ({'committed' if old is None else 'working tree'})")
            continue
        f, n = compare_text(path, old, new_path.read_text(), rules)
        failures += f
        notes += n
    return failures, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD", help="git revision holding the committed reports")
    args = parser.parse_args(argv)
    failures, notes = compare_to_ref(args.ref)
    if notes:
        print("within tolerance:", *notes, sep="\n")
    if failures:
        print("OUTSIDE tolerance:", *failures, sep="\n")
        return 1
    print(f"reports agree with {args.ref} under .ci/tolerances.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
