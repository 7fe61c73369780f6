# rna-predict: `make repro` runs the pipeline, `make test` the tests; both set up .venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# stages call `rna-predict` and `dvc`: put the venv first on PATH for every recipe
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0

.PHONY: setup repro test repro-check bench clean-venv

setup: $(VENV)/.installed

# torch is pinned to the CPU build that lies on this machine's disk (pip finds it there)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

repro-check: setup
	$(BIN)/python .ci/repro_check.py

bench: setup
	$(BIN)/python benchmarks/bench_torsions.py

clean-venv:
	rm -rf $(VENV)
