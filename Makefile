# Two commands for users: `make reports` (the main job) and `make test`; `make lab` opens JupyterLab.
# Each sets up what is missing: the virtual environment with the pinned packages, and the data.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.baeraser-installed
FASHION_DEB_DIR := /usr/share/datasets/fashion-mnist
# Extra arguments for the report runner, e.g. make reports ARGS="-p dataset mnist -p download True"
ARGS   ?=
# make reports ATTACKS=all: notebooks 01 → 04 once per registered attack (04 skipped for whole-image ones); or a list
ATTACKS ?=
# make sweep GRID=grids/cpu.yaml [SCHEDULER=tcp://host:8786] [ARGS="--workers 2 --threads 1"]
GRID      ?=
SCHEDULER ?=

.PHONY: reports sweep test setup data sync clean-reports lab gpu-check readme

reports: setup data
	$(VENV)/bin/baeraser report run $(if $(ATTACKS),--attacks $(ATTACKS)) $(ARGS)

# A grid of runs (grids/*.yaml): reports/<grid>/ with one folder per run, index.html and grid.json.
sweep: setup data
	@test -n "$(GRID)" || { echo "usage: make sweep GRID=grids/cpu.yaml [SCHEDULER=tcp://host:8786] [ARGS=...]"; exit 2; }
	$(VENV)/bin/baeraser sweep $(GRID) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(ARGS)

test: setup
	$(PY) -m pytest -q

# The GPU path in one check (benchmarks/gpu_check.py): make gpu-check [ARGS="--dry-run"]
gpu-check: setup data
	$(PY) benchmarks/gpu_check.py $(ARGS)

# JupyterLab on the notebooks, the .py sources opening as notebooks (jupytext's viewer, set as the
# default for Python files by jupyter/overrides.json, copied into the environment's lab settings).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
lab: setup data
	@mkdir -p $(LAB_SETTINGS) && cp jupyter/overrides.json $(LAB_SETTINGS)/overrides.json
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

setup: $(STAMP)

# Rebuilt when the pins change. pip takes torch/torchvision from local files where the machine has them.
$(STAMP): requirements.txt requirements-lab.txt pyproject.toml jupyter/overrides.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing pinned packages into $(VENV) (log: $(VENV)/pip.log)"
	@$(PY) -m pip install -r requirements.txt -r requirements-lab.txt > $(VENV)/pip.log 2>&1 || { tail -n 30 $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install --no-deps --no-build-isolation -e . >> $(VENV)/pip.log 2>&1 || { tail -n 30 $(VENV)/pip.log; exit 1; }
	@mkdir -p $(LAB_SETTINGS) && cp jupyter/overrides.json $(LAB_SETTINGS)/overrides.json
	@touch $@

# Fashion-MNIST (the default dataset) from Debian's package when apt is there; otherwise the
# notebooks fall back to a data root or a torchvision download (parameter `download`).
data:
	@if [ -d $(FASHION_DEB_DIR) ]; then echo "data: Fashion-MNIST found in $(FASHION_DEB_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "data: installing Debian's dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
	   echo "data: apt could not install dataset-fashion-mnist; the notebooks will use data/ or download"; \
	else echo "data: no apt (or not root); the notebooks will use data/ or a torchvision download"; fi

# Rewrite the README's generated tables from the committed JSON (after reports or a sweep row land).
readme: setup
	$(VENV)/bin/baeraser report readme

# Re-pair the notebooks after editing their .py sources.
sync: setup
	$(VENV)/bin/jupytext --sync notebooks/*.py

clean-reports:
	rm -rf reports/*.html reports/*.json reports/.executed
