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

SEED ?= 2

# The pipeline so far, on one task: generate it, implement it with the built-in code generator,
# check the file (on the CPU through Triton's interpreter; on a GPU at the bench shape too).
run: setup
	mkdir -p work
	$(BIN)/fusionforge task --seed $(SEED) --out work/task.json
	$(BIN)/fusionforge implement work/task.json -o work/001_fused_kernels.py
	$(BIN)/fusionforge check work/001_fused_kernels.py

bench-tasks: setup
	$(BIN)/python benchmarks/task_generation.py
