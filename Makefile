# The two commands of the README:
#   make demo   installs into .venv and runs the main job end to end on simulated data
#   make test   installs into .venv (with test extras) and runs the whole test suite
# Both need only python3 (3.11+) on the machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?= pipelines/conf/base/pes.yaml
export MLFLOW_DISABLE_TELEMETRY := true
export OMP_WAIT_POLICY := PASSIVE
export SPARK_LOCAL_IP := 127.0.0.1

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python pipelines/demo.py --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pes_ml tests pipelines benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf .pes_ml data/sim mlflow.db mlartifacts report
