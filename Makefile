# Two commands on a fresh machine:  `make demo` (install + main job)  and  `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := registry/data/sample
export REGISTRY_HOME ?= $(CURDIR)/.registry

.PHONY: install demo test clean-db

install: $(VENV)/.installed

# torch first, as a CPU build: an unpinned torch pulls a multi-GB CUDA build. This project's package index serves
# the CPU wheel under the plain pin; with only the public PyPI, use PyTorch's CPU index:
#   make demo PIP_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PIP_TORCH ?= torch==2.13.0
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIP_TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

OUT ?= out
AKAGANEITE := $(SAMPLE)/tunnel_references/beta-FeOOH_akaganeite_hollandite-type_2x2_mp-1237867.cif

# The discovery loop on shipped data. Every step is incremental: running it again redoes nothing.
demo: install
	$(BIN)/registry db start
	$(BIN)/registry ingest $(SAMPLE)/mp20 $(SAMPLE)/tunnel_references
	$(BIN)/registry generate cdvae $(SAMPLE)/cdvae/eval_gen_arrays.npz --filter oxides --limit 200
	$(BIN)/registry generate substitute --framework tunnel --prototype $(AKAGANEITE) --max-per-parent 2
	$(BIN)/registry build all --workers 2 --steps 300
	$(BIN)/registry sets create demo-top --top 10 -d "best Mg-host candidates of the demo run" --author make-demo
	$(BIN)/registry build optimade  # the OPTIMADE view (registry serve) lists the new set's members in _tmo_sets
	rm -f $(OUT)/demo-top.tar.gz  # a bundle is never overwritten in place
	$(BIN)/registry sets export demo-top $(OUT)/demo-top.tar.gz
	$(BIN)/registry report $(OUT)/report.html --set demo-top
	$(BIN)/registry stats
	@echo "database: $(REGISTRY_HOME) (registry db status); set bundle: $(OUT)/demo-top.tar.gz; report: $(OUT)/report.html; OPTIMADE API: registry serve"

test: install
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

clean-db:
	-$(BIN)/registry db stop
	rm -rf $(REGISTRY_HOME)
