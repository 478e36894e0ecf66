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
# # 6. Explore: sliders on the E-step, the M-step clip and your runs
#
# The earlier notebooks fixed one setting per picture. Here the settings are sliders. Every
# explorer lives in `dynacppo_lite.widgets` and recomputes with the library itself
# (`estep.solve_estep`, `mstep.mstep_loss`, `runlog.read_progress`): nothing is re-implemented
# in a callback.
#
# **After this notebook you will be able to**
#
# 1. build an intuition for the E-step by moving the KL budget, the cost margin, the lower bound
#    and the correlation of the advantages, and watching $v^*$ and the plane respond;
# 2. see what the M-step's lower clip does to the gradient and to a fitted batch as $b$ moves;
# 3. browse the runs under a log directory: pick runs, smooth, and draw the cost limit you care
#    about;
# 4. drive any explorer from code (`explorer.set(...)`, `explorer.result`), which is also how
#    the tests check them without a browser.
#
# The widgets need a live kernel (JupyterLab: `make lab`). In a static view of this notebook
# (or under nbval, which runs without a browser), each explorer is also driven from code below
# and its results are printed.

# %% tags=["parameters"]
# ruff: noqa: E402
import os

SMOKE = os.environ.get("DYNACPPO_SMOKE", "0") == "1"  # CI runs every notebook with DYNACPPO_SMOKE=1
SEED = 0
RUNS_DIR = None  # a log directory to browse; None: notebook 5's runs, or two short toy runs

# %%
import tempfile
from pathlib import Path

import numpy as np
import torch
from IPython.display import display

from dynacppo_lite.exercises import check_smoothing
from dynacppo_lite.figures import figure_path, project_root
from dynacppo_lite.plots import smooth
from dynacppo_lite.widgets import EStepExplorer, MStepExplorer, RunBrowser, demo_runs, find_runs

torch.set_num_threads(1)  # small networks run fastest on one thread (Config.torch_threads)

# %% [markdown]
# ## 6.1 The E-step explorer
#
# A synthetic batch (`plots.synthetic_advantages`) with the chosen correlation between $A$ and
# $A_c$; the selected method's $v^*$ and the other method's, projected on the plane (left) and as
# a histogram (right). Things to try:
#
# * push the **cost margin** from positive to negative and watch the case change from
#   *unconstrained* to *constrained* to *infeasible* (the mode turns to `recovery`);
# * raise the **KL budget**: the circle grows, and with it the share of $v^*$ at the **lower
#   bound**; switch the **method** to compare the heuristic with the exact solver;
# * set the **correlation** negative: reward and cost no longer conflict.

# %%
estep = EStepExplorer(seed=SEED)
display(estep)

# %% [markdown]
# The same from code: every control is in `estep.controls`; `estep.set(...)` changes several at
# once and recomputes; `estep.result` is the `EStepResult`, `estep.plane` the geometry.

# %%
bound = estep.controls["lower_bound"].value
for margin in (0.3, 0.1, 0.0, -0.1, -0.4):
    estep.set(cost_margin=margin)
    r = estep.result
    print(f"d' = {margin:+.2f}: case {estep.plane.case:>13}, mode {r.mode:>8}, feasible {r.feasible!s:>5}, "
          f"angle {np.degrees(r.angle):7.1f} deg, at the bound {np.mean(r.v <= bound + 1e-9):.1%}")
estep.set(cost_margin=0.0)

# %% [markdown]
# ## 6.2 The M-step clip explorer
#
# Left and middle: one sample's objective and gradient as functions of its ratio $r$, for a
# target $v$ (the slider *target v*), with the clip $b$ and without. Right: a batch of free
# log-ratios fitted by Adam to targets $v = e^{z}$, $z \sim \mathcal N(0, \text{spread}^2)$, with
# `mstep_loss` with and without the clip; the summary line reports the forward KL of both. Try a
# wide spread (many targets far below $b$) and move $b$.

# %%
mstep = MStepExplorer(seed=SEED, steps=60 if SMOKE else 150)
display(mstep)

# %%
for b in (0.2, 0.6, 0.9):
    mstep.set(lower_clip=b, spread=1.0)
    res = mstep.result
    print(f"b = {b}: forward KL with clip {res['kl_clip']:.4f} vs without {res['kl_noclip']:.4f}; "
          f"smallest ratio {res['min_ratio_clip']:.3f} vs {res['min_ratio_noclip']:.3f}")

# %% [markdown]
# ## 6.3 The run browser
#
# Point it at a log directory: it lists every run (a folder with a `progress.csv`), draws return
# and cost against steps, smooths with a trailing moving average (`plots.smooth`), and draws the
# cost limit from each run's config (`auto`), a number of your choice (`custom`) or none.
# A third panel can show any logged diagnostic.
#
# It browses `RUNS_DIR` if you set it, else notebook 5's full-mode runs if they exist, else two
# short toy runs trained here (a few seconds).

# %%
if RUNS_DIR is not None:
    runs_dir = Path(RUNS_DIR)
elif not SMOKE and find_runs(project_root() / "runs" / "notebook05"):
    runs_dir = project_root() / "runs" / "notebook05"
else:
    runs_dir = demo_runs(Path(tempfile.gettempdir()) / "dynacppo_lite_nb06", seed=SEED)  # made once, reused
print(f"browsing {runs_dir}")
browser = RunBrowser(runs_dir, smoothing=3)
display(browser)

# %%
browser.set(smoothing=1, limit="custom", cost_limit=8.0, extra="kl")
print("runs:", [str(p.name) for p in browser.result["runs"]], "| limit drawn:", browser.result["cost_limit"])
for name, (ret, cost) in browser.result["final"].items():
    print(f"  {name}: final return {ret:.2f}, final cost {cost:.2f} (last 10% of steps)")
if not SMOKE:
    browser.figure.savefig(figure_path("06_run_browser.png"), dpi=120, bbox_inches="tight")
browser.set(smoothing=3, limit="auto", extra="none")

# %% [markdown]
# ## Exercise: the smoothing of the run browser
#
# Learning curves are noisy; the browser smooths them with a **trailing** moving average: point
# $t$ averages $y_{t-w+1}, \dots, y_t$, and the first points, which have fewer than $w$
# predecessors, average what exists (so the curve keeps its length and does not start at 0).
# A trailing window never looks into the future, so a smoothed curve at step $t$ uses only
# what was known at step $t$.
#
# Write `my_smooth(y, window)`. `check_smoothing` compares it with `plots.smooth` and names the
# usual slips (a centred window, zero padding at the start, a shorter output, an off-by-one
# window).
#
# The next cell holds the reference solution between nbgrader's solution markers; the students'
# copy (`make assignments`) has a stub there that raises `NotImplementedError`.

# %% nbgrader={"grade": false, "grade_id": "smoothing_solution", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_smooth(y, window):
    ### BEGIN SOLUTION
    y = np.asarray(y, dtype=float)
    out = np.empty_like(y)
    for t in range(len(y)):
        out[t] = y[max(0, t - window + 1): t + 1].mean()
    return out
    ### END SOLUTION


# %%
result = check_smoothing(my_smooth)  # prints the verdict; a wrong answer raises with its hint
y = np.cumsum(np.random.default_rng(SEED).normal(size=30))
print("largest difference to plots.smooth:", float(np.abs(my_smooth(y, 5) - smooth(y, 5)).max()))

# %% nbgrader={"grade": true, "grade_id": "smoothing_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Autograder test: hidden in the students' copy, restored when nbgrader grades it.
### BEGIN HIDDEN TESTS
check_smoothing(my_smooth)
### END HIDDEN TESTS
