"""The README's results tables are generated from the tracked report files, not typed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_block_is_generated_from_reports():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / ".ci" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = (ROOT / "README.md").read_text()
    assert mod.generated_readme(readme) == readme, "run `python .ci/readme_tables.py`"
