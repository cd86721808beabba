# One command sets everything up and runs the examples pipeline; one sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast install bench clean

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

test: $(STAMP)
	$(BIN)/python -m mypy orchestrator steps
	$(BIN)/python -m pytest -n 2 -q

# The inner loop: everything but the tests marked slow (many kernels, whole pipelines, the emulator).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/local_overhead.py

clean:
	rm -rf $(VENV) .orchestrator
