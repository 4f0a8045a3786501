# backbone_lab — `make help` lists the targets.
# CPU machines take torch==2.13.0 (CPU wheel) through constraints-cpu.txt; on a GPU machine
# install your CUDA torch into the venv first and run `make install TORCH_CONSTRAINTS=`.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CONSTRAINTS ?= -c constraints-cpu.txt
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# test processes: one per core (at most 8); each test file runs whole in one of them, so a file's
# module fixtures and side-by-side batches stay together. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(TEST_WORKERS) --maxprocesses 8 --dist loadfile

.DEFAULT_GOAL := help
# gpu-wheels: Python version and platforms of the GPU machine the wheels are for
GPU_WHEELS ?= .wheels
GPU_PYTHON_VERSION ?= 3.12
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

.PHONY: help install demo test test-fast bench bench-analysis bench-diagnostics gpu-wheels gpu-check clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints-cpu.txt
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_CONSTRAINTS) "torch==2.13.0"
	$(BIN)/pip install -q $(TORCH_CONSTRAINTS) -e ".[dev,launchers]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install backbone_lab with its dependencies (idempotent)

demo: $(STAMP) ## train + analyse the embedded CPU default; report in multirun_outputs/runs/<time>/analysis
	$(BIN)/python -m backbone_lab $(ARGS)

test: $(STAMP) ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: $(STAMP) ## the suite without the slow end-to-end subprocess tests
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP) ## the CPU benchmarks (interleaved rounds, ratios against baselines measured in the same run)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_analysis.py --size a
	$(BIN)/python benchmarks/bench_diagnostics.py fisher
	$(BIN)/python benchmarks/bench_diagnostics.py throughput

bench-analysis: $(STAMP) ## analysis engine at paper scale (writes ~5 GB into a temp dir)
	$(BIN)/python benchmarks/bench_analysis.py --size both

gpu-wheels: $(BIN)/python ## download the wheels gpu_check.sh installs offline (Python 3.12) into .wheels/
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		--implementation cp $(GPU_PLATFORMS) --dest $(GPU_WHEELS) -r benchmarks/gpu_wheels.txt
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(GPU_WHEELS) -r benchmarks/gpu_wheels_from_source.txt
	@ls -1 $(GPU_WHEELS)
	@du -ch $(GPU_WHEELS)/*.whl | tail -n 1

gpu-check: ## on a GPU machine: benchmark + paper-scale reproduction, <= 8 min (GPU_CHECK_DRY_RUN=1: CPU dry run)
	bash benchmarks/gpu_check.sh

clean: ## remove generated outputs (keeps .venv)
	rm -rf multirun_outputs/* outputs wandb lightning_logs .pytest_cache
	touch multirun_outputs/.gitkeep
