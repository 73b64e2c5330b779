# The two commands of the README:  make repro  (install, then run the pipeline)  and  make test.
# make test-quick: the unit tests alone (no stage runs, no end-to-end runs), for everyday work.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1

.PHONY: install install-dev repro test test-quick lint serve clean

# pip --no-compile: pip would compile every module of every package (torch, ray, bentoml, prefect...)
# to bytecode, 80 s of the install on a 2-core CPU, most of it for modules the pipeline never imports.
# Python compiles a module the first time it is imported instead and keeps it in the venv, so the
# first run pays for what it uses (15 s for the stages' imports) and later runs nothing. That needs
# bytecode to be written: a PYTHONDONTWRITEBYTECODE in the environment (some images set it) would
# make every process compile its imports again, so the commands here run without it.
unexport PYTHONDONTWRITEBYTECODE
PIP_INSTALL := $(BIN)/python -m pip install -q --no-compile -c constraints.txt

# Two steps: make repro installs what the pipeline needs; make test adds the test tools (and h2o for
# the benchmark against H2O-3) on top of the same venv.
install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

repro: install
	$(BIN)/dvc repro
	@echo
	@echo "metrics:      metrics.json  (dvc metrics show; dvc plots show)"
	@echo "ONNX model:   artifacts/export/model.onnx  (+ preprocessing.json, parity.json)"
	@echo "bento:        $$(cat artifacts/package/bento.txt)  (bentoml serve $$(cat artifacts/package/bento.txt))"
	@$(BIN)/python -c "import json; m = json.load(open('metrics.json')); k = m['metric']; \
	print(f\"{k}: validation {m['validation']['overall'][k]:.4f}\" + (f\", test {m['test'][k]:.4f}\" if 'test' in m else ''))"

# Two pytest-xdist workers: the end-to-end tests spend much of their time waiting on servers and stage
# processes. Tests that share fixtures stay on one worker (tests/conftest.py).
PYTEST_WORKERS ?= -n 2

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_WORKERS)

test-quick: install-dev
	$(BIN)/python -m pytest $(PYTEST_WORKERS) -m "not e2e and not stage"

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

serve: install
	$(BIN)/bentoml serve $$(cat artifacts/package/bento.txt) --host 127.0.0.1 --port 3000
