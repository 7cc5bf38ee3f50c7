# The product's interface. `make help` lists the targets.
# Every target runs in .venv/, created from pyproject.toml by `make install` on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIPELINES := $(BIN)/python -m pipelines
USECASES := digits clothing skin heart cucumber

# Options passed through to `train` (make train-digits EPOCHS=3 DATA=sample DATA_DIR=~/mnist SET="model.dropout=0.2")
DATA ?=
DATA_DIR ?=
EPOCHS ?=
BATCH_SIZE ?=
SET ?=
TRAIN_ARGS = $(if $(DATA),--data $(DATA)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
	$(if $(EPOCHS),--set epochs=$(EPOCHS)) $(if $(BATCH_SIZE),--set batch_size=$(BATCH_SIZE)) \
	$(foreach kv,$(SET),--set $(kv))

export MLFLOW_DISABLE_TELEMETRY ?= true
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all bench bench-digits bench-clothing bench-skin bench-heart mlflow-ui list clean $(addprefix train-,$(USECASES))

help: ## show this help
	@grep -hE '^[a-zA-Z_%-][a-zA-Z_% -]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/: .*## /\t/; s/:.*## /\t/' | awk -F'\t' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create or update .venv/ from pyproject.toml

# The demo trains each default spec on its sample; fewer epochs where the sample converges sooner.
DEMO_SET_clothing := --set epochs=6
DEMO_SET_skin := --set epochs=10
DEMO_SET_heart := --set cv_repeats=1

demo: $(STAMP) ## train every use case on the data bundled in data/samples/ (offline, a few minutes)
	@$(foreach usecase,$(USECASES),$(PIPELINES) train $(usecase) --data sample --run-name demo $(DEMO_SET_$(usecase)) && ) true
	@echo "demo done: compare runs with 'make mlflow-ui'; SavedModels are under models/"

train-%: $(STAMP) ## train a use case on its full data, e.g. make train-digits [DATA=sample] [EPOCHS=3] [DATA_DIR=dir] [SET="k=v ..."]
	$(PIPELINES) train $* $(TRAIN_ARGS)

list: $(STAMP) ## list the use cases, model builders and augmentations
	@$(PIPELINES) list

test: $(STAMP) ## run the fast tests (bundled samples only)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) ## run every test, slow ones too (they read ../shared/data)
	$(BIN)/python -m pytest -q -m ''

bench: bench-digits bench-clothing bench-skin bench-heart ## run every benchmark (full data; about an hour on 2 cores)

bench-digits: $(STAMP) ## full MNIST: our digits pipeline vs the keras-io convnet, same run
	$(BIN)/python benchmarks/bench_digits.py $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-clothing bench-skin bench-heart: bench-%: $(STAMP) ## full data, default spec, beside published figures
	$(BIN)/python benchmarks/bench_usecase.py $* $(if $(DATA_DIR),--data-dir $(DATA_DIR))

mlflow-ui: $(STAMP) ## browse runs at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} --host 127.0.0.1 --port 5000

clean: ## remove run outputs (models/<usecase>/, mlflow.db, mlartifacts/); keeps .venv, downloads, pretrained weights
	find models -mindepth 1 -maxdepth 1 -type d ! -name pretrained -exec rm -rf {} +
	rm -rf mlflow.db mlartifacts mlruns

# Serving: one model behind MLflow's scoring server (python -m pipelines serve), and its load check.
PORT ?= 5001
HOST ?= 127.0.0.1
MODEL ?=
WORKERS ?=
SERVE_ARGS = --port $(PORT) --host $(HOST) $(if $(MODEL),--model $(MODEL)) $(if $(WORKERS),--workers $(WORKERS))
.PHONY: bench-serve $(addprefix serve-,$(USECASES))

# `make help` reads `name: ... ## text` lines; this one is a pattern-specific variable (no rule) that
# carries the help text of the static pattern rule below, whose first word is not a plain name.
serve-%: SERVE_HELP = serve-% ## serve a model over REST, e.g. make serve-digits [PORT=5001] [MODEL=models:/digits/3 or models/digits/3] [HOST=0.0.0.0, warned]
$(addprefix serve-,$(USECASES)): serve-%: $(STAMP)
	$(PIPELINES) serve $* $(SERVE_ARGS)

bench-serve: $(STAMP) ## serving load check: 1,000 requests from 8 clients against serve-digits vs the SavedModel in-process
	$(BIN)/python benchmarks/bench_serve.py $(if $(WORKERS),--workers $(WORKERS))
