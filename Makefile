# make run   set up .venv and run the pipeline on the built-in default (rnnlab repro: dvc repro with
#            one Prefect server for the whole run, started and stopped here)
# make test  set up .venv with the test extras and run every test
# make lint  ruff check and ruff format --check (also a pre-commit hook: pre-commit install)
# make bench run the benchmarks in bench/ and print their ratios
# make server / make serve   a Prefect server, and scheduled retraining served to it (docs/teams.md)
# make remote-local REMOTE=/path, make push, make pull   share data and models through a DVC remote
# make preprocess   corpus, tokens and vocab on Dask, one task per dump range or file (docs/scaling.md)

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

# No settings are exported here: Prefect's live in prefect.toml and DVC's in .dvc/config, so that
# `make run` and a plain `dvc repro` in the activated venv behave the same.

.PHONY: run test test-fast lint bench clean server serve retrain remote-local push pull chromium preprocess gpu-check

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
	$(BIN)/rnnlab repro

# pytest-xdist workers: a test file stays on one worker (its module fixtures are built once), and the
# files start in the order tests/conftest.py gives (the longest first), not by their number of tests.
TEST_WORKERS ?= 2

test: $(VENV)/.installed-test chromium
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff: the rules and the formatter's settings are in pyproject.toml; CI runs this before the tests.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: $(VENV)/.installed-test
	$(BIN)/pytest -m 'not slow' -n $(TEST_WORKERS)

bench: $(VENV)/.installed
	$(BIN)/python -m bench.tokenizer
	$(BIN)/python -m bench.wikipedia
	$(BIN)/python -m bench.wikipedia --hostile
	$(BIN)/python -m bench.train_throughput
	$(BIN)/python -m bench.sample_speed
	$(BIN)/python -m bench.cells
	$(BIN)/python -m bench.ngram
	$(BIN)/python -m bench.skipgram
	$(BIN)/python -m bench.preprocess
	$(BIN)/python -m bench.ddp
	$(BIN)/python -m bench.repro

# The GPU path on a machine with CUDA (docs/performance.md, "GPU check"): bench/gpu.py's table of checks, then the
# gpu-marked tests. Both run; it fails if either does. Without a GPU: python -m bench.gpu --cpu.
gpu-check: $(VENV)/.installed-test
	@status=0; $(BIN)/python -m bench.gpu || status=$$?; $(BIN)/pytest -m gpu || status=1; exit $$status

# The recipes (recipes/*.yaml) on WikiText-2, each against a reference given the same wall time
# (docs/models.md, "Your own text"): about 13 minutes on 2 cores, so not part of `make bench`.
.PHONY: bench-recipes
bench-recipes: $(VENV)/.installed
	$(BIN)/python -m bench.recipes

# The corpus, tokenize and vocab stages' outputs, one Dask task per piece of a multistream
# Wikipedia dump or per text file, recorded for `dvc repro` (docs/scaling.md, "Sharded preprocessing").
preprocess: $(VENV)/.installed
	$(BIN)/python -m flows.preprocess --commit

clean:
	rm -rf data artifacts .prefect

# --- teams: docs/teams.md ---------------------------------------------------------------------

PREFECT_PORT ?= 4200

# A Prefect server and its UI on http://127.0.0.1:$(PREFECT_PORT), its UI pointed at that port's
# API (state in .prefect/, prefect.toml): every run of `make run` is there.
server: $(VENV)/.installed
	$(BIN)/rnnlab server --port $(PREFECT_PORT)

# Serve retraining on params.yaml's `schedule` to that server (another: make serve PREFECT_API_URL=...).
serve: $(VENV)/.installed
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} $(BIN)/python -m ops.serve

# One retraining run now: pull, repro, compare, promote if better, push.
retrain: $(VENV)/.installed
	$(BIN)/python -m flows.retrain

remote-local: $(VENV)/.installed
	@test -n "$(REMOTE)" || { echo "error: name the folder: make remote-local REMOTE=/mnt/team/rnnlab-dvc" >&2; exit 2; }
	$(BIN)/python -m ops.remote add-local "$(REMOTE)"

push pull: $(VENV)/.installed
	$(BIN)/python -m ops.remote $@

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

# --- a team's server on PostgreSQL, a remote over SSH (docs/teams.md) -----------------------------

.PHONY: postgres sshd bench-server

# Debian's PostgreSQL server programs (initdb, postgres), when missing. tests/test_postgres_server.py
# and bench/server_load.py start a throwaway cluster of their own with them (initdb in a temp folder,
# a free port); a team's Prefect server keeps its runs in one (docs/teams.md). Without them, and
# without root and apt to install them, the PostgreSQL tests skip and say so.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's postgresql (the server programs; under a minute)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q postgresql >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; } \
	  || { echo "error: could not install Debian's postgresql (apt-get install postgresql)" >&2; exit 1; }; \
	else \
	  echo "note: PostgreSQL's server is missing and this is not root with apt-get: the PostgreSQL tests" \
	       "will skip (install Debian's package: apt-get install postgresql)"; \
	fi

# Debian's OpenSSH server, when missing: tests/test_ssh_remote.py starts its own sshd on a free
# port of 127.0.0.1, with a key it makes, as a DVC remote's far end. Nothing here starts the service.
sshd:
	@if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's openssh-server (sshd, for the SSH remote test)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q openssh-server >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q openssh-server >/dev/null 2>&1; } \
	  || { echo "error: could not install Debian's openssh-server (apt-get install openssh-server)" >&2; exit 1; }; \
	else \
	  echo "note: sshd is missing and this is not root with apt-get: the SSH remote test will skip" \
	       "(install Debian's package: apt-get install openssh-server)"; \
	fi

# Load on the Prefect server, SQLite against PostgreSQL, N = 4, 8, 16 concurrent flow runs while the
# UI's API is polled (25 minutes on 2 cores that others kept busy; `python -m bench.server_load --quick`: 7).
bench-server: $(VENV)/.installed postgres
	$(BIN)/python -m bench.server_load
