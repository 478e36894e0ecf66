# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Training runs: CPPO, PPO-Lagrangian and Dyna-CPPO side by side
#
# Notebooks 1-4 took one iteration apart. `dynacppo_lite.train(Config(...))` puts it
# back together, in the steps of `Trainer.iteration` (DESIGN.md, "One iteration"): schedule,
# collect, cost, decide, dual GAE, [dyna] (fit the model, imagine branches), policy (E-step and
# M-step, or PPO's clipped loss), [rounds], critics, log. Here we run the three algorithms of
# the package with **the same budget and the same seed** and compare them the way papers do:
# return and cost against environment steps, with the cost limit drawn.
#
# **After this notebook you will be able to**
#
# 1. configure and launch complete runs of `cppo`, `ppo-lag` and `dyna-cppo` (on the GPU when
#    there is one: `device="auto"`), and find everything a run writes in its run directory;
# 2. read learning curves against the cost limit with `plots.plot_learning_curves`;
# 3. look under the hood of each run: CPPO's recovery mode, PPO-Lag's multiplier, Dyna-CPPO's
#    share of imagined samples;
# 4. explain, from `bench recovery`'s picture, why on a Goal task the constraint has to act
#    before the hazard-crossing route is learned rather than repair it afterwards;
# 5. render a trained policy to a GIF on a machine without a display.
#
# **Smoke mode** (CI) trains each algorithm for a few thousand steps on the toy task: the curves
# are short but every line of the notebook runs. **Full mode** trains on SafetyPointGoal1-v0
# for 1M steps per run with the settings of `python -m dynacppo_lite bench learning` (one env,
# 4,000-step iterations): on a 2-core CPU about 6-7 min for cppo and for ppo-lag and 15-22 min
# for dyna-cppo, then 8-20 min for section 5.4's recovery experiment (the ranges: a quiet machine
# and one running other training beside it), so under an hour in all (a GPU adds little for
# these small networks).
# Finished runs are reused and interrupted ones resumed when the notebook is run again, and a
# `bench learning` run directory with the same runs (seed 0) can be copied in to reuse it.
#
# **On a GPU machine** (Python 3.12, numpy 2, a CUDA torch; the README's "GPU training"), set
# `NUM_ENVS` below to the number of CPU cores (e.g. 16): the envs then step in that many worker
# processes while the networks and the dynamics ensemble sit on the GPU (`DEVICE = "auto"`
# picks CUDA). From a shell, in the repository:
#
# ```bash
# make setup PY=python3.12                 # keeps triton where nvidia-smi finds a GPU
# DYNACPPO_SMOKE=0 .venv-python3.12/bin/jupyter nbconvert --to notebook --execute \
#     notebooks/05_training_runs.ipynb --output /tmp/05_full.ipynb --ExecutePreprocessor.timeout=-1
# ```
#
# or `make lab FULL=1` and run it by hand. Those runs are named `..._n16`, apart from the 1-env
# runs `bench learning` makes.
#
# ## Headless rendering: EGL
#
# MuJoCo renders offscreen through one of three OpenGL back-ends chosen by `MUJOCO_GL`: `glfw`
# (needs a display), `osmesa` (software, but the OSMesa library is **not installed** on these
# machines, so it fails) and `egl`. We use **EGL** with `PYOPENGL_PLATFORM=egl`: Debian's
# `libegl1`, `libegl-mesa0` and `libgl1-mesa-dri` provide Mesa's software EGL on a CPU-only
# machine, and on a GPU machine the driver's EGL renders on the GPU. Both variables must be set
# **before `mujoco` is first imported**, which is why they come first.

# %%
# ruff: noqa: E402
import os

for var in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):  # before anything imports mujoco
    os.environ.setdefault(var, "egl")

# %% tags=["parameters"]
SMOKE = os.environ.get("DYNACPPO_SMOKE", "0") == "1"  # CI runs every notebook with DYNACPPO_SMOKE=1
SEED = 0
DEVICE = "auto"  # CUDA when present, else CPU
NUM_ENVS = 1  # full mode: env worker processes (16 on a 16-core GPU machine)
RENDER_ENV = "SafetyPointGoal1-v0"  # what the GIF shows (the toy task has no renderer)
GIF_STEPS = 8 if SMOKE else 400  # smoke: a few frames of an untrained policy, to test the pipeline

# %%
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display

from dynacppo_lite.bench.recovery import COLUMNS, REFERENCE_POLICY, recovery_suite
from dynacppo_lite.exercises import check_run_summary
from dynacppo_lite.figures import (
    fig_dyna_diagnostics,
    figure_path,
    project_root,
    render_policy_gif,
    training_configs,
)
from dynacppo_lite.plots import (
    plot_diagnostics,
    plot_learning_curves,
    plot_recovery,
    plot_runs,
    run_cost_limit,
)
from dynacppo_lite.runlog import read_progress
from dynacppo_lite.train import resolve_device
from dynacppo_lite.widgets import TrainingMonitor

scratch = Path(tempfile.gettempdir()) / "dynacppo_lite_nb05"  # smoke runs: rewritten each time
shutil.rmtree(scratch, ignore_errors=True)
LOG_DIR = scratch if SMOKE else project_root() / "runs" / "notebook05"
print(f"device: {resolve_device(DEVICE)}; runs go to {LOG_DIR}")

# %% [markdown]
# ## 5.1 Three configurations, one budget
#
# A `Config` is one typed dataclass with a docstring per field; the run directory stores it as
# `config.json`. `figures.training_configs` builds this notebook's three (the same ones
# `make figures` looks for): they differ **only in `algo`**. The table shows the fields that
# matter here; `Config.kl_budget` is the E-step's $\delta' = \mathrm{KL} / (2\ln 2 - 1)$, with
# KL = `estep_kl`.

# %%
configs = training_configs(SMOKE, LOG_DIR, seed=SEED, device=DEVICE, num_envs=NUM_ENVS)
fields = ["algo", "env_id", "total_steps", "steps_per_iter", "num_envs", "seed", "device",
          "pi_lr", "estep_kl", "lower_clip", "v_lower_bound", "model_start_iter", "model_horizon",
          "imagined_frac"]
display(pd.DataFrame([{f: getattr(c, f) for f in fields} for c in configs]).set_index("algo").T)

# %% [markdown]
# ## 5.2 Train, and watch it learn
#
# `widgets.TrainingMonitor` trains the three configurations one after another and redraws,
# after every iteration, what the rest of this notebook reads at the end: return and cost with
# the limit, the cost estimate with its band, the controller's output (CPPO's $u$, PPO-Lag's
# $\lambda$), the realised KL and the M-step's reach. Each run is laid over the ones before it.
#
# In full mode it trains in a background thread: the cell returns at once, the kernel stays
# free, and the **stop** button ends the current run after its iteration with a checkpoint.
# Running the cell again reuses finished runs and continues a stopped one from its checkpoint
# (the same `progress.csv`, nothing lost or repeated). The cells below wait for the runs
# (`monitor.wait()`; while a cell waits, interrupting the kernel is the stop button). In smoke
# mode the cell itself trains, so its picture is complete when it ends (about 15 s).
#
# Every run writes a run directory: `progress.csv` (one row per iteration), `log.txt`,
# `config.json`, `checkpoint.pt` (every `checkpoint_every` iterations, written atomically) and
# `policy_final.pt`. Without the monitor, `train(cfg)` trains a config and returns that directory,
# and `train(resume=run_dir)` continues an interrupted run on its own settings
# (`changes={"total_steps": ...}` asks for another budget).

# %%
monitor = TrainingMonitor()
display(monitor)
runs = monitor.train_all(configs, background=not SMOKE)

# %%
monitor.wait()  # full mode: until the three runs end (interrupt the kernel to stop them cleanly)
for algo, run in runs.items():
    print(f"{algo:>9}: {len(read_progress(run))} iterations in {run}")

# %% [markdown]
# ## 5.3 Learning curves against the cost limit
#
# `plots.plot_learning_curves` draws the mean episode return and cost of the episodes that ended
# in each iteration, smoothed, with the task's cost limit dashed (25 per 1000-step episode for
# Safety-Gymnasium; 10 per 50-step episode for the toy task). A safe-RL method should end with
# its cost *under* the dashed line and, among those that do, the highest return.

# %%
fig = plot_learning_curves(list(runs.values()), smoothing=1 if SMOKE else 5, labels=list(runs))
if not SMOKE:
    fig.savefig(figure_path("05_learning_curves.png"), dpi=120, bbox_inches="tight")

# %% [markdown]
# ## 5.4 Why holding a constraint is hard on a small batch
#
# When a run's cost is over the limit, CPPO's controller turns the update toward pure cost
# descent. Can that repair a policy that already reaches its goals by driving through hazards,
# or is one 4,000-step batch's cost signal too weak? `bench recovery`
# (`dynacppo_lite/bench/recovery.py`) asks it directly. From a saved policy it runs the
# trainer's own iteration (`Trainer.iteration`) with the controller held at $u = -1$
# (`PURE_RECOVERY`: every policy update is pure cost descent along $-A_c$; the critics learn as
# usual), each iteration on its own batch, and after each one it measures the policy on fresh
# episodes (sampled actions, the observation normaliser frozen, env seeds apart from
# training's). A *candidate* is a label and `Config` overrides: a larger batch, another cost GAE
# $\lambda$.
#
# `plots.plot_recovery` draws the result in two panels:
#
# * **left**: the mean cost of the fresh episodes after each iteration $k$ ($k = 0$ is the saved
#   policy, measured once on the same episodes for every candidate), with a band of one standard
#   error over the episodes; dotted, a 30% cut of the starting cost;
# * **right**: one point per iteration. $x$ is the cut that iteration's M-step claimed on its
#   own batch by its first-order estimate, per episode (`-mstep_cost_change` times the episode
#   length: in-sample); $y$ is the cut measured on fresh episodes since the start (the cost at
#   $k = 0$ minus the cost at $k$). $y$ adds up every update so far, so claims that came true put
#   the points on or above the dotted line $y = x$; points under it, or under zero, are promises
#   the fresh episodes did not keep.
#
# **What was measured** (seed 0, docs/results.md, "Pure cost descent from a goal-reaching policy";
# tables in `figures/benchmarks/recovery/`). The start is the shipped goal-reaching policy
# `REFERENCE_POLICY`: cppo without the constraint, 3e5 steps on SafetyPointGoal1-v0, fresh cost
# about 48 at a return of about 24. The commands:
#
# ```bash
# python -m dynacppo_lite bench recovery --iters 10 --episodes 16 \
#     --candidate 'PPO on cost (ppo-lag, lambda 100)=algo=ppo-lag,lagrangian_init=100,lagrangian_lr=0' \
#     --candidate 'E-step KL 0.02=estep_kl=0.02' --candidate '4k batch (today)='
# python -m dynacppo_lite bench recovery --iters 10 --episodes 10 --candidate '4k batch (today)=' \
#     --candidate '16k batch=steps_per_iter=16000' --candidate 'cost lambda 0.8=cost_lam=0.8'
# ```
#
# * every recovery update claims an in-sample first-order cut of **30-110 per episode** on its
#   4,000-step batch;
# * yet on fresh episodes the goal-reaching policy's cost **does not fall within 10
#   iterations**, whatever the batch or the cost advantage: over the last three iterations it is
#   60.5 ± 15.9 and 70.8 ± 12.5 with the 4k batch (two runs), 50.2 ± 5.3 with a 16k batch (4x the
#   samples), 51.1 ± 4.0 with the cost GAE $\lambda$ at 0.8, 58.7 ± 7.8 with the E-step's KL at
#   0.02 and 50.2 ± 5.3 for PPO on the cost alone: the right panel's points sit far under $y = x$;
# * neither more samples for the cost direction nor bigger steps change that: the cost
#   advantages pooled over the last 4 or 8 batches, reweighted to the current policy
#   (`Config.cost_pool`), give 46.8 and 46.0 (a 3-4% cut); 4x the step (`target_kl` 0.1) claims
#   a cut of 326 per episode and delivers 56.4; with a 16k batch as well, 43.9 (8%, within one
#   standard error). docs/results.md, "More samples or bigger steps for the cost direction";
# * the same pure descent from a fresh (random) policy takes the cost from 75 to 0-5 within
#   44,000 steps (issue 26's measurement).
#
# Ten updates of about 0.025 KL each (or 0.1) do not turn a policy that drives through hazards on its way
# to the goal into one that goes around them. So on this task **the constraint has to act before
# the hazard-crossing route is learned, not repair it afterwards**: the controller's authority
# (how far toward $u = -1$ it may go) and its start matter more than a better cost direction
# (docs/results.md, "The controller's authority and start", has those runs).
#
# The cell runs the experiment with the library. In **full mode** it is the measured one: from
# `REFERENCE_POLICY`, three candidates, 10 iterations, 16 fresh episodes after each (about 20 min
# on a 2-core CPU; the printed lines follow it). In **smoke mode** it starts from this notebook's
# CPPO run on the toy task (4 iterations, 8 episodes, batches of 1,000 and 4,000 steps: seconds).
# There the cost is a matter of speed, set by the action in every state, so the same descent
# usually does cut it within a few iterations: the toy shows the picture, not the finding.

# %%
if SMOKE:  # this notebook's CPPO run; the smoke runs' learning rate
    start_run, iters, episodes = runs["cppo"], 4, 8
    candidates = [("1k batch", {"steps_per_iter": 1_000, "pi_lr": 3e-3}),
                  ("4k batch", {"steps_per_iter": 4_000, "pi_lr": 3e-3})]
else:  # the measured experiment
    start_run, iters, episodes = REFERENCE_POLICY, 10, 16
    candidates = [("4k batch (default)", {}), ("16k batch", {"steps_per_iter": 16_000}),
                  ("cost lambda 0.8", {"cost_lam": 0.8})]
task, recovery_rows = recovery_suite(start_run, candidates, iters, episodes, seed=SEED,
                                     log_dir=scratch / "recovery")
display(pd.DataFrame(recovery_rows)[COLUMNS].set_index("candidate").round(3))
axes = plot_recovery(recovery_rows, f"pure cost descent from {Path(start_run).name} ({task})")

# %% [markdown]
# **What the package chose.** If the constraint has to act early, the controller needs the
# authority to reach $u = -1$ at any violation that lasts: the PI controller's integral may fall
# to -1 (`Config.pid_integral_min`). The old floor of -0.5 let $u$ reach -1 only above twice the
# limit, and SafetyPointGoal1-v0 ended at 1.9x its limit. How fast it should get there depends on
# how noisy the cost estimate is. On PointGoal1 one episode's cost is mostly luck (the window's
# standard error is 0.7-1.1 of the limit early on), and fast gains held the policy in recovery
# before it had learned to reach goals (return 5 at 1e6 steps). On HalfCheetah the estimate is
# precise (about 0.12 of the limit), and slow gains left the cost at 1.3x the limit. So the gains
# are scaled by the estimate's precision: as stated at PointGoal1's noise, up to 4x faster where
# it is precise (`pid_noise_ref`, `pid_max_speedup`). Three seeds at 1e6 steps on PointGoal1:
# return / cost 11.6 / 28.2, against 22.0 / 46.8 before; the PID-Lagrangian baseline
# (`cost_control="pid-lagrangian"` for ppo-lag) 1.0 / 17.1. The tables, and the return/cost
# plane, are in docs/results.md, "Holding the limit: the controller's defaults".

# %% [markdown]
# ## 5.5 Under the hood
#
# Every iteration's row carries the diagnostics of its update. Three tell each algorithm's story:
#
# * **CPPO**: every cost decision steers by `cost_est`, the mean cost of the last 20 finished
#   episodes (`cost_est_se` is its standard error: one 1000-step Goal episode's cost has a
#   standard deviation of 30-80, so the 4 episodes of one iteration would be far too noisy).
#   A PI controller turns the violation into `margin_u`, the E-step's cost margin as a fraction
#   of the largest cost change the trust region allows: 1 = ignore cost, 0 = no predicted cost
#   increase, -1 = pure cost descent (`mode` is then `recovery`). With $v \ge b$ and a sparse
#   cost advantage (a few samples that enter a hazard) the hazard samples sit at the bound, so
#   the cut the E-step can reach is a fraction of that sphere's: a margin beyond it is met by
#   recovery (pure cost descent), which on the Goal task happens well before u = -1. The
#   paper's $d'$ is logged as
#   `cost_margin`; the paper's bang-bang switch is `Config(cost_control="bang-bang")`.
#   `kl` is the KL the policy update realised and `reach` the slope of $r - 1$ on $v - 1$. The
#   default M-step (`Config.mstep = "linear"`, notebook 4, section 4.4) takes $v - 1$ as a
#   direction and pushes along it until `target_kl`, so `kl` sits at the early stop while
#   `reach` stays at 0.1-0.2: the policy follows the E-step's direction, not each sample's target.
#   `mstep_cost_change` beside `estep_cost_change` is the first-order cost change the update
#   bought against the one the E-step asked for;
# * **PPO-Lag**: `lagrange` is the multiplier $\lambda$ that weighs cost against reward;
# * **Dyna-CPPO**: `imagined_frac` in `progress.csv` is the share of imagined samples in the
#   batch, and `loss_dyn_holdout` the model's held-out error. The *config's* `imagined_frac = 0.5`
#   asks for imagined samples as a share of the *real* ones (half as many), so once the model
#   starts (`model_start_iter`) the logged share levels off at 0.5 / (1 + 0.5) = 0.33. What the
#   model is worth: `dyn_err_{obs,rew,cost}_{1,k}` are its one-step and `model_horizon`-step
#   errors on each iteration's real rollout *before* it is fitted on it, `real_cost_rate` sits
#   beside `imagined_cost_rate`, and `imag_adv_{r,c}_{corr,scale}` compare imagined with real
#   advantages of the same (s, a) (`bench learning` draws them; `imagined_frac = 0` is the
#   control run: cppo's numbers, the model still fitted and measured).
#
# CPPO has no multiplier: its "last lambda" is "n/a".

# %%
rows = []
for algo, run in runs.items():
    df = read_progress(run)
    rows.append({"algo": algo, "iterations": len(df), "steps": int(df["step"].iloc[-1]),
                 "wall time (s)": round(float(df["time_s"].iloc[-1]), 1),
                 "steps/s": round(float(df["sps"].mean())),
                 "recovery share": round(float((df["mode"] == "recovery").mean()), 2),
                 "last lambda": (f"{df['lagrange'].iloc[-1]:.3g}" if algo == "ppo-lag" else "n/a"),
                 "imagined share": round(float(df["imagined_frac"].fillna(0).mean()), 3),
                 "cost limit": run_cost_limit(run)})
display(pd.DataFrame(rows).set_index("algo"))

# %%
plot_diagnostics({algo: [run] for algo, run in runs.items()}, cost_limit=run_cost_limit(runs["cppo"]),
                 target_kl=configs[0].target_kl)

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
plot_runs([runs["cppo"]], metrics=["margin_u"], cost_limit=None, axes=[axes[0]], labels=["cppo"])
plot_runs([runs["ppo-lag"]], metrics=["lagrange"], cost_limit=None, axes=[axes[1]], labels=["ppo-lag"])
plot_runs([runs["dyna-cppo"]], metrics=["imagined_frac"], cost_limit=None, axes=[axes[2]],
          labels=["dyna-cppo"])
fig.tight_layout()

# %% [markdown]
# ### What the model contributes
#
# `figures.fig_dyna_diagnostics` draws `plots.plot_dyna_diagnostics` for the Dyna-CPPO run
# (the same row `bench learning` adds under its curves). From the left: the model's state error
# on each iteration's fresh rollout *before* it is fitted on it, one step (solid) and
# `model_horizon` steps open loop (dashed), in units of the typical one-step change (1 = no
# better than predicting no change); the reward and cost errors of the summed h steps; the
# imagined (pessimistic) cost rate against the real one; and how imagined advantages of real
# $(s, a)$ compare with the real ones: their correlation and std ratio, both 1 for a model whose
# advantages could stand in for the real ones. On SafetyPointGoal1 the state error stays near 1
# (the lidar is not predicted, notebook 1) and the correlation near 0, while the imagined
# advantages are louder than the real ones: in the shared E-step they are noise, which is why
# Dyna-CPPO does not beat CPPO here (README, Results).

# %%
fig = fig_dyna_diagnostics(runs)
if not SMOKE:
    fig.savefig(figure_path("05_dyna_diagnostics.png"), dpi=120, bbox_inches="tight")

# %% [markdown]
# ## 5.6 The policy, rendered headless
#
# `figures.render_policy_gif` rebuilds the policy and observation normaliser from a run's
# `policy_final.pt`, steps a `make_env(..., render_mode="rgb_array")` env with the mean action,
# collects `env.call("render")` frames from the overhead `fixedfar` camera and writes a GIF with
# imageio. In full mode it renders the trained CPPO policy. In smoke mode the policies were
# trained on the toy task, which has no renderer, so it renders a few frames of an *untrained*
# policy on SafetyPointGoal1 instead: enough to check that headless rendering works here
# (a couple of seconds).

# %%
print(f"rendering {GIF_STEPS} frames of {RENDER_ENV if SMOKE else configs[0].env_id} headless...",
      flush=True)
t0 = time.perf_counter()
if SMOKE:
    gif = render_policy_gif(scratch / "smoke.gif", None, env_id=RENDER_ENV,
                            steps=GIF_STEPS, size=128)
else:
    gif = render_policy_gif(figure_path("05_policy.gif"), runs["cppo"] / "policy_final.pt",
                            env_id=configs[0].env_id, steps=GIF_STEPS)
print(f"{gif} ({gif.stat().st_size / 1e3:.0f} kB) in {time.perf_counter() - t0:.1f} s")
display(Image(filename=str(gif)))

# %% [markdown]
# ## Exercise: summarise a run
#
# Tables in papers (and this package's benchmarks and README) report a run's **final score**:
# the mean return and cost over the **last 10 % of its environment steps**. Write
# `summarise(step, ep_return, ep_cost, cost_limit)` that takes a run's per-iteration columns and
# returns `(final_return, final_cost, satisfied)`: means over the rows with
# `step > 0.9 * step[-1]`, with `satisfied` true when the final cost is at most the limit.
# `check_run_summary` tests it on made-up runs (including one whose cost sits exactly on the
# limit). Then we apply it to our runs.
#
# The next cell holds the reference solution between nbgrader's solution markers; the students'
# copy (`make assignments`) has a stub there that raises `NotImplementedError`.

# %% nbgrader={"grade": false, "grade_id": "run_summary_solution", "locked": false, "schema_version": 3, "solution": true, "task": false}
def summarise(step, ep_return, ep_cost, cost_limit):
    ### BEGIN SOLUTION
    keep = step > 0.9 * step[-1]
    final_return, final_cost = float(ep_return[keep].mean()), float(ep_cost[keep].mean())
    return final_return, final_cost, final_cost <= cost_limit
    ### END SOLUTION


# %%
result = check_run_summary(summarise)  # prints the verdict; a wrong answer raises with its hint

# %% nbgrader={"grade": true, "grade_id": "run_summary_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Autograder test: hidden in the students' copy, restored when nbgrader grades it.
### BEGIN HIDDEN TESTS
check_run_summary(summarise)
### END HIDDEN TESTS

# %%
for algo, run in runs.items():
    df = read_progress(run)
    ret, cost, ok = summarise(df["step"].to_numpy(), df["ep_return"].to_numpy(), df["ep_cost"].to_numpy(),
                              run_cost_limit(run))
    print(f"{algo:>9}: return {ret:7.2f}, cost {cost:6.2f} -> {'meets' if ok else 'violates'} "
          f"the limit {run_cost_limit(run):g}")
