# The two commands that matter: `make train` (the main job) and `make test` (the whole suite).
# PY picks the Python (3.10 to 3.13, see README): `make setup PY=python3.12` builds .venv-python3.12/,
# and every target takes the same PY. A pyenv version that is installed but not selected is found
# by name (python3.12 -> $(pyenv root)/versions/3.12.x/bin/python3.12).
PY      ?= python3
VENV    ?= $(if $(filter python3,$(PY)),.venv,.venv-$(notdir $(PY)))
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FIND_PY  = $(PY) -c 'import sys; print(sys.executable)' 2>/dev/null || \
	ls -1 $$(pyenv root 2>/dev/null)/versions/*/bin/$(PY) 2>/dev/null | sort -V | tail -n 1
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup test test-envs lint lab train figures assignments site app check-site clean

setup: $(STAMP)

# Re-runs only when pyproject.toml changes: a second `make setup` installs nothing.
$(STAMP): pyproject.toml
	test -d $(VENV) || { py=$$($(FIND_PY)); test -n "$$py" || { echo "no $(PY) found" >&2; exit 1; }; \
		"$$py" -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0: on Python 3.11 this machine kind has the CPU wheel on disk; elsewhere PyPI's only
	# Linux torch is the CUDA build (~530 MB + ~3 GB of nvidia-* packages, ~1-2 min here), which
	# runs on the CPU too.
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet torch
	# --no-deps: safety-gymnasium pins pygame==2.1.0 (no 3.11 wheel); gymnasium-robotics pins
	# numpy<1.24, which it needs only for its own robot tasks. Their real needs are in pyproject.
	$(BIN)/pip install --quiet --no-deps "safety-gymnasium==1.0.0" "gymnasium-robotics==1.2.2"
	# sweep: Ray, for the sweep test (`make test` runs a tiny Ray grid).
	$(BIN)/pip install --quiet -e ".[dev,sweep]"
	# The CUDA torch brings triton (torch.compile's GPU compiler, never used here). Its LLVM and
	# Mesa's (loaded for MUJOCO_GL=egl) crash the process when both are loaded: a segfault at the
	# first torch optimizer on Python 3.10, where mujoco 2.3.3 opens EGL at import. Without an
	# NVIDIA GPU triton can do nothing, so there it is removed (torch works without it).
	nvidia-smi -L >/dev/null 2>&1 || $(BIN)/pip uninstall --quiet --yes triton 2>/dev/null || true
	touch $(STAMP)

# pytest-xdist: one worker per core, at most 4 (CI's 2 cores halve the suite's time); each test
# module and each notebook runs whole, in order, in one worker. XDIST=0 runs in this process.
XDIST ?= -n auto --maxprocesses 4 --dist loadscope
XDIST_ARGS := $(if $(filter 0,$(XDIST)),,$(XDIST))

# The whole suite: unit tests, then every notebook executed by nbval in smoke mode.
test: setup
	# PYTHONPATH: the notebooks' kernels import this checkout (also from a git worktree).
	DYNACPPO_SMOKE=1 PYTHONPATH="$(CURDIR)" PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env $(XDIST_ARGS)

# What depends on the Python, mujoco, numpy and torch versions: the envs, the fast path against
# stock, the vector env (its workers and their signalling), the dynamics model and the trainer.
# CI runs it on a second Python (`PY=python3.12`).
ENV_TESTS := tests/test_envs.py tests/test_fast_env.py tests/test_vector_env.py tests/test_dynamics.py \
	tests/test_train.py
test-envs: setup
	$(BIN)/python -m pytest $(ENV_TESTS) $(XDIST_ARGS)

lint: setup
	$(BIN)/ruff check .

# JupyterLab rooted at the repository (jupytext finds jupytext.toml: saves reach the .py too),
# notebooks saved without outputs (jupyter_lab_config.py), smoke mode unless FULL=1 (full mode
# trains three 1M-step runs in notebook 05: its introduction gives the time), --allow-root when
# run as root (containers).
FULL ?= 0
LAB_SMOKE := $(if $(filter 1,$(FULL)),0,1)
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: setup
	DYNACPPO_SMOKE=$(LAB_SMOKE) PYTHONPATH="$(CURDIR)" $(BIN)/jupyter lab \
		--config=jupyter_lab_config.py --ServerApp.root_dir="$(CURDIR)" $(LAB_ROOT_FLAG)

# The README's main job: CPPO on SafetyPointCircle1-v0 (cost limit 25), then its learning curve.
# An interrupted run continues from its last checkpoint when `make train` is run again, with its
# own settings; on a finished run it says so, redraws the figure and exits 0.
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

# The website (Sphinx + myst-nb, docs/conf.py): README, DESIGN.md, the guides in docs/, the six
# notebooks executed in smoke mode (cached in docs/_build/.jupyter_cache) and the API reference.
# The docs extra is installed once (its own stamp), so `make test` stays as it was.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,sweep,docs]"
	touch $(DOCS_STAMP)

site: $(DOCS_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/sphinx-build -b html -q docs docs/_build/html
	@echo "site: $(CURDIR)/docs/_build/html/index.html"

# Notebook 06's explorers as a web app (Voila: outputs only, no code), in smoke mode, served by
# app/serve.py for a class (docs/course.md, "Serving the app to a class"). The template
# app/jupyter/voila/templates/offline is Voila's lab template without its CDN links, plus a watcher
# that offers a reload when the visitor's kernel is gone. DYNACPPO_RUNS=DIR browses that log
# directory (default: runs/, else two toy runs, made once at start).
#   APP_HOST           127.0.0.1: this machine only (tracebacks shown); 0.0.0.0: the class (none)
#   APP_MAX_VISITORS   live kernels at most; the next visitor gets "the app is full" (0: no limit)
#   APP_CULL_IDLE      seconds idle before a kernel is shut down (0: never); checked every
#                      APP_CULL_INTERVAL s; APP_CULL_CONNECTED=1 culls open tabs too
#   APP_POOL           preheated kernels kept ready (0: none; 20 gets a class of 20 in within 1 s, docs/course.md)
#   APP_STARTS         pages that start their kernel at once, the others wait their turn (0: one per core)
APP_HOST ?= 127.0.0.1
APP_PORT ?= 8866
APP_MAX_VISITORS ?= 20
APP_CULL_IDLE ?= 600
APP_CULL_INTERVAL ?= 60
APP_CULL_CONNECTED ?= 0
APP_POOL ?= 0
APP_STARTS ?= 0
app: $(DOCS_STAMP)
	DYNACPPO_SMOKE=1 PYTHONPATH="$(CURDIR)" JUPYTER_PATH="$(CURDIR)/app/jupyter" PYTHONMALLOC=malloc \
		$(BIN)/python app/serve.py --host=$(APP_HOST) --port=$(APP_PORT) \
		--max-visitors=$(APP_MAX_VISITORS) --cull-idle=$(APP_CULL_IDLE) \
		--cull-interval=$(APP_CULL_INTERVAL) --cull-connected=$(APP_CULL_CONNECTED) --pool=$(APP_POOL) \
		--starts=$(APP_STARTS)

# Every page of the built site and the app in headless Chromium (tests/test_site.py): missing
# resources, unrendered formulas, broken internal links, explorers that do not redraw, a dead
# kernel's reload offer. Then the app served to a class (tests/test_app_server.py): 3 visitors at
# once, the "full" page, memory back after the cull, no traceback nor code run for a remote visitor.
check-site: site
	PYTHONPATH="$(CURDIR)" $(BIN)/python -m pytest tests/test_site.py tests/test_app_server.py \
		-p no:cacheprovider -v -s

clean:
	rm -rf $(VENV) runs course .pytest_cache docs/_build docs/chapters docs/quickstart.md
