# The two commands: `make run` serves the demo, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BIND ?= 127.0.0.1:8000

.PHONY: run test lint typecheck unit bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	BIND=$(BIND) $(BIN)/gunicorn -c gunicorn_conf.py app:app

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest
	$(BIN)/python -m benchmarks --quick

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.chaos

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) logs .pytest_cache .mypy_cache .ruff_cache
