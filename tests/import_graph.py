"""Static import graph of the ``rna_predict`` package, derived with :mod:`ast`.

Shared by ``test_stage_deps.py`` (the files each DVC stage must list as deps) and
``test_import_direction.py`` (imports point one way). Nothing here imports the package:
every module file is parsed, never executed.

Rules:

- every ``import``/``from ... import`` anywhere in a module counts (module level, inside
  functions, under ``if TYPE_CHECKING``), relative imports resolved against the module;
- importing ``rna_predict.a.b`` runs ``rna_predict/__init__.py`` and ``rna_predict/a/__init__.py``
  first, so those package files are part of the closure;
- ``from pkg import name`` where ``pkg.name`` is a submodule imports that submodule;
- a string constant in a module naming an existing non-Python file next to it (e.g.
  ``Path(__file__).with_name("demo_manifest.json")``) counts as a file that module reads.

A stage runs as ``rna-predict <stage>``, i.e. through ``cli.py``. Of ``cli.py`` only what
a stage command executes is followed: module-level imports and imports in the functions
``main`` reaches without going through ``_stage`` (the per-stage dispatch, replaced by the
stage's own entry module) or a ``cmd_*`` handler (the non-stage subcommands
``torsions``/``predict``/...).

Run ``python tests/import_graph.py`` to print the deps per stage.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "rna_predict"

#: stage name -> entry module (``cli._stage``), checked against cli.py by the tests
STAGE_ENTRY = {
    "fetch": "rna_predict.data.fetch",
    "angles": "rna_predict.data.angles_stage",
    "features": "rna_predict.data.features",
    "split": "rna_predict.data.split",
    "train": "rna_predict.train.run_train",
    "evaluate": "rna_predict.evaluate.run_evaluate",
    "sweep": "rna_predict.sweep.run_sweep",
}
CLI = f"{PACKAGE}.cli"
#: cli.py's per-stage dispatch; its imports are the stage entry modules
CLI_DISPATCH = "_stage"
#: cli.py functions starting with this prefix serve the non-stage subcommands
CLI_OTHER_COMMAND_PREFIX = "cmd_"


@dataclass(frozen=True)
class Import:
    """One import edge: ``importer`` imports ``target`` (a module of the package) at ``line``."""

    importer: str
    target: str
    line: int
    statement: str


def module_file(module: str, src: Path = SRC) -> Path | None:
    """``rna_predict.a.b`` -> ``src/rna_predict/a/b.py`` or ``.../a/b/__init__.py`` (None if neither)."""
    base = src.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def is_package(module: str, src: Path = SRC) -> bool:
    f = module_file(module, src)
    return f is not None and f.name == "__init__.py"


def all_modules(src: Path = SRC) -> list[str]:
    """Every module of the package (``__pycache__`` skipped), sorted."""
    out = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _resolve_relative(module: str, node: ast.ImportFrom, src: Path) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package(module, src):
        parts = parts[:-1]  # a plain module's package
    if node.level - 1 > len(parts) - 1:
        raise ImportError(f"{module}: relative import beyond the top-level package (line {node.lineno})")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _edges_of_nodes(module: str, nodes, src: Path) -> list[Import]:
    """Package-internal import edges of the ``Import``/``ImportFrom`` nodes."""
    out: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        for name in _with_parents(target):
            if (name == PACKAGE or name.startswith(PACKAGE + ".")) and module_file(name, src):
                out.append(Import(module, name, node.lineno, ast.unparse(node)))

    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    if module_file(alias.name, src) is None:
                        raise ImportError(f"{module}:{node.lineno}: no module {alias.name}")
                    add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node, src)
            if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                continue
            if module_file(base, src) is None:
                raise ImportError(f"{module}:{node.lineno}: no module {base}")
            add(base, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if alias.name != "*" and module_file(sub, src):
                    add(sub, node)
    return out


def imports_of(module: str, src: Path = SRC) -> list[Import]:
    """Every package-internal import of ``module``, anywhere in its file."""
    path = module_file(module, src)
    if path is None:
        raise ImportError(f"no module {module} under {src}")
    return _edges_of_nodes(module, ast.walk(_parse(path)), src)


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _called_names(fn: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def cli_stage_functions(src: Path = SRC) -> list[str]:
    """cli.py functions a stage command runs: reachable from ``main``, not via ``_stage``/``cmd_*``."""
    fns = _functions(_parse(module_file(CLI, src)))
    seen, todo = set(), ["main"]
    while todo:
        name = todo.pop()
        if name in seen or name not in fns:
            continue
        seen.add(name)
        todo += [c for c in _called_names(fns[name])
                 if c != CLI_DISPATCH and not c.startswith(CLI_OTHER_COMMAND_PREFIX)]
    return sorted(seen)


def cli_stage_imports(src: Path = SRC) -> list[Import]:
    """Imports of cli.py that a stage command executes (besides the stage's entry module)."""
    tree = _parse(module_file(CLI, src))
    fns = _functions(tree)
    nodes: list[ast.AST] = []
    for stmt in tree.body:  # module level, not inside any function
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes += list(ast.walk(stmt))
    for name in cli_stage_functions(src):
        nodes += list(ast.walk(fns[name]))
    return _edges_of_nodes(CLI, nodes, src)


def cli_dispatch_modules(src: Path = SRC) -> set[str]:
    """Modules ``cli._stage`` imports from (the stage entry points)."""
    fn = _functions(_parse(module_file(CLI, src)))[CLI_DISPATCH]
    return {_resolve_relative(CLI, n, src) for n in ast.walk(fn) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(fn) if isinstance(n, ast.Import) for a in n.names}


def data_files_of(module: str, src: Path = SRC) -> list[Path]:
    """Non-Python files next to ``module`` that it names in a string constant."""
    path = module_file(module, src)
    folder = path.parent
    out = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value \
                and "\n" not in node.value and len(node.value) < 200:
            try:
                cand = (folder / node.value).resolve()
            except (OSError, ValueError):
                continue
            if cand.is_file() and cand.suffix not in (".py", ".pyc") \
                    and (src / PACKAGE).resolve() in cand.parents:
                out.add(cand)
    return sorted(out)


def module_closure(roots: list[str], src: Path = SRC, edges_of=None) -> set[str]:
    """Modules reachable from ``roots`` (roots and the packages on their way included)."""
    edges_of = edges_of or (lambda m: imports_of(m, src))
    seen: set[str] = set()
    todo = [p for r in roots for p in _with_parents(r)]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [e.target for e in edges_of(m)]
    return seen


def closure_files(modules: set[str], src: Path = SRC) -> list[str]:
    """Repo-relative POSIX paths of the modules' files plus the data files they read, sorted."""
    files = set()
    for m in modules:
        files.add(module_file(m, src).resolve())
        files.update(data_files_of(m, src))
    root = src.resolve().parent
    return sorted(f.relative_to(root).as_posix() for f in files)


def stage_closure(stage: str, src: Path = SRC) -> list[str]:
    """Files of ``rna_predict`` that ``rna-predict <stage>`` imports or reads (repo-relative)."""
    cli_part = {e.target for e in cli_stage_imports(src)} | {CLI}
    modules = module_closure(sorted(cli_part | {STAGE_ENTRY[stage]}), src,
                             edges_of=lambda m: [] if m == CLI else imports_of(m, src))
    return closure_files(modules, src)


def all_stage_closures(src: Path = SRC) -> dict[str, list[str]]:
    return {stage: stage_closure(stage, src) for stage in STAGE_ENTRY}


if __name__ == "__main__":
    for stage, files in all_stage_closures().items():
        print(f"{stage}:")
        for f in files:
            print(f"  - {f}")
