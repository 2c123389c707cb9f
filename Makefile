# The two commands of the README: `make run` and `make test`. Both create .venv and install
# requirements-dev.txt on first use (a few minutes: TensorFlow is large), then reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
# Debian's chromium (never a downloaded browser): browser tests drive it, and the web server draws charts' PDFs in
# it (Kaleido); installed on first `make run` or `make test`.
CHROMIUM ?= /usr/bin/chromium
# The compose file is validated by Debian's docker-compose (no docker engine is needed for `config`).
COMPOSE ?= /usr/bin/docker-compose
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint venv clean-var

run: $(STAMP) $(CHROMIUM)
	$(PY) -m stack.run

test: $(STAMP) $(CHROMIUM) $(COMPOSE)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m tests.run $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests (apt-get, once)"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

$(COMPOSE):
	@echo "Installing Debian's docker-compose to validate docker/compose.yml (apt-get, once)"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends docker-compose

clean-var:
	rm -rf var
