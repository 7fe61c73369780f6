"""Each DVC stage lists exactly the files it reads (ARCHITECTURE.md section 8).

The source part of a stage's deps is derived from the code (``tests/import_graph.py``):
``cli.py`` (the stage command runs through it), what ``cli.main`` imports on the way to
the stage, the stage's entry module, and everything those import (lazy imports too),
with the ``__init__.py`` of every package on the way and the non-Python files the code
names (``data/demo_manifest.json``). A folder dep covers every file under it and is only
acceptable when all of those files are in the closure. The data part is the table
:data:`DATA_DEPS` below.

``python tests/test_stage_deps.py`` prints the expected deps of every stage.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_graph import (  # noqa: E402
    CLI, REPO, STAGE_ENTRY, _parse, cli_dispatch_modules, module_file, stage_closure,
)

DVC_YAML = REPO / "dvc.yaml"
SRC_PREFIX = "src/"

#: data (non-source) deps of each stage: what its code reads besides the package
#: (``lists/`` holds the id lists of ``data.id_list``; ``pretrained/`` the starting weights
#: of ``training.init_from`` and local TorsionBERT checkpoints)
DATA_DEPS = {
    "fetch": ["lists"],
    "angles": ["data/raw"],
    "features": ["data/angles"],
    "split": ["data/angles", "data/features"],
    "train": ["data/angles", "data/features", "data/splits", "pretrained"],
    "evaluate": ["data/angles", "data/features", "data/splits", "models/adapters.safetensors",
                 "models/model.safetensors", "models/model_config.json", "pretrained"],
    "sweep": ["data/angles", "data/features", "data/splits", "pretrained"],
}


def expected_deps(stage: str) -> list[str]:
    """The full, sorted deps list ``dvc.yaml`` should carry for ``stage``."""
    return sorted(DATA_DEPS[stage] + stage_closure(stage))


def _stages() -> dict:
    return yaml.safe_load(DVC_YAML.read_text())["stages"]


def _paths(entries) -> list[str]:
    """Paths of a deps/outs/metrics/plots list (entries are strings or one-key dicts)."""
    out = []
    for e in entries or []:
        out += [e] if isinstance(e, str) else list(e)
    return out


def _dvc_files_under(path: Path) -> set[str]:
    """Files DVC hashes for a dep (``.dvcignore``: ``__pycache__/``, ``*.pyc``), repo-relative."""
    if path.is_file():
        return {path.relative_to(REPO).as_posix()}
    return {p.relative_to(REPO).as_posix() for p in path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def covered_src_files(deps: list[str]) -> set[str]:
    """Source files a deps list covers (folder deps expanded)."""
    out: set[str] = set()
    for dep in deps:
        if dep.startswith(SRC_PREFIX) and (REPO / dep).exists():
            out |= _dvc_files_under(REPO / dep)
    return out


def test_stage_table_matches_cli():
    tree = _parse(module_file(CLI))
    stages = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "STAGES" for t in n.targets))
    assert set(stages) == set(STAGE_ENTRY), "cli.STAGES and import_graph.STAGE_ENTRY differ"
    assert cli_dispatch_modules() == set(STAGE_ENTRY.values()), \
        "cli._stage imports other entry modules than import_graph.STAGE_ENTRY"
    assert set(_stages()) == set(STAGE_ENTRY) == set(DATA_DEPS)


def test_every_stage_lists_its_import_closure():
    problems = []
    for stage, spec in _stages().items():
        deps = _paths(spec.get("deps"))
        closure = set(stage_closure(stage))
        covered = covered_src_files(deps)
        missing = sorted(closure - covered)
        extra = sorted(covered - closure)
        if missing:
            problems.append(f"{stage}: missing deps (in the import closure):\n    "
                            + "\n    ".join(missing))
        if extra:
            problems.append(f"{stage}: deps outside the import closure (a folder dep may only "
                            "cover closure files):\n    " + "\n    ".join(extra))
    assert not problems, "\n".join(problems) + "\n(`python tests/test_stage_deps.py` prints the expected deps)"


def test_every_stage_lists_its_data():
    problems = []
    for stage, spec in _stages().items():
        data = sorted(d for d in _paths(spec.get("deps")) if not d.startswith(SRC_PREFIX))
        if data != sorted(DATA_DEPS[stage]):
            problems.append(f"{stage}: data deps {data}, expected {sorted(DATA_DEPS[stage])}")
    assert not problems, "\n".join(problems)


def test_every_dep_exists_or_is_a_stage_output():
    stages = _stages()
    produced = {p for spec in stages.values()
                for key in ("outs", "metrics", "plots") for p in _paths(spec.get(key))}
    problems = []
    for stage, spec in stages.items():
        deps = _paths(spec.get("deps"))
        dupes = sorted({d for d in deps if deps.count(d) > 1})
        if dupes:
            problems.append(f"{stage}: listed twice: {dupes}")
        for dep in deps:
            if not (REPO / dep).exists() and dep not in produced:
                problems.append(f"{stage}: dep {dep} does not exist and no stage outputs it")
    assert not problems, "\n".join(problems)


def test_closure_follows_lazy_and_relative_imports(tmp_path):
    """The closure machinery on a toy package: lazy, relative and ``from pkg import mod``."""
    import import_graph as g

    pkg = tmp_path / "rna_predict"
    files = {
        "__init__.py": "",
        "cli.py": ("def _stage(name, cfg):\n    from .a.entry import run\n"
                   "def cmd_other(args):\n    from .c import unused\n"
                   "def main():\n    from .config import load\n    return cmd_other(1) or _stage(1, 2)\n"),
        "config.py": "",
        "a/__init__.py": "",
        "a/entry.py": "def run():\n    from . import helper\n    from ..b.deep import x\n",
        "a/helper.py": "import json\nP = 'table.json'\n",
        "a/table.json": "{}",
        "b/__init__.py": "",
        "b/deep.py": "from rna_predict.b import other\n",
        "b/other.py": "",
        "b/unrelated.py": "",
        "c/__init__.py": "",
        "c/unused.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    mods = g.module_closure(["rna_predict.a.entry"], tmp_path)
    assert mods == {"rna_predict", "rna_predict.a", "rna_predict.a.entry", "rna_predict.a.helper",
                    "rna_predict.b", "rna_predict.b.deep", "rna_predict.b.other"}
    files = [f.split("rna_predict/", 1)[1] for f in g.closure_files(mods, tmp_path)]
    assert files == ["__init__.py", "a/__init__.py", "a/entry.py", "a/helper.py", "a/table.json",
                     "b/__init__.py", "b/deep.py", "b/other.py"]
    assert g.cli_stage_functions(tmp_path) == ["main"]
    assert {e.target for e in g.cli_stage_imports(tmp_path)} == {"rna_predict", "rna_predict.config"}
    assert g.cli_dispatch_modules(tmp_path) == {"rna_predict.a.entry"}


if __name__ == "__main__":
    for name in STAGE_ENTRY:
        print(f"{name}:\n  deps:")
        for dep in expected_deps(name):
            print(f"    - {dep}")
