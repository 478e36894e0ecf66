"""Notebook 03, E-step geometry: which case of Theorem 3.4 a batch falls in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dynacppo_lite.exercises.checking import Case, CheckResult, mistake_from_variant, run_cases
from dynacppo_lite.plots import ESTEP_CASES, estep_plane, synthetic_advantages


def reference_estep_case(adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
                         kl_budget: float) -> str:
    """``"unconstrained"``, ``"constrained"`` or ``"infeasible"``: Theorem 3.4's case of the
    E-step problem without the element-wise bound (:func:`dynacppo_lite.plots.estep_plane`)."""
    return estep_plane(adv_r, adv_c, cost_margin=cost_margin, kl_budget=kl_budget).case


def _case_variant(adv_r, adv_c, *, cost_margin, kl_budget, center=True, n_radius=True, n_times_margin=True,
                  infeasible_if_violating=False, unconstrained_if_safe=False, reach_alpha=False,
                  ignore_cost=False):
    a = np.asarray(adv_r, dtype=np.float64)
    c = np.asarray(adv_c, dtype=np.float64)
    n = a.size
    if center:
        a, c = a - a.mean(), c - c.mean()
    radius = np.sqrt(2 * kl_budget * (n if n_radius else 1))
    cost_bound = cost_margin * (n if n_times_margin else 1)
    if infeasible_if_violating and cost_margin < 0:
        return "infeasible"
    if unconstrained_if_safe and cost_margin >= 0:
        return "unconstrained"
    alpha = float(c @ a) / float(np.linalg.norm(a))
    if ignore_cost:  # the trust region alone decides: never on the cost line
        return "infeasible" if cost_bound < -radius * float(np.linalg.norm(c)) else "unconstrained"
    if alpha * radius <= cost_bound:
        return "unconstrained"
    reach = abs(alpha) if reach_alpha else float(np.linalg.norm(c))
    return "infeasible" if cost_bound < -radius * reach else "constrained"


_case_mistake = mistake_from_variant(_case_variant)


_ESTEP_MISTAKES = [
    _case_mistake(
        "ignores_cost_constraint",
        "the reward step x = R A/|A| is the answer only if it also meets the cost constraint: "
        "check R (A . A_c)/|A| <= N d' (centred); when it does not, but the disc still reaches "
        "the cost line, the batch is \"constrained\". You never return \"constrained\".",
        ignore_cost=True),
    _case_mistake(
        "not_centred",
        "mean(v) = 1 means sum(x) = 0, so only the *centred* advantages matter (A - mean(A), "
        "A_c - mean(A_c)); subtract the means before any dot product or norm.", center=False),
    _case_mistake(
        "radius_without_n",
        "the trust region mean(x^2) <= 2 KL' is, for the sum-vector x, |x|^2 <= 2 N KL': the "
        "radius is sqrt(2 N kl_budget).", n_radius=False),
    _case_mistake(
        "margin_without_n",
        "the cost constraint mean(x A_c) <= d' is, as a dot product, x . A_c <= N d': compare "
        "with N * cost_margin.", n_times_margin=False),
    _case_mistake(
        "violation_means_infeasible",
        "a negative margin says the current policy violates the limit, not that the E-step is "
        "infeasible: the cost line may still cut the trust region. It is infeasible only if "
        "even the most cost-reducing point of the disc, -R A_c/|A_c|, has x . A_c > N d', i.e. "
        "N d' < -R |A_c|.", infeasible_if_violating=True),
    _case_mistake(
        "safe_means_unconstrained",
        "a non-negative margin does not make the reward direction feasible: x = R A/|A| changes "
        "the cost by R (A_c . A)/|A|, which may exceed N d'. Test that point.",
        unconstrained_if_safe=True),
    _case_mistake(
        "reach_along_a",
        "the disc's lowest cost is at -R A_c/|A_c|, where x . A_c = -R |A_c| (the full length of "
        "centred A_c, not only its component along A).", reach_alpha=True),
]


def _estep_cases() -> list[Case]:
    kl = 0.02
    specs = [  # (name, n, correlation, cost_margin, seed, mean of A, mean of A_c)
        ("uncorrelated, safe: the reward direction is feasible", 64, 0.0, 0.05, 1, 0.0, 0.0),
        ("correlated, small margin: on the cost line", 64, 0.7, 0.01, 2, 0.0, 0.0),
        ("violating, but recoverable in one step", 64, 0.7, -0.05, 3, 0.0, 0.0),
        ("violating beyond reach: infeasible", 64, 0.7, -0.5, 4, 0.0, 0.0),
        ("weakly correlated, violating: the line still cuts the disc", 64, 0.3, -0.12, 9, 0.0, 0.0),
        ("means far from 0, uncorrelated, safe", 64, 0.0, 0.05, 5, 1.0, 2.0),
        ("anti-correlated, violating", 256, -0.6, -0.02, 6, 0.0, 0.0),
        ("large batch, small positive margin", 1024, 0.3, 0.005, 8, 0.0, 0.0),
    ]
    cases = []
    for name, n, corr, margin, seed, mean_a, mean_c in specs:
        a, c = synthetic_advantages(n, corr, seed, reward_mean=mean_a, cost_mean=mean_c)
        cases.append(Case(name, (a, c), {"cost_margin": margin, "kl_budget": kl}))
    return cases


def _compare_label(got: Any, want: Any) -> tuple[bool, str]:
    if got not in ESTEP_CASES:
        return False, f"return one of {ESTEP_CASES}, got {got!r}"
    return (got == want), f"expected {want!r}, got {got!r}"


#: Where the library computes this exercise's answer: a solution may not use it.
_LIBRARY = ("dynacppo_lite.estep", "dynacppo_lite.plots")


def check_estep_case(fn: Callable[..., Any], *, quiet: bool = False, strict: bool = True,
                     library_ok: bool = False) -> CheckResult:
    """Check ``fn(adv_r, adv_c, *, cost_margin, kl_budget) -> str``: the case of Theorem 3.4
    (``"unconstrained"``, ``"constrained"`` or ``"infeasible"``), no element-wise bound.
    The reference agrees with ``estep.solve_estep`` (see tests/test_exercises.py)."""
    return run_cases("check_estep_case", fn, _estep_cases(), reference_estep_case, _ESTEP_MISTAKES,
                     _compare_label, quiet,
                     strict=strict, library=_LIBRARY, library_ok=library_ok)
