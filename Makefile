# Quick start: `make run` (the main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run compare sweep debug test test-fast lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/train_rl.py --config configs/default.yaml

compare: $(STAMP)
	$(BIN)/python scripts/run_fixed_levels.py --config configs/default.yaml --out runs/fixed_levels

sweep: $(STAMP)
	$(BIN)/python scripts/sweep.py --config configs/sweep.yaml

debug: $(STAMP)
	$(BIN)/python scripts/train_rl.py --debug

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf runs/debug .pytest_cache
