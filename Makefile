# rna-predict: `make repro` runs the pipeline, `make test` the tests; both set up .venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# stages call `rna-predict` and `dvc`: put the venv first on PATH for every recipe
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0

.PHONY: setup repro test repro-check readme bench clean-venv exp exp-show mlflow-ui pull

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

# regenerate the README's results tables from the tracked reports (after `make repro`)
readme: setup
	$(BIN)/python .ci/readme_tables.py

# one DVC experiment with the venv's dvc and rna-predict: make exp ARGS="-S training.w_angle=0.2"
exp: setup
	$(BIN)/dvc exp run $(ARGS)

exp-show: setup
	$(BIN)/dvc exp show --only-changed $(ARGS)

# precomputed data/ and models/ from the DVC remote (see README, "Sharing artifacts"); then
# `dvc status` is clean and `make repro` recomputes nothing. make pull PULL="fetch angles" for less
PULL ?= fetch angles features split train
pull: setup
	$(BIN)/dvc pull $(PULL)

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db $(ARGS)

bench: setup
	$(BIN)/python benchmarks/bench_torsions.py

clean-venv:
	rm -rf $(VENV)
