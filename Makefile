# One venv for everything; each target installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration bench clean helm-engine

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/apikey-operator sandbox $(SANDBOX_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -m unit -q

# Most integration tests wait on clocks and servers, so several workers share 2 cores well.
PYTEST_WORKERS ?= 3

test: $(STAMP) lint helm-engine
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# Helm's engine (helm-sdkpy, Python 3.12) for the chart tests, built once before the workers start.
helm-engine: $(STAMP)
	$(BIN)/python tests/chart/helm_engine.py

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
