# Two commands on a fresh machine:  `make demo` (install + main job)  and  `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := registry/data/sample
export REGISTRY_HOME ?= $(CURDIR)/.registry

.PHONY: install demo test clean-db

install: $(VENV)/.installed

# torch first, pinned to the CPU build: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: install
	$(BIN)/registry db start
	$(BIN)/registry ingest $(SAMPLE)/mp20 $(SAMPLE)/tunnel_references
	$(BIN)/registry stats

test: install
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

clean-db:
	-$(BIN)/registry db stop
	rm -rf $(REGISTRY_HOME)
