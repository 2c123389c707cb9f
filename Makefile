# The two commands of the README: `make run` and `make test`. Both create .venv and install
# requirements.txt on first use (a few minutes: TensorFlow is large), then reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
# Browser tests drive Debian's chromium (never a downloaded browser); installed on first `make test`.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint venv clean-var

run: $(STAMP)
	$(PY) -m stack.run

test: $(STAMP) $(CHROMIUM)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests (apt-get, once)"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

clean-var:
	rm -rf var
