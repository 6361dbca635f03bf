# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-installed

# Debian packages: espeak-ng (the voice-agent stand-in speaks with it) and npm (installs the
# pinned Node/OpenClaw once). Installed when missing and we are root; otherwise we say what to do.
# As root, also iptables: it keeps local agents off the platform's loopback services.
SYSTEM_DEPS := espeak-ng npm
ROOT_DEPS := iptables
# `make test` only: the browser tests drive Debian's Chromium (Playwright never downloads one).
TEST_DEPS := chromium

.PHONY: run test bootstrap tools system-deps test-deps lock audit clean

run: bootstrap tools
	$(BIN)/python -m devstack run

# Two test processes (the machine's two cores; tests/parallel.py says what runs where). TEST_WORKERS=0: one.
TEST_WORKERS ?= 2
test: bootstrap tools test-deps
	$(BIN)/pytest -n $(TEST_WORKERS)

bootstrap: system-deps $(STAMP)

system-deps:
	@missing=""; for cmd in $(SYSTEM_DEPS); do command -v $$cmd >/dev/null || missing="$$missing $$cmd"; done; \
	if [ "$$(id -u)" = 0 ]; then for cmd in $(ROOT_DEPS); do command -v $$cmd >/dev/null || missing="$$missing $$cmd"; done; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing; run: sudo apt-get install$$missing"; exit 1; fi; \
	fi

test-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian's chromium for the browser tests (once, about a minute)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_DEPS) >/dev/null; \
	  else echo "missing: chromium; run: sudo apt-get install $(TEST_DEPS)"; exit 1; fi; }

# Pinned Node 24 + OpenClaw into a cache shared by checkouts; instant once present.
tools: bootstrap
	$(BIN)/python -m devstack tools

# Re-installs only when the pinned dependencies or the compiled audio path (voice/relay.pyx) change.
# requirements.lock is what production runs; requirements-dev.lock adds the embedded servers, the
# stand-ins and the test tools that `make run` and `make test` need.
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml setup.py voice/relay.pyx
	@echo "installing DeepClaw's Python dependencies into $(VENV) (once, a few minutes; again only when the locks change)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-dev.lock
	DEEPCLAW_DEV_INSTALL=1 $(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Regenerates both locks from pyproject.toml (needs the package registry; commit the result).
lock:
	$(PYTHON) -m devstack.lock

# Known vulnerabilities in the locked runtime set (pip-audit, in a throwaway environment of its own;
# needs PyPI's advisory service, so it is not part of .ci/run).
PIP_AUDIT := pip-audit==2.10.1
audit:
	@$(PYTHON) -c "import urllib.request; urllib.request.urlopen('https://pypi.org/pypi/pip/24.0/json', timeout=10)" \
	  2>/dev/null || { echo "make audit: PyPI's advisory service (https://pypi.org/pypi/<name>/<version>/json) is not reachable from here: nothing audited"; exit 2; }
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(PYTHON) -m venv $$tmp && $$tmp/bin/pip install --quiet --disable-pip-version-check $(PIP_AUDIT) && \
	$$tmp/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r requirements.lock

clean:
	rm -rf $(VENV) .data *.egg-info
