# Two commands on a fresh machine with only Python:  make repro  and  make test.
# Each creates the virtual environment .venv on first use.
#
# TORCH pins the PyTorch wheel. torch==2.13.0 is a CPU wheel where a local copy is
# offered (this project's CI machines) and the default CUDA build on a Linux GPU
# machine; point it elsewhere for another CUDA version, e.g.
#   make repro TORCH="torch==2.13.0 --index-url <your wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# pytest-xdist workers of `make test` (auto: one per core); files stay whole on one worker,
# so a module's fixtures (a tiny `dvc repro`) run once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: repro test lint bench clean-venv lock

# The environment: torch (its build is the machine's), then every other package at the
# exact version and hash of requirements.lock, then this project without resolving anything.
$(STAMP): requirements.lock pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges in a scratch venv and write requirements.lock with
# hashes of every file of each pinned release (all platforms). Review the diff, then run
# `make test` and `make repro` and commit the lock with the new dvc.lock and metrics.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip uv
	$(LOCK_VENV)/bin/pip install --quiet $(TORCH) -e ".[dev]"
	$(LOCK_VENV)/bin/pip freeze --all --exclude-editable \
	  | grep -v -e '^torch==' -e '^uv==' > $(LOCK_VENV)/pins.txt
	head -5 requirements.lock > $(LOCK_VENV)/requirements.lock
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_VENV)/pins.txt --no-deps --generate-hashes \
	  --no-header --no-annotate --quiet -o - >> $(LOCK_VENV)/requirements.lock
	mv $(LOCK_VENV)/requirements.lock requirements.lock
	rm -rf $(LOCK_VENV)

repro: $(STAMP)
	PATH="$(BIN):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(BIN):$$PATH" python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check lib stages tests benchmarks
	$(BIN)/ruff format --check lib stages tests benchmarks

bench: $(STAMP)
	PATH="$(BIN):$$PATH" python benchmarks/prepare_throughput.py
	PATH="$(BIN):$$PATH" python benchmarks/store_reads.py
	PATH="$(BIN):$$PATH" python benchmarks/dvc_status.py

clean-venv:
	rm -rf $(VENV)
