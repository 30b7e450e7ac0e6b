# Two commands for a newcomer: `make demo` and `make test`. Everything installs into .venv/.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# pip's own log of the install; its one-line summary is what the terminal needs.
PIP_LOG := $(VENV)/pip-install.log

# Demo settings (see docs/reference/params.md).
IMAGES ?=
COUNT ?= 200
WEIGHTS ?= imagenet
ENGINE ?= onnx
# The trigger's conf as JSON, for the params the variables above do not set: `make demo CONF='{"max_error_share": 0.2}'`.
CONF ?= {}

.PHONY: docs demo rehearse test test-fast test-slow test-stack lint format bench plan lock wheelhouse airflow-bundle clean check-java

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# The project itself, editable, with its extras (pyproject.toml): [local] for the local target and
# the demo, [dev] for tests and lint; constraints.txt pins the whole tree as tested.
# Reinstalls only when pyproject.toml or the pins change.
$(VENV)/.runtime-installed: pyproject.toml constraints.txt | $(BIN)/python
	@echo "Installing the pipeline and its dependencies into $(VENV)/ (a few minutes the first time)..."
	$(PIP) install --quiet --log $(PIP_LOG) -e ".[local]" -c constraints.txt
	@touch $@

$(VENV)/.test-installed: pyproject.toml constraints.txt $(VENV)/.runtime-installed
	$(PIP) install --quiet --log $(PIP_LOG) -e ".[local,dev]" -c constraints.txt
	@touch $@

# PostgreSQL's drivers, which the Docker image has too (the Dockerfile installs the same file).
$(VENV)/.stack-installed: requirements-stack.txt constraints.txt $(VENV)/.test-installed
	$(PIP) install --quiet --log $(PIP_LOG) -r requirements-stack.txt -c constraints.txt
	@touch $@

check-java:
	@command -v java >/dev/null || { echo "Java 17 is required by Spark: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) and retry." >&2; exit 1; }

demo: $(VENV)/.runtime-installed check-java
	@IMAGES="$(IMAGES)" COUNT="$(COUNT)" WEIGHTS="$(WEIGHTS)" ENGINE="$(ENGINE)" CONF='$(CONF)' $(BIN)/python scripts/demo.py

# Tiers of one suite (docs/develop/testing.md): `make test`, lint first, everything a contributor runs
# before pushing; `make test-fast`, the tests that start no JVM, while editing; `make test-slow`, what
# CI runs after `make test` but a contributor rarely needs (a fresh Python from the wheelhouse, `make rehearse`).
# Two pytest workers (pytest-xdist): most of a test's time is one busy core (a JVM starting,
# Airflow's bookkeeping, a subprocess waiting), so two keep a 2-core machine busy. Each test file
# runs in one worker, so module-scoped fixtures (a week of nights) are built once.
# TEST_WORKERS=0 runs in this process (a debugger, -x); more suit a bigger machine (about 3 GB each).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile
test: lint $(VENV)/.test-installed check-java
	$(PYTEST) -m "not slow and not stack" $(PYTEST_ARGS)

test-fast: $(VENV)/.test-installed
	$(PYTEST) -m "not spark and not slow and not stack" $(PYTEST_ARGS)

test-slow: $(VENV)/.test-installed check-java
	$(PYTEST) -m "slow and not stack" $(PYTEST_ARGS)

# docker-compose.yaml's services as processes on a real PostgreSQL (docs/getting-started/docker-compose.md): opt-in, about 4 minutes; skips, naming the apt-get line, where PostgreSQL's server is missing.
# One test in this process (-rP prints what it ran and the first lines of the run's featurize log).
test-stack: $(VENV)/.stack-installed check-java
	$(BIN)/python -m pytest -m stack -rP tests/test_compose_stack.py $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/) into build/site/; `make test` builds it with --strict too.
docs: $(VENV)/.test-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "Open build/site/index.html"

# Lint and formatting, with Airflow's AIR rules (pyproject.toml); `make format` fixes what it can.
lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# BENCH_SCALE=90000 adds the scale rows (Fruits-360's size: about 20 minutes more on 2 cores).
BENCH_SCALE ?= 0
bench: $(VENV)/.test-installed check-java
	PYTHONPATH=. $(BIN)/python bench/benchmark.py --scale-images $(BENCH_SCALE) $(BENCH_ARGS)

# The EMR target rehearsed on this machine: moto plays AWS, the rehearsal cluster runs the steps on
# local Spark (docs/develop/rehearsal.md). Same settings as the demo, and REHEARSE_BOOTSTRAP=1 to run
# the bootstrap for real (WHEELHOUSE=build/wheelhouse: from the wheels `make wheelhouse` downloaded),
# REHEARSE_LAUNCH_FAILURES=<n> to fail the first n clusters' launches with a transient reason.
rehearse: $(VENV)/.test-installed check-java
	@IMAGES="$(IMAGES)" COUNT="$(COUNT)" WEIGHTS="$(WEIGHTS)" ENGINE="$(ENGINE)" CONF='$(CONF)' \
		REHEARSE_BOOTSTRAP="$(REHEARSE_BOOTSTRAP)" REHEARSE_LAUNCH_FAILURES="$(REHEARSE_LAUNCH_FAILURES)" WHEELHOUSE="$(if $(filter command line,$(origin WHEELHOUSE)),$(WHEELHOUSE))" $(BIN)/python -m rehearsal

# What a run would do with the current FRUITFLOW_* settings and a trigger's conf (CONF), without AWS;
# TO_FEATURIZE=<n>: the RunJobFlow request for a night that featurises n images.
plan: $(VENV)/.runtime-installed
	@$(BIN)/python -m fruitflow_pipeline.plan --conf '$(CONF)' $(if $(TO_FEATURIZE),--images $(TO_FEATURIZE))

# Regenerate constraints.txt: resolve the project's extras and requirements-stack.txt afresh and pin the whole tree.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet ".[local,dev]" -r requirements.txt -r requirements-stack.txt
	build/lock-venv/bin/pip freeze --exclude-editable | grep -v '^fruitflow @' | sort > constraints.txt
	build/lock-venv/bin/python scripts/cluster_constraints.py
	rm -rf build/lock-venv

# The EMR nodes' packages as wheels, for clusters without internet access: upload the folder
# to S3 and set FRUITFLOW_EMR_WHEELHOUSE_URI (docs/deploy/aws.md). EMR 7 nodes run
# Amazon Linux 2023 (glibc 2.34) on x86_64 with CPython 3.11: any manylinux wheel up to glibc 2.34.
# Both package sets go into one folder, so one URI serves every node: the lean set's pins are the
# full set's, so its download only checks that every wheel it needs is there (or adds it).
WHEELHOUSE ?= build/wheelhouse
MANYLINUX_PLATFORMS := manylinux1_x86_64 manylinux2010_x86_64 manylinux2014_x86_64 \
	$(foreach minor,$(shell seq 17 34),manylinux_2_$(minor)_x86_64)
PIP_DOWNLOAD_WHEELS := $(PIP) download --quiet --dest $(WHEELHOUSE) --only-binary=:all: \
	--implementation cp --python-version 3.11 --abi cp311 $(addprefix --platform ,$(MANYLINUX_PLATFORMS))
wheelhouse: $(BIN)/python
	rm -rf $(WHEELHOUSE)
	$(PIP_DOWNLOAD_WHEELS) -r spark_jobs/cluster/requirements.txt -c spark_jobs/cluster/constraints.txt
	$(PIP_DOWNLOAD_WHEELS) -r spark_jobs/cluster/requirements-lean.txt -c spark_jobs/cluster/constraints-lean.txt
	@echo "$$(ls $(WHEELHOUSE) | wc -l) wheels in $(WHEELHOUSE) ($$(du -sh $(WHEELHOUSE) | cut -f1)): aws s3 sync $(WHEELHOUSE) s3://<bucket>/wheelhouse/"

# What a managed Airflow (MWAA) takes for the EMR target (docs/getting-started/existing-airflow.md):
# dags/, plugins.zip, the lean requirements.txt and the settings as Airflow configuration options.
AIRFLOW_BUNDLE ?= build/airflow-bundle
airflow-bundle: $(VENV)/.runtime-installed
	$(BIN)/python scripts/airflow_bundle.py $(AIRFLOW_BUNDLE)

clean:
	rm -rf $(VENV) build data .pytest_cache
