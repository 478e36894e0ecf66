"""Notebook 06, run browser: the trailing moving average of its curves."""

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
from dynacppo_lite.plots import smooth


def reference_smoothing(y: np.ndarray, window: int) -> np.ndarray:
    """The run browser's trailing moving average: :func:`dynacppo_lite.plots.smooth`."""
    return smooth(np.asarray(y, dtype=np.float64), window)


def _smooth_variant(y, window, *, kind):
    y = np.asarray(y, dtype=np.float64)
    if kind == "centred":
        import pandas as pd

        return pd.Series(y).rolling(window, center=True, min_periods=1).mean().to_numpy()
    if kind == "zero_padded":
        return np.convolve(y, np.ones(window) / window)[:len(y)]
    if kind == "valid":
        return np.convolve(y, np.ones(window) / window, mode="valid")
    if kind == "one_more":
        return smooth(y, window + 1)
    raise ValueError(kind)


_smooth_mistake = mistake_from_variant(_smooth_variant)


_SMOOTH_MISTAKES = [
    _smooth_mistake("centred", "the window must trail: point t averages y[t - window + 1 : t + 1]; "
                    "a centred window lets the curve see the future.", kind="centred"),
    _smooth_mistake("zero_padded", "the first window - 1 points average only the values that "
                    "exist (t + 1 of them): you divided by the full window, as if zeros came "
                    "before the run.", kind="zero_padded"),
    _smooth_mistake("valid", "keep one smoothed point per iteration (same length as y): the first "
                    "points average what exists.", kind="valid"),
    _smooth_mistake("off_by_one", "the window holds exactly `window` points, the current one "
                    "included: y[t - window + 1 : t + 1].", kind="one_more"),
]


def _smooth_cases() -> list[Case]:
    rng = np.random.default_rng(21)
    y = np.cumsum(rng.normal(0.0, 1.0, 12))
    return [
        Case("window 1 (no smoothing)", (y, 1)),
        Case("window 3", (y, 3)),
        Case("window 5 on a noisy curve", (y + rng.normal(0, 2, 12), 5)),
        Case("window longer than the run", (y[:4], 10)),
    ]


#: Where the library computes this exercise's answer: a solution may not use it.
_LIBRARY = ("dynacppo_lite.plots", "dynacppo_lite.widgets")


def check_smoothing(fn: Callable[..., Any], *, quiet: bool = False, strict: bool = True,
                    library_ok: bool = False) -> CheckResult:
    """Check ``fn(y, window) -> smoothed``: the trailing moving average of the run browser,
    same length as y, the first points averaging what exists (``plots.smooth``)."""
    return run_cases("check_smoothing", fn, _smooth_cases(), reference_smoothing, _SMOOTH_MISTAKES,
                     compare_arrays(rtol=1e-9, atol=1e-9, index_name="t"), quiet,
                     strict=strict, library=_LIBRARY, library_ok=library_ok)
