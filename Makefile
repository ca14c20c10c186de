# The two commands a newcomer needs (see README.md):
#   make demo   set up from nothing and run the local end-to-end demo
#   make test   set up from nothing and run the whole test suite
# Both create their virtual environments on first use and reuse them after.

PYTHON ?= python3.11
VENV   := .venv
# aws-sam-cli pins its own boto3 and click, so it lives in a venv of its own.
SAMVENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
# label-studio-sdk (the Label Studio format checks of the tests) pins its own dependencies too.
LSVENV := .venv-labelstudio
LABEL_STUDIO_SDK_VERSION := 2.1.2
# The review app's browser test drives Debian's chromium (Playwright never downloads one).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed $(SAMVENV)/.installed $(LSVENV)/.installed $(CHROMIUM)

$(VENV)/.installed: pyproject.toml samlocal/requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[local,dev]'
	touch $@

$(SAMVENV)/.installed:
	$(PYTHON) -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install --quiet --upgrade pip
	$(SAMVENV)/bin/pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

$(LSVENV)/.installed:
	$(PYTHON) -m venv $(LSVENV)
	$(LSVENV)/bin/pip install --quiet --upgrade pip
	$(LSVENV)/bin/pip install --quiet label-studio-sdk==$(LABEL_STUDIO_SDK_VERSION)
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

demo: $(VENV)/.installed
	$(VENV)/bin/flywheel demo

# Every tier: the tests that assert timings first, alone on the machine; then the rest in
# TEST_WORKERS processes (whole files per process: module fixtures start one stack each).
TEST_WORKERS ?= 3
test: $(VENV)/.installed $(SAMVENV)/.installed $(LSVENV)/.installed $(CHROMIUM)
	$(VENV)/bin/pytest -m serial
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint template.yaml

clean:
	rm -rf $(VENV) $(SAMVENV) $(LSVENV) .aws-sam .flywheel .flywheel-demo
