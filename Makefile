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
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: repro test lint bench clean-venv

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

repro: $(STAMP)
	PATH="$(BIN):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(BIN):$$PATH" python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check lib stages tests benchmarks
	$(BIN)/ruff format --check lib stages tests benchmarks

bench: $(STAMP)
	PATH="$(BIN):$$PATH" python benchmarks/prepare_throughput.py
	PATH="$(BIN):$$PATH" python benchmarks/store_reads.py
	PATH="$(BIN):$$PATH" python benchmarks/dvc_status.py

clean-venv:
	rm -rf $(VENV)
