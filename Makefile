# The product's interface. `make help` lists the targets.
# Every target runs in .venv/, created from pyproject.toml by `make install` on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIPELINES := $(BIN)/python -m pipelines
# The use cases, as the package lists them (pipelines/usecases/). `list --names` imports only the
# standard library, so before .venv/ exists any python3 answers it from this checkout.
USECASES := $(shell { $(BIN)/python -m pipelines list --names || PYTHONPATH='$(CURDIR)' $(PYTHON) -m pipelines list --names; } 2>/dev/null)
ifeq ($(strip $(USECASES)),)
$(error cannot list the use cases: neither $(BIN)/python nor $(PYTHON) runs `-m pipelines list --names` here; install Python 3.10-3.12, or name one with PYTHON=)
endif
TRAIN_TARGETS := $(addprefix train-,$(USECASES))
comma := ,
empty :=
space := $(empty) $(empty)

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
# GNU Make never searches pattern rules for a .PHONY target, so every rule over use cases is a
# *static* pattern rule (`$(TRAIN_TARGETS): train-%: ...`): a plain `train-%:` would silently
# do nothing for `make train-digits`.
.PHONY: help install demo test test-all bench bench-checks bench-digits bench-clothing bench-skin bench-heart bench-cucumber bench-skin-transfer bench-image-folder bench-edge bench-tune bench-gpu bench-serve-local mlflow-ui mlflow-server lint list clean $(TRAIN_TARGETS)

# Lists every rule with a `##` comment; a static pattern rule shows as its pattern, `train-<usecase>`.
help: ## show this help
	@echo "usage: make <target> [OPTION=value ...]"
	@awk -F'## ' '/^[^#\t][^=]*:.*## / { split($$1, parts, ":"); target = parts[1]; \
		if (target ~ /^\$$\(/) target = parts[2]; gsub(/^ +| +$$/, "", target); gsub(/%/, "<usecase>", target); \
		printf "  %-22s %s\n", target, $$2 }' $(MAKEFILE_LIST)
	@echo "use cases: $(USECASES)"

# setuptools prints an "Editable installation ... be careful with folders" notice for every editable
# install of a flat layout (its InformationOnly warning): nothing to act on, so that one message is filtered.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# GPU=1: TensorFlow with CUDA in place of tensorflow-cpu (the same `tensorflow` package, so one
# must go before the other comes); GPU=jax: JAX with CUDA, for KERAS_BACKEND=jax.
GPU ?=
TENSORFLOW_GPU := tensorflow[and-cuda]==2.21.0
JAX_GPU := jax[cuda12]==0.10.2
install: $(STAMP) ## create or update .venv/ from pyproject.toml [GPU=1: CUDA TensorFlow; GPU=jax: CUDA JAX]
ifeq ($(GPU),jax)
	$(BIN)/python -m pip install --quiet '$(JAX_GPU)'
else ifneq ($(GPU),)
	$(BIN)/python -m pip uninstall --quiet -y tensorflow-cpu
	$(BIN)/python -m pip install --quiet '$(TENSORFLOW_GPU)'
endif
	@echo ".venv/ is installed from pyproject.toml: $$($(BIN)/python -m pip freeze 2>/dev/null | grep -Ei '^(tensorflow([-_]cpu)?|keras|mlflow|jax)==' | tr '\n' ' ')"
	@echo "make targets use it as it is; for python -m pipelines: source .venv/bin/activate"

# The demo trains each default spec on its sample; fewer epochs where the sample converges sooner.
DEMO_SET_clothing := --set epochs=6
DEMO_SET_skin := --set epochs=10
DEMO_SET_heart := --set cv_repeats=1
# cucumber cross-validates (5 folds + the final fit): a third of the epochs keeps it to ~1.5 minutes (CV accuracy ~0.32).
DEMO_SET_cucumber := --set epochs=6 --set fine_tune_epochs=4

# Your own use cases (usecases/<name>.toml) join the demo when they have a sample in data/samples/.
DEMO_USECASES := $(foreach usecase,$(USECASES),$(if $(wildcard data/samples/$(usecase)/.),$(usecase)))

demo: $(STAMP) ## train every use case on the data bundled in data/samples/ (offline, a few minutes)
	@$(foreach usecase,$(DEMO_USECASES),$(PIPELINES) train $(usecase) --data sample --run-name demo $(DEMO_SET_$(usecase)) && ) true
	@$(PIPELINES) compare
	@echo "demo done: SavedModels are under models/; next: make serve-digits, make mlflow-ui"

$(TRAIN_TARGETS): train-%: $(STAMP) ## train a use case on its full data [DATA=sample] [EPOCHS=3] [BATCH_SIZE=256] [DATA_DIR=dir] [SET="k=v ..."]
	$(PIPELINES) train $* $(TRAIN_ARGS)

# Any other train-<name>: say which names exist instead of "No rule to make target".
train-%:
	@echo "error: unknown use case '$*'; choose one of: $(subst $(space),$(comma) ,$(USECASES))" >&2; exit 2

lint: $(STAMP) ## ruff: pyflakes, import order, likely bugs (the settings are in pyproject.toml)
	$(BIN)/ruff check pipelines tests benchmarks scripts

list: $(STAMP) ## list the use cases, model builders and augmentations
	@$(PIPELINES) list

test: $(STAMP) ## run the fast tests (bundled samples only)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) ## run every test, slow ones too (they read ../shared/data)
	$(BIN)/python -m pytest -q -m ''

bench: bench-digits bench-clothing bench-skin bench-heart bench-cucumber ## run every benchmark (full data; about an hour and a half on 2 cores)

bench-digits: $(STAMP) ## full MNIST: our digits pipeline vs the keras-io convnet, same run
	$(BIN)/python benchmarks/bench_digits.py $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-clothing bench-heart: bench-%: $(STAMP) ## full data, default spec, beside published figures
	$(BIN)/python benchmarks/bench_usecase.py $* $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-skin: $(STAMP) ## full DermaMNIST: both operating points of the default model beside class_weights=0.5, one run [EPOCHS=60]
	$(BIN)/python benchmarks/bench_skin.py $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(EPOCHS),--epochs $(EPOCHS))

bench-cucumber: $(STAMP) ## 5-fold CV, same folds: pretrained transfer vs the same network from random init vs small_cnn, with wall time [DATA_DIR=dir]
	$(BIN)/python benchmarks/bench_cucumber.py $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-skin-transfer: $(STAMP) ## DermaMNIST: ImageNet MobileNet transfer (upsampled to 128 px) vs the spec's residual_cnn, one run (~30 min) [EPOCHS=n: residual_cnn]
	$(BIN)/python benchmarks/bench_skin_transfer.py $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(EPOCHS),--epochs $(EPOCHS))

bench-checks: $(STAMP) ## data checks on the full data of the five use cases: duplicates across splits, label conflicts (~2 min) [DATA_DIR=root]
	$(BIN)/python benchmarks/bench_checks.py $(if $(DATA_DIR),--data-root $(DATA_DIR))

bench-image-folder: $(STAMP) ## photo folders: peak memory of loading + one epoch at 1x and 4x the images, memory-mapped vs in RAM (~5 min) [SIZE=96]
	$(BIN)/python benchmarks/bench_image_folder.py $(if $(SIZE),--size $(SIZE))

bench-gpu: $(STAMP) ## training images/s of our train vs a bare fit, digits/clothing/cucumber samples, on the GPU if any [EPOCHS=3]
	$(BIN)/python benchmarks/bench_gpu.py $(if $(EPOCHS),--epochs $(EPOCHS))

bench-edge: $(STAMP) ## LiteRT int8/float16 and ONNX vs the SavedModel per image use case: size, batch-1 p50/p99 (1, 2 threads), batch 64, agreement on the full test data [EDGE_USECASES=digits]
	$(BIN)/python benchmarks/bench_edge.py $(if $(EDGE_USECASES),--usecases $(EDGE_USECASES)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-tune: $(STAMP) ## a tuned run vs the spec's default on full data, same epochs: TRIALS trials of TRIAL_EPOCHS first (~15 min) [TUNE_USECASE=digits]
	$(BIN)/python benchmarks/bench_tune.py $(if $(TUNE_USECASE),--usecase $(TUNE_USECASE)) $(if $(TRIALS),--trials $(TRIALS)) \
		$(if $(TRIAL_EPOCHS),--trial-epochs $(TRIAL_EPOCHS)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-serve-local: $(STAMP) ## each use case's SavedModel in-process: p50/p99 at batch 1, batch-256 throughput, cold start
	$(BIN)/python benchmarks/bench_inference.py

mlflow-ui: $(STAMP) ## browse runs at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} --host 127.0.0.1 --port 5000

# A tracking server for a team or several machines: runs log to it over HTTP and it proxies the
# artifacts (clients need no access to ARTIFACTS). Loopback only. BACKEND=postgresql://... is read
# with psycopg 3 (SQLAlchemy's default driver for that scheme, psycopg2, is not installed).
# AUTH=1: MLflow's own logins (`--app-name basic-auth`), users and permissions in AUTH_BACKEND
# (default: the same database, in its own tables); the admin user is created on first start with
# the password in MLFLOW_AUTH_ADMIN_PASSWORD; the CSRF secret every server process shares is
# MLFLOW_FLASK_SERVER_SECRET_KEY, else one generated once into AUTH_CONFIG.secret. Clients pass
# MLFLOW_TRACKING_USERNAME/PASSWORD.
mlflow-server: PORT ?= 5000
mlflow-server: BACKEND ?= sqlite:///$(CURDIR)/mlflow-server.db
mlflow-server: ARTIFACTS ?= $(CURDIR)/mlartifacts-server
mlflow-server: WORKERS ?= 2
mlflow-server: AUTH ?=
mlflow-server: AUTH_BACKEND ?= $(BACKEND)
mlflow-server: AUTH_CONFIG ?= $(CURDIR)/mlflow-auth.ini
mlflow-server: ADMIN_USER ?= admin
psycopg_url = $(patsubst postgresql://%,postgresql+psycopg://%,$(1))
mlflow-server: $(STAMP) ## MLflow tracking server on 127.0.0.1 [PORT=5000] [BACKEND=sqlite:///file or postgresql://...] [ARTIFACTS=dir] [WORKERS=2] [AUTH=1]
	@echo "tracking server: export MLFLOW_TRACKING_URI=http://127.0.0.1:$(PORT) before make train-<usecase>"
	@if [ -n "$(AUTH)" ]; then \
		test -n "$$MLFLOW_AUTH_ADMIN_PASSWORD" || { echo "error: AUTH=1 needs MLFLOW_AUTH_ADMIN_PASSWORD, the password of the admin user it creates" >&2; exit 2; }; \
		umask 077; printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = %s\nadmin_username = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
			'$(call psycopg_url,$(AUTH_BACKEND))' '$(ADMIN_USER)' > '$(AUTH_CONFIG)'; \
		test -s '$(AUTH_CONFIG).secret' || $(BIN)/python -c 'import secrets; print(secrets.token_hex(32))' > '$(AUTH_CONFIG).secret'; \
		export MLFLOW_AUTH_CONFIG_PATH='$(AUTH_CONFIG)' MLFLOW_FLASK_SERVER_SECRET_KEY="$${MLFLOW_FLASK_SERVER_SECRET_KEY:-$$(cat '$(AUTH_CONFIG).secret')}"; \
		echo "logins on: clients set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (admin user: $(ADMIN_USER))"; fi; \
	PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/mlflow server \
		--backend-store-uri '$(call psycopg_url,$(BACKEND))' $(if $(AUTH),--app-name basic-auth) --serve-artifacts \
		--artifacts-destination $(ARTIFACTS) --host 127.0.0.1 --port $(PORT) --workers $(WORKERS)

clean: ## remove run outputs (models/<usecase>/, the MLflow stores and artifacts); keeps .venv, downloads, pretrained weights
	find models -mindepth 1 -maxdepth 1 -type d ! -name pretrained -exec rm -rf {} +
	rm -rf mlflow.db mlartifacts mlruns mlflow-server.db mlartifacts-server models/optuna.db

# --- Comparing runs and sweeps ------------------------------------------------------------
# make compare [USECASES_TO_COMPARE="digits skin"] [METRIC=test_accuracy] [LAST=5] [OUT=dir] [LOG=1]
# make sweep-<usecase> SWEEP="key=v1,v2 key2=v3,v4" [DATA=sample] [EPOCHS=2] [DATA_DIR=dir] [SET="k=v ..."]
#     [STUDY=name] [STORAGE=url] [TIMEOUT=s]: a sweep is a grid study on Optuna, workers as for tune below
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

$(addprefix sweep-,$(USECASES)): sweep-%: $(STAMP) ## every point of a grid once, ranked on validation data, best then scored on test: SWEEP="class_weights=0,0.5" [DATA=sample] [EPOCHS=2] [SET=...]
	@test -n '$(SWEEP)' || { echo 'error: give the grid, e.g. make $@ SWEEP="class_weights=0,0.5 model.dropout=0.2,0.4"' >&2; exit 2; }
	$(PIPELINES) sweep $* --grid '$(SWEEP)' $(STUDY_ARGS) $(TRAIN_ARGS)

# Search: an Optuna study on validation data, trials as child runs (python -m pipelines tune). Start the
# same command in other shells or on other hosts (STORAGE=postgresql://... shared) to add workers.
# make tune-<usecase> TRIALS=8 [SPACE="learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5)"] [STUDY=name]
#     [STORAGE=url] [TIMEOUT=s] [DATA=sample] [EPOCHS=2] [SET="k=v ..."]
TRIALS ?=
SPACE ?= learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5)
STUDY ?=
STORAGE ?=
TIMEOUT ?=
STUDY_ARGS = $(if $(STUDY),--study $(STUDY)) $(if $(STORAGE),--storage '$(STORAGE)') $(if $(TIMEOUT),--timeout $(TIMEOUT))
TUNE_ARGS = --trials $(TRIALS) --space '$(SPACE)' $(STUDY_ARGS)
.PHONY: $(addprefix tune-,$(USECASES))

$(addprefix tune-,$(USECASES)): tune-%: $(STAMP) ## Optuna search on validation data, best trial then scored on test: TRIALS=8 [SPACE=...] [STORAGE=url] [DATA=sample]
	@test -n '$(TRIALS)' || { echo 'error: give the budget, e.g. make $@ TRIALS=8 [SPACE="learning_rate=log(1e-4,1e-2)"]' >&2; exit 2; }
	$(PIPELINES) tune $* $(TUNE_ARGS) $(TRAIN_ARGS)

# Exports beside a published version: make export-digits FORMAT=litert [MODEL=models:/digits/3 or models/digits/3] [DATA=sample] [DATA_DIR=dir]
FORMAT ?=
EDGE_USECASES ?=
EXPORT_TARGETS := $(addprefix export-,$(USECASES))
EXPORT_ARGS = $(if $(FORMAT),--format $(FORMAT)) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA)) \
	$(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))
.PHONY: $(EXPORT_TARGETS)

$(EXPORT_TARGETS): export-%: $(STAMP) ## LiteRT int8+float16 or ONNX beside a version, verified by its own runtime [FORMAT=litert|onnx|savedmodel] [MODEL=ref]
	$(PIPELINES) export $* $(EXPORT_ARGS)

# Serving: one model behind MLflow's scoring server (python -m pipelines serve), and its load check.
PORT ?= 5001
HOST ?= 127.0.0.1
MODEL ?=
WORKERS ?=
SERVE_FORMATS ?=
OPERATING_POINT ?=
MAX_BODY_MB ?=
SERVE_ARGS = --port $(PORT) --host $(HOST) $(if $(MODEL),--model $(MODEL)) $(if $(WORKERS),--workers $(WORKERS)) \
	$(if $(OPERATING_POINT),--operating-point $(OPERATING_POINT)) $(if $(FORMAT),--format $(FORMAT)) \
	$(if $(MAX_BODY_MB),--max-body-mb $(MAX_BODY_MB))
.PHONY: bench-serve $(addprefix serve-,$(USECASES))

$(addprefix serve-,$(USECASES)): serve-%: $(STAMP) ## serve the champion over REST [PORT=5001] [MODEL=models:/digits/3 or models/digits/3] [OPERATING_POINT=accuracy] [FORMAT=onnx|litert] [MAX_BODY_MB=8] [HOST=, warned]
	$(PIPELINES) serve $* $(SERVE_ARGS)

# Any other serve-<name> (a use case whose file appears after make read this Makefile, e.g. one
# `init` just wrote): the CLI resolves the name, or answers unknown names in one line.
serve-%: $(STAMP)
	$(PIPELINES) serve $* $(SERVE_ARGS)

bench-serve: $(STAMP) ## serving load check: 1,000 requests from 8 clients against serve-digits vs the SavedModel in-process [SERVE_FORMATS="savedmodel onnx litert"]
	$(BIN)/python benchmarks/bench_serve.py $(if $(WORKERS),--workers $(WORKERS)) $(if $(SERVE_FORMATS),--formats $(SERVE_FORMATS))
