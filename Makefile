# Two entry points: `make book` (run every experiment of the chosen profile and
# build the book) and `make test`. Each sets up its own environment first.
PYTHON ?= python3
VENV ?= .venv
# These machines need the torch/torchvision pins; GPU users: make ... CONSTRAINTS=
CONSTRAINTS ?= constraints.txt
PROFILE ?= archive
SHARED_DATA := $(abspath ../shared/data)
export HTS_EP_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test book bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[all]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

# BOOK_ARGS: e.g. --no-execute, --only 02-table1, --parameters "device='cuda'"
book: $(STAMP)
	$(BIN)/python -m hts_ep.book --profile $(PROFILE) $(BOOK_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_relax.py

clean:
	rm -rf _build book/generated
