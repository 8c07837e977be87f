# make run   set up .venv and run the pipeline on the built-in default (dvc repro)
# make test  set up .venv with the test extras and run every test
# make bench run the benchmarks in bench/ and print their ratios
# make server / make serve   a Prefect server, and scheduled retraining served to it (README "Teams")
# make remote-local REMOTE=/path, make push, make pull   share data and models through a DVC remote
# make preprocess   corpus, tokens and vocab on Dask, one task per dump range or file (README "Past one machine")

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

# Offline-safe settings (../shared/ENVIRONMENT.md): no analytics, Prefect state in the repo.
export DVC_NO_ANALYTICS = 1
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export PREFECT_HOME ?= $(CURDIR)/.prefect
# dvc runs each stage's `python -m ...` through the shell: make it this venv's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test test-fast bench clean server serve retrain remote-local push pull chromium preprocess

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

test: $(VENV)/.installed-test chromium
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
	$(BIN)/python -m bench.skipgram
	$(BIN)/python -m bench.preprocess
	$(BIN)/python -m bench.ddp

# The corpus, tokenize and vocab stages' outputs, one Dask task per piece of a multistream
# Wikipedia dump or per text file, recorded for `dvc repro` (README "Sharded preprocessing").
preprocess: $(VENV)/.installed
	$(BIN)/python -m flows.preprocess --commit

clean:
	rm -rf data artifacts .prefect

# --- teams: README "Teams: schedules, promotion and remotes" ------------------------------------

PREFECT_PORT ?= 4200

# A Prefect server and its UI on http://127.0.0.1:$(PREFECT_PORT) (state in $(PREFECT_HOME)).
server: $(VENV)/.installed
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# Serve retraining on params.yaml's `schedule` to that server (another: make serve PREFECT_API_URL=...).
serve: export PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
serve: $(VENV)/.installed
	$(BIN)/python -m flows.serve

# One retraining run now: pull, repro, compare, promote if better, push.
retrain: $(VENV)/.installed
	$(BIN)/python -m flows.retrain

remote-local: $(VENV)/.installed
	@test -n "$(REMOTE)" || { echo "error: name the folder: make remote-local REMOTE=/mnt/team/rnnlab-dvc" >&2; exit 2; }
	$(BIN)/python -m flows.remote add-local "$(REMOTE)"

push pull: $(VENV)/.installed
	$(BIN)/python -m flows.remote $@

# The UI screenshot test needs Debian's chromium (never a browser a tool downloads): installed
# here when missing and we are root with apt; otherwise that one test skips and says why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the Prefect UI screenshot test (about a minute)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "warning: could not install chromium; the UI screenshot test will skip"; \
	else \
	  echo "note: chromium is missing and this is not root with apt-get: the UI screenshot test will skip" \
	       "(install Debian's package: apt-get install chromium)"; \
	fi
