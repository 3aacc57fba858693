# Set-up is part of every target: a fresh machine needs only `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup train test test-all lint bench clean

# The CPU build of torch is pinned first so that nothing pulls a CUDA wheel.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)          ## the embedded default: generate GoToRedBall demos, train the tiny model on the CPU
	$(BIN)/anyorder-train $(ARGS)

test: $(STAMP)           ## the default (fast) test suite; CI runs exactly this
	$(BIN)/pytest -q $(ARGS)

test-all: $(STAMP)       ## every test, the slow end-to-end ones included
	$(BIN)/pytest -q -m "" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check anyorder tests benchmarks notebooks
	$(BIN)/ruff format --check anyorder tests benchmarks notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) outputs multirun/*/ .pytest_cache
