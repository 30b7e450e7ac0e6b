# Two commands for a newcomer: `make demo` and `make test`. Everything installs into .venv/.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# pip's own log of the install; its one-line summary is what the terminal needs.
PIP_LOG := $(VENV)/pip-install.log

# Demo settings (see README, "Configuration").
IMAGES ?=
COUNT ?= 200
WEIGHTS ?= imagenet

.PHONY: demo test lint format bench lock clean check-java

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when a requirements file changes.
$(VENV)/.runtime-installed: requirements.txt constraints.txt | $(BIN)/python
	@echo "Installing the pipeline's dependencies into $(VENV)/ (a few minutes the first time)..."
	$(PIP) install --quiet --log $(PIP_LOG) -r requirements.txt -c constraints.txt
	@touch $@

$(VENV)/.test-installed: requirements-test.txt constraints.txt $(VENV)/.runtime-installed
	$(PIP) install --quiet --log $(PIP_LOG) -r requirements-test.txt -c constraints.txt
	@touch $@

check-java:
	@command -v java >/dev/null || { echo "Java 17 is required by Spark: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) and retry." >&2; exit 1; }

demo: $(VENV)/.runtime-installed check-java
	@IMAGES="$(IMAGES)" COUNT="$(COUNT)" WEIGHTS="$(WEIGHTS)" $(BIN)/python scripts/demo.py

test: lint $(VENV)/.test-installed check-java
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint and formatting, with Airflow's AIR rules (pyproject.toml); `make format` fixes what it can.
lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.test-installed check-java
	$(BIN)/python bench/benchmark.py $(BENCH_ARGS)

# Regenerate constraints.txt: resolve requirements*.txt afresh and pin the whole tree.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet -r requirements.txt -r requirements-test.txt
	build/lock-venv/bin/pip freeze --exclude-editable | sort > constraints.txt
	rm -rf build/lock-venv

clean:
	rm -rf $(VENV) build data .pytest_cache
