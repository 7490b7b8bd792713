# Every target creates and uses ./.venv by itself; only python3.11+ and make are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo ui server test lint format bench bench-latency bench-tracking clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo_ml_pipeline.py

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# an MLflow tracking server on the local store (ARGS="mlflow=team" for PostgreSQL + S3)
server: $(STAMP)
	$(BIN)/trademl server $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_backtest.py

bench-latency: $(STAMP)
	$(BIN)/python benchmarks/bench_latency.py

# sweeps, Optuna workers, MLflow logging and run search on sqlite and a server (about 15 min)
bench-tracking: $(STAMP)
	$(BIN)/python benchmarks/bench_tracking.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
