# convrepro — every user entry point.  Targets that need the environment depend on
# `install`, so a fresh clone needs no other step than the target itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export CONVREPRO_DATA_DIR ?= $(abspath ../shared/data)

MLFLOW_DB := sqlite:///$(abspath mlflow.db)
PORT ?= 5000

.PHONY: install test lint bench reproduce-lecun1989 reproduce-waibel1989 mlflow-ui clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check src tests benchmarks

bench: install
	$(PY) benchmarks/layers.py --repeats 11 --min-seconds 1
	$(PY) benchmarks/lecun_online.py

# LeCun et al. 1989, faithful settings (23 passes, on-line SGD); prints paper versus run.
# Extra Hydra overrides: make reproduce-lecun1989 ARGS="optim=sdlm seed=3"
reproduce-lecun1989: install
	$(PY) -m convrepro.train experiment=lecun1989 $(ARGS)

# Waibel et al. 1989, faithful TDNN on the fraser /b/ /d/ /g/ tokens (~1 min); shift curve included.
reproduce-waibel1989: install
	$(PY) -m convrepro.train experiment=waibel1989 $(ARGS)

# The MLflow dashboard on the project's embedded store (http://127.0.0.1:$(PORT)).
mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_DB) --host 127.0.0.1 --port $(PORT)

clean:
	rm -rf build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .hypothesis
