# edgecache: `make run` starts the mirror on embedded defaults, `make test` installs the test
# needs (Python packages, docker-registry, skopeo, containerd) and runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= $(CURDIR)/data
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit integration system-deps clean bench

$(BIN)/edgecache: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/edgecache
	$(BIN)/edgecache serve --storage-path $(DATA)

system-deps:
	scripts/install-system-deps.sh

lint: $(BIN)/edgecache
	$(BIN)/ruff check edgecache tests

typecheck: $(BIN)/edgecache
	$(BIN)/mypy

test: $(BIN)/edgecache system-deps lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(BIN)/edgecache
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(BIN)/edgecache system-deps
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (not tests): edgecache side by side with Distribution's proxy and nginx, loopback
# only. About 15 minutes; `make bench BENCH_ARGS=--quick` about 3. Results in bench/results/.
BENCH_ARGS ?=
bench: $(BIN)/edgecache
	$(BIN)/pip install --quiet -e '.[test,bench]'
	scripts/install-bench-deps.sh
	$(BIN)/python -m bench $(BENCH_ARGS)
