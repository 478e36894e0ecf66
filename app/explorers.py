# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # dynacppo_lite: the explorers
#
# Constrained PPO in three pictures you can move: the E-step in the plane of the reward and
# cost advantages, the M-step's lower clip, and training runs against their cost limit. They are
# notebook 6 of the tutorial without its code; every number is computed by the library itself.

# %%
# The app's one code cell, hidden by Voila: the explorers of dynacppo_lite.widgets.
import os
import tempfile
from pathlib import Path

import torch
from IPython.display import display

from dynacppo_lite.figures import project_root
from dynacppo_lite.widgets import EStepExplorer, MStepExplorer, RunBrowser, demo_runs, find_runs

torch.set_num_threads(1)  # small networks run fastest on one thread (Config.torch_threads)
# DYNACPPO_RUNS: the log directory to browse (default: the checkout's runs/); without runs there,
# two short toy-task runs are trained for the browser (a few seconds).
runs_dir = Path(os.environ.get("DYNACPPO_RUNS") or project_root() / "runs")
if not find_runs(runs_dir):
    runs_dir = demo_runs(Path(tempfile.gettempdir()) / "dynacppo_lite_app")

# %% [markdown]
# ## The E-step
#
# A synthetic batch of advantages $(A, A_c)$ with the chosen correlation. Move the **cost
# margin** from positive to negative: the case changes from *unconstrained* to *constrained* to
# *infeasible* (a recovery update). Raise the **KL budget**: the trust-region circle grows, and
# more of $v^*$ sits at the **lower bound**.

# %%
display(EStepExplorer())

# %% [markdown]
# ## The M-step's lower clip
#
# One sample's objective and gradient against its ratio $r$ for a target $v$, with the clip
# $b$ and without; right, a batch of ratios fitted to targets with both. A wide spread puts many
# targets below $b$: watch the forward KL of the two fits.

# %%
display(MStepExplorer())

# %% [markdown]
# ## Training runs
#
# Return and cost against environment steps, smoothed, with each run's cost limit; the third
# panel shows any logged diagnostic.

# %%
display(RunBrowser(runs_dir, smoothing=3))
