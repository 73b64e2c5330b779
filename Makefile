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

.PHONY: install repro test test-quick lint serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
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

test: install
	$(BIN)/python -m pytest $(PYTEST_WORKERS)

test-quick: install
	$(BIN)/python -m pytest $(PYTEST_WORKERS) -m "not e2e and not stage"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

serve: install
	$(BIN)/bentoml serve $$(cat artifacts/package/bento.txt) --host 127.0.0.1 --port 3000
