# The cooperative-strategy benchmark suite for image-text matching.
# A newcomer types `make demo` and `make test`; every target sets up .venv itself.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
DATA       ?= data/synth-demo
SCALE      ?= smoke
EXECUTOR   ?= inline
CLUSTER    ?= local
SEEDS      ?=
ARGS       ?=
SWEEP_ARGS ?=
ROOT       ?= results/runs
TABLES     ?= results/tables
FIGURES    ?= results/figures
STAMP      := $(VENV)/.installed-stamp

# W&B writes offline runs under results/runs/<suite>/<cell>/wandb quietly (WANDB_SILENT=false to see its log)
WANDB_SILENT ?= true
export WANDB_SILENT
export MPLBACKEND := Agg
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast bench bench-gpu lint data collect readme sync status clean \
        table-dbl table-oas table-oss table-mss table-ablation table-cohort \
        rehearse-dbl rehearse-oas rehearse-oss rehearse-mss rehearse-ablation rehearse-cohort rehearse-all

setup: $(STAMP)

# torch first, pinned by TORCH_SPEC (the CPU wheel here; e.g. TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>"
# on a GPU cluster), then the project; pip then keeps the torch that is installed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install -q -e ".[dev]"
	touch $@

## the embedded dataset (generated, deterministic; real SCAN precomp + Karpathy layouts)
data: setup
	$(PY) -m bench.data.synth --preset demo --out data/synth-demo --seed 0

## the main job end to end on the embedded data: generate → sweep → collect → figures
demo: setup
	$(PY) -m bench.data.synth --preset demo --out data/synth-demo --seed 0
	$(PY) -m bench demo $(ARGS)

## the whole test suite (slow end-to-end and SLURM tests included)
test: setup
	$(PY) -m pytest -q -ra $(ARGS)

## quick inner loop: skips tests marked slow or slurm
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not slurm" $(ARGS)

## benchmarks: every figure measured side by side, written to results/perf.md
bench: setup
	$(PY) -m bench.benchmarks $(ARGS)

## the matchers on one CUDA GPU at published sizes (< 10 min on an H100/H200), into its section of results/perf.md;
## set up with a CUDA torch: make setup TORCH_SPEC="torch==2.13.0 --index-url <CUDA wheel index>"
bench-gpu: setup
	$(PY) -m bench.benchmarks.gpu $(ARGS)

lint: setup
	$(VENV)/bin/ruff check bench models strategies tests

## one target per paper table: DATA=<root with f30k_precomp/ coco_precomp/ vocab/> SCALE=full|smoke EXECUTOR=inline|local|slurm
## SEEDS=[0,1] ARGS="<key=value overrides, for the sweep and the table>" SWEEP_ARGS="--force | --retry-failed"
## ROOT=<result store> TABLES=<tables folder> FIGURES=<figures folder>
TABLE_OVERRIDES = data_root=$(DATA) scale=$(SCALE) $(if $(SEEDS),seeds=$(SEEDS)) $(ARGS)
table-dbl table-oas table-oss table-mss table-ablation table-cohort: setup
	$(PY) -m bench sweep $(subst table-,,$@) --executor $(EXECUTOR) $(if $(filter slurm,$(EXECUTOR)),--cluster $(CLUSTER)) --root $(ROOT) $(SWEEP_ARGS) $(TABLE_OVERRIDES)
	$(PY) -m bench collect $(subst table-,,$@) --root $(ROOT) --tables $(TABLES) --figures $(FIGURES) $(TABLE_OVERRIDES)

## a dress rehearsal of a paper table before you submit it (README "Before you submit a table"): every distinct
## full-scale configuration for a few steps, on generated data of the published shapes and generated weights
## unless DATA= / ARGS="weights.clip=DIR weights.bert=DIR" give yours; a REHEARSAL table and a log of each cell's
## peak memory vs request and s/step under results/rehearsal/ (EXECUTOR=local|slurm|inline, CLUSTER=<profile>)
## (EXECUTOR defaults to local here: each cell in a process of its own, so its peak memory is its own)
REHEARSAL_OVERRIDES = $(if $(filter command line environment,$(origin DATA)),data_root=$(DATA)) $(ARGS)
REHEARSAL_EXECUTOR = $(if $(filter command line environment,$(origin EXECUTOR)),$(EXECUTOR),local)
rehearse-dbl rehearse-oas rehearse-oss rehearse-mss rehearse-ablation rehearse-cohort: setup
	$(PY) -m bench sweep $(subst rehearse-,,$@) --rehearse --executor $(REHEARSAL_EXECUTOR) $(if $(filter slurm,$(REHEARSAL_EXECUTOR)),--cluster $(CLUSTER)) --root $(ROOT) $(SWEEP_ARGS) $(REHEARSAL_OVERRIDES)
	$(PY) -m bench collect $(subst rehearse-,,$@) --rehearse --root $(ROOT) $(REHEARSAL_OVERRIDES)

rehearse-all: rehearse-dbl rehearse-oas rehearse-oss rehearse-mss rehearse-ablation rehearse-cohort

## regenerate the README's demo table and figure from the demo's results (after make demo)
readme: setup
	$(PY) -m bench readme $(ARGS)

## a suite's table / every cell's state: SUITE=<name or path> (default demo), ARGS = the sweep's key=value overrides
collect: setup
	$(PY) -m bench collect $(or $(SUITE),demo) --root $(ROOT) --tables $(TABLES) --figures $(FIGURES) $(ARGS)

status: setup
	$(PY) -m bench status $(or $(SUITE),demo) --root $(ROOT) $(ARGS)

## upload offline W&B runs (needs your API key and network)
sync: setup
	$(PY) -m bench sync $(ARGS)

clean:
	rm -rf results/runs results/wandb .pytest_cache
