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
# # 2. Dual advantages: one GAE for reward, one for cost
#
# CPPO needs two numbers per sample: how much better than usual an action was for the
# **reward** ($A$) and how much more it **cost** ($A_c$). Both come from generalised advantage
# estimation (GAE) with their own critic, $V_r$ and $V_c$, and their own $\gamma, \lambda$.
#
# **After this notebook you will be able to**
#
# 1. collect a real rollout with `dynacppo_lite.rollout.Collector` and an
#    `nets.ActorCritic`, and name every array it returns;
# 2. compute both advantages with `dynacppo_lite.gae.dual_gae`;
# 3. explain, with a picture, why a **truncated** episode (a time limit) must bootstrap from
#    $V(s_T)$ while a **terminated** one must not, and what goes wrong when truncation is treated
#    as termination (the bug of the original Dyna-CPPO code);
# 4. read the reward-vs-cost advantage scatter that the E-step (notebook 3) works on.
#
# For one stream (rewards with $V_r$ or costs with $V_c$), with $d_t$ = terminated or truncated:
#
# $$\delta_t = r_t + \gamma\,(1 - \text{terminated}_t)\,V(s_{t+1}) - V(s_t), \qquad
#   A_t = \delta_t + \gamma\lambda\,(1 - d_t)\,A_{t+1}.$$
#
# $V(s_{t+1})$ is the value of the *true* next state: at an episode's end, of its final
# observation, not of the first observation of the next episode.

# %% tags=["parameters"]
# ruff: noqa: E402
import os

SMOKE = os.environ.get("DYNACPPO_SMOKE", "0") == "1"  # CI runs every notebook with DYNACPPO_SMOKE=1
SEED = 0
ENV_ID = "ToySpeedLimit-v0" if SMOKE else "SafetyPointGoal1-v0"
PRETRAIN_STEPS = 5_000 if SMOKE else 100_000  # a short CPPO run, so that the critics mean something
NUM_ENVS = 1 if SMOKE else 2
ROLLOUT_STEPS = 200 if SMOKE else 1_500  # per env

# %%
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from dynacppo_lite.config import Config
from dynacppo_lite.evaluation import load_trained
from dynacppo_lite.exercises import check_gae
from dynacppo_lite.figures import figure_path, project_root
from dynacppo_lite.gae import dual_gae, gae
from dynacppo_lite.plots import plot_advantage_scatter, plot_gae_series
from dynacppo_lite.rollout import Collector
from dynacppo_lite.train import train

_ = torch.manual_seed(SEED)
torch.set_num_threads(1)  # small networks run fastest on one thread (Config.torch_threads)

# %% [markdown]
# ## 2.1 Termination and truncation with a perfect critic
#
# Start with arrays we can reason about exactly. A task pays reward 1 every step, forever;
# the simulator stops an episode after 50 steps only because of a **time limit**. With
# $\gamma = 0.99$ the true value of *every* state is $1 / (1 - \gamma) = 100$: the time limit is
# not part of the task, it is a convenience of the simulator.
#
# Give GAE the perfect critic $V \equiv 100$. Every $\delta_t = 1 + 0.99 \cdot 100 - 100 = 0$, so
# every advantage must be 0: no action was better or worse than usual. That is what
# `gae.gae` (the per-stream function behind `dual_gae`) returns when the time limit is passed as
# `truncated`. Pass it as `terminated` instead and the last step loses its future
# ($\delta_{49} = 1 - 100$): a huge negative advantage that GAE spreads backwards over the
# steps before the limit. The policy would learn that the steps before a time-out are bad
# actions, though nothing was wrong with them.
#
# The second panel is a task that *really* ends after 50 steps (say, the robot falls). Its true
# values shrink towards the end, $V_t = (1 - \gamma^{50 - t}) / (1 - \gamma)$, and with that
# critic and the step flagged `terminated`, the advantages are 0 again.

# %%
T, limit, gamma, lam = 80, 49, 0.99, 0.97
rewards = np.ones(T)
flag = np.zeros(T, dtype=bool)
flag[limit] = True  # the episode ends after step 49; steps 50.. are the next episode
no_flag = np.zeros(T, dtype=bool)

v_forever = np.full(T, 1 / (1 - gamma))  # perfect critic of the never-ending task
adv_truncated = gae(rewards, v_forever, v_forever, no_flag, flag, gamma=gamma, lam=lam)
adv_as_terminal = gae(rewards, v_forever, v_forever, flag, no_flag, gamma=gamma, lam=lam)

t = np.arange(limit + 1)  # one episode that really ends after step 49
v_ending = (1 - gamma ** (limit + 1 - t)) / (1 - gamma)  # its perfect critic
next_v_ending = np.append(v_ending[1:], 0.0)  # (ignored after the termination)
end = t == limit
never = np.zeros_like(end)
adv_terminated = gae(np.ones(limit + 1), v_ending, next_v_ending, end, never, gamma=gamma, lam=lam)

fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
plot_gae_series({"time limit passed as truncated": adv_truncated,
                 "time limit passed as terminated (bug)": adv_as_terminal},
                no_flag, flag, ax=axes[0], ylabel="advantage", title="a time limit, perfect critic")
plot_gae_series({"real end passed as terminated": adv_terminated}, end, never, ax=axes[1],
                title="a real termination, perfect critic")
fig.tight_layout()
if not SMOKE:
    fig.savefig(figure_path("02_gae_perfect_critic.png"), dpi=120, bbox_inches="tight")
print(f"largest |advantage|: truncated {np.abs(adv_truncated).max():.2e}, "
      f"as terminated {np.abs(adv_as_terminal).max():.1f}, real termination "
      f"{np.abs(adv_terminated).max():.2e}")

# %% [markdown]
# ## 2.2 A real rollout
#
# Now the real thing. To have critics worth looking at, we first run a few iterations of CPPO
# with `dynacppo_lite.train` (notebook 5 is about training; here it only gives us a
# checkpoint), then rebuild the agent from the checkpoint and collect a fresh rollout with the
# `Collector`, the same object the trainer uses. `Collector.collect(T)` steps every env `T`
# times with **one batched inference per step** and returns a `Rollout` whose tensors are
# `(T, num_envs)`:
#
# | field | meaning |
# |---|---|
# | `rew`, `cost` | raw reward and cost of each step |
# | `terminated`, `truncated` | how the episode ended at that step, if it did |
# | `values_r`, `values_c` | $V_r(s_t)$, $V_c(s_t)$ |
# | `next_values_r`, `next_values_c` | $V(s_{t+1})$ of the true next state (`final_observation`) |
# | `obs`, `act`, `logp` | normalised observation, sampled action, $\log \pi_\text{old}(a \mid s)$ |

# %%
scratch = Path(tempfile.gettempdir()) / "dynacppo_lite_nb02"  # smoke runs: rewritten each time
shutil.rmtree(scratch, ignore_errors=True)
log_dir = str(scratch) if SMOKE else str(project_root() / "runs" / "notebook02")
cfg = Config(algo="cppo", env_id=ENV_ID, seed=SEED, total_steps=PRETRAIN_STEPS, num_envs=NUM_ENVS,
             steps_per_iter=1_000 if SMOKE else 4_000, pi_lr=3e-3 if SMOKE else 3e-4,
             log_dir=log_dir, run_name="pretrain", device="cpu")
run_dir = Path(log_dir) / "pretrain"
if not (run_dir / "checkpoint.pt").exists():
    run_dir = train(cfg)
# `load_trained` rebuilds the run's agent and a fresh env that uses the run's normaliser.
_, envs, agent = load_trained(run_dir, num_envs=NUM_ENVS, seed=SEED + 100)

rollout = Collector(envs, agent, torch.device("cpu"), seed=SEED + 100).collect(ROLLOUT_STEPS)
envs.close()
print({k: tuple(getattr(rollout, k).shape) for k in ("obs", "act", "rew", "cost", "terminated",
                                                    "truncated", "values_r", "next_values_r")})
print(f"episodes ended in the rollout: {len(rollout.episodes)}; terminated steps "
      f"{int(rollout.terminated.sum())}, truncated steps {int(rollout.truncated.sum())}")

# %% [markdown]
# Safety-Gymnasium's navigation tasks, and the toy task, end **only by truncation**: there is
# no "game over", only a time limit. So on these tasks the truncation bug touches every episode.
#
# ## 2.3 Dual GAE on the rollout
#
# `dual_gae` runs the recursion above twice, on rewards with $(\gamma, \lambda)$ and on costs with
# $(\gamma_c, \lambda_c)$ (paper: 0.99/0.97 and 0.99/0.95), over the same episode boundaries.
# It returns raw advantages and the returns $A + V$ the critics regress on.

# %%
adv = dual_gae(rollout.rew, rollout.cost, rollout.values_r, rollout.values_c,
               rollout.next_values_r, rollout.next_values_c, rollout.terminated,
               rollout.truncated, gamma=cfg.gamma, lam=cfg.lam, cost_gamma=cfg.cost_gamma,
               cost_lam=cfg.cost_lam)
buggy = dual_gae(rollout.rew, rollout.cost, rollout.values_r, rollout.values_c,
                 rollout.next_values_r, rollout.next_values_c,
                 rollout.terminated | rollout.truncated, torch.zeros_like(rollout.truncated),
                 gamma=cfg.gamma, lam=cfg.lam, cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
print("shapes:", tuple(adv.adv_r.shape), tuple(adv.adv_c.shape))

env0 = slice(None), 0
term0, trunc0 = rollout.terminated[env0].numpy(), rollout.truncated[env0].numpy()
fig, axes = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
plot_gae_series({"dual_gae (truncation bootstraps)": adv.adv_r[env0].numpy(),
                 "truncation treated as termination": buggy.adv_r[env0].numpy()},
                term0, trunc0, ax=axes[0], ylabel="reward advantage A",
                title=f"{ENV_ID}, env 0: the bug bends the advantages before every time limit")
plot_gae_series({"dual_gae": adv.adv_c[env0].numpy(),
                 "truncation treated as termination": buggy.adv_c[env0].numpy()},
                term0, trunc0, ax=axes[1], ylabel="cost advantage A_c")
fig.tight_layout()
if not SMOKE:
    fig.savefig(figure_path("02_gae_bootstrap.png"), dpi=120, bbox_inches="tight")
gap = (adv.adv_r - buggy.adv_r).abs()
print(f"mean |difference| of A caused by the bug: {float(gap.mean()):.3f} "
      f"(mean |A| = {float(adv.adv_r.abs().mean()):.3f})")

# %% [markdown]
# ## 2.4 Reward against cost
#
# Each dot is one sample $(A_i, A_{c,i})$. If the two were unrelated, the E-step could raise
# reward without touching cost. On constrained tasks they are usually **positively
# correlated**: the actions that earn reward (driving fast, going straight through hazards)
# are the ones that cost. That conflict is exactly what the E-step's geometry resolves
# (notebook 3): it moves probability towards samples on the right (high $A$) and, when the
# cost budget is tight, away from samples at the top (high $A_c$).

# %%
fig, ax = plt.subplots(figsize=(4.8, 4.2))
plot_advantage_scatter(adv.adv_r.numpy(), adv.adv_c.numpy(), ax=ax)
fig.tight_layout()
if not SMOKE:
    fig.savefig(figure_path("02_advantage_scatter.png"), dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Exercise: GAE with termination and truncation
#
# Write `my_gae(rewards, values, next_values, terminated, truncated, *, gamma, lam)` for **one
# env** (all arrays of shape `(T,)`) that returns the advantages `(T,)`:
#
# * `next_values[t]` is $V(s_{t+1})$ of the true next state (as the `Collector` records it);
# * the rollout's last step bootstraps from `next_values[T-1]` and has no $A_{T}$ after it;
# * terminated: no future value; truncated: keep the future value, stop the recursion.
#
# `check_gae` compares with the library on batches with terminations, truncations and both, and
# names the typical mistakes (truncation treated as termination, the recursion running across
# episodes, `values[t+1]` read across an episode end, ...).
#
# The next cell holds the reference solution between nbgrader's solution markers; the students'
# copy (`make assignments`) has a stub there that raises `NotImplementedError`.

# %% nbgrader={"grade": false, "grade_id": "gae_solution", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_gae(rewards, values, next_values, terminated, truncated, *, gamma, lam):
    ### BEGIN SOLUTION
    T = len(rewards)
    adv = np.zeros(T)
    future = 0.0
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * (0.0 if terminated[t] else next_values[t]) - values[t]
        if terminated[t] or truncated[t]:
            future = 0.0  # a new episode starts at t + 1
        future = delta + gamma * lam * future
        adv[t] = future
    return adv
    ### END SOLUTION


# %%
result = check_gae(my_gae)  # prints the verdict; a wrong answer raises with its hint

# %% nbgrader={"grade": true, "grade_id": "gae_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Autograder test: hidden in the students' copy, restored when nbgrader grades it.
### BEGIN HIDDEN TESTS
check_gae(my_gae)
### END HIDDEN TESTS

# %% [markdown]
# And on the real rollout, env 0:

# %%
mine = my_gae(rollout.rew[env0].numpy(), rollout.values_r[env0].numpy(),
              rollout.next_values_r[env0].numpy(), term0, trunc0, gamma=cfg.gamma, lam=cfg.lam)
print("largest difference to dual_gae:", float(np.abs(mine - adv.adv_r[env0].numpy()).max()))
