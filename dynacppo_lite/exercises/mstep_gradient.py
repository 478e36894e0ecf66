"""Notebook 04, M-step clipping: d loss / d r of the clipped tracking loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dynacppo_lite.exercises.checking import (
    Case,
    CheckResult,
    compare_arrays,
    mistake_from_variant,
    run_cases,
)
from dynacppo_lite.plots import tracking_gradient


def reference_mstep_gradient(ratio: np.ndarray, v: np.ndarray, lower_clip: float) -> np.ndarray:
    """d loss / d r_i of ``mstep.mstep_loss`` (the batch mean over N samples), by autograd."""
    return tracking_gradient(ratio, v, lower_clip)


def _grad_variant(ratio, v, lower_clip, *, clip="right", sign=1.0, scale="mean", wrt_log=False):
    r, v = np.asarray(ratio, dtype=np.float64), np.asarray(v, dtype=np.float64)
    n = r.size
    g = -(v - r)
    if clip == "right":
        g = np.where((r < lower_clip) & (v < r), 0.0, g)
    elif clip == "wrong_side":
        g = np.where((r < lower_clip) & (v > r), 0.0, g)
    elif clip == "all_below":
        g = np.where(r < lower_clip, 0.0, g)
    elif clip == "on_v":
        g = np.where(v < lower_clip, 0.0, g)
    g = sign * g / (n if scale == "mean" else 1)
    return g * r if wrt_log else g


_grad_mistake = mistake_from_variant(_grad_variant)


_MSTEP_MISTAKES = [
    _grad_mistake(
        "no_clip",
        "with the lower clip, a sample whose ratio is already below b (r < b) and whose target "
        "is lower still (v < r) gets *zero* gradient: the clip stops pushing r further down. "
        "You returned -(v - r)/N there.", clip="none"),
    _grad_mistake(
        "clip_wrong_side",
        "the clip stops only the *downward* push: below b, zero the gradient where v < r (the "
        "loss would lower r), keep it where v > r (it raises r back toward v).", clip="wrong_side"),
    _grad_mistake(
        "clip_all_below_b",
        "below b the gradient is zero only where it would push r further down (v < r); where "
        "v > r it still pulls r up toward v.", clip="all_below"),
    _grad_mistake(
        "clip_on_target",
        "the clip acts on the policy's ratio r (clamp(r, min=b)), not on the target v.",
        clip="on_v"),
    _grad_mistake(
        "sign",
        "sign: the loss is minimised, so its gradient is -(v - r)/N = (r - v)/N where the clip is "
        "inactive (descending it moves r toward v).", sign=-1.0),
    _grad_mistake(
        "sum_not_mean",
        "mstep_loss is a *mean* over the batch: each sample's gradient carries a factor 1/N.",
        scale="sum"),
    _grad_mistake(
        "wrt_log_ratio",
        "this is the gradient with respect to log r (= logp_new); the exercise asks for d loss / "
        "d r: divide by r.", wrt_log=True),
]


def _mstep_cases() -> list[Case]:
    r1 = np.array([1.3, 0.9, 1.05, 0.75, 1.6])
    v1 = np.array([1.0, 1.2, 0.8, 0.75, 1.9])
    r2 = np.array([0.3, 0.45, 0.9, 1.2, 1.5, 0.55, 0.5])
    v2 = np.array([0.2, 0.8, 1.1, 0.7, 1.5, 0.4, 0.35])
    rng = np.random.default_rng(4)
    r3 = np.exp(rng.normal(0.0, 0.5, 50))
    v3 = np.exp(rng.normal(0.0, 0.6, 50))
    return [
        Case("all ratios above the clip", (r1, v1, 0.6)),
        Case("ratios below b = 0.6, targets on both sides", (r2, v2, 0.6)),
        Case("random batch, b = 0.4", (r3, v3, 0.4)),
        Case("random batch, b = 0.8", (r3[::-1].copy(), v3, 0.8)),
    ]


#: Where the library computes this exercise's answer: a solution may not use it.
_LIBRARY = ("dynacppo_lite.mstep", "dynacppo_lite.plots")


def check_mstep_gradient(fn: Callable[..., Any], *, quiet: bool = False, strict: bool = True,
                         library_ok: bool = False) -> CheckResult:
    """Check ``fn(ratio, v, lower_clip) -> grad``: d loss / d r_i (N,) of the clipped tracking
    loss ``-mean(min((v - r).detach() r, (v - r).detach() clamp(r, min=b)))``. The reference is
    autograd through the library's ``mstep.mstep_loss``."""
    return run_cases("check_mstep_gradient", fn, _mstep_cases(), reference_mstep_gradient,
                     _MSTEP_MISTAKES, compare_arrays(rtol=1e-6, atol=1e-9), quiet,
                     strict=strict, library=_LIBRARY, library_ok=library_ok)
