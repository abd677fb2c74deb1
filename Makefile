# `make train` and `make test` set up .venv themselves (once, and again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
# The real photos the benchmark and the results table are measured on (outside the project, never copied in).
CATDOG_A ?= ../shared/data/catdog-a

.PHONY: venv train test test-slow test-all benchmark growth results lint tensorboard serve loadtest sweep clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python scripts/train.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

benchmark: $(STAMP)
	$(BIN)/python scripts/benchmark.py --data_dir $(CATDOG_A) $(ARGS)

growth: $(STAMP)
	$(BIN)/python scripts/growth.py --data_dir $(CATDOG_A) $(ARGS)

results: $(STAMP)
	$(BIN)/python scripts/results.py --data_dir $(CATDOG_A) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check catdog_lightning lab scripts tests
	$(BIN)/ruff format --check catdog_lightning lab scripts tests

serve: $(STAMP)
	$(BIN)/python scripts/serve.py $(ARGS)

loadtest: $(STAMP)
	$(BIN)/python scripts/loadtest.py --data_dir $(CATDOG_A) $(ARGS)

sweep: $(STAMP)
	$(BIN)/python scripts/sweep.py --search configs/search/tiny.yaml --n_trials 6 --trainer.max_epochs 8 $(ARGS)

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir lightning_logs --samples_per_plugin images=1000

clean:
	rm -rf $(VENV) lightning_logs data .pytest_cache
