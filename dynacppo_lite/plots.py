"""Figures: learning curves with the cost limit drawn, and the E-step plane.

Only matplotlib and pandas here; the training loop never imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dynacppo_lite.envs.presets import default_cost_limit
from dynacppo_lite.runlog import FINAL_FRACTION, final_score, read_progress

if TYPE_CHECKING:
    from dynacppo_lite.dynamics import OpenLoopErrors
    from dynacppo_lite.envs.coordinates import CoordinateState


def run_cost_limit(run_dir: str | Path) -> float:
    """The cost limit a run used (its config, or the task's default)."""
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    return cfg["cost_limit"] if cfg.get("cost_limit") is not None else default_cost_limit(cfg["env_id"])


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average what exists)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_learning_curves(run_dirs: Sequence[str | Path], smoothing: int = 1,
                         labels: Sequence[str] | None = None,
                         axes: Sequence[plt.Axes] | None = None) -> plt.Figure:
    """Episode return and cost against environment steps for each run, cost limit dashed."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    else:
        fig = axes[0].figure
    limits = set()
    for k, run in enumerate(run_dirs):
        df = read_progress(run)
        label = labels[k] if labels is not None else Path(run).name
        axes[0].plot(df["step"], smooth(df["ep_return"], smoothing), label=label)
        axes[1].plot(df["step"], smooth(df["ep_cost"], smoothing), label=label)
        limits.add(run_cost_limit(run))
    for d in sorted(limits):
        axes[1].axhline(d, color="k", ls="--", lw=1, label=f"cost limit {d:g}")
    axes[0].set(xlabel="environment steps", ylabel="episode return", title="Return")
    axes[1].set(xlabel="environment steps", ylabel="episode cost", title="Cost")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def compare_runs(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None, *,
                 smoothing: int = 1, metrics: Sequence[str] = ("ep_return", "ep_cost"),
                 figsize_per_panel: tuple[float, float] = (3.6, 2.8)) -> plt.Figure:
    """Several runs side by side: one column per run, one row per metric, shared axes.

    Each run's ``ep_cost`` panel draws *its own* cost limit (from its ``config.json``), and every
    panel shades the final-score window (the last 10% of steps) and gives the final score
    (:func:`dynacppo_lite.runlog.final_score`) in its title. Runs on different tasks, with
    different limits, can be set next to each other in one call.

    >>> fig = compare_runs(["runs/cppo_a", "runs/cppo_b"], labels=["d=5", "d=25"])  # doctest: +SKIP
    """
    n = len(run_dirs)
    if n == 0:
        raise ValueError("compare_runs needs at least one run directory")
    fig, axes = plt.subplots(len(metrics), n, figsize=(figsize_per_panel[0] * n,
                                                        figsize_per_panel[1] * len(metrics)),
                             squeeze=False, sharex="col", sharey="row")
    for k, run in enumerate(run_dirs):
        df = read_progress(run)
        label = labels[k] if labels is not None else Path(run).name
        end = float(df["step"].max()) if len(df) else 0.0
        for row, metric in enumerate(metrics):
            ax = axes[row][k]
            ax.plot(df["step"], smooth(df[metric], smoothing), color=f"C{k}")
            ax.axvspan((1.0 - FINAL_FRACTION) * end, end, color="0.85", zorder=0)
            title = f"final {final_score(df['step'], df[metric]):.3g}"
            if metric == "ep_cost":
                d = run_cost_limit(run)
                ax.axhline(d, color="k", ls="--", lw=1)
                title += f" (limit {d:g})"
            ax.set_title(f"{label}: {title}" if row == 0 else title, fontsize=9)
            ax.grid(alpha=0.3)
            if k == 0:
                ax.set_ylabel(metric)
            if row == len(metrics) - 1:
                ax.set_xlabel("environment steps")
    fig.tight_layout()
    return fig


def save_learning_curves(run_dirs: Sequence[str | Path], out: str | Path, smoothing: int = 3) -> Path:
    """:func:`plot_learning_curves` written to ``out`` (PNG); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_learning_curves(run_dirs, smoothing=smoothing)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_return_cost_plane(points: Mapping[str, Sequence[tuple[float, float]]], cost_limit: float,
                           ax: plt.Axes | None = None,
                           anchors: Mapping[str, tuple[float, float]] | None = None) -> plt.Axes:
    """Algorithms on the return/cost plane: x = episode cost, y = episode return.

    ``points`` maps a label to its seeds' final ``(cost, return)`` (``bench learning`` gives
    each seed's ``runlog.final_score``). Per label, in colour C<i>: every seed as a small dot,
    and the mean over seeds as a large marker with error bars of one standard deviation over
    seeds (ddof 0, as the bench's table) in both directions; a seed with a non-finite score is
    left out. The cost limit is a dashed vertical line: a constrained method's mean belongs on
    its left. ``anchors`` (label -> (cost, return)), e.g. published numbers, are grey crosses
    with their label beside them.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.8))
    for i, (label, seeds) in enumerate(points.items()):
        xy = np.asarray(seeds, dtype=float).reshape(-1, 2)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if not len(xy):
            continue
        ax.scatter(xy[:, 0], xy[:, 1], s=14, color=f"C{i}", alpha=0.6)
        (cost, ret), (cost_sd, ret_sd) = xy.mean(axis=0), xy.std(axis=0)
        ax.errorbar(cost, ret, xerr=cost_sd, yerr=ret_sd, fmt="o", ms=9, capsize=3, color=f"C{i}",
                    label=f"{label} ({len(xy)} seed{'s' if len(xy) > 1 else ''})")
    for cost, ret in (anchors or {}).values():
        ax.scatter([cost], [ret], marker="x", s=50, color="0.45", zorder=3)
    middle = np.mean(ax.get_xlim())
    for label, (cost, ret) in (anchors or {}).items():  # the text toward the middle: inside the axes
        right = cost > middle
        ax.annotate(label, (cost, ret), xytext=(-5 if right else 5, 4), textcoords="offset points",
                    ha="right" if right else "left", fontsize=7, color="0.3")
    ax.axvline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit {cost_limit:g}")
    ax.set(xlabel="episode cost", ylabel="episode return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


# =============================================================================================
# Added for the notebooks, the widgets and ``make figures`` (issue #5). Every picture below
# draws what a library call computed (``estep.solve_estep``, ``gae.dual_gae``,
# ``mstep.mstep_loss``, ``dynamics.DynamicsEnsemble``); none re-implements the algorithm. The
# only arithmetic here is the 2-D geometry needed to *draw* the E-step plane.
# =============================================================================================

#: Labels of the three cases of Theorem 3.4, as :class:`EStepPlane` and the exercises use them.
ESTEP_CASES = ("unconstrained", "constrained", "infeasible")


def synthetic_advantages(n: int = 256, correlation: float = 0.5, seed: int = 0, *,
                         reward_mean: float = 0.0, cost_mean: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Teaching data for the E-step pictures: (adv_r, adv_c), float64 (n,) each.

    ``adv_r`` is standard normal; ``adv_c = correlation * adv_r + sqrt(1 - correlation^2) z``
    with an independent standard normal z, so the two have (population) correlation
    ``correlation`` (in [-1, 1]). A positive correlation is the interesting case: the actions
    that earn reward also cost. ``reward_mean``/``cost_mean`` shift the samples (the E-step only
    sees the centred advantages, since mean(v) = 1).
    """
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must lie in [-1, 1], got {correlation}")
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((2, n))
    adv_r = z1 + reward_mean
    adv_c = correlation * z1 + np.sqrt(1.0 - correlation ** 2) * z2 + cost_mean
    return adv_r, adv_c


@dataclass(frozen=True, eq=False)
class EStepPlane:
    """The plane of Theorem 3.4 for one batch, in the coordinates ``estep.EStepResult.angle``
    uses: ``e1 = centred A / |centred A|`` (angle 0) and e2 = the part of centred A_c orthogonal
    to e1 (angle pi/2).

    In these coordinates x = v - 1 is (p, q) = (x.e1, x.e2); the objective is ``|A| p``, the trust
    region is the disc p^2 + q^2 <= radius^2 (radius = sqrt(2 N kl_budget)), and the cost
    constraint is the half-plane ``alpha p + beta q <= cost_bound`` (cost_bound = N cost_margin,
    (alpha, beta) = centred A_c in the basis). ``case`` is the case of Theorem 3.4 *without*
    the element-wise bound: ``unconstrained`` (the reward direction is cost-feasible),
    ``constrained`` (the optimum sits where the cost line cuts the circle) or ``infeasible``
    (the line misses the disc: recovery).
    """

    n: int
    radius: float
    cost_bound: float
    e1: np.ndarray
    e2: np.ndarray
    alpha: float
    beta: float
    a_norm: float
    case: str

    def coords(self, x: np.ndarray) -> tuple[float, float]:
        """(p, q): the projection of x = v - 1 (N,) on the plane."""
        return float(x @ self.e1), float(x @ self.e2)

    @property
    def c_norm(self) -> float:
        """``|centred A_c|`` = sqrt(alpha^2 + beta^2)."""
        return float(np.hypot(self.alpha, self.beta))


def estep_plane(adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
                kl_budget: float) -> EStepPlane:
    """The :class:`EStepPlane` of a batch (numpy or torch (N,) advantages)."""
    a = np.asarray(adv_r, dtype=np.float64).ravel()
    c = np.asarray(adv_c, dtype=np.float64).ravel()
    n = a.size
    a_hat, c_hat = a - a.mean(), c - c.mean()
    a_norm = float(np.linalg.norm(a_hat))
    e1 = a_hat / a_norm if a_norm > 0 else np.zeros_like(a)
    perp = c_hat - (c_hat @ e1) * e1
    p_norm = float(np.linalg.norm(perp))
    e2 = perp / p_norm if p_norm > 1e-12 * max(1.0, float(np.linalg.norm(c_hat))) else np.zeros_like(a)
    alpha, beta = float(c_hat @ e1), float(c_hat @ e2)
    radius = float(np.sqrt(2.0 * n * kl_budget))
    cost_bound = float(n * cost_margin)
    if alpha * radius <= cost_bound:
        case = "unconstrained"
    elif cost_bound < -radius * float(np.hypot(alpha, beta)):
        case = "infeasible"
    else:
        case = "constrained"
    return EStepPlane(n=n, radius=radius, cost_bound=cost_bound, e1=e1, e2=e2, alpha=alpha, beta=beta,
                      a_norm=a_norm, case=case)


def plot_estep_plane(adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
                     kl_budget: float, results: Mapping[str, Any] | None = None,
                     ax: plt.Axes | None = None, title: str | None = None,
                     legend: bool = True) -> plt.Axes:
    """Theorem 3.4's picture: trust-region circle, cost half-plane, A and A_c directions, and
    the projection of each ``results[label]`` (an ``EStepResult``, or a v array) on the plane.

    With an element-wise bound the solution leaves the plane a little, so its projection can
    lie inside the circle.
    """
    plane = estep_plane(adv_r, adv_c, cost_margin=cost_margin, kl_budget=kl_budget)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.6))
    R = plane.radius
    lim = 1.45 * R
    g = np.linspace(-lim, lim, 241)
    P, Q = np.meshgrid(g, g)
    lhs = plane.alpha * P + plane.beta * Q
    ax.contourf(P, Q, (lhs <= plane.cost_bound).astype(float), levels=[0.5, 1.5], colors=["tab:green"],
                alpha=0.13)
    if lhs.min() < plane.cost_bound < lhs.max():
        ax.contour(P, Q, lhs, levels=[plane.cost_bound], colors=["tab:green"], linewidths=1.5,
                   linestyles="solid")
    t = np.linspace(0, 2 * np.pi, 361)
    ax.plot(R * np.cos(t), R * np.sin(t), color="tab:blue", lw=1.5,
            label=f"trust region, R = sqrt(2 N KL') = {R:.2f}")
    ax.annotate("", xy=(0.8 * R, 0), xytext=(0, 0),
                arrowprops=dict(arrowstyle="->", color="tab:orange", lw=2))
    ax.text(0.8 * R, 0.04 * R, "A (reward)", color="tab:orange", ha="right", va="bottom")
    if plane.c_norm > 0:
        u = np.array([plane.alpha, plane.beta]) / plane.c_norm * 0.8 * R
        ax.annotate("", xy=tuple(u), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="->", color="tab:red", lw=2))
        ax.text(u[0], u[1], " A_c (cost)", color="tab:red", ha="left", va="center")
    ax.plot([R], [0], marker="*", ms=13, color="tab:orange", ls="none",
            label="unconstrained optimum R A/|A|")
    markers = iter(["o", "s", "D", "^", "v", "P"])
    for label, res in (results or {}).items():
        v = np.asarray(getattr(res, "v", res), dtype=np.float64)
        p, q = plane.coords(v - 1.0)
        ax.plot([p], [q], marker=next(markers, "o"), ms=8, ls="none", mfc="none", mew=2, label=label)
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           xlabel="x . e1  (along centred A)", ylabel="x . e2  (centred A_c, orthogonal part)")
    ax.set_title(title if title is not None else f"case: {plane.case} (green: cost-feasible)",
                 fontsize=10)
    if legend:  # below the plane: it must not cover the feasible region
        ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return ax


def plot_clipping_sweep(adv_r: np.ndarray, adv_c: np.ndarray, *, kl_budget: float,
                        bounds: np.ndarray, cost_margin: float = 0.0) -> plt.Figure:
    """Algorithm 1's clipping passes and the objective reached, heuristic vs exact, as the
    lower bound on v rises (adv_r, adv_c: (N,))."""
    from dynacppo_lite.estep import solve_estep

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method in ("exact", "heuristic"):
        res = [solve_estep(adv_r, adv_c, cost_margin=cost_margin, kl_budget=kl_budget,
                           lower_bound=b, method=method) for b in bounds]
        axes[0].plot(bounds, [r.clip_passes for r in res], marker="o", label=method)
        axes[1].plot(bounds, [r.objective for r in res], marker="o", label=method)
    axes[0].set(xlabel="lower bound b on v", ylabel="clipping passes", title="re-solves after clipping")
    axes[1].set(xlabel="lower bound b on v", ylabel="mean(v A)", title="objective reached")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_v_histogram(v: np.ndarray, lower_bound: float, ax: plt.Axes | None = None,
                     label: str | None = None, bins: int = 40) -> plt.Axes:
    """Histogram of the E-step targets v with the element-wise lower bound drawn."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    v = np.asarray(v, dtype=np.float64)
    ax.hist(v, bins=bins, alpha=0.6, label=label)
    ax.axvline(lower_bound, color="k", ls="--", lw=1, label=f"lower bound {lower_bound:g}")
    ax.axvline(1.0, color="0.6", lw=1)
    at_bound = float(np.mean(v <= lower_bound + 1e-9))
    ax.set(xlabel="v = q / pi_old", ylabel="samples",
           title=f"v*: {100 * at_bound:.0f}% at the bound", )
    ax.legend(fontsize=8)
    return ax


def plot_episode_ends(ax: plt.Axes, terminated: np.ndarray, truncated: np.ndarray) -> None:
    """Mark terminations (solid red: next value 0) and truncations (dashed purple: bootstrap
    from V of the final observation) on a time axis."""
    for i, t in enumerate(np.flatnonzero(np.asarray(terminated))):
        ax.axvline(t + 0.5, color="tab:red", lw=1.5,
                   label="terminated: V(s_T) = 0" if i == 0 else None)
    for i, t in enumerate(np.flatnonzero(np.asarray(truncated))):
        ax.axvline(t + 0.5, color="tab:purple", lw=1.5, ls="--",
                   label="truncated: bootstrap V(s_T)" if i == 0 else None)


def plot_gae_series(series: Mapping[str, np.ndarray], terminated: np.ndarray,
                    truncated: np.ndarray, ax: plt.Axes | None = None,
                    title: str | None = None, ylabel: str = "") -> plt.Axes:
    """Time series (e.g. advantages computed two ways) with the episode ends marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    styles = iter(["-", "--", ":", "-."])
    for label, y in series.items():
        y = np.asarray(y, dtype=np.float64)
        ax.plot(np.arange(len(y)), y, ls=next(styles, "-"), marker=".", ms=4, label=label)
    plot_episode_ends(ax, terminated, truncated)
    ax.set(xlabel="time step t", ylabel=ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_advantage_scatter(adv_r: np.ndarray, adv_c: np.ndarray, ax: plt.Axes | None = None,
                           max_points: int = 4000) -> plt.Axes:
    """Reward advantage against cost advantage, one dot per sample, with their correlation."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    a = np.asarray(adv_r, dtype=np.float64).ravel()
    c = np.asarray(adv_c, dtype=np.float64).ravel()
    step = max(1, a.size // max_points)
    ax.scatter(a[::step], c[::step], s=4, alpha=0.4)
    corr = float(np.corrcoef(a, c)[0, 1]) if a.std() > 0 and c.std() > 0 else float("nan")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set(xlabel="reward advantage A", ylabel="cost advantage A_c",
           title=f"corr(A, A_c) = {corr:.2f}")
    return ax


def tracking_gradient(ratio: np.ndarray, v: np.ndarray | float, lower_clip: float) -> np.ndarray:
    """d loss / d r_i of ``mstep.mstep_loss`` (autograd through the library's loss).

    ``ratio`` r (N,) and targets ``v`` (N,) or a scalar; the loss is the batch mean, so the
    gradient of sample i carries the 1/N. Computed with logp_old = 0 and logp_new = log r, then
    d/dr = (d/d logp_new) / r.
    """
    import torch

    from dynacppo_lite.mstep import mstep_loss

    r = np.asarray(ratio, dtype=np.float64).ravel()
    v_arr = np.broadcast_to(np.asarray(v, dtype=np.float64), r.shape)
    logp = torch.tensor(np.log(r), dtype=torch.float64, requires_grad=True)
    loss = mstep_loss(logp, torch.zeros_like(logp), torch.tensor(v_arr, dtype=torch.float64),
                      lower_clip=lower_clip)
    (grad,) = torch.autograd.grad(loss, logp)
    return grad.numpy() / r


def plot_mstep_tracking(v: float, lower_clip: float, axes: Sequence[plt.Axes] | None = None,
                        r_max: float = 2.0) -> Sequence[plt.Axes]:
    """One sample's M-step objective and gradient as functions of the ratio r, with the lower
    clip b and without it (b = 0): the gradient is ``tracking_gradient`` and the objective its
    integral from r = v (where it is 0), i.e. 0.5 (v - r)^2 where the clip is inactive.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    r = np.linspace(0.02, r_max, 400)
    for b, label, ls in ((0.0, "no clip", "--"), (lower_clip, f"lower clip b = {lower_clip:g}", "-")):
        grad = tracking_gradient(r, v, b) * r.size  # per sample (undo the batch mean)
        obj = np.concatenate([[0.0], np.cumsum(0.5 * (grad[1:] + grad[:-1]) * np.diff(r))])
        obj -= np.interp(v, r, obj)
        axes[0].plot(r, obj, ls=ls, label=label)
        axes[1].plot(r, grad, ls=ls, label=label)
    for ax in axes:
        ax.axvline(v, color="tab:green", lw=1, label=f"target v = {v:g}")
        ax.axvline(lower_clip, color="k", lw=1, ls=":", label="b")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set(xlabel="ratio r = pi_theta / pi_old")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set(ylabel="effective loss", title="objective the gradient descends")
    axes[1].set(ylabel="d loss / d r", title="gradient (autograd of mstep_loss)")
    return axes


#: What :func:`plot_open_loop_errors` draws, one panel per ``OpenLoopErrors`` field: (field,
#: title, y label); the units are those of the trainer's ``dyn_err_*`` columns.
OPEN_LOOP_PANELS = (("obs", "state", "RMS error / typical one-step change"),
                    ("rew", "reward", "RMSE of the h-step sum (env units)"),
                    ("cost", "cost", "RMSE of the h-step sum (env units)"))


def plot_open_loop_errors(errors: OpenLoopErrors, baseline: OpenLoopErrors | None = None,
                          axes: Sequence[plt.Axes] | None = None, title: str = "",
                          model_horizon: int | None = None) -> Sequence[plt.Axes]:
    """``DynamicsEnsemble.open_loop_errors`` against the horizon h = 1..k: one panel each for
    the state, reward and cost error (each field a (k,) array, drawn as is), and ``baseline``
    (the same call with ``predict_no_change=True``) dashed. The points at h = 1 and h = k are
    what the trainer logs as ``dyn_err_*_1`` and ``dyn_err_*_k``; ``model_horizon``, if given,
    marks h = k with a dotted line. ``title`` prefixes each panel's title. Returns the three
    axes."""
    if axes is None:
        _, axes = plt.subplots(1, len(OPEN_LOOP_PANELS), figsize=(13, 3.4))
    for ax, (key, name, ylabel) in zip(axes, OPEN_LOOP_PANELS, strict=True):
        h = np.arange(1, len(getattr(errors, key)) + 1)
        ax.plot(h, getattr(errors, key), marker="o", label="ensemble mean, own states fed back")
        if baseline is not None:
            ax.plot(h, getattr(baseline, key), marker="s", ls="--",
                    label="predict no change (s' = s, r = c = 0)")
        if model_horizon is not None:
            ax.axvline(model_horizon, color="k", ls=":", lw=1,
                       label=f"h = k = model_horizon = {model_horizon}")
        ax.set(xlabel="steps ahead h", ylabel=ylabel, title=f"{title}{name}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return axes


def plot_branch_disagreement(disagreement: np.ndarray, threshold: float,
                             axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """``ModelEnv``'s disagreement along imagined branches, ``disagreement`` (k, B): step j of
    branch b at [j, b]. Left, a histogram of all k B values (log bins); right, its median and
    90 % quantile over the branches at each step j = 1..k. Both draw ``threshold`` (above it
    ModelEnv cuts the branch) dashed. Returns the two axes."""
    d = np.asarray(disagreement, dtype=np.float64)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ax_hist, ax_step = axes
    finite = d[np.isfinite(d) & (d > 0)]
    lo, hi = min(finite.min(), threshold), max(finite.max(), threshold)
    ax_hist.hist(finite, bins=np.geomspace(lo / 1.1, hi * 1.1, 40), alpha=0.7)
    ax_hist.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax_hist.set(xscale="log", xlabel="disagreement (std of members / typical step)",
                ylabel="imagined steps",
                title=f"all steps, none cut: {np.mean(d > threshold):.1%} above the threshold")
    steps = np.arange(1, d.shape[0] + 1)
    for q, style in ((50, "-"), (90, "--")):
        ax_step.plot(steps, np.percentile(d, q, axis=1), style, marker="o", label=f"{q} % quantile")
    ax_step.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax_step.set(yscale="log", xlabel="step j of the branch", ylabel="disagreement",
                title="disagreement along the branches")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return axes


def plot_disagreement(disagreement: np.ndarray, error: np.ndarray, threshold: float | None = None,
                      ax: plt.Axes | None = None) -> plt.Axes:
    """Ensemble disagreement (ModelEnv's info) against the true one-step error, per sample."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.scatter(np.asarray(disagreement), np.asarray(error), s=5, alpha=0.4)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"truncation threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="disagreement (std of members / typical step)",
           ylabel="true state error (MSE)", title="disagreement vs true one-step error")
    ax.grid(alpha=0.3, which="both")
    return ax


def plot_r2_groups(r2: Mapping[str, Mapping[str, float]], ax: plt.Axes | None = None,
                   title: str = "held-out one-step R^2 per group") -> plt.Axes:
    """Bars of one-step R^2 per group, one colour per model: ``r2`` is ``{model: {group:
    value}}`` (e.g. ``coordinate_model.flat_one_step_r2`` and ``one_step_r2``). Groups in
    order of first appearance; a group a model does not have (or a NaN) gets no bar. Each
    bar is labelled with its value; R^2 = 1 is exact, 0 no better than the mean change
    (dotted)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4))
    groups = list(dict.fromkeys(g for values in r2.values() for g in values))
    width = 0.8 / max(len(r2), 1)
    for k, (model, values) in enumerate(r2.items()):
        x = [i for i, g in enumerate(groups) if np.isfinite(values.get(g, np.nan))]
        heights = [values[groups[i]] for i in x]
        bars = ax.bar(np.asarray(x) + (k - (len(r2) - 1) / 2) * width, heights, width, label=model)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(0.0, color="k", ls=":", lw=1)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel="R^2", title=title, ylim=(min(0.0, ax.get_ylim()[0]), 1.1))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return ax


def plot_arena_branch(start: CoordinateState, real: np.ndarray, imagined: np.ndarray,
                      ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """A navigation task's arena from above, with a real trajectory and imagined branches.

    ``start``: the coordinate state the branches start from (the first of its batch is drawn):
    hazards as circles of the task's ``hazard_size``, the goal as a circle of ``goal_size``,
    every other object group as markers, all where they are at the start (the coordinate model
    holds them there). ``real``: (H + 1, 2 or 3) the robot's real positions, start included;
    ``imagined``: the same for one branch, or (H + 1, M, 2 or 3) for M branches (each drawn
    thin). Only x and y are drawn. Returns the axes."""
    from matplotlib.patches import Circle

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5.5))
    spec = start.spec
    sizes = {"hazards": spec.hazard_size, "goal": spec.goal_size}
    styles = {"hazards": dict(color="tab:blue", alpha=0.35),
              "goal": dict(color="tab:green", alpha=0.35)}
    markers = iter(("s", "^", "D", "v", "P"))
    for name, _ in spec.groups:
        xy = start.objects[name][0]
        if sizes.get(name) is not None:
            for k, (x, y) in enumerate(xy):
                ax.add_patch(Circle((x, y), sizes[name], label=name if k == 0 else None,
                                    **styles[name]))
        else:
            ax.scatter(xy[:, 0], xy[:, 1], marker=next(markers, "o"), s=60, color="tab:gray",
                       label=name, zorder=2)
    real = np.asarray(real, dtype=np.float64)[..., :2]
    imagined = np.asarray(imagined, dtype=np.float64)[..., :2]
    if imagined.ndim == 2:
        imagined = imagined[:, None]
    thin = imagined.shape[1] > 1
    for m in range(imagined.shape[1]):
        ax.plot(imagined[:, m, 0], imagined[:, m, 1], color="tab:orange", ls="--",
                lw=1 if thin else 2, alpha=0.6 if thin else 1.0,
                label="imagined (coordinate model)" if m == 0 else None, zorder=3)
    ax.plot(real[:, 0], real[:, 1], color="k", lw=2, label="real", zorder=4)
    ax.scatter(real[:1, 0], real[:1, 1], color="k", s=40, zorder=5, label="start")
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.set(xlabel="x (m)", ylabel="y (m)", title=title or f"{spec.task_id}: {len(real) - 1} steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax


def plot_runs(run_dirs: Sequence[str | Path], *, smoothing: int = 1,
              metrics: Sequence[str] = ("ep_return", "ep_cost"),
              cost_limit: float | str | None = "auto", labels: Sequence[str] | None = None,
              axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """Any ``progress.csv`` columns against environment steps, one panel per metric.

    ``cost_limit``: ``"auto"`` draws each run's limit (from its config) on the ``ep_cost``
    panel, a number draws that limit, ``None`` draws none.
    """
    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
        axes = list(axes[0])
    limits: set[float] = set()
    for k, run in enumerate(run_dirs):
        df = read_progress(run)
        label = labels[k] if labels is not None else Path(run).name
        for ax, metric in zip(axes, metrics, strict=True):
            ax.plot(df["step"], smooth(df[metric], smoothing), label=label)
        if cost_limit == "auto":
            limits.add(run_cost_limit(run))
    if cost_limit is not None and cost_limit != "auto":
        limits = {float(cost_limit)}
    for ax, metric in zip(axes, metrics, strict=True):
        if metric == "ep_cost":
            for d in sorted(limits):
                ax.axhline(d, color="k", ls="--", lw=1, label=f"cost limit {d:g}")
        ax.set(xlabel="environment steps", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return axes


#: What :func:`plot_diagnostics` draws, one panel each: (title, y label).
DIAGNOSTIC_PANELS = (("cost estimate (window) +- 1 s.e.", "episode cost"),
                     ("controller: u (cppo) or lambda (ppo-lag)", "u or lambda"),
                     ("realised KL per iteration", "approx. KL"),
                     ("M-step reach: slope of r - 1 on v - 1", "slope"))


def plot_diagnostics(runs: Mapping[str, Sequence[str | Path]], axes: Sequence[plt.Axes] | None = None,
                     cost_limit: float | None = None,
                     target_kl: float | None = None) -> Sequence[plt.Axes]:
    """The per-iteration numbers that make a cost-control failure visible, for groups of runs
    ``{label: [run_dir, ...]}`` (the mean over a group's seeds is drawn): the windowed cost
    estimate with its standard error, the controller's output (CPPO's margin fraction u, or
    PPO-Lag's multiplier lambda), the realised KL of the policy update, and the M-step's reach."""
    frames = {label: [read_progress(d) for d in dirs] for label, dirs in runs.items()}
    return plot_diagnostic_frames(frames, axes, cost_limit=cost_limit, target_kl=target_kl)


def plot_diagnostic_frames(frames: Mapping[str, Sequence[pd.DataFrame]],
                           axes: Sequence[plt.Axes] | None = None, *, cost_limit: float | None = None,
                           target_kl: float | None = None) -> Sequence[plt.Axes]:
    """:func:`plot_diagnostics` from ``progress.csv`` rows already in memory (a run still
    training: ``widgets.TrainingMonitor`` redraws these panels every iteration)."""
    if axes is None:
        _, axes = plt.subplots(1, len(DIAGNOSTIC_PANELS), figsize=(18, 3.6))
    ax_est, ax_ctl, ax_kl, ax_reach = axes
    for label, dfs in frames.items():
        n = min(len(d) for d in dfs)
        steps = dfs[0]["step"].to_numpy()[:n]

        def mean(key: str, frames: Sequence[pd.DataFrame] = dfs, n: int = n) -> np.ndarray:
            return _column_mean(frames, key, n)

        est, se = mean("cost_est"), mean("cost_est_se")
        line, = ax_est.plot(steps, est, label=label)
        ax_est.fill_between(steps, est - se, est + se, color=line.get_color(), alpha=0.2)
        for key, name in (("margin_u", "u"), ("lagrange", "lambda")):
            if np.isfinite(mean(key)).any():
                ax_ctl.plot(steps, mean(key), color=line.get_color(), label=f"{label}: {name}")
        ax_kl.plot(steps, mean("kl"), color=line.get_color(), label=label)
        if np.isfinite(mean("reach")).any():
            ax_reach.plot(steps, mean("reach"), color=line.get_color(), label=label)
    if cost_limit is not None:
        ax_est.axhline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit {cost_limit:g}")
    if target_kl is not None:
        ax_kl.axhline(target_kl, color="k", ls="--", lw=1, label=f"KL early stop {target_kl:g}")
    _dress_step_panels(axes, DIAGNOSTIC_PANELS)
    return axes


def _dress_step_panels(axes: Sequence[plt.Axes], panels: Sequence[tuple[str, str]]) -> None:
    """Title, y label, grid and (where something is labelled) a legend for panels against
    environment steps; ``panels``: one (title, ylabel) per axis."""
    for ax, (title, ylabel) in zip(axes, panels, strict=True):
        ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)


def _column_mean(frames: Sequence[pd.DataFrame], key: str, n: int) -> np.ndarray:
    """The mean over runs of column ``key``'s first ``n`` rows, (n,); a column a run does not
    log (or an older run lacks), or an empty cell, counts as NaN."""
    return np.mean([pd.to_numeric(d[key], errors="coerce").to_numpy(float)[:n]
                    if key in d else np.full(n, np.nan) for d in frames], axis=0)


DYNA_PANELS = (("model on fresh real data: state (coordinates: sensors)",
                "RMS error / typical one-step change"),
               ("model on fresh real data: reward, cost", "RMSE of the h-step sum (env units)"),
               ("cost per step: real (solid) vs imagined", "cost rate"),
               ("imagined vs real advantages (probes)", "correlation, std ratio"))


def plot_dyna_diagnostics(runs: Mapping[str, Sequence[str | Path]],
                          axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """What the model contributes, per iteration, for the groups of ``runs`` (``{label:
    [run_dir, ...]}``, mean over seeds) that log it (dyna-cppo; other groups are skipped but
    keep their colour C<i>, as in :func:`plot_diagnostics`): the model's errors on the
    iteration's real rollout before it was fitted on it, at h = 1 (solid) and h =
    ``model_horizon`` (dashed) (the flat model's state error, or the coordinate model's error
    of the robot's sensors, in the same unit); the imagined (pessimistic) against the real cost
    rate; and the correlation and std ratio of imagined to real advantages (1 is ideal for
    both)."""
    if axes is None:
        _, axes = plt.subplots(1, len(DYNA_PANELS), figsize=(18, 3.6))
    ax_obs, ax_rc, ax_cost, ax_adv = axes
    for i, (label, dirs) in enumerate(runs.items()):
        dfs = [read_progress(d) for d in dirs]
        n = min(len(d) for d in dfs)
        if "real_cost_rate" not in dfs[0] or not np.isfinite(_column_mean(dfs, "real_cost_rate", n)).any():
            continue
        steps, color = dfs[0]["step"].to_numpy()[:n], f"C{i}"

        def draw(ax: plt.Axes, key: str, style: str, name: str, frames=dfs, n=n, steps=steps,
                 color=color, label=label) -> None:
            ax.plot(steps, _column_mean(frames, key, n), style, color=color, label=f"{label}: {name}")

        state = "obs" if np.isfinite(_column_mean(dfs, "dyn_err_obs_1", n)).any() else "sensors"
        draw(ax_obs, f"dyn_err_{state}_1", "-", "h=1")
        draw(ax_obs, f"dyn_err_{state}_k", "--", "h=k")
        for key, style, name in (("rew_1", "-", "reward h=1"), ("rew_k", "--", "reward h=k"),
                                 ("cost_1", "-.", "cost h=1"), ("cost_k", ":", "cost h=k")):
            draw(ax_rc, f"dyn_err_{key}", style, name)
        draw(ax_cost, "real_cost_rate", "-", "real")
        draw(ax_cost, "imagined_cost_rate", "--", "imagined")
        for key, style, name in (("r_corr", "-", "corr A"), ("c_corr", "-.", "corr A_c"),
                                 ("r_scale", "--", "std ratio A"), ("c_scale", ":", "std ratio A_c")):
            draw(ax_adv, f"imag_adv_{key}", style, name)
    ax_adv.axhline(1.0, color="k", lw=0.8, ls=":")
    _dress_step_panels(axes, DYNA_PANELS)
    return axes


def plot_mstep_study(traces: Mapping[str, Sequence[Sequence[Mapping[str, float]]]],
                     target_kl: float | None = None,
                     axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """M-step candidates epoch by epoch on the same real batches (``bench.mstep.study``'s
    traces: per candidate, per batch, a dict of ``measure`` after each epoch): the realised KL
    with the early stop ``target_kl``, the reach (slope of r - 1 on v - 1) and the reward gain
    on the *held-out* batches. One thin line per batch, the mean over batches bold."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    panels = (("kl", "realised KL(pi_old || pi)", "how far the policy moved"),
              ("reach", "slope of r - 1 on v - 1", "how much of v it follows"),
              ("held_r", "mean((r - 1) A) / std(A), held out", "reward gain on fresh batches"))
    for label, per_batch in traces.items():
        color = None
        for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
            curves = [[point[key] for point in trace] for trace in per_batch]
            for y in curves:
                line, = ax.plot(np.arange(1, len(y) + 1), y, lw=0.8, alpha=0.35, color=color)
                color = line.get_color()
            longest = max(len(y) for y in curves)
            mean = [np.mean([y[min(e, len(y) - 1)] for y in curves]) for e in range(longest)]
            ax.plot(np.arange(1, longest + 1), mean, lw=2.2, marker="o", ms=4, color=color, label=label)
            ax.set(xlabel="M-step epoch (stops at the KL early stop)", ylabel=ylabel, title=title)
    if target_kl is not None:
        axes[0].axhline(target_kl, color="k", ls=":", lw=1, label="target_kl (early stop)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return axes


def plot_recovery(rows: Sequence[Mapping[str, Any]], title: str = "pure cost descent",
                  axes: Sequence[plt.Axes] | None = None) -> Sequence[plt.Axes]:
    """``bench recovery``'s picture, one colour per candidate row (``bench.recovery.summarise``:
    its ``trace`` holds, for each iteration k, k = 0 being the starting policy, the cost on fresh
    episodes as (mean, standard error) and the M-step's in-sample first-order cut per episode).

    Left: the fresh cost per iteration with a band of one standard error, and a 30% cut of the
    first row's start dotted. Right: each iteration's in-sample cut against the cut measured on
    fresh episodes (cost at k = 0 minus cost at k), with the line y = x: a point under it is a
    cut the batch promised and fresh episodes did not show.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax_cost, ax_cut = axes
    for i, row in enumerate(rows):
        trace = row["trace"]
        k = np.array([t["k"] for t in trace])
        mean = np.array([t["cost"][0] for t in trace])
        se = np.array([t["cost"][1] for t in trace])
        ax_cost.plot(k, mean, color=f"C{i}", label=row["candidate"])
        ax_cost.fill_between(k, mean - se, mean + se, color=f"C{i}", alpha=0.15)
        ax_cut.scatter([t["insample_cut"] for t in trace[1:]], row["cost_0"] - mean[1:],
                       color=f"C{i}", s=14)
    ax_cost.axhline(0.7 * rows[0]["cost_0"], color="k", ls=":", lw=1, label="30% cut")
    ax_cost.set(xlabel="recovery iterations", ylabel="episode cost, fresh episodes", title=title)
    ax_cost.legend(fontsize=8)
    lim = max([1.0, *(abs(t["insample_cut"]) for row in rows for t in row["trace"][1:])])
    ax_cut.plot([0, lim], [0, lim], color="k", ls=":", lw=1, label="fresh = in-sample")
    ax_cut.axhline(0, color="grey", lw=0.5)
    ax_cut.set(xlabel="in-sample first-order cut per episode (M-step)",
               ylabel="cut on fresh episodes (vs k = 0)",
               title="what the batch promised vs what happened")
    ax_cut.legend(fontsize=8)
    return axes
