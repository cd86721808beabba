# One command sets everything up and runs the examples pipeline; one sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest workers: many tests wait on kernels and subprocesses, so a few more workers than cores pays.
JOBS ?= 3
# Bytecode is cached as Python does by default, also where the environment turns it off (some CI images set
# PYTHONDONTWRITEBYTECODE=1): the suite starts a few hundred Python processes (the CLI, step runners, emulated
# nodes) that would each compile the project's modules again. Empty means unset to Python.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: run test test-all test-fast install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[examples,dev,devops,azureml,trigger]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/orchestrator run examples --out .orchestrator/runs/examples; status=$$?; \
	echo "Report: $(CURDIR)/.orchestrator/runs/examples/report.html"; \
	test $$status -le 1

# The type check runs beside the tests (its ~30 s on a fresh checkout would otherwise come first); both must pass.
test: $(STAMP)
	@$(BIN)/python -m mypy orchestrator steps > .mypy.out 2>&1 & types=$$!; \
	$(BIN)/python -m pytest -n $(JOBS) -q -m "not exhaustive"; tests=$$?; \
	wait $$types; typed=$$?; echo "mypy: $$(tail -1 .mypy.out)"; test $$typed -eq 0 || cat .mypy.out; \
	rm -f .mypy.out; test $$tests -eq 0 && test $$typed -eq 0

# Everything, including the finer-grained repeats marked exhaustive (each emulator assumption alone).
test-all: $(STAMP)
	$(BIN)/python -m mypy orchestrator steps
	$(BIN)/python -m pytest -n $(JOBS) -q

# The inner loop: everything but the tests marked slow (many kernels, whole pipelines, the emulator).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -q -m "not slow and not exhaustive"

bench: $(STAMP)
	$(BIN)/python bench/local_overhead.py

clean:
	rm -rf $(VENV) .orchestrator
