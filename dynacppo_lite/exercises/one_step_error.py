"""Notebook 01, dynamics: the one-step error of the ensemble against predict-no-change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dynacppo_lite.exercises.checking import Case, CheckResult, Mistake, compare_tuple, run_cases


def reference_one_step_error(obs: np.ndarray, rew: np.ndarray, cost: np.ndarray,
                             next_obs: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(model MSE, predict-no-change MSE), as ``DynamicsEnsemble.one_step_loss`` defines them.

    The model predicts y = (s' - s, r, c) (B, obs_dim + 2); ``pred`` is its ensemble-mean
    prediction. Model MSE = mean((pred - y)^2) over samples and the obs_dim + 2 entries; the
    no-change baseline predicts s' = s, r = c = 0, i.e. y_hat = 0, so its MSE is mean(y^2).
    """
    y = np.concatenate([next_obs - obs, np.asarray(rew)[:, None], np.asarray(cost)[:, None]], axis=1)
    return float(np.mean((pred - y) ** 2)), float(np.mean(y ** 2))


def _one_step_cases() -> list[Case]:
    cases = []
    for k, (b, d) in enumerate([(6, 3), (40, 5), (200, 8)]):
        rng = np.random.default_rng(100 + k)
        obs = rng.normal(2.0, 1.0, (b, d))  # far from 0: a zero-state baseline is very wrong
        next_obs = obs + rng.normal(0.0, 0.1, (b, d))
        rew = rng.normal(0.5, 0.3, b)
        cost = (rng.random(b) < 0.3).astype(float)
        y = np.concatenate([next_obs - obs, rew[:, None], cost[:, None]], 1)
        pred = y + rng.normal(0.0, 0.05, y.shape)
        cases.append(Case(f"{b} samples, obs_dim {d}", (obs, rew, cost, next_obs, pred)))
    return cases


def _one_step_variant(obs, rew, cost, next_obs, pred, *, kind):
    """A deliberately wrong (model MSE, baseline MSE), for recognising typical mistakes."""
    def cols(states: np.ndarray) -> np.ndarray:
        return np.concatenate([states, rew[:, None], cost[:, None]], 1)

    y, d = cols(next_obs - obs), obs.shape[1]
    model, base = float(np.mean((pred - y) ** 2)), float(np.mean(y ** 2))
    if kind == "next_state_target":
        return float(np.mean((pred - cols(next_obs)) ** 2)), base
    if kind == "zero_state_baseline":
        return model, float(np.mean(cols(next_obs) ** 2))
    if kind == "rmse":
        return float(np.sqrt(model)), float(np.sqrt(base))
    if kind == "states_only":
        return float(np.mean((pred[:, :d] - y[:, :d]) ** 2)), float(np.mean(y[:, :d] ** 2))
    if kind == "sum":
        return float(np.sum((pred - y) ** 2)), float(np.sum(y ** 2))
    if kind == "swapped":
        return base, model
    raise ValueError(kind)


def _one_step_mistake(kind: str, hint: str) -> Mistake:
    return Mistake(kind, lambda *a, **kw: _one_step_variant(*a, **kw, kind=kind), hint)


_ONE_STEP_MISTAKES = [
    _one_step_mistake(
        "next_state_target",
        "the model predicts the *change* s' - s (plus r and c), not s' itself: compare "
        "pred[:, :obs_dim] with next_obs - obs (or obs + pred[:, :obs_dim] with next_obs)."),
    _one_step_mistake(
        "zero_state_baseline",
        "predict-no-change means s' = s (the state stays where it is), not s' = 0: its error on "
        "the state part is mean((next_obs - obs)^2)."),
    _one_step_mistake(
        "rmse", "return the mean *squared* error (no square root), like "
        "DynamicsEnsemble.one_step_loss."),
    _one_step_mistake(
        "states_only", "the target y = (s' - s, r, c) includes the reward and the cost columns: "
        "average over all obs_dim + 2 entries."),
    _one_step_mistake(
        "sum", "average the squared errors (np.mean) over samples and entries; a sum grows with "
        "the batch size."),
    _one_step_mistake("swapped", "return (model MSE, baseline MSE) in this order."),
]


#: Where the library computes this exercise's answer: a solution may not use it.
_LIBRARY = ("dynacppo_lite.dynamics",)


def check_one_step_error(fn: Callable[..., Any], *, quiet: bool = False, strict: bool = True,
                         library_ok: bool = False) -> CheckResult:
    """Check ``fn(obs, rew, cost, next_obs, pred) -> (model_mse, baseline_mse)``.

    obs/next_obs (B, obs_dim), rew/cost (B,), pred (B, obs_dim + 2): the ensemble-mean
    prediction of y = (s' - s, r, c). See :func:`reference_one_step_error`.
    """
    return run_cases("check_one_step_error", fn, _one_step_cases(), reference_one_step_error,
                     _ONE_STEP_MISTAKES, compare_tuple(("model_mse", "baseline_mse")), quiet,
                     strict=strict, library=_LIBRARY, library_ok=library_ok)
