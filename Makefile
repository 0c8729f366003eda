# Two commands do all the set-up on a fresh machine:
#   make demo   # a small sweep, a fit and a checked forecast on the built-in offline data
#   make test   # the test suite (make test-fast: without the tests marked slow)
# Both create ./.venv on first use. Override the torch requirement for a GPU
# machine, e.g. `make demo TORCH_SPEC=torch` (the default is the CPU build). constraints.txt
# pins numpy and scipy so the demo prints the README's digits.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= runs/demo
# test processes (pytest-xdist; 0: one process). Each file's tests stay in one process, so a
# module's fixture (the demo's trained ladder) is built once.
TEST_JOBS ?= 2
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint setup clean-venv

$(BIN)/testbed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(BIN)/testbed

setup: $(BIN)/testbed

demo: setup
	$(BIN)/testbed demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

# a quicker check while editing: leaves out the tests marked slow (worker processes, long fits)
test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile -m "not slow"

lint: setup
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
