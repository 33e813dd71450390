# The two commands of the README (`make run`, `make test`) and the targets behind them.
# Every target is idempotent: the venv is created once and re-installed only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
export KEDRO_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test lint serve mlflow-ui browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned to the CPU wheel (2.13.0); pip (not uv) finds it on this machine's disk.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[training,dev]"
	touch $(STAMP)

install: $(STAMP)

## The default job: data_engineering -> training -> evaluation on the bundled data.
run: install
	$(BIN)/kedro run

## The tests (a headless Chromium is installed for the labeling page test when apt is available).
test: install browser
	$(BIN)/python -m pytest

# Debian's chromium drives the labeling page test; skipped (the test skips) where apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"; }

lint: install
	$(BIN)/ruff check src tests benchmarks scripts

serve: install
	$(BIN)/intent-pipeline serve

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

clean:
	rm -rf $(VENV) mlruns mlflow.db
