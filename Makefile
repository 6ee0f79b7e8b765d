# phi1 — `make demo` and `make test` are the two commands a new user types.
# Both set up .venv first when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.phi1-installed
# torch first, pinned: on our machines 2.13.0 is the CPU build on local disk;
# an unpinned torch would pull a multi-GB CUDA build. GPU users: install your
# CUDA torch into .venv before `make setup` and set TORCH_SPEC= (empty).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench docs ablation clean-runs help

help:
	@echo "make demo   # set up .venv and run the offline demo pipeline (configs/demo.toml)"
	@echo "make test   # set up .venv and run the test suite (starts a Slurm cluster and Ray for tests/scale)"
	@echo "make test-fast  # the test suite without the real-cluster tests"
	@echo "make bench  # throughput benchmarks (bench/), results in bench/RESULTS.md"
	@echo "make docs   # regenerate the option reference (docs/reference/) from the typed config"
	@echo "make ablation  # filtered vs unfiltered data at equal tokens, 3 training seeds each (docs/ablation.md)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -e '.[dev,ray,ann]'
	@bash scripts/install-system-deps.sh
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/phi1 run configs/demo.toml

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# without the real-cluster tests (tests/scale: Slurm via scripts/slurm-up, Ray)
test-fast: setup
	$(PY) -m pytest -q -m "not cluster" $(PYTEST_ARGS)

bench: setup
	$(PY) bench/filter_throughput.py
	$(PY) bench/train_throughput.py
	$(PY) bench/execute_throughput.py
	$(PY) bench/decontam_throughput.py
	$(PY) bench/demo_stages.py

docs: setup
	$(VENV)/bin/phi1 config --reference

# The paper's Figure 2.1 in miniature (configs/ablation.toml); re-running resumes (docs/ablation.md).
ablation: setup
	$(VENV)/bin/phi1 ablation configs/ablation.toml

clean-runs:
	rm -rf runs
