# Every target sets up what it needs on a fresh machine: a virtual environment with the CPU build
# of torch 2.13.0, triton 3.6.0 (its interpreter runs kernels on the CPU) and numpy < 2.3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint run bench-tasks

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" "triton==3.6.0" "numpy<2.3"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

run: setup
	$(BIN)/fusionforge task --count 3

bench-tasks: setup
	$(BIN)/python benchmarks/task_generation.py
