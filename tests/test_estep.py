"""The E-step against an independent convex solver (SciPy SLSQP) and Theorem 3.4's geometry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from dynacppo_lite import estep
from dynacppo_lite.estep import solve_estep

# ---------------------------------------------------------------- independent reference


def slsqp(obj: np.ndarray, caps: list[tuple[np.ndarray, float]], *, kl: float,
          lb: float) -> np.ndarray:
    """argmax mean(v obj) s.t. mean(v) = 1, mean((v-1) h) <= cap for (h, cap) in caps,
    mean((v-1)^2) <= 2 kl, v >= lb: SLSQP from v = 1 (feasibility checked by the caller)."""
    n = obj.size
    cons = [{"type": "eq", "fun": lambda v: v.mean() - 1.0, "jac": lambda v: np.full(n, 1 / n)},
            {"type": "ineq", "fun": lambda v: 2 * kl - np.mean((v - 1) ** 2),
             "jac": lambda v: -2 * (v - 1) / n}]
    cons += [{"type": "ineq", "fun": lambda v, h=h, cap=cap: cap - np.mean((v - 1) * h),
              "jac": lambda v, h=h: -h / n} for h, cap in caps]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SLSQP's own clipping to the bounds
        res = minimize(lambda v: -np.mean(v * obj), np.ones(n), jac=lambda v: -obj / n,
                       bounds=[(lb, None)] * n, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-12, "maxiter": 1000})
    return res.x


def assert_feasible(v: np.ndarray, caps: list[tuple[np.ndarray, float]], *, kl: float,
                    lb: float, tol: float = 1e-8) -> None:
    assert np.all(np.isfinite(v))
    assert abs(v.mean() - 1.0) <= 1e-10
    assert v.min() >= lb
    assert np.mean((v - 1) ** 2) <= 2 * kl * (1 + 1e-9)
    for h, cap in caps:
        assert np.mean((v - 1) * h) <= cap + tol * (abs(cap) + np.std(h) * np.sqrt(2 * kl))


def assert_same_optimum(v: np.ndarray, v_ref: np.ndarray, obj: np.ndarray,
                        caps: list[tuple[np.ndarray, float]], *, kl: float, lb: float) -> None:
    """v is optimal: the reference is feasible and v's gain matches it to 1e-6 relative."""
    assert_feasible(v_ref, caps, kl=kl, lb=lb, tol=1e-6)
    gain, gain_ref = np.mean((v - 1) * obj), np.mean((v_ref - 1) * obj)
    scale = max(abs(gain_ref), np.std(obj) * np.sqrt(2 * kl))  # the largest gain possible
    assert gain == pytest.approx(gain_ref, abs=1e-6 * scale)


# ---------------------------------------------------------------- instances


def instance(family: str, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(adv_r, adv_c, solve_estep keywords) of a named family."""
    rng = np.random.default_rng(seed)
    n, lb, kl, margin = 80, 0.6, 0.05, -0.1
    a = rng.standard_normal(n)
    if family == "random":
        c = rng.standard_normal(n)
    elif family == "sparse-cost":
        c = rng.exponential(size=n) * (rng.random(n) < 0.1)
    elif family == "correlated":
        c = a + 0.1 * rng.standard_normal(n)
    elif family == "anti-correlated":
        c = -a + 0.1 * rng.standard_normal(n)
    elif family == "many-clipped":  # about 40% of the entries end on the bound
        lb, kl = 0.8, 0.1
        c = 0.5 * a + rng.standard_normal(n)
    elif family == "heavy-tailed":
        n, lb, kl, margin = 40, 0.8, 0.08, 0.0
        a = rng.standard_t(2, n)
        c = 0.5 * a + rng.standard_t(2, n)
    elif family == "no-trust-region":  # (1 - lb)^2 (n - 1) < 2 kl: the ball never binds
        n, lb, kl, margin = 12, 0.9, 0.5, -0.05
        a, c = rng.standard_normal(n), rng.standard_normal(n)
    else:
        raise AssertionError(family)
    cm = margin * np.std(c) * np.sqrt(2 * kl)
    return a, c, {"cost_margin": cm, "kl_budget": kl, "lower_bound": lb}


FAMILIES = ["random", "sparse-cost", "correlated", "anti-correlated", "many-clipped",
            "heavy-tailed", "no-trust-region"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_matches_convex_solver(family: str, seed: int) -> None:
    a, c, kw = instance(family, seed)
    kl, lb = kw["kl_budget"], kw["lower_bound"]
    res = solve_estep(a, c, **kw)
    assert res.feasible and res.mode == "normal"
    caps = [(c, kw["cost_margin"])]
    assert_feasible(res.v, caps, kl=kl, lb=lb)
    assert_same_optimum(res.v, slsqp(a, caps, kl=kl, lb=lb), a, caps, kl=kl, lb=lb)
    assert res.objective == pytest.approx(np.mean(res.v * a))
    assert res.cost_change == pytest.approx(np.mean((res.v - 1) * c))


@pytest.mark.parametrize("family", FAMILIES)
def test_heuristic_is_feasible_and_never_beats_exact(family: str) -> None:
    a, c, kw = instance(family, 0)
    exact, heur = solve_estep(a, c, **kw), solve_estep(a, c, method="heuristic", **kw)
    assert heur.feasible
    assert_feasible(heur.v, [(c, kw["cost_margin"])], kl=kw["kl_budget"],
                    lb=kw["lower_bound"])
    assert exact.objective >= heur.objective - 1e-12


def test_exact_beats_heuristic_where_assumption_3_5_fails() -> None:
    """Four samples. The first pass pushes sample 2 (bad reward, but the best cost) below the
    bound, and the heuristic fixes it there for good; the optimum keeps it free and fixes
    sample 1 instead. The heuristic stays feasible but loses reward."""
    a, c = np.array([0.0, -1.0, -2.0, -1.0]), np.array([1.0, 0.0, -3.0, 3.0])
    kw = {"cost_margin": 0.0, "kl_budget": 0.1, "lower_bound": 0.8}
    exact, heur = solve_estep(a, c, **kw), solve_estep(a, c, method="heuristic", **kw)
    caps = [(c, 0.0)]
    assert_feasible(heur.v, caps, kl=0.1, lb=0.8)
    assert_same_optimum(exact.v, slsqp(a, caps, kl=0.1, lb=0.8), a, caps, kl=0.1, lb=0.8)
    assert heur.v[2] == 0.8 < exact.v[2]
    assert exact.objective - heur.objective > 0.05


def test_heuristic_can_miss_feasibility_that_exact_finds() -> None:
    """A re-solve on the free entries can run out of cost budget although the QCQP is feasible."""
    rng = np.random.default_rng(3)
    a = rng.standard_t(2, 50)
    c = 0.5 * a + rng.standard_t(2, 50)
    kw = {"cost_margin": -0.2 * np.std(c) * np.sqrt(0.4), "kl_budget": 0.2, "lower_bound": 0.6}
    exact, heur = solve_estep(a, c, **kw), solve_estep(a, c, method="heuristic", **kw)
    assert exact.feasible and not heur.feasible and heur.mode == "recovery"
    assert_feasible(exact.v, [(c, kw["cost_margin"])], kl=0.2, lb=0.6)


@pytest.mark.parametrize("family", ["random", "heavy-tailed"])
def test_bisection_fallback_matches_convex_solver(family: str) -> None:
    """The exact method's fallback (used where the active-set iteration cannot certify)."""
    a, c, kw = instance(family, 1)
    n, kl, lb = a.size, kw["kl_budget"], kw["lower_bound"]
    x = estep._bisect_cost_angle(a, c, n * kw["cost_margin"], lb - 1, 2 * n * kl)
    caps = [(c, kw["cost_margin"])]
    assert x is not None
    assert_same_optimum(1 + x, slsqp(a, caps, kl=kl, lb=lb), a, caps, kl=kl, lb=lb)


def test_many_clipped_family_clips_many() -> None:
    a, c, kw = instance("many-clipped", 0)
    res = solve_estep(a, c, **kw)
    assert np.mean(res.v == kw["lower_bound"]) > 0.3 and res.clip_passes >= 2


@pytest.mark.parametrize("family", ["random", "sparse-cost", "many-clipped"])
def test_exact_agrees_with_its_fallback_at_scale(family: str) -> None:
    """N = 3000: the active-set answer and the bisection answer, two different algorithms."""
    rng = np.random.default_rng(11)
    a = rng.standard_t(3, 3000)
    c = {"random": rng.standard_normal(3000),
         "sparse-cost": rng.exponential(size=3000) * (rng.random(3000) < 0.05),
         "many-clipped": 0.5 * a + rng.standard_normal(3000)}[family]
    lb = 0.8 if family == "many-clipped" else 0.6
    cm = -0.1 * np.std(c) * np.sqrt(2 * 0.05)
    res = solve_estep(a, c, cost_margin=cm, kl_budget=0.05, lower_bound=lb)
    x = estep._bisect_cost_angle(a, c, 3000 * cm, lb - 1, 2 * 3000 * 0.05)
    assert x is not None
    assert_feasible(res.v, [(c, cm)], kl=0.05, lb=lb)
    scale = np.std(a) * np.sqrt(0.1)
    assert np.mean(res.v * a) == pytest.approx(np.mean((1 + x) * a), abs=1e-9 * scale)
    heur = solve_estep(a, c, cost_margin=cm, kl_budget=0.05, lower_bound=lb, method="heuristic")
    assert res.objective >= heur.objective - 1e-12


# ---------------------------------------------------------------- Theorem 3.4 (no clipping)

N, KL = 60, 0.01  # R / sqrt(N) = 0.14: no entry comes near v = 0


def plane_basis(a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e1 = (a - a.mean()) / np.linalg.norm(a - a.mean())
    perp = (c - c.mean()) - ((c - c.mean()) @ e1) * e1
    return e1, perp / np.linalg.norm(perp)


@pytest.fixture
def plane_instance() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    a = rng.standard_normal(N)
    return a, 0.6 * a + rng.standard_normal(N)  # the pure reward direction raises the cost


@pytest.mark.parametrize("method", ["exact", "heuristic"])
def test_case_1_reward_direction_when_it_is_feasible(plane_instance, method: str) -> None:
    a, c = plane_instance
    res = solve_estep(a, c, cost_margin=10.0, kl_budget=KL, lower_bound=0.0, method=method)
    radius = np.sqrt(2 * N * KL)
    a_hat = a - a.mean()
    np.testing.assert_allclose(res.v - 1, radius * a_hat / np.linalg.norm(a_hat), atol=1e-12)
    assert res.angle == pytest.approx(0.0, abs=1e-9)
    assert (res.feasible, res.mode, res.clip_passes) == (True, "normal", 0)


@pytest.mark.parametrize("method", ["exact", "heuristic"])
def test_case_2_on_the_cost_hyperplane(plane_instance, method: str) -> None:
    a, c = plane_instance
    cm = -0.05
    res = solve_estep(a, c, cost_margin=cm, kl_budget=KL, lower_bound=0.0, method=method)
    x = res.v - 1
    assert res.feasible and res.mode == "normal"
    assert np.mean(x * c) == pytest.approx(cm, rel=1e-9)  # on the hyperplane
    assert np.mean(x * x) == pytest.approx(2 * KL, rel=1e-9)  # on the circle
    e1, e2 = plane_basis(a, c)
    np.testing.assert_allclose(x, (x @ e1) * e1 + (x @ e2) * e2, atol=1e-12)  # in the plane
    # Brute force over the circle: the cost-feasible angle of largest reward.
    phi = np.linspace(-np.pi, np.pi, 400_001)
    def along(u: np.ndarray) -> np.ndarray:  # u . y(phi) for y(phi) = R (cos e1 + sin e2)
        return np.sqrt(2 * N * KL) * (np.cos(phi) * (u @ e1) + np.sin(phi) * (u @ e2))
    ok = along(c) <= N * cm
    best = phi[ok][np.argmax(along(a)[ok])]
    assert res.angle == pytest.approx(best, abs=1e-4)
    assert res.angle < 0  # cost reduction lies on the negative side of e2


@pytest.mark.parametrize("method", ["exact", "heuristic"])
def test_case_3_infeasible_goes_along_minus_cost(plane_instance, method: str) -> None:
    a, c = plane_instance
    radius = np.sqrt(2 * N * KL)
    c_hat = c - c.mean()
    best_cost = -radius * np.linalg.norm(c_hat) / N  # the lowest mean((v-1) c) in the ball
    res = solve_estep(a, c, cost_margin=1.5 * best_cost, kl_budget=KL, lower_bound=0.0,
                      method=method)
    assert not res.feasible and res.mode == "recovery"
    np.testing.assert_allclose(res.v - 1, -radius * c_hat / np.linalg.norm(c_hat), atol=1e-12)


# ---------------------------------------------------------------- recovery (section 3.2.2)


def test_recovery_pure_cost_descent_when_it_keeps_reward() -> None:
    """Fig. 1 case 1: -A_c has A.x >= 0 (A and A_c anti-correlated), so x = -R A_c / |A_c|."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal(N)
    c = -0.5 * a + rng.standard_normal(N)
    res = solve_estep(a, c, cost_margin=0.0, kl_budget=KL, lower_bound=0.0, recovery=True)
    c_hat = c - c.mean()
    np.testing.assert_allclose(res.v - 1, -np.sqrt(2 * N * KL) * c_hat / np.linalg.norm(c_hat),
                               atol=1e-12)
    assert (res.feasible, res.mode) == (True, "recovery")


@pytest.mark.parametrize(("lb", "kl"), [(0.0, KL), (0.6, 0.1)])
def test_recovery_least_cost_at_zero_reward_loss(lb: float, kl: float) -> None:
    """Fig. 1 case 3: -A_c would lose reward, so minimise the cost subject to A.x >= 0."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal(N)
    c = 0.8 * a + 0.6 * rng.standard_normal(N)
    res = solve_estep(a, c, cost_margin=-0.01, kl_budget=kl, lower_bound=lb, recovery=True)
    caps = [(-a, 0.0)]
    assert (res.feasible, res.mode) == (True, "recovery")
    assert np.mean((res.v - 1) * a) == pytest.approx(0.0, abs=1e-10)
    assert_same_optimum(res.v, slsqp(-c, caps, kl=kl, lb=lb), -c, caps, kl=kl, lb=lb)


def test_recovery_least_reward_damage_when_reward_must_drop() -> None:
    """With A_c ~ A every x with A.x >= 0 raises the cost: fall back to the normal problem."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal(N)
    c = a + 0.05 * rng.standard_normal(N)
    kw = {"cost_margin": -0.05, "kl_budget": KL, "lower_bound": 0.0}
    caps = [(-a, 0.0)]
    least_cost_keeping_reward = np.mean((slsqp(-c, caps, kl=KL, lb=0.0) - 1) * c)
    assert least_cost_keeping_reward > kw["cost_margin"]
    res = solve_estep(a, c, recovery=True, **kw)
    assert (res.feasible, res.mode) == (True, "recovery")
    np.testing.assert_allclose(res.v, solve_estep(a, c, **kw).v, atol=1e-12)
    assert np.mean((res.v - 1) * a) < 0


@pytest.mark.parametrize("method", ["exact", "heuristic"])
@pytest.mark.parametrize("lb", [0.0, 0.7])
def test_recovery_when_infeasible_minimises_cost(lb: float, method: str) -> None:
    """Minimising A_c.x alone: one direction, no cost constraint, where clipping is exact."""
    rng = np.random.default_rng(6)
    a, c = rng.standard_normal(N), rng.standard_t(2, N)
    kw = {"cost_margin": -5.0, "kl_budget": 0.05, "lower_bound": lb, "method": method}
    res = solve_estep(a, c, recovery=True, **kw)
    assert (res.feasible, res.mode) == (False, "recovery")
    assert_same_optimum(res.v, slsqp(-c, [], kl=0.05, lb=lb), -c, [], kl=0.05, lb=lb)
    np.testing.assert_allclose(solve_estep(a, c, **kw).v, res.v, atol=1e-12)


# ---------------------------------------------------------------- degenerate and bad inputs


@pytest.mark.parametrize("method", ["exact", "heuristic"])
@pytest.mark.parametrize(("a", "c"), [(np.zeros(50), np.zeros(50)),
                                      (np.full(50, 0.3), np.full(50, -2.0)),
                                      (np.array([1.5]), np.array([0.7])),
                                      (np.full(50, 1.0), np.arange(50.0))])
def test_degenerate_inputs_give_ones(a: np.ndarray, c: np.ndarray, method: str) -> None:
    res = solve_estep(a, c, cost_margin=0.0, kl_budget=0.05, lower_bound=0.5, method=method)
    np.testing.assert_allclose(res.v, np.ones_like(a), atol=1e-12)
    assert res.feasible and np.isfinite(res.angle)


def test_flat_reward_with_a_violated_cost_still_meets_it() -> None:
    c = np.random.default_rng(8).standard_normal(40)
    res = solve_estep(np.ones(40), c, cost_margin=-0.05, kl_budget=0.05, lower_bound=0.5)
    assert res.feasible
    assert_feasible(res.v, [(c, -0.05)], kl=0.05, lb=0.5)


def test_constant_cost_with_a_violated_margin_is_infeasible() -> None:
    a = np.random.default_rng(9).standard_normal(40)
    res = solve_estep(a, np.full(40, 3.0), cost_margin=-0.1, kl_budget=0.05, lower_bound=0.5)
    assert not res.feasible
    np.testing.assert_allclose(res.v, np.ones(40), atol=1e-12)


def test_torch_input_gives_the_numpy_answer() -> None:
    a, c, kw = instance("random", 0)
    res = solve_estep(torch.tensor(a), torch.tensor(c), **kw)
    assert res.v.dtype == np.float64
    np.testing.assert_array_equal(res.v, solve_estep(a, c, **kw).v)


GOOD = {"cost_margin": 0.0, "kl_budget": 0.05, "lower_bound": 0.5}


@pytest.mark.parametrize(("a", "c", "kw", "match"), [
    (np.array([1.0, np.nan]), np.zeros(2), {}, "finite"),
    (np.zeros(3), np.array([0.0, np.inf, 1.0]), {}, "finite"),
    (np.zeros(3), np.zeros(4), {}, "same"),
    (np.zeros((3, 2)), np.zeros((3, 2)), {}, "1-D"),
    (np.zeros(0), np.zeros(0), {}, "non-empty"),
    (np.zeros(3), np.zeros(3), {"kl_budget": 0.0}, "kl_budget"),
    (np.zeros(3), np.zeros(3), {"kl_budget": -1.0}, "kl_budget"),
    (np.zeros(3), np.zeros(3), {"lower_bound": 1.0}, "lower_bound"),
    (np.zeros(3), np.zeros(3), {"lower_bound": -0.1}, "lower_bound"),
    (np.zeros(3), np.zeros(3), {"cost_margin": np.nan}, "cost_margin"),
    (np.zeros(3), np.zeros(3), {"method": "newton"}, "method"),
])
def test_bad_input_raises(a: np.ndarray, c: np.ndarray, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        solve_estep(a, c, **{**GOOD, **kw})
