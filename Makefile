# Every target sets up what it needs on a fresh machine: a virtual environment with the CPU build
# of torch 2.13.0, triton 3.6.0 (its interpreter runs kernels on the CPU) and numpy < 2.3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint run bench-tasks

setup: $(VENV)/.installed

# pip shows what it downloads and installs (torch is the long part): the first setup takes minutes.
$(VENV)/.installed: pyproject.toml
	@echo "== setup 1/3: a virtual environment in $(VENV), with a current pip"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "== setup 2/3: torch 2.13.0, triton 3.6.0 and numpy < 2.3 (a few hundred MB; minutes the first time)"
	$(BIN)/pip install --progress-bar on "torch==2.13.0" "triton==3.6.0" "numpy<2.3"
	@echo "== setup 3/3: fusionforge itself and its test tools"
	$(BIN)/pip install --progress-bar on -e ".[dev]"
	@echo "== setup done: $(BIN)/fusionforge"
	touch $@

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q -n auto

N ?= 1
SEED ?=

# The main job: the attempt loop on N tasks (SEED: the first task's seed; random when empty) with the
# built-in implementer. Kernel files are written in work/, winners kept in data/, attempt logs in runs/.
# Without a GPU a pass means verified (checked through Triton's interpreter) and "not timed".
run: setup
	$(BIN)/fusionforge run -n $(N) $(if $(SEED),--seed $(SEED)) --workdir work --data data --runs runs

bench-tasks: setup
	$(BIN)/python benchmarks/task_generation.py
