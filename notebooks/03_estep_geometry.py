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
# # 3. The E-step: a circle, a half-plane and a clip
#
# CPPO does not move the policy directly. Its **E-step** first decides, sample by sample, how
# much more or less likely each sampled action *should* become: a target ratio
# $v_i = q(a_i \mid s_i) / \pi_\text{old}(a_i \mid s_i)$. The M-step (notebook 4) then fits the
# policy to those targets. On a batch of $N$ samples the E-step solves
#
# $$\max_v\ \tfrac1N \textstyle\sum_i v_i A_i \quad\text{s.t.}\quad
#   \tfrac1N\sum_i v_i = 1,\quad
#   \tfrac1N\sum_i (v_i - 1) A_{c,i} \le d',\quad
#   \tfrac1N\sum_i (v_i - 1)^2 \le 2\delta',\quad
#   v_i \ge b.$$
#
# In $x = v - 1$: $\sum x = 0$, a **half-plane** $x \cdot A_c \le N d'$ (the cost), a **ball**
# $|x|^2 \le 2N\delta'$ (a reverse-KL trust region, since $\mathrm{KL} \approx \mathrm{Var}(v)/2$)
# and a box. Theorem 3.4 of the CPPO paper: without the box, the optimum lies in the plane of
# the centred $A$ and $A_c$, so an $N$-dimensional problem becomes a picture.
#
# **After this notebook you will be able to**
#
# 1. draw the $A$-$A_c$ plane of a batch: the trust-region circle, the cost half-plane, and
#    the solution of `dynacppo_lite.estep.solve_estep`;
# 2. tell the three cases apart: the unconstrained optimum is feasible, the optimum sits on the
#    cost line, or no point of the ball is feasible and the **recovery** update takes over;
# 3. follow the clipping passes of Algorithm 1 when the bound $v_i \ge b$ binds, and see where
#    how often the paper's heuristic and the exact solver part ways;
# 4. check the exact solver against a general-purpose convex solver.

# %% tags=["parameters"]
# ruff: noqa: E402
import os

SMOKE = os.environ.get("DYNACPPO_SMOKE", "0") == "1"  # CI runs every notebook with DYNACPPO_SMOKE=1
SEED = 0
N = 256  # batch size of the synthetic batches (the E-step itself is O(N) per pass)
# delta' of appendix E at the paper's KL 0.02 (the package's default is 0.005: see Config.estep_kl)
KL_BUDGET = 0.02 / (2 * 0.6931471805599453 - 1)
LOWER_BOUND = 0.4  # b of Algorithm 1 (paper Table 2)
N_SLSQP = 30 if SMOKE else 80  # size of the batch we hand to scipy's general solver

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from scipy.optimize import minimize

from dynacppo_lite.config import Config
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.exercises import check_estep_case
from dynacppo_lite.figures import figure_path
from dynacppo_lite.plots import (
    estep_plane,
    plot_clipping_sweep,
    plot_estep_plane,
    plot_v_histogram,
    synthetic_advantages,
)

assert abs(KL_BUDGET - Config(estep_kl=0.02).kl_budget) < 1e-12

# %% [markdown]
# ## 3.1 One batch, one plane
#
# `plots.synthetic_advantages` draws standard-normal reward advantages and cost advantages with
# a chosen correlation (notebook 2 showed why a positive one is typical). `plots.estep_plane`
# computes the plane's basis: $e_1$ along the centred $A$, $e_2$ along the part of the centred
# $A_c$ orthogonal to it (the same basis as `EStepResult.angle`). In these coordinates,
#
# * the objective is $|A|\,p$ for $x = p e_1 + q e_2$: move right;
# * the trust region is the disc of radius $R = \sqrt{2N\delta'}$;
# * the cost constraint is the half-plane $\alpha p + \beta q \le N d'$ with
#   $(\alpha, \beta)$ the centred $A_c$ in the basis.
#
# Only *centred* advantages matter: since $\sum x = 0$, adding a constant to $A$ changes nothing.

# %%
adv_r, adv_c = synthetic_advantages(N, correlation=0.6, seed=SEED)
plane = estep_plane(adv_r, adv_c, cost_margin=0.0, kl_budget=KL_BUDGET)
print(f"R = {plane.radius:.3f}, |A| = {plane.a_norm:.2f}, A_c = {plane.alpha:.2f} e1 + "
      f"{plane.beta:.2f} e2\ncost_bound = N d' = {plane.cost_bound:.2f} -> case: {plane.case}")

# %% [markdown]
# ## 3.2 The three cases of Theorem 3.4
#
# 1. **Unconstrained**: the pure reward step $x = R\,e_1$ already satisfies the cost
#    constraint: take it.
# 2. **Constrained**: it does not, but the cost line cuts the disc: the optimum is the
#    intersection of line and circle with the larger reward.
# 3. **Infeasible**: the line misses the disc entirely: no step inside the trust region brings
#    the cost back under the limit. CPPO then switches to its **recovery** update.
#
# We solve each with `solve_estep(..., lower_bound=0)` (only $v \ge 0$, which does not bind here)
# so that the picture is exactly the theorem's, and check the constraints on the answer.

# %%
CASES = {  # name -> (correlation of A and A_c, cost margin d')
    "unconstrained": (0.1, 0.05),
    "constrained": (0.7, 0.0),
    "infeasible": (0.7, -0.4),
}
fig, axes = plt.subplots(1, 3, figsize=(14, 5.6))
for ax, (name, (corr, margin)) in zip(axes, CASES.items(), strict=True):
    a, c = synthetic_advantages(N, corr, seed=1)
    res = solve_estep(a, c, cost_margin=margin, kl_budget=KL_BUDGET, lower_bound=0.0)
    plot_estep_plane(a, c, cost_margin=margin, kl_budget=KL_BUDGET, ax=ax,
                     results={f"v* ({res.mode})": res}, title=f"{name}: corr {corr}, d' = {margin}")
    x = res.v - 1
    print(f"{name:>13}: case {estep_plane(a, c, cost_margin=margin, kl_budget=KL_BUDGET).case:>13}, "
          f"mode {res.mode:>8}, feasible {res.feasible!s:>5}, angle {np.degrees(res.angle):6.1f} deg\n"
          f"{'':>13}  mean(v) {res.v.mean():.4f}, mean(x^2)/2 {np.mean(x ** 2) / 2:.4f} "
          f"(budget {KL_BUDGET:.4f}), mean(x A_c) {res.cost_change:+.4f} (d' {margin:+.2f})")
fig.tight_layout()
if not SMOKE:
    fig.savefig(figure_path("03_estep_cases.png"), dpi=120, bbox_inches="tight")

# %% [markdown]
# In the first panel the solution is the orange star itself (angle 0). In the second it sits
# where the green line crosses the circle, and the cost change equals $d'$ exactly: the
# constraint is active. In the third the green (feasible) region does not reach the disc; the
# recovery rule (section 3.2.2 of the paper) picks the point of the disc that lowers the cost
# most while keeping the reward from falling, if such a point exists, else the pure cost
# descent direction $-A_c$ (here: `feasible` is False, the best the trust region allows).
#
# ## 3.3 Recovery when the policy violates the limit
#
# In the paper the trainer does not wait for infeasibility: when the measured episode cost
# exceeds the limit it asks for recovery (`recovery=True`) until the cost is back under a lower
# switching threshold (bang-bang switching with hysteresis, `schedules.ModeSwitch`, kept as
# `Config(cost_control="bang-bang")`). The package's default steers the margin with a PI
# controller instead and recovers only where that saturates (notebook 5 shows why). Recovery
# first minimises $x \cdot A_c$ subject to $x \cdot A \ge 0$: the largest cost decrease that
# does not sacrifice reward.

# %%
a, c = synthetic_advantages(N, 0.7, seed=1)
normal = solve_estep(a, c, cost_margin=-0.05, kl_budget=KL_BUDGET, lower_bound=0.0)
recover = solve_estep(a, c, cost_margin=-0.05, kl_budget=KL_BUDGET, lower_bound=0.0, recovery=True)
fig, ax = plt.subplots(figsize=(5, 5))
plot_estep_plane(a, c, cost_margin=-0.05, kl_budget=KL_BUDGET, ax=ax,
                 results={"normal E-step": normal, "recovery E-step": recover},
                 title="violating by a little: normal vs recovery")
for name, r in (("normal", normal), ("recovery", recover)):
    print(f"{name:>8}: reward gain mean(vA) - mean(A) = {r.objective - a.mean():+.4f}, "
          f"cost change {r.cost_change:+.4f}")

# %% [markdown]
# ## 3.4 The element-wise bound and Algorithm 1's passes
#
# Ratios must stay positive, and the paper clips them at $b$ (0.4): $v_i \ge b$. With a larger
# trust region or heavy-tailed advantages, the plane solution wants some $v_i < b$. Algorithm 1
# clips those entries to $b$, **fixes** them, and re-solves the plane problem on the rest with
# the budgets the fixed entries leave: the rest must re-centre (its sum cancels the fixed
# entries'), the squared-norm budget shrinks by what the fixed entries use, and so does the
# cost budget. Each re-solve is one *clipping pass*, O(N).
#
# The heuristic only ever adds entries to the fixed set. The `exact` method recomputes the set
# each pass and can release an entry that was fixed too early (an active-set method), so it
# reaches the true optimum of the convex problem.

# %%
a_heavy, c_heavy = synthetic_advantages(N, 0.6, seed=SEED + 2)
a_heavy = np.sign(a_heavy) * np.abs(a_heavy) ** 2  # heavy tails: a few very good/bad samples
big_kl = 0.2  # a generous trust region, so that the bound binds
free = solve_estep(a_heavy, c_heavy, cost_margin=0.0, kl_budget=big_kl, lower_bound=0.0)
clipped = {m: solve_estep(a_heavy, c_heavy, cost_margin=0.0, kl_budget=big_kl,
                          lower_bound=LOWER_BOUND, method=m) for m in ("exact", "heuristic")}
print(f"without the bound: {np.mean(free.v < LOWER_BOUND):.1%} of v* below b = {LOWER_BOUND}")
for m, r in clipped.items():
    x = r.v - 1
    print(f"{m:>9}: passes {r.clip_passes}, at the bound {np.mean(r.v <= LOWER_BOUND + 1e-9):.1%}, "
          f"objective {r.objective:.5f}, mean(v) {r.v.mean():.6f}\n{'':>9}  "
          f"KL proxy {np.mean(x ** 2) / 2:.4f} <= {big_kl}, cost change {r.cost_change:+.2e}")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
plot_v_histogram(free.v, LOWER_BOUND, ax=axes[0], label="no bound")
plot_v_histogram(clipped["heuristic"].v, LOWER_BOUND, ax=axes[1], label="heuristic")
plot_v_histogram(clipped["exact"].v, LOWER_BOUND, ax=axes[2], label="exact")
fig.tight_layout()

# %% [markdown]
# Both answers satisfy every constraint: $\mathrm{mean}(v) = 1$, the KL budget and the cost.
# Do the two methods ever disagree? Only where Assumption 3.5 fails: an entry clipped in an
# early pass would sit above the bound at the optimum, but the heuristic never releases it (or a
# re-solve runs out of cost budget and it falls back to recovery). Count it over many batches:

# %%
gaps, modes = [], []
for k in range(40 if SMOKE else 400):
    a_k, c_k = synthetic_advantages(N, 0.7, seed=100 + k)
    a_k = np.sign(a_k) * np.abs(a_k) ** 2
    kwargs = dict(cost_margin=-0.05, kl_budget=big_kl, lower_bound=LOWER_BOUND)
    exact, heuristic = (solve_estep(a_k, c_k, method=m, **kwargs) for m in ("exact", "heuristic"))
    gaps.append(exact.objective - heuristic.objective)
    modes.append(exact.mode != heuristic.mode)
gaps = np.array(gaps)
print(f"{len(gaps)} batches: heuristic below the exact optimum by > 1e-6 in {np.sum(gaps > 1e-6)}\n"
      f"largest gap {gaps.max():.2e}, smallest {gaps.min():.2e}; modes differ in {sum(modes)}")

# %% [markdown]
# On batches like these the paper's heuristic is, in practice, the optimum: the exact solver
# is the guarantee, not a visible improvement. The number of passes grows as the bound rises
# and more entries hit it:

# %%
bounds = np.linspace(0.0, 0.9, 10 if SMOKE else 19)
fig = plot_clipping_sweep(a_heavy, c_heavy, kl_budget=big_kl, bounds=bounds)
if not SMOKE:
    fig.savefig(figure_path("03_estep_clipping.png"), dpi=120, bbox_inches="tight")

# %% [markdown]
# ## 3.5 Is "exact" exact? Ask a general solver
#
# The E-step is a convex quadratically constrained problem, so any decent general solver
# finds the same optimum, only much more slowly. We hand the problem, written straight from
# its definition, to scipy's SLSQP on a small batch and compare objectives.

# %%
a_s, c_s = synthetic_advantages(N_SLSQP, 0.7, seed=SEED + 3)
a_s = np.sign(a_s) * np.abs(a_s) ** 2
margin_s, kl_s = -0.02, 0.15
cons = [{"type": "eq", "fun": lambda v: v.mean() - 1},
        {"type": "ineq", "fun": lambda v: margin_s - np.mean((v - 1) * c_s)},
        {"type": "ineq", "fun": lambda v: 2 * kl_s - np.mean((v - 1) ** 2)}]
t0 = time.perf_counter()
ref = minimize(lambda v: -np.mean(v * a_s), np.ones(N_SLSQP), method="SLSQP", constraints=cons,
               bounds=[(LOWER_BOUND, None)] * N_SLSQP, options={"maxiter": 500, "ftol": 1e-12})
t_slsqp = time.perf_counter() - t0
t0 = time.perf_counter()
ours = {m: solve_estep(a_s, c_s, cost_margin=margin_s, kl_budget=kl_s, lower_bound=LOWER_BOUND, method=m)
        for m in ("exact", "heuristic")}
t_ours = time.perf_counter() - t0
print(f"SLSQP ({ref.message}): objective {-ref.fun:.6f} in {t_slsqp * 1e3:.0f} ms")
for m, r in ours.items():
    print(f"{m:>9}: objective {r.objective:.6f}, max |v - v_SLSQP| {np.abs(r.v - ref.x).max():.1e}")
print(f"(both methods together: {t_ours * 1e3:.1f} ms)")

# %% [markdown]
# ## Exercise: which case is this batch in?
#
# Write `estep_case(adv_r, adv_c, *, cost_margin, kl_budget)` returning `"unconstrained"`,
# `"constrained"` or `"infeasible"` (Theorem 3.4, no element-wise bound). Hints from the
# geometry above: centre both advantages; the radius is $R = \sqrt{2N\delta'}$; the reward
# step $R\,A/|A|$ changes $x \cdot A_c$ by $R\,(A \cdot A_c)/|A|$; the lowest $x \cdot A_c$ in the
# disc is $-R\,|A_c|$. Compare with $N d'$.
#
# `check_estep_case` tries eight batches and recognises the typical slips (forgetting to centre,
# forgetting a factor $N$, reading "violating" as "infeasible", ...).
#
# The next cell holds the reference solution between nbgrader's solution markers; the students'
# copy (`make assignments`) has a stub there that raises `NotImplementedError`.

# %% nbgrader={"grade": false, "grade_id": "estep_case_solution", "locked": false, "schema_version": 3, "solution": true, "task": false}
def estep_case(adv_r, adv_c, *, cost_margin, kl_budget):
    ### BEGIN SOLUTION
    a, c = adv_r - adv_r.mean(), adv_c - adv_c.mean()
    n = len(a)
    radius, cost_bound = np.sqrt(2 * n * kl_budget), n * cost_margin
    if radius * (a @ c) / np.linalg.norm(a) <= cost_bound:
        return "unconstrained"
    if -radius * np.linalg.norm(c) > cost_bound:
        return "infeasible"
    return "constrained"
    ### END SOLUTION


# %%
result = check_estep_case(estep_case)  # prints the verdict; a wrong answer raises with its hint

# %% nbgrader={"grade": true, "grade_id": "estep_case_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Autograder test: hidden in the students' copy, restored when nbgrader grades it.
### BEGIN HIDDEN TESTS
check_estep_case(estep_case)
### END HIDDEN TESTS
