# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench install clean

run: $(STAMP)
	$(BIN)/flowcloud up --demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

install: $(STAMP)

# requirements.lock pins every package (compiled with `uv pip compile setup.cfg --all-extras`),
# so pip installs without resolving and a fresh set-up takes seconds, not minutes.
$(STAMP): setup.cfg requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var build *.egg-info
