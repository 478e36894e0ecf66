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
# # 4. The M-step: fitting the policy to v*, and why the lower clip
#
# The E-step (notebook 3) produced a target ratio $v_i$ for every sample. The **M-step** moves
# the policy $\pi_\theta$ so that its ratio $r_i = \pi_\theta(a_i \mid s_i) / \pi_\text{old}(a_i \mid s_i)$
# tracks $v_i$, by minimising $\mathbb E[(v - r)^2]$ over a few epochs of minibatches, like PPO.
# CPPO (section 3.4) writes it as a PPO-style surrogate with $D = (v - r)$ treated as a
# stop-gradient "advantage" and a **lower clip** $b$ on the ratio:
#
# $$\mathcal L(\theta) = -\frac1B \sum_i \min\big(D_i\, r_i,\ D_i \max(r_i, b)\big),
#   \qquad D_i = \mathrm{sg}(v_i - r_i).$$
#
# **After this notebook you will be able to**
#
# 1. derive the gradient of `dynacppo_lite.mstep.mstep_loss` with respect to each ratio, with and
#    without the clip, and see it drawn;
# 2. explain what the clip changes (only samples with $r < b$ that are being pushed *down*) and
#    why that keeps the **forward** KL $\mathrm{KL}(\pi_\text{old} \| \pi_\theta)$ small
#    (Theorem 3.7 of the paper);
# 3. run the M-step exactly as the trainer does (`train.update_policy`) on a real batch and
#    measure that KL with and without the clip.

# %% tags=["parameters"]
# ruff: noqa: E402
import os

SMOKE = os.environ.get("DYNACPPO_SMOKE", "0") == "1"  # CI runs every notebook with DYNACPPO_SMOKE=1
SEED = 0
ENV_ID = "ToySpeedLimit-v0" if SMOKE else "SafetyPointGoal1-v0"
PRETRAIN_STEPS = 4_000 if SMOKE else 100_000
NUM_ENVS = 1 if SMOKE else 2
ROLLOUT_STEPS = 1_000 if SMOKE else 2_000  # per env: the batch the M-step fits
LOWER_CLIP = 0.6  # b (paper: 0.6)
EPOCHS = 10  # M-step passes over the batch (Config.update_epochs)
MSTEP_LR = 1e-2  # larger than the trainer's policy learning rate: an eager M-step shows the clip's work
# An aggressive E-step (a large trust region, targets allowed near 0) gives the clip work to do.
ESTEP_KL, ESTEP_LOWER_BOUND = 0.2, 0.05

# %%
import copy
import dataclasses
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from dynacppo_lite.batch import Batch
from dynacppo_lite.config import Config
from dynacppo_lite.envs import default_cost_limit
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.evaluation import load_trained
from dynacppo_lite.exercises import check_mstep_gradient
from dynacppo_lite.figures import figure_path, project_root
from dynacppo_lite.gae import dual_gae
from dynacppo_lite.mstep import clip_range, mstep_diagnostics, mstep_loss
from dynacppo_lite.plots import plot_mstep_tracking, tracking_gradient
from dynacppo_lite.rollout import Collector
from dynacppo_lite.train import train, update_policy

_ = torch.manual_seed(SEED)
torch.set_num_threads(1)  # small networks run fastest on one thread (Config.torch_threads)

# %% [markdown]
# ## 4.1 One sample at a time
#
# For one sample, $\partial \mathcal L / \partial r$ (autograd through the library's loss,
# `plots.tracking_gradient`) is
#
# * $-(v - r)$ wherever $r \ge b$: both terms of the min coincide and the surrogate has the
#   gradient of $\tfrac12 (v - r)^2$: $r$ is pulled to $v$ from either side;
# * the same where $r < b$ and $v > r$: the ratio is pulled back *up*;
# * **zero** where $r < b$ and $v < r$: the min picks the constant $D\,b$, and the loss stops
#   pushing $r$ further *down*.
#
# The left panels integrate the gradient into the objective it descends: with the clip it is
# flat between $v$ and $b$. A ratio coming down from 1 towards a target $v < b$ stops at $b$.

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 6.4))
plot_mstep_tracking(0.3, LOWER_CLIP, axes=axes[0])
plot_mstep_tracking(1.5, LOWER_CLIP, axes=axes[1])
fig.tight_layout()
if not SMOKE:
    fig.savefig(figure_path("04_mstep_clip.png"), dpi=120, bbox_inches="tight")

# %%
r = np.array([0.3, 0.5, 0.5, 0.9, 1.4])
v = np.array([0.1, 0.2, 0.8, 0.5, 1.0])
grad = tracking_gradient(r, v, LOWER_CLIP) * len(r)  # undo the 1/B of the batch mean
for ri, vi, gi in zip(r, v, grad, strict=True):
    note = "clipped: no push down" if ri < LOWER_CLIP and vi < ri else "-(v - r)"
    print(f"r = {ri:.1f}, v = {vi:.1f}: dL/dr = {gi:+.2f}   ({note})")

# %% [markdown]
# ## 4.2 Why it bounds the forward KL
#
# The trainer logs `approx_kl` $= \mathrm{mean}\big((r - 1) - \log r\big)$, an unbiased
# estimate of $\mathrm{KL}(\pi_\text{old} \| \pi_\theta)$ from the old policy's samples
# (`mstep.mstep_diagnostics`). Each term grows like $-\log r$ as $r \to 0$: a handful of
# ratios pushed towards zero can make the forward KL as large as they like, however small the
# E-step's reverse-KL budget was. The clip removes exactly that push: a sample the E-step wants
# below $b$ is not driven past $b$ by its own gradient, so its term stays near
# $(b - 1) - \log b$ (0.11 for $b = 0.6$). Theorem 3.7 turns this into a bound; below we measure
# it, on a real batch, with the trainer's own M-step loop.
#
# ## 4.3 A real batch
#
# A short CPPO run gives a policy and critics; we collect a fresh batch with it, compute
# the dual advantages and the E-step targets, and package them as the trainer's `Batch`.

# %%
scratch = Path(tempfile.gettempdir()) / "dynacppo_lite_nb04"  # smoke runs: rewritten each time
shutil.rmtree(scratch, ignore_errors=True)
log_dir = str(scratch) if SMOKE else str(project_root() / "runs" / "notebook04")
cfg = Config(algo="cppo", env_id=ENV_ID, seed=SEED, total_steps=PRETRAIN_STEPS, num_envs=NUM_ENVS,
             steps_per_iter=1_000 if SMOKE else 4_000, pi_lr=3e-3 if SMOKE else 3e-4,
             log_dir=log_dir, run_name="pretrain", device="cpu")
run_dir = Path(log_dir) / "pretrain"
if not (run_dir / "checkpoint.pt").exists():
    run_dir = train(cfg)
_, envs, agent = load_trained(run_dir, num_envs=NUM_ENVS, seed=SEED + 100)
ro = Collector(envs, agent, torch.device("cpu"), seed=SEED + 100).collect(ROLLOUT_STEPS)
envs.close()

adv = dual_gae(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r, ro.next_values_c,
               ro.terminated, ro.truncated, gamma=cfg.gamma, lam=cfg.lam,
               cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
n = ro.rew.numel()
ep_ret, ep_cost, ep_len = (float(np.mean(x)) for x in zip(*ro.episodes, strict=True))
cost_limit = default_cost_limit(ENV_ID)
margin = (cost_limit - ep_cost) / ep_len  # the trainer's per-step cost margin
est = solve_estep(adv.adv_r.reshape(n).double().numpy(), adv.adv_c.reshape(n).double().numpy(),
                  cost_margin=margin, kl_budget=ESTEP_KL, lower_bound=ESTEP_LOWER_BOUND)
batch = Batch(obs=ro.obs.reshape(n, -1), act=ro.act.reshape(n, -1), logp=ro.logp.reshape(n),
              adv_r=adv.adv_r.reshape(n), adv_c=adv.adv_c.reshape(n), ret_r=adv.ret_r.reshape(n),
              ret_c=adv.ret_c.reshape(n), critic_mask=torch.ones(n, dtype=torch.bool))
v_target = torch.as_tensor(est.v, dtype=torch.float32)
print(f"{n} samples, episode cost {ep_cost:.1f} (limit {cost_limit}), E-step mode {est.mode}\n"
      f"targets below b: {np.mean(est.v < LOWER_CLIP):.1%}, smallest v {est.v.min():.3f}")

# %% [markdown]
# Now the M-step, twice from the same starting policy: with the clip $b$ and with $b = 0$ (a
# clip that never binds). `train.update_policy` is the trainer's loop (minibatches, gradient
# clipping, early stop disabled here with `target_kl=None`); we call it one epoch at a time to
# log the forward KL after each. The learning rate is `MSTEP_LR`, larger than the trainer's:
# an eager M-step makes the difference easy to see.

# %%
def run_mstep(lower_clip: float) -> dict[str, list]:
    pi_agent = copy.deepcopy(agent)
    opt = torch.optim.Adam(pi_agent.pi.parameters(), lr=MSTEP_LR, eps=1e-5)
    one_epoch = dataclasses.replace(cfg, update_epochs=1, target_kl=None)
    gen = torch.Generator().manual_seed(SEED)

    def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
        return mstep_loss(logp_new, batch.logp[mb], v_target[mb], lower_clip=lower_clip)

    log = {"kl": [], "clip_frac": [], "min_ratio": [], "track": []}
    for _ in range(EPOCHS):
        update_policy(pi_agent, opt, batch, loss_fn, one_epoch, clip_range("tracking", lower_clip), gen)
        with torch.no_grad():
            logp = pi_agent.pi.log_prob(pi_agent.pi(batch.obs), batch.act)
        ratio = torch.exp(logp - batch.logp)
        diag = mstep_diagnostics(logp, batch.logp, lower_clip=LOWER_CLIP)
        log["kl"].append(diag["approx_kl"])
        log["clip_frac"].append(diag["clip_frac"])
        log["min_ratio"].append(float(ratio.min()))
        log["track"].append(float(((v_target - ratio) ** 2).mean()))
    log["ratio"] = ratio.numpy()
    return log


runs = {f"clip b = {LOWER_CLIP}": run_mstep(LOWER_CLIP), "no clip (b = 0)": run_mstep(0.0)}
for name, log in runs.items():
    print(f"{name:>16}: forward KL {log['kl'][-1]:.4f} (largest over epochs {max(log['kl']):.4f})\n"
          f"{'':>16}  ratios below {LOWER_CLIP}: {log['clip_frac'][-1]:.1%}, smallest ratio "
          f"{log['min_ratio'][-1]:.3f}, tracking error {log['track'][-1]:.4f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for name, log in runs.items():
    epochs = np.arange(1, EPOCHS + 1)
    axes[0].plot(epochs, log["kl"], marker="o", label=name)
    axes[1].plot(epochs, log["min_ratio"], marker="o", label=name)
    # Faint points, and the median ratio per bin of v on top: both runs stay visible.
    color = axes[0].lines[-1].get_color()
    axes[2].scatter(est.v, log["ratio"], s=3, alpha=0.15, color=color)
    bins = np.quantile(est.v, np.linspace(0, 1, 13))
    which = np.clip(np.digitize(est.v, bins[1:-1]), 0, len(bins) - 2)
    centers = [np.median(est.v[which == k]) for k in range(len(bins) - 1) if np.any(which == k)]
    medians = [np.median(log["ratio"][which == k]) for k in range(len(bins) - 1) if np.any(which == k)]
    axes[2].plot(centers, medians, marker="o", ms=5, lw=2, color=color, label=f"{name} (median)")
axes[0].set(xlabel="M-step epoch", ylabel="approx KL(pi_old || pi)", title="forward KL")
axes[1].set(xlabel="M-step epoch", ylabel="min ratio", title="smallest ratio in the batch")
axes[1].axhline(LOWER_CLIP, color="k", ls=":", lw=1)
lim = [0, float(max(est.v.max(), 1.5))]
axes[2].plot(lim, lim, color="0.6", lw=1)
axes[2].axhline(LOWER_CLIP, color="k", ls=":", lw=1)
axes[2].set(xlabel="E-step target v", ylabel="ratio r after the M-step", title="fit to the targets")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# Read the curves together with the printed numbers. Where the clip binds, a sample whose
# target lies below $b$ is no longer pushed past $b$ by its own gradient, so the smallest ratios
# and with them the forward KL tend to stay lower than without the clip, at the price of a
# looser fit on exactly those samples. Two things blur the picture on a real batch: a small
# policy network cannot follow every sample's target (right panel: the fit is loose for both),
# and the network shares its parameters across samples, so other samples' gradients still move
# a clipped ratio. The clip removes a sample's own downward push, not every downward move;
# Theorem 3.7's bound is about that push.
#
# ## 4.4 The step the policy actually takes: where this package departs from the paper
#
# The tracking loss asks the network to put every ratio $r_i$ on its own target $v_i$. A
# Gaussian policy whose mean comes from one small network shared by all states cannot do that:
# it follows the part of $v - 1$ that its features can express and treats the rest as noise.
# Worse, what it does fit is partly the noise of *this* batch's advantages. Two numbers tell
# the story, measured after each epoch of the trainer's own loop on real batches of
# SafetyPointGoal1-v0 (a policy trained for 2e5 steps, shipped with the package):
#
# * the **realised KL** $\mathrm{KL}(\pi_\text{old}\|\pi_\theta)$, how far the policy moved
#   (the trainer stops an update once it passes `target_kl` = 0.02);
# * the **held-out reward gain** $\mathrm{mean}\big((r - 1) A\big) / \mathrm{std}(A)$ on *other*
#   batches of the same policy: the first-order improvement that generalises, not the part
#   fitted to this batch's noise.
#
# The candidate beside the tracking loss reads $v - 1$ as a direction rather than as per-sample
# targets: the **linear surrogate**
# $-\mathrm{mean}\big(\min\big((v - 1)\,r,\ (v - 1)\,\mathrm{clip}(r, b, 2 - b)\big)\big)$ is
# PPO's clipped objective with the advantage replaced by $v - 1$ (`mstep.linear_mstep_loss`).
# The E-step still decides *where* to go in the plane of $A$ and $A_c$ (the angle that meets
# the cost margin, inside the trust region and the bound); the M-step then pushes along it until
# the clip or the KL early stop, as PPO does along $A$. `bench.mstep.study` runs both (and more:
# `python -m dynacppo_lite bench mstep`) from the same policy, with the same minibatches.

# %%
from dynacppo_lite.bench.mstep import tracking_vs_linear
from dynacppo_lite.plots import plot_mstep_study

study_cfg, study_rows, study_traces = tracking_vs_linear(2 if SMOKE else 6, SEED,
                                                         steps=1_000 if SMOKE else None)
for row in study_rows:
    print(f"{row['M-step']:>18}: epochs {row['epochs']:.1f}, realised KL {row['kl']:.4f}, "
          f"reach {row['reach']:.3f}, reward gain in-sample {row['gain_r']:.3f}, "
          f"held out {row['held_r']:.4f}")
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
plot_mstep_study(study_traces, target_kl=study_cfg.target_kl, axes=axes)
fig.tight_layout()
if not SMOKE:
    fig.savefig(figure_path("04_mstep_linear.png"), dpi=120, bbox_inches="tight")

# %% [markdown]
# What full mode shows (the picture is `figures/04_mstep_linear.png`, six batches of 4,000
# steps, the package's defaults): with the paper's KL of 0.02 the tracking loss moves the
# policy by a KL of 0.005-0.008 in ten epochs and never reaches the early stop; it follows
# more and more of $v$ (the slope climbs to 0.19) while the held-out gain stays near 0.001: the
# extra fit is this batch's noise. The linear surrogate passes `target_kl` within its first
# epoch and buys about twice the held-out gain. In training this is the difference between
# CPPO learning at 0.3-0.7x PPO's speed (tracking) and faster than PPO (linear): see the
# Results page. So the package's default M-step is the linear surrogate
# (`Config.mstep = "linear"`); the tracking loss of 4.1-4.3 stays, as the paper's
# M-step and the one this notebook's exercise is about (`Config.mstep = "tracking"`).
#
# ## Exercise: the gradient of the clipped tracking loss
#
# Write `tracking_grad(ratio, v, lower_clip)` that returns $\partial \mathcal L / \partial r_i$
# for every sample (shape `(N,)`), where $\mathcal L$ is the **batch mean** above. No autograd:
# use the three cases of 4.1. `check_mstep_gradient` compares with autograd through
# `mstep_loss` and names the usual slips (the clip on the wrong side, the sign, the $1/N$, the
# gradient with respect to $\log r$ instead of $r$, ...).
#
# The next cell holds the reference solution between nbgrader's solution markers; the students'
# copy (`make assignments`) has a stub there that raises `NotImplementedError`.

# %% nbgrader={"grade": false, "grade_id": "mstep_gradient_solution", "locked": false, "schema_version": 3, "solution": true, "task": false}
def tracking_grad(ratio, v, lower_clip):
    ### BEGIN SOLUTION
    grad = -(v - ratio) / len(ratio)
    clipped = (ratio < lower_clip) & (v < ratio)
    return np.where(clipped, 0.0, grad)
    ### END SOLUTION


# %%
result = check_mstep_gradient(tracking_grad)  # prints the verdict; a wrong answer raises with its hint

# %% nbgrader={"grade": true, "grade_id": "mstep_gradient_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Autograder test: hidden in the students' copy, restored when nbgrader grades it.
### BEGIN HIDDEN TESTS
check_mstep_gradient(tracking_grad)
### END HIDDEN TESTS
