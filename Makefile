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

N ?= 1
SEED ?=

# The main job: the attempt loop on N tasks (SEED: the first task's seed; random when empty) with the
# built-in implementer. Kernel files are written in work/, winners kept in data/, attempt logs in runs/.
# Without a GPU a pass means verified (checked through Triton's interpreter) and "not timed".
run: setup
	$(BIN)/fusionforge run -n $(N) $(if $(SEED),--seed $(SEED)) --workdir work --data data --runs runs

bench-tasks: setup
	$(BIN)/python benchmarks/task_generation.py
