# Two entry points: `make book` (run every experiment of the chosen profile and
# build the book) and `make test`. Each sets up its own environment first.
# `make` alone (or `make help`) lists the targets and installs nothing.
PYTHON ?= python3
VENV ?= .venv
# These machines need the torch/torchvision pins; GPU users: make ... CONSTRAINTS=
CONSTRAINTS ?= constraints.txt
PROFILE ?= archive
SHARED_DATA := $(abspath ../shared/data)
export HTS_EP_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test lint book bench clean

help: ## list the targets (the default)
	@echo "hts-ep: make TARGET [PROFILE=archive|smoke|quick|paper] [CONSTRAINTS=] [BOOK_ARGS=...]"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))

install: $(STAMP) ## create .venv with the package and every extra (again when pyproject.toml, the pins or the version change)

# hts_ep/__init__.py holds the version: reinstalling refreshes the installed metadata.
$(STAMP): pyproject.toml $(CONSTRAINTS) hts_ep/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[all]'
	touch $@

# SLOW=1: the whole suite (what .ci/run runs); without it the fast tier, which leaves out the
# tests marked slow (tests/conftest.py lists them: book builds, wheels, kills, Dask, ...).
test: $(STAMP) ## the fast tests, ruff included (SLOW=1: all of them, as CI; skipped tests say why)
	$(BIN)/python -m pytest -q -rs $(if $(SLOW),,-m "not slow")

lint: $(STAMP) ## ruff check over the repository (also a test of `make test`)
	$(BIN)/ruff check .

# BOOK_ARGS: e.g. --no-execute, --only 02-table1, --parameters "device='cuda'"
book: $(STAMP) ## run the notebooks at PROFILE (default archive) and build _build/html
	$(BIN)/python -m hts_ep.book --profile $(PROFILE) $(BOOK_ARGS)

bench: $(STAMP) ## time the training step and relaxation against a plain implementation
	$(BIN)/python benchmarks/bench_relax.py

clean: ## remove the built book (_build, book/generated); results and .venv stay
	rm -rf _build book/generated
