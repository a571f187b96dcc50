# make setup | train | test | board | bench | lint | format     (make help lists them)
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_STAMP := data/FashionMNIST/raw/t10k-labels-idx1-ubyte
ARGS ?=
PORT ?= 6006

.PHONY: help setup train test lint format board bench preview plot docs
help:
	@echo "make setup   create .venv, install the pinned dependencies, prepare Fashion-MNIST (idempotent)"
	@echo "make train   train the default experiment; ARGS=\"scheduler=cosine optimizer.lr=0.1\" for overrides"
	@echo "make test    lint and the whole test suite (what CI runs)"
	@echo "make board   TensorBoard on outputs/ at http://127.0.0.1:$(PORT) (PORT=... to change)"
	@echo "make bench   the speed benchmark: epochs, whole processes, start-up, sweep jobs (scripts/bench.py)"
	@echo "make preview the lr curve of a run as CSV + PNG, no training; ARGS=\"scheduler=one_cycle\" (outputs/previews/)"
	@echo "make plot    every schedule of conf/scheduler/ on one figure (docs/figures/schedules.png); ARGS=\"cosine step\""
	@echo "make docs    the schedule table of docs/schedules.md, from conf/scheduler/"

setup: $(STAMP) $(DATA_STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev,optuna,slurm]'
	touch $(STAMP)

# The Debian package where apt is at hand (as root, or through password-less sudo); otherwise
# src.training.datasets.fashion_mnist looks for the files itself and says how to get them.
$(DATA_STAMP): | $(STAMP)
	@if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=skip; fi; \
	  if [ "$$SUDO" != skip ]; then \
	    $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; } || true; \
	  fi; \
	fi
	$(PYTHON) -m src.training.datasets.fashion_mnist

train: setup
	$(PYTHON) -m src.train $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup lint
	$(PYTHON) -m pytest $(ARGS)

board: $(STAMP)
	@echo "TensorBoard: http://127.0.0.1:$(PORT)  (runs under outputs/; Ctrl-C to stop)"
	$(VENV)/bin/tensorboard --logdir outputs --host 127.0.0.1 --port $(PORT)

preview: $(STAMP)
	$(PYTHON) -m src.preview $(ARGS)

plot: $(STAMP)
	$(PYTHON) scripts/plot_schedules.py $(ARGS)

docs: $(STAMP)
	$(PYTHON) scripts/schedule_table.py

# ARGS="--repeats 3 --process-repeats 3 trainer.threads=1" passes options and overrides; epochs, whole processes,
# start-up and a sweep's per-job overhead; writes outputs/bench/bench.json (docs/speed.md).
bench: setup
	$(PYTHON) scripts/bench.py $(ARGS)
