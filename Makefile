# One venv for everything; each target installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration bench bench-http-clients clean tools control-plane

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Go-built tools (kube-apiserver, kube-controller-manager, etcd, helm, prometheus, promtool),
# pinned by the wrapper modules in tools/go/ and cached per version (see tools/build-go-tools);
# the Lowkey Vault jar, download only, where the Maven registry serves it (tools/fetch-lowkey-vault).
tools:
	tools/build-go-tools
	tools/fetch-lowkey-vault --optional

control-plane:
	tools/build-go-tools kubernetes etcd

demo: $(STAMP) control-plane
	$(BIN)/apikey-operator sandbox $(SANDBOX_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -m unit -q

# Most integration tests wait on clocks and servers, so several workers share 2 cores well.
PYTEST_WORKERS ?= 3

test: $(STAMP) lint tools
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# The bench extra: matplotlib for the plots.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# `make bench BENCH_ARGS="--sizes 1000,5000 --large 10000"` is issue 17's full measurement.
bench: $(BENCH_STAMP) control-plane
	$(BIN)/python -m bench $(BENCH_ARGS)

# The HTTP client comparison (bench/HTTP_CLIENTS.md) needs the clients it compares, in a venv
# of its own: installed next to the operator, `kubernetes` would be loaded by kopf's login
# into every operator process `make bench` measures.
HTTP_VENV ?= .venv-http-clients
bench-http-clients: control-plane
	$(PYTHON) -m venv $(HTTP_VENV)
	$(HTTP_VENV)/bin/pip install -q -e '.[http-clients]'
	$(HTTP_VENV)/bin/python -m bench.http_clients $(HTTP_CLIENTS_ARGS)

clean:
	rm -rf $(VENV) $(HTTP_VENV) .pytest_cache .mypy_cache .ruff_cache
