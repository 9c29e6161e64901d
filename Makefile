# One entry point for people and CI: make run, make test, make lint, make bench, make lock.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip itself is pinned too (the Dockerfile pins the same version).
PIP_VERSION := 26.3

.PHONY: run test test-fast lint bench chaos mutation install lock clean

# Every dependency comes from requirements-dev.lock (exact versions and hashes); the project
# itself is then installed editable without dependencies, built by the setuptools pinned there.
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==$(PIP_VERSION)
	$(BIN)/python -m pip install -q -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Paper mode on the synthetic market, sped up so a new user sees signals and trades soon.
run: $(STAMP)
	$(BIN)/tradebot up --speed 600

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tests bench

# Every benchmark in turn (a few minutes); their figures, each with the baseline measured in
# the same run, go to bench/results.md (docs/performance.md says what each measures).
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# The long chaos run: the whole bot broken on a seeded schedule for MINUTES (default 30),
# then checked; prints the summary and writes it to out/chaos-summary.json (tests/chaos).
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run --minutes $(or $(MINUTES),30) --json out/chaos-summary.json

# Mutation testing (docs/mutation.md): mutmut plants small bugs, one at a time, in the modules
# where a bug costs money and runs the tests that reach each one; then the report prints the
# killed ratio per module and every surviving mutant. Slow (hours on 2 cores); not in CI.
# Resumes where it stopped; JOBS=N mutants at once (default 8: most tests wait on I/O).
# MODULE=shared.bus re-checks one module's mutants (after new tests) and reports it alone.
mutation: $(STAMP)
ifdef MODULE
	$(BIN)/python -m tests.mutation.report --forget $(subst .,/,$(MODULE)).py
	$(BIN)/mutmut run --max-children $(or $(JOBS),8) "$(MODULE).*" || true
	$(BIN)/python -m tests.mutation.report --quiet --module $(subst .,/,$(MODULE)).py
else
	$(BIN)/mutmut run --max-children $(or $(JOBS),8) || true
	$(BIN)/python -m tests.mutation.report --quiet
endif

# Regenerate requirements.lock (runtime) and requirements-dev.lock (runtime + the dev extra)
# from pyproject.toml with pip-tools, installed in a throwaway venv. Pins already in the
# files are kept; LOCK_ARGS=--upgrade moves everything to the newest allowed versions,
# LOCK_ARGS='--upgrade-package ccxt' one package. The dev file is constrained by the runtime
# file, so both pin the same runtime versions. The lock is for Linux x86_64 and Python 3.11
# (the image's and CI's), resolved against PyPI alone: the local pip configuration (extra
# indexes, find-links, constraints) is ignored, so the hashes are PyPI's.
LOCK_PY ?= python3.11
PIP_TOOLS_VERSION := 7.6.2
LOCK_ARGS ?=
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe --build-deps-for=wheel \
	--no-emit-index-url --no-emit-find-links
LOCK_ENV := env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT \
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND='make lock'

lock:
	$(LOCK_PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "make lock needs Python 3.11 (LOCK_PY=...)")'
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(LOCK_PY) -m venv "$$tmp" && \
	$(LOCK_ENV) "$$tmp/bin/python" -m pip install -q pip-tools==$(PIP_TOOLS_VERSION) && \
	$(LOCK_ENV) "$$tmp/bin/pip-compile" $(LOCK_FLAGS) $(LOCK_ARGS) \
		-o requirements.lock pyproject.toml && \
	$(LOCK_ENV) "$$tmp/bin/pip-compile" $(LOCK_FLAGS) $(LOCK_ARGS) --extra dev \
		-c requirements.lock -o requirements-dev.lock pyproject.toml

# Everything install and the tests leave behind; never data/, logs/, out/ (yours) or mutants/
# (the mutation run's results, hours of work: rm -rf mutants to start that over).
clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
