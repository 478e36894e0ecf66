# The two commands that matter: `make train` (the main job) and `make test` (the whole suite).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup test lint lab train figures assignments clean

setup: $(STAMP)

# Re-runs only when pyproject.toml changes: a second `make setup` installs nothing.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU wheel on this machine kind; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet torch
	# --no-deps: safety-gymnasium pins pygame==2.1.0 (no 3.11 wheel); gymnasium-robotics pins
	# numpy<1.24, which it needs only for its own robot tasks. Their real needs are in pyproject.
	$(BIN)/pip install --quiet --no-deps "safety-gymnasium==1.0.0" "gymnasium-robotics==1.2.2"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The whole suite: unit tests, then every notebook executed by nbval in smoke mode.
test: setup
	# PYTHONPATH: the notebooks' kernels import this checkout (also from a git worktree).
	DYNACPPO_SMOKE=1 PYTHONPATH="$(CURDIR)" PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env

lint: setup
	$(BIN)/ruff check .

# JupyterLab rooted at the repository (jupytext finds jupytext.toml: saves reach the .py too),
# notebooks saved without outputs (jupyter_lab_config.py), smoke mode unless FULL=1 (full mode
# trains for hours in notebook 05), --allow-root when run as root (containers).
FULL ?= 0
LAB_SMOKE := $(if $(filter 1,$(FULL)),0,1)
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: setup
	DYNACPPO_SMOKE=$(LAB_SMOKE) PYTHONPATH="$(CURDIR)" $(BIN)/jupyter lab \
		--config=jupyter_lab_config.py --ServerApp.root_dir="$(CURDIR)" $(LAB_ROOT_FLAG)

# The README's main job: CPPO on SafetyPointCircle1-v0 (cost limit 25), then its learning curve.
# An interrupted run continues from its last checkpoint when `make train` is run again.
TRAIN_RUN := runs/readme_cppo_PointCircle1
train: setup
	$(BIN)/python -m dynacppo_lite train --preset readme --log-dir runs \
		$$(test -f $(TRAIN_RUN)/checkpoint.pt && echo --resume $(TRAIN_RUN)) \
		--figure figures/train_learning_curve.png

figures: setup
	$(BIN)/python -m dynacppo_lite figures

# Course kit: the students' copies of the notebooks (nbgrader generate_assignment) in
# course/release/; grade with `$(BIN)/python -m dynacppo_lite grade --course course ASSIGNMENT`.
assignments: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m dynacppo_lite assignments --course course

clean:
	rm -rf $(VENV) runs course .pytest_cache
