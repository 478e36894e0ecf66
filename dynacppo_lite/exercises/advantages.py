"""Notebook 02, dual advantages: single-stream GAE with termination vs truncation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dynacppo_lite.exercises.checking import (
    Case,
    CheckResult,
    compare_arrays,
    mistake_from_variant,
    run_cases,
)
from dynacppo_lite.gae import gae


def reference_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                  terminated: np.ndarray, truncated: np.ndarray, *, gamma: float,
                  lam: float) -> np.ndarray:
    """GAE advantages (T,) of one env's rollout, from the library's ``gae.gae`` (the stream
    function behind ``gae.dual_gae``).

    ``values[t]`` = V(s_t); ``next_values[t]`` = V(s_{t+1}) of the true next state (at an episode
    end: of the episode's final observation), as ``rollout.Collector`` records them.
    """
    adv = gae(np.asarray(rewards, dtype=np.float64), values, next_values,
              np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool),
              gamma=gamma, lam=lam)
    return np.asarray(adv, dtype=np.float64)


def _gae_variant(rewards, values, next_values, terminated, truncated, *, gamma, lam,
                 zero_on_trunc=False, zero_on_term=True, stop_on_term=True, stop_on_trunc=True,
                 trace="gamma*lam", delta="gamma", next_from_values=False, as_returns=False):
    """A (possibly deliberately wrong) GAE, for recognising typical mistakes only."""
    r, v, nv = (np.asarray(x, dtype=np.float64) for x in (rewards, values, next_values))
    term, trunc = np.asarray(terminated, bool), np.asarray(truncated, bool)
    T = len(r)
    if next_from_values:  # V(s_{t+1}) read from values[t + 1], even across an episode end
        nv = np.concatenate([v[1:], nv[-1:]])
    g = {"gamma": gamma, "lam": lam}[delta]
    k = {"gamma*lam": gamma * lam, "gamma": gamma, "lam": lam}[trace]
    zero = (term if zero_on_term else np.zeros(T, bool)) | (trunc if zero_on_trunc else np.zeros(T, bool))
    stop = (term if stop_on_term else np.zeros(T, bool)) | (trunc if stop_on_trunc else np.zeros(T, bool))
    delta = r + g * np.where(zero, 0.0, nv) - v
    adv = np.zeros(T)
    last = 0.0
    for t in reversed(range(T)):
        last = delta[t] + (0.0 if stop[t] else k * last)
        adv[t] = last
    return adv + v if as_returns else adv


_gae_mistake = mistake_from_variant(_gae_variant)


_GAE_MISTAKES = [
    _gae_mistake(
        "truncation_as_termination",
        "a *truncated* step (time limit) did not really end the episode: its next state still "
        "has value, so bootstrap from next_values[t] = V(s_{t+1}) and only stop the recursion "
        "there. You zeroed the next value as if the episode had terminated (the original "
        "Dyna-CPPO code's bug).", zero_on_trunc=True),
    _gae_mistake(
        "bootstrap_after_termination",
        "on a *terminated* step there is no future: the next value is 0 (delta_t = r_t - V(s_t)); "
        "you bootstrapped from next_values[t].", zero_on_term=False),
    _gae_mistake(
        "values_across_boundary",
        "at an episode end, values[t + 1] is the value of the *next episode's* first state; "
        "use next_values[t] (V of the episode's true final observation).", next_from_values=True),
    _gae_mistake(
        "no_stop_at_truncation",
        "after a truncation the next step belongs to a new episode: stop the recursion there "
        "too (A_t = delta_t). Only the bootstrap differs between truncation and termination.",
        stop_on_trunc=False),
    _gae_mistake(
        "no_stop_at_all",
        "the recursion ran across episode ends: reset it (A_t = delta_t) wherever "
        "terminated[t] or truncated[t].", stop_on_term=False, stop_on_trunc=False),
    _gae_mistake(
        "no_stop_at_termination",
        "after a termination the next step belongs to a new episode: stop the recursion there "
        "(A_t = delta_t).", stop_on_term=False),
    _gae_mistake(
        "trace_gamma_only",
        "the recursion factor is gamma * lam (A_t = delta_t + gamma lam A_{t+1}); you used gamma.",
        trace="gamma"),
    _gae_mistake(
        "trace_lam_only",
        "the recursion factor is gamma * lam (A_t = delta_t + gamma lam A_{t+1}); you used lam.",
        trace="lam"),
    _gae_mistake(
        "delta_with_lam",
        "the TD error uses gamma: delta_t = r_t + gamma V(s_{t+1}) - V(s_t); lam only enters the "
        "recursion.", delta="lam"),
    _gae_mistake(
        "returned_returns",
        "return the advantages A_t, not the returns A_t + V(s_t).", as_returns=True),
]


def _gae_case(name: str, T: int, seed: int, term_at: Sequence[int] = (), trunc_at: Sequence[int] = (),
              gamma: float = 0.9, lam: float = 0.8) -> Case:
    rng = np.random.default_rng(seed)
    rewards = rng.normal(0.5, 1.0, T)
    values = rng.normal(1.0, 1.0, T)
    next_values = np.concatenate([values[1:], rng.normal(1.0, 1.0, 1)])
    terminated, truncated = np.zeros(T, bool), np.zeros(T, bool)
    terminated[list(term_at)] = True
    truncated[list(trunc_at)] = True
    for t in (*term_at, *trunc_at):  # V of the true final observation, not of the next start
        next_values[t] = rng.normal(3.0, 1.0)
    return Case(name, (rewards, values, next_values, terminated, truncated),
                {"gamma": gamma, "lam": lam})


def _gae_cases() -> list[Case]:
    return [
        _gae_case("one episode, no end inside the batch", 6, 1),
        _gae_case("terminated at t=3", 8, 2, term_at=[3]),
        _gae_case("truncated (time limit) at t=3", 8, 3, trunc_at=[3]),
        _gae_case("terminations and truncations, gamma=0.99, lam=0.95", 30, 4, term_at=[6, 21],
                  trunc_at=[13, 29], gamma=0.99, lam=0.95),
        _gae_case("truncated on the last step", 5, 5, trunc_at=[4], gamma=0.97, lam=0.9),
    ]


#: Where the library computes this exercise's answer: a solution may not use it.
_LIBRARY = ("dynacppo_lite.gae",)


def check_gae(fn: Callable[..., Any], *, quiet: bool = False, strict: bool = True,
              library_ok: bool = False) -> CheckResult:
    """Check ``fn(rewards, values, next_values, terminated, truncated, *, gamma, lam) -> adv``.

    All inputs are (T,) arrays of one env; returns the GAE advantages (T,). The reference is
    the library's ``gae.gae``, the stream function of ``gae.dual_gae`` (see
    :func:`reference_gae`).
    """
    return run_cases("check_gae", fn, _gae_cases(), reference_gae, _GAE_MISTAKES,
                     compare_arrays(rtol=1e-6, atol=1e-8, index_name="t"), quiet,
                     strict=strict, library=_LIBRARY, library_ok=library_ok)
