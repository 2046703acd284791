# `make demo`, `make test`, `make bench` work from a fresh clone: each creates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test node-test lint bench bench-quick redis-server postgresql clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

# The Motia app in examples/motia-app (npm and python_modules installs cached by stamps); without
# node/npm, the Python-only examples/order_workflow.py.
demo: $(VENV)/.installed redis-server
	$(BIN)/python examples/motia_app.py

# Tests start their own throwaway redis-server; install it from Debian when it is missing.
redis-server:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q redis-server; }

# Tests start their own throwaway PostgreSQL cluster (initdb + pg_ctl, never the machine's own
# server); install Debian's postgresql when initdb is nowhere to be found.
postgresql:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q postgresql; }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# Two workers (the machine has two cores; most tests wait on processes and servers).
test: $(VENV)/.installed-dev redis-server postgresql lint
	$(BIN)/pytest -n 2 --dist worksteal

# Only the Node adapter's tests (node/test, Node's own runner); `make test` runs them too, through
# tests/test_node_adapter.py. They start their own redis-server unless $$REDIS_URL is set.
node-test: $(VENV)/.installed redis-server
	cd node && MOTIA_STATE_PYTHON=$(abspath $(BIN)/python) PYTHONPATH=$(CURDIR) npm test --silent

# The full benchmark (minutes; run by hand): writes docs/benchmarks.md and docs/benchmarks.png.
bench: $(VENV)/.installed-dev redis-server postgresql
	$(BIN)/python -m benchmarks.run

# Small counts, under a minute: only checks the harness runs (tests/test_bench.py runs it too,
# into a temporary folder); writes benchmarks/results/quick.{json,png}.
bench-quick: $(VENV)/.installed-dev redis-server postgresql
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
