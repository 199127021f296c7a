# convrepro — every user entry point.  Targets that need the environment depend on
# `install`, so a fresh clone needs no other step than the target itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export CONVREPRO_DATA_DIR ?= $(abspath ../shared/data)
# Prepared image stores (convrepro-data prepare): beside the checkout, not in the data root,
# which may be read-only (it is in development and CI).  Not committed (.gitignore).
export CONVREPRO_PREPARED_DIR ?= $(abspath prepared)

MLFLOW_DB := sqlite:///$(abspath mlflow.db)
PORT ?= 5000

# Overrides for the runs: ARGS="optim=sdlm seed=3", and resume= as a run's own hint types it
# (make reproduce-lecun1989 resume=auto).
OVERRIDES = $(ARGS) $(if $(resume),resume=$(resume))

SEEDS ?= 5
SEED_LIST = $(shell seq -s, 1 $(SEEDS))
SERVER_DIR ?= $(abspath mlflow-server)

.DEFAULT_GOAL := help
.PHONY: help install test test-all lint bench bench-ab bench-results bench-gpu reproduce-lecun1989 reproduce-waibel1989 reproduce-krizhevsky2012 \
	reproduce-all clean-cache sweep-lecun1989 sweep-waibel1989 sweep-krizhevsky2012 claims-krizhevsky2012 report mlflow-ui mlflow-server clean

help: ## this list
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## / {printf "  make %-26s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv and install the project (again only when pyproject.toml changes)

# Re-runs only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Daily work: everything but the end-to-end runs (marked slow). CI runs test-all.
test: install ## the fast tests
	$(PY) -m pytest -q -m "not slow"

test-all: install ## every test, the end-to-end runs included (what CI runs)
	$(PY) -m pytest -q

lint: install ## ruff check on sources, tests and benchmarks
	$(PY) -m ruff check src tests benchmarks

bench: install ## whole runs and steps against PyTorch's own; ends with bench-results
	$(PY) benchmarks/layers.py
	$(PY) benchmarks/online.py --full-run
	$(PY) benchmarks/alexnet.py --size 128 --batch 64
	$(PY) benchmarks/alexnet.py --size 227 --batch 32 --repeats 5
	$(PY) benchmarks/alexnet.py --size 227 --batch 128 --repeats 3
	$(PY) benchmarks/gpu.py
	$(PY) benchmarks/gpu_kernels.py --parts
	$(PY) benchmarks/results_md.py

# Speed code stays only if it pays in a whole run: today's large convolution against another
# revision's, whole AlexNet training steps in one process: make bench-ab AGAINST=67886fa
AGAINST ?= HEAD
bench-ab: install ## whole AlexNet steps, today's large convolution against AGAINST=<git revision>'s, one run
	$(PY) benchmarks/conv_ab.py --against $(AGAINST)
	$(PY) benchmarks/results_md.py

# benchmarks/RESULTS.md from benchmarks/results/*.json (generated, never edited by hand).
bench-results: install ## benchmarks/RESULTS.md from benchmarks/results/*.json
	$(PY) benchmarks/results_md.py

# AlexNet on one CUDA GPU (a few minutes): precisions, layers, input pipeline, one epoch.
bench-gpu: install ## AlexNet on one CUDA GPU: precisions, kernels, input pipeline
	$(PY) benchmarks/gpu.py
	$(PY) benchmarks/gpu_kernels.py --parts

# LeCun et al. 1989, faithful settings (23 passes, on-line SGD); prints paper versus run.
# Extra Hydra overrides: make reproduce-lecun1989 ARGS="optim=sdlm seed=3"
reproduce-lecun1989: install ## the faithful LeCun et al. 1989 run (ARGS="optim=sdlm seed=3")
	$(PY) -m convrepro.train experiment=lecun1989 $(OVERRIDES)

# Waibel et al. 1989, faithful TDNN on the fraser /b/ /d/ /g/ tokens (38 s measured on 2 idle cores); shift curve included.
reproduce-waibel1989: install ## the faithful Waibel et al. 1989 TDNN with its shift curve
	$(PY) -m convrepro.train experiment=waibel1989 $(OVERRIDES)

# Krizhevsky et al. 2012: with a GPU, the paper's recipe on Imagenette at full size; on a
# CPU, the one-hour budget variant (experiment=krizhevsky2012_cpu; deviations in its config).
reproduce-krizhevsky2012: install ## AlexNet: the paper's recipe on a GPU, the CPU-budget variant without one
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
		echo "GPU found: the paper's recipe on Imagenette (experiment=krizhevsky2012_imagenette)"; \
		$(VENV)/bin/convrepro-data prepare imagenette --size 256 && \
		$(PY) -m convrepro.train experiment=krizhevsky2012_imagenette trainer=gpu $(OVERRIDES); \
	else \
		echo "No GPU: the CPU-budget variant (experiment=krizhevsky2012_cpu, 38-86 min measured on 2 cores)"; \
		$(VENV)/bin/convrepro-data prepare imagenette --size 146 && \
		$(PY) -m convrepro.train experiment=krizhevsky2012_cpu $(OVERRIDES); \
	fi

reproduce-all: reproduce-waibel1989 reproduce-lecun1989 reproduce-krizhevsky2012 report ## the three reproductions, then the report

# Seed sweeps: one MLflow parent run with the jobs as children (mean, sd, n on the parent).
# make sweep-lecun1989 SEEDS=5 ARGS="optim=sdlm"
sweep-lecun1989: install ## SEEDS=5 seeds as one MLflow parent run (ARGS= overrides)
	$(PY) -m convrepro.train -m experiment=lecun1989 seed=$(SEED_LIST) $(OVERRIDES)

sweep-waibel1989: install ## SEEDS=5 seeds as one MLflow parent run (ARGS= overrides)
	$(PY) -m convrepro.train -m experiment=waibel1989 seed=$(SEED_LIST) $(OVERRIDES)

sweep-krizhevsky2012: install ## SEEDS=5 seeds of the CPU variant as one parent run
	$(VENV)/bin/convrepro-data prepare imagenette --size 146
	$(PY) -m convrepro.train -m experiment=krizhevsky2012_cpu seed=$(SEED_LIST) $(OVERRIDES)

# AlexNet's claims: the recipe and each ablation of experiments/krizhevsky2012/claims.yaml,
# SEEDS seeds each (3 unless given), one MLflow parent per variant; meant for a GPU.
CLAIM_SEEDS = $(if $(filter command line environment,$(origin SEEDS)),$(SEED_LIST),1,2,3)
CLAIMS_JSON ?= experiments/krizhevsky2012/claims.json
STORE_SIZE ?= 256
claims-krizhevsky2012: install ## AlexNet's ablations as a table, 3 seeds each (SEEDS=, ARGS=, CLAIMS_JSON=)
	$(VENV)/bin/convrepro-data prepare imagenette --size $(STORE_SIZE)
	$(PY) -m convrepro.claims --seeds $(CLAIM_SEEDS) --json $(CLAIMS_JSON) $(OVERRIDES)

# Paper versus reproduction for every paper: reports/index.html and reports/results.md.
report: install ## reports/index.html and reports/results.md: every paper beside its runs
	$(VENV)/bin/convrepro-report --out reports

# The MLflow dashboard on the project's embedded store (http://127.0.0.1:$(PORT)).
mlflow-ui: install ## the MLflow dashboard on the project's store (PORT=5000)
	@$(VENV)/bin/convrepro-runs links --uri $(MLFLOW_DB) --base http://127.0.0.1:$(PORT) || true
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_DB) --host 127.0.0.1 --port $(PORT)

# A standalone tracking server for a team (SQLite backend, artifacts and users in $(SERVER_DIR));
# HOST=0.0.0.0 serves other machines and needs MLFLOW_AUTH_ADMIN_PASSWORD (MLflow's basic
# authentication) or ARGS=--no-auth; point runs at it with MLFLOW_TRACKING_URI=http://<host>:$(PORT).
mlflow-server: install ## a tracking server for a team (HOST=, PORT=, SERVER_DIR=)
	$(PY) -m convrepro.server --folder $(SERVER_DIR) --port $(PORT) --host $${HOST:-127.0.0.1} $(ARGS)

clean: ## remove build and tool cache folders
	rm -rf build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .hypothesis

# Digests of verified data files, image statistics, decode scans: all recomputed on next use.
clean-cache: ## remove ~/.cache/convrepro (data digests, image statistics)
	rm -rf $${CONVREPRO_CACHE_DIR:-$$HOME/.cache/convrepro}
