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

# requirements.lock pins every package (`uv pip compile setup.cfg --all-extras -o requirements.lock`).
# uv installs the pinned set in seconds where pip takes minutes; the langflow extra (lfx) is
# installed too, because the tests load the real Langflow components.
$(STAMP): setup.cfg requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c requirements.lock -e '.[test,langflow]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var build *.egg-info
