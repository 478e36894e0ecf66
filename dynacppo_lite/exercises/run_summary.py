"""Notebook 05, training runs: tail means of a run and whether it meets the cost limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dynacppo_lite.exercises.checking import Case, CheckResult, Mistake, compare_tuple, run_cases


def reference_run_summary(ep_return: np.ndarray, ep_cost: np.ndarray, cost_limit: float,
                          tail: float = 0.2) -> tuple[float, float, bool]:
    """(mean return, mean cost, cost <= limit) over the last ``max(1, int(len * tail))``
    iterations of a run: the convention of the package's tests and README tables."""
    ret, cost = np.asarray(ep_return, dtype=np.float64), np.asarray(ep_cost, dtype=np.float64)
    k = max(1, int(len(ret) * tail))
    mean_ret, mean_cost = float(ret[-k:].mean()), float(cost[-k:].mean())
    return mean_ret, mean_cost, bool(mean_cost <= cost_limit)


def _summary_variant(ep_return, ep_cost, cost_limit, tail=0.2, *, kind):
    ret, cost = np.asarray(ep_return, dtype=np.float64), np.asarray(ep_cost, dtype=np.float64)
    k = max(1, int(len(ret) * tail))
    sl = {"last": slice(-1, None), "head": slice(0, k), "all": slice(None)}.get(kind, slice(-k, None))
    mr, mc = float(ret[sl].mean()), float(cost[sl].mean())
    sat = {"strict": mc < cost_limit, "reversed": mc >= cost_limit}.get(kind, mc <= cost_limit)
    return mr, mc, bool(sat)


def _summary_mistake(key: str, hint: str, kind: str) -> Mistake:
    return Mistake(key, lambda *a, **kw: _summary_variant(*a, **kw, kind=kind), hint)


_SUMMARY_MISTAKES = [
    _summary_mistake("last_value", "average the last max(1, int(len * tail)) iterations, not only "
                     "the last one: single episodes are noisy.", "last"),
    _summary_mistake("head", "the *tail* of the run is what the policy learned: take the last "
                     "k rows (y[-k:]), not the first.", "head"),
    _summary_mistake("whole_run", "average only the tail (the last k iterations), not the whole "
                     "run: early iterations are an untrained policy.", "all"),
    _summary_mistake("strict", "a run meets the constraint when its cost is *at most* the limit "
                     "(<=).", "strict"),
    _summary_mistake("reversed", "satisfied means mean cost <= cost limit (you reversed it).",
                     "reversed"),
]


def _summary_cases() -> list[Case]:
    rng = np.random.default_rng(11)
    r10, c10 = np.linspace(0, 20, 10) + rng.normal(0, 1, 10), np.linspace(40, 8, 10)
    c_eq = np.array([30.0, 20.0, 12.0, 8.0, 10.0, 10.0, 10.0, 10.0, 9.0, 11.0])
    r7, c7 = rng.normal(5, 2, 7), np.array([50.0, 30.0, 28.0, 27.0, 26.0, 24.0, 23.0])
    return [
        Case("10 iterations, tail 0.2", (r10, c10, 10.0), {"tail": 0.2}),
        Case("mean tail cost exactly at the limit", (r10, c_eq, 10.0), {"tail": 0.2}),
        Case("7 iterations, tail 0.3 (k = 2)", (r7, c7, 25.0), {"tail": 0.3}),
        Case("3 iterations, tail 0.2 (k = 1)", (r7[:3], c7[:3], 25.0), {"tail": 0.2}),
        Case("still violating at the end", (r10, c10 + 20.0, 25.0), {"tail": 0.5}),
    ]


def check_run_summary(fn: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Check ``fn(ep_return, ep_cost, cost_limit, tail=0.2) -> (mean_return, mean_cost,
    satisfied)`` over the last ``max(1, int(len * tail))`` iterations (see
    :func:`reference_run_summary`)."""
    return run_cases("check_run_summary", fn, _summary_cases(), reference_run_summary,
                     _SUMMARY_MISTAKES, compare_tuple(("mean_return", "mean_cost", "satisfied")), quiet)
