"""Notebook 05, training runs: a run's final score (last 10% of steps) against its cost limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dynacppo_lite.exercises.checking import (
    Case,
    CheckResult,
    compare_tuple,
    mistake_from_variant,
    run_cases,
)
from dynacppo_lite.runlog import final_score


def reference_run_summary(step: np.ndarray, ep_return: np.ndarray, ep_cost: np.ndarray,
                          cost_limit: float) -> tuple[float, float, bool]:
    """(final return, final cost, final cost <= limit) of a run: means over the last 10% of
    its environment steps, the rows with ``step > 0.9 * step[-1]``. The package's one
    final-score convention (:func:`dynacppo_lite.runlog.final_score`), used by the benchmarks,
    plots, evaluation and README tables."""
    mean_ret, mean_cost = final_score(step, ep_return), final_score(step, ep_cost)
    return mean_ret, mean_cost, bool(mean_cost <= cost_limit)


def _summary_variant(step, ep_return, ep_cost, cost_limit, *, kind):
    step, ret, cost = (np.asarray(x, dtype=np.float64) for x in (step, ep_return, ep_cost))
    end = step.max()
    keep = {"last": step == end, "head": step <= 0.1 * end, "all": step > -np.inf,
            "boundary": step >= 0.9 * end, "tail20": step > 0.8 * end}.get(kind, step > 0.9 * end)
    mr, mc = float(ret[keep].mean()), float(cost[keep].mean())
    sat = {"strict": mc < cost_limit, "reversed": mc >= cost_limit}.get(kind, mc <= cost_limit)
    return mr, mc, bool(sat)


_summary_mistake = mistake_from_variant(_summary_variant)


#: (key, hint, the wrong variant's ``kind``): the mistakes the checker recognises.
_SUMMARY_MISTAKE_TABLE = [
    ("last_value", "average the rows of the last 10% of steps, not only the last row: single "
                   "episodes are noisy.", "last"),
    ("head", "the *end* of the run is what the policy learned: keep the rows with "
             "step > 0.9 * step[-1], not the first 10%.", "head"),
    ("whole_run", "average only the last 10% of steps, not the whole run: early iterations are "
                  "an untrained policy.", "all"),
    ("boundary", "the last 10% of steps is step > 0.9 * step[-1] (strictly): the row exactly at "
                 "90% belongs to the earlier part.", "boundary"),
    ("tail_20", "the convention is the last 10% of steps (step > 0.9 * step[-1]), not 20%.",
     "tail20"),
    ("strict", "a run meets the constraint when its cost is *at most* the limit (<=).", "strict"),
    ("reversed", "satisfied means final cost <= cost limit (you reversed it).", "reversed"),
]
_SUMMARY_MISTAKES = [_summary_mistake(key, hint, kind=kind) for key, hint, kind in _SUMMARY_MISTAKE_TABLE]


def _summary_cases() -> list[Case]:
    rng = np.random.default_rng(11)
    s10 = np.arange(1, 11) * 1000.0
    r10, c10 = np.linspace(0, 20, 10) + rng.normal(0, 1, 10), np.linspace(40, 8, 10)
    s30 = np.arange(1, 31) * 2000.0
    r30, c30 = np.linspace(0, 30, 30) + rng.normal(0, 1, 30), np.linspace(40, 9, 30)
    c_eq = c30.copy()
    c_eq[-3:] = [10.0, 9.0, 11.0]  # rows with step > 54000: mean exactly 10
    r7, c7 = rng.normal(5, 2, 7), np.array([50.0, 30.0, 28.0, 27.0, 26.0, 24.0, 23.0])
    return [
        Case("10 iterations of 1000 steps", (s10, r10, c10, 10.0)),
        Case("30 iterations: three in the last 10%", (s30, r30, c30, 10.0)),
        Case("final cost exactly at the limit", (s30, r30, c_eq, 10.0)),
        Case("7 iterations of 512 steps", (np.arange(1, 8) * 512.0, r7, c7, 25.0)),
        Case("still violating at the end", (s30, r30, c30 + 20.0, 25.0)),
    ]


#: Where the library computes this exercise's answer: a solution may not use it.
_LIBRARY = ("dynacppo_lite.runlog", "dynacppo_lite.plots")


def check_run_summary(fn: Callable[..., Any], *, quiet: bool = False, strict: bool = True,
                      library_ok: bool = False) -> CheckResult:
    """Check ``fn(step, ep_return, ep_cost, cost_limit) -> (final_return, final_cost,
    satisfied)``: means over the rows with ``step > 0.9 * step[-1]`` (see
    :func:`reference_run_summary`)."""
    return run_cases("check_run_summary", fn, _summary_cases(), reference_run_summary,
                     _SUMMARY_MISTAKES, compare_tuple(("mean_return", "mean_cost", "satisfied")), quiet,
                     strict=strict, library=_LIBRARY, library_ok=library_ok)
