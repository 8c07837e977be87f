# make run   set up .venv and run the pipeline on the built-in default (dvc repro)
# make test  set up .venv with the test extras and run every test
# make bench run the benchmarks in bench/ and print their ratios

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

# Offline-safe settings (../shared/ENVIRONMENT.md): no analytics, Prefect state in the repo.
export DVC_NO_ANALYTICS = 1
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export PREFECT_HOME ?= $(CURDIR)/.prefect
# dvc runs each stage's `python -m ...` through the shell: make it this venv's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/dvc repro

test: $(VENV)/.installed-test
	$(BIN)/pytest

test-fast: $(VENV)/.installed-test
	$(BIN)/pytest -m 'not slow'

bench: $(VENV)/.installed
	$(BIN)/python -m bench.tokenize
	$(BIN)/python -m bench.wikipedia
	$(BIN)/python -m bench.train_throughput
	$(BIN)/python -m bench.sample_speed
	$(BIN)/python -m bench.cells
	$(BIN)/python -m bench.ngram

clean:
	rm -rf data artifacts .prefect
