# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-installed

.PHONY: run test bootstrap tools clean

run: bootstrap tools
	$(BIN)/deepclaw dev

test: bootstrap tools
	$(BIN)/pytest

bootstrap: $(STAMP)

# Pinned Node 24 + OpenClaw into a cache shared by checkouts; instant once present.
tools: bootstrap
	$(BIN)/deepclaw tools

# Re-installs only when the pinned dependencies change.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

clean:
	rm -rf $(VENV) .data *.egg-info
