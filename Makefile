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

# --- Comparing runs and sweeps ------------------------------------------------------------
# make compare [USECASES_TO_COMPARE="digits skin"] [METRIC=test_accuracy] [LAST=5] [OUT=dir] [LOG=1]
# make sweep-<usecase> SWEEP="key=v1,v2 key2=v3,v4" [DATA=sample] [EPOCHS=2] [DATA_DIR=dir] [SET="k=v ..."]
USECASES_TO_COMPARE ?=
METRIC ?=
LAST ?=
OUT ?=
LOG ?=
SWEEP ?=
COMPARE_ARGS = $(USECASES_TO_COMPARE) $(if $(METRIC),--metric $(METRIC)) $(if $(LAST),--last $(LAST)) \
	$(if $(OUT),--out $(OUT)) $(if $(LOG),--log)
.PHONY: compare $(addprefix sweep-,$(USECASES))

compare: $(STAMP) ## table of MLflow runs, best per data set marked; writes reports/compare/ [USECASES_TO_COMPARE= METRIC= LAST= LOG=1]
	@$(PIPELINES) compare $(COMPARE_ARGS)

# A pattern-specific variable (not a rule), so `make help` lists the sweep targets.
sweep-%: SWEEP_GRID = --grid '$(SWEEP)' ## grid of child runs, e.g. make sweep-skin SWEEP="class_weights=0,0.5" [DATA=sample] [EPOCHS=2]

$(addprefix sweep-,$(USECASES)): sweep-%: $(STAMP)
	@test -n '$(SWEEP)' || { echo 'error: give the grid, e.g. make $@ SWEEP="class_weights=0,0.5 model.dropout=0.2,0.4"' >&2; exit 2; }
	$(PIPELINES) sweep $* $(SWEEP_GRID) $(TRAIN_ARGS)
