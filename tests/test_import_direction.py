"""Imports point one way (ARCHITECTURE.md section 8): ``data -> model -> train -> evaluate -> sweep``.

Every module of ``rna_predict`` belongs to a unit: its top-level folder (``data``,
``model``, ...) or, for a module at the top (``config.py``, ``tracking.py``, ``cli.py``),
the module itself. A module may import only modules of its own unit or of a unit with a
lower :data:`RANK`. ``config`` and ``data`` share rank 0: they form the base layer
(:data:`BASE_LAYER`) and may import each other (``config.py`` takes its default link
cutoff from ``data/atom_layout.py``; data stages take a ``Config``). Units of any other
equal rank (``inference`` and ``tracking``) may not import each other.

Imports anywhere in a file count (lazy imports inside functions too); the graph comes from
``tests/import_graph.py`` (:mod:`ast`, nothing is executed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_graph import PACKAGE, all_modules, imports_of  # noqa: E402

RANK = {
    "": 0,  # the package's own __init__.py
    "config": 0, "data": 0,
    "model": 1,
    "inference": 2, "tracking": 2,
    "train": 3,
    "evaluate": 4,
    "sweep": 5,
    "cli": 6,
}
BASE_LAYER = {"", "config", "data"}

#: explicit bans on top of the ranks (the contract as ARCHITECTURE.md words it)
FORBIDDEN = {
    "data": {"model", "train", "evaluate", "sweep", "inference"},
    "model": {"train", "evaluate", "sweep", "inference", "tracking"},
}


def unit(module: str) -> str:
    """``rna_predict.data.split`` -> ``data``; ``rna_predict.config`` -> ``config``; package -> ``""``."""
    parts = module.split(".")
    assert parts[0] == PACKAGE, module
    return parts[1] if len(parts) > 1 else ""


def allowed(importer: str, target: str) -> bool:
    a, b = unit(importer), unit(target)
    if a == b or b == "":  # own folder; ``import rna_predict.x`` also runs the package __init__
        return True
    if a in BASE_LAYER and b in BASE_LAYER:
        return True
    return RANK[b] < RANK[a] and b not in FORBIDDEN.get(a, set())


def violations() -> list[str]:
    out = []
    for module in all_modules():
        for edge in imports_of(module):
            if not allowed(module, edge.target):
                out.append(f"{module} (line {edge.line}: `{edge.statement}`) imports {edge.target}: "
                           f"{unit(module) or PACKAGE} (rank {RANK[unit(module)]}) -> "
                           f"{unit(edge.target)} (rank {RANK[unit(edge.target)]})")
    return sorted(set(out))


def test_every_module_has_a_rank():
    unranked = sorted({m for m in all_modules() if unit(m) not in RANK})
    assert not unranked, f"modules in no ranked unit (add the folder to RANK): {unranked}"


def test_imports_point_one_way():
    found = violations()
    assert not found, "imports against the direction data -> model -> inference/tracking -> " \
                      "train -> evaluate -> sweep -> cli:\n  " + "\n  ".join(found)


def test_rule_itself():
    ok = [("rna_predict.model.nerf", "rna_predict.data.atom_layout"),
          ("rna_predict.data.fetch", "rna_predict.config"),
          ("rna_predict.config", "rna_predict.data.atom_layout"),
          ("rna_predict.evaluate.run_evaluate", "rna_predict.inference.predict"),
          ("rna_predict.sweep.objective", "rna_predict.train.run_train"),
          ("rna_predict.train.run_train", "rna_predict.tracking"),
          ("rna_predict.cli", "rna_predict.sweep.run_sweep"),
          ("rna_predict.model.refine", "rna_predict.model.nerf")]
    bad = [("rna_predict.data.dataset", "rna_predict.model.angles"),
           ("rna_predict.model.rna_model", "rna_predict.tracking"),
           ("rna_predict.inference.predict", "rna_predict.tracking"),
           ("rna_predict.tracking", "rna_predict.inference.predict"),
           ("rna_predict.train.losses", "rna_predict.evaluate.metrics"),
           ("rna_predict.config", "rna_predict.model.nerf"),
           ("rna_predict.evaluate.metrics", "rna_predict.cli")]
    assert all(allowed(a, b) for a, b in ok)
    assert not any(allowed(a, b) for a, b in bad)


if __name__ == "__main__":
    print("\n".join(violations()) or "no violations")
