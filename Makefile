# One entry point for people and CI: make run, make test, make lint, make bench.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
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

bench: $(STAMP)
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/backtest.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
