"""E-step of CPPO: the non-parametric target ratio v (paper eq. 3-5, Theorem 3.4, Algorithm 1).

On a batch of N samples with reward advantages A and cost advantages A_c, ``solve_estep`` solves

    maximise    mean(v * A)
    subject to  mean(v) = 1
                mean((v - 1) * A_c) <= cost_margin        (cost constraint, eq. 4)
                mean((v - 1) ** 2)  <= 2 * kl_budget      (reverse-KL trust region, eq. 5)
                v_i >= lower_bound                        (Algorithm 1's clip)

In x = v - 1 with lo = lower_bound - 1, R^2 = 2 N kl_budget and cost_bound = N cost_margin this is
``max A.x  s.t.  sum(x) = 0, A_c.x <= cost_bound, |x|^2 <= R^2, x >= lo``: a convex QCQP.

Every method is built from one *pass*: fix a set B of entries at lo, give the free entries F
exactly the budgets that B leaves (sum -|B| lo, norm R^2 - |B| lo^2, cost cost_bound - lo sum_B A_c)
and solve the 2-D problem of Theorem 3.4 in the plane of the F-centred A and A_c (``_plane``;
the paper's angle search has a closed form there). Its solution has the KKT form
``x_F = b + t (A - mean_F A) - s (A_c - mean_F A_c)``, b = -|B| lo / |F|.

- ``method="heuristic"`` (Algorithm 1): clip the free entries below lo into B and re-solve,
  until no free entry violates the bound. B only grows, so it may fix entries the optimum
  frees: it is optimal only under Assumption 3.5. A re-solve can also run out of cost budget
  where the QCQP is feasible; the heuristic then reports infeasibility (and recovers).
- ``method="exact"``: the same pass, but B is recomputed from the KKT candidate z over *all*
  entries, so wrongly fixed entries are released (a primal-dual active-set method). When B
  repeats, z is a KKT point of the convex problem: the global optimum. If the iteration does
  not settle (or a pass is degenerate), a bisection on the cost multiplier angle with an exact
  inner solver takes over (``_bisect_cost_angle``).

Each pass is O(N) (no sorting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Method = Literal["exact", "heuristic"]

_EXACT_MAX_PASSES = 25  # the active-set method settles in a few passes; beyond this, bisect
_BISECT_STEPS = 60  # halves pi/2 below double precision
_COLLINEAR = 1e-6  # |A_c orthogonal to A| / |A_c| below this: the KKT multipliers blow up


@dataclass(frozen=True, eq=False)
class EStepResult:
    """The E-step's answer.

    v: target ratios, float64 (N,).  feasible: a v meeting the cost constraint was found.
    mode: "normal", or "recovery" (asked for, or forced by infeasibility; section 3.2.2).
    angle: angle of x = v - 1 in the plane of centred A (angle 0) and the part of centred A_c
    orthogonal to it (angle pi/2), in radians in (-pi, pi]. The pure reward direction is 0;
    cost-reducing moves have negative angles.
    clip_passes: number of re-solves after clipping (0 when no entry hit the bound), summed over
    the sub-problems of the recovery rule; for the exact method's bisection fallback, those of
    the active-set attempt.
    objective: mean(v * adv_r).  cost_change: mean((v - 1) * adv_c).
    """

    v: np.ndarray
    feasible: bool
    mode: str
    angle: float
    clip_passes: int
    objective: float
    cost_change: float


def solve_estep(adv_r: np.ndarray | torch.Tensor, adv_c: np.ndarray | torch.Tensor, *,
                cost_margin: float, kl_budget: float, lower_bound: float,
                method: Method = "exact", recovery: bool = False) -> EStepResult:
    """Solve the E-step problem above for v (shape (N,), like ``adv_r`` and ``adv_c``).

    ``cost_margin`` is d' of eq. 4 (negative: the current policy violates the limit).
    ``kl_budget`` is delta' of eq. 5; ``lower_bound`` in [0, 1) is Algorithm 1's clip b.

    Normal mode returns the maximiser (Theorem 3.4 cases 1-2, then clipping). When no v meets
    the cost constraint (case 3), or when ``recovery=True``, the recovery rule of section 3.2.2
    (Fig. 1) chooses v and ``mode`` is "recovery":

    1. if some feasible x keeps reward (A.x >= 0) and meets the cost constraint,
       minimise A_c.x subject to A.x >= 0;
    2. else maximise A.x subject to the cost constraint (the normal problem);
    3. else, infeasible (``feasible=False``): minimise A_c.x (go along -A_c).

    All three keep sum(x) = 0, the trust region and the bound.
    Degenerate batches (constant advantages, N = 1) give v = ones where that is feasible.
    """
    a, c = _validated(adv_r, adv_c, cost_margin, kl_budget, lower_bound, method)
    n = a.size
    lo, r2, cost_bound = lower_bound - 1.0, 2.0 * n * kl_budget, n * cost_margin

    def solve(g: np.ndarray, h: np.ndarray, cap: float) -> tuple[np.ndarray | None, int]:
        return _maximise(g, h, cap, lo, r2, method)

    def result(x: np.ndarray, feasible: bool, mode: str, passes: int) -> EStepResult:
        # The active-set tolerance can leave a free entry a hair under the bound.
        v = np.maximum(1.0 + x, lower_bound)
        return EStepResult(v=v, feasible=feasible, mode=mode, angle=_angle(v - 1.0, a, c),
                           clip_passes=passes, objective=float(np.mean(v * a)),
                           cost_change=float(np.mean((v - 1.0) * c)))

    if recovery:
        x, feasible, passes = _recovery_rule(a, c, cost_bound, solve, _tolerance(c, cost_bound, r2))
        return result(x, feasible, "recovery", passes)
    x, passes = solve(a, c, cost_bound)
    if x is not None:
        return result(x, True, "normal", passes)
    # No x meets the cost constraint, so the recovery rule is at its case 3.
    x, more = solve(-c, np.zeros_like(c), 0.0)
    assert x is not None  # without a cost constraint a pass is never infeasible
    return result(x, False, "recovery", passes + more)


def estep_result(v: np.ndarray, adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
                 mode: str = "normal") -> EStepResult:
    """Wrap a target ``v`` computed elsewhere (a student's E-step) as an :class:`EStepResult`.

    ``v``, ``adv_r`` and ``adv_c`` are (N,); ``feasible`` says whether ``v`` meets the cost
    constraint ``mean((v - 1) * adv_c) <= cost_margin`` (up to round-off); ``clip_passes`` is 0.

    >>> import numpy as np
    >>> a, c = np.array([1.0, -1.0]), np.array([0.5, 0.5])
    >>> estep_result(np.array([1.1, 0.9]), a, c, cost_margin=0.0).feasible
    True
    """
    a, c = (np.asarray(x, dtype=np.float64) for x in (adv_r, adv_c))
    v = np.asarray(v, dtype=np.float64)
    cost_change = float(np.mean((v - 1.0) * c))
    tol = 1e-9 * (1.0 + abs(cost_margin) + float(np.mean(np.abs(c))))
    return EStepResult(v=v, feasible=cost_change <= cost_margin + tol, mode=mode,
                       angle=_angle(v - 1.0, a, c), clip_passes=0,
                       objective=float(np.mean(v * a)), cost_change=cost_change)


def _validated(adv_r: np.ndarray | torch.Tensor, adv_c: np.ndarray | torch.Tensor,
               cost_margin: float, kl_budget: float, lower_bound: float,
               method: str) -> tuple[np.ndarray, np.ndarray]:
    """Both advantages as float64 (N,) arrays, after checking every argument."""
    a, c = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
            for x in (adv_r, adv_c))
    if a.ndim != 1 or c.ndim != 1:
        raise ValueError(f"adv_r and adv_c must be 1-D, got shapes {a.shape} and {c.shape}")
    if a.shape != c.shape or a.size == 0:
        raise ValueError(f"adv_r and adv_c must have the same non-empty shape, got {a.shape} "
                         f"and {c.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(c))):
        raise ValueError("adv_r and adv_c must be finite (found NaN or inf)")
    if not np.isfinite(cost_margin):
        raise ValueError(f"cost_margin must be finite, got {cost_margin}")
    if not (np.isfinite(kl_budget) and kl_budget > 0):
        raise ValueError(f"kl_budget must be a finite number > 0, got {kl_budget}")
    if not 0.0 <= lower_bound < 1.0:
        raise ValueError(f"lower_bound must lie in [0, 1), got {lower_bound}")
    if method not in ("exact", "heuristic"):
        raise ValueError(f"method must be 'exact' or 'heuristic', got {method!r}")
    return a, c


def _tolerance(c: np.ndarray, cost_bound: float, r2: float) -> float:
    """Slack allowed on A_c.x <= cost_bound: round-off on the scale of the largest feasible |A_c.x|."""
    return 1e-10 * (abs(cost_bound) + float(np.linalg.norm(c - c.mean())) * np.sqrt(r2))


def _recovery_rule(a: np.ndarray, c: np.ndarray, cost_bound: float,
                   solve: Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray | None, int]],
                   tol: float) -> tuple[np.ndarray, bool, int]:
    """Section 3.2.2, Fig. 1: (x, cost constraint met, clipping passes)."""
    # 1. min A_c.x s.t. A.x >= 0, i.e. max (-A_c).x s.t. (-A).x <= 0: always feasible (x = 0).
    x1, p1 = solve(-c, -a, 0.0)
    if x1 is not None and c @ x1 <= cost_bound + tol:
        return x1, True, p1
    x2, p2 = solve(a, c, cost_bound)  # 2. least reward damage
    if x2 is not None:
        return x2, True, p1 + p2
    x3, p3 = solve(-c, np.zeros_like(c), 0.0)  # 3. pure cost descent
    assert x3 is not None  # without a cost constraint a pass is never infeasible
    return x3, False, p1 + p2 + p3


def _maximise(a: np.ndarray, c: np.ndarray, cost_bound: float, lo: float, r2: float,
              method: Method) -> tuple[np.ndarray | None, int]:
    """max a.x s.t. sum x = 0, c.x <= cost_bound, |x|^2 <= r2, x >= lo: (x or None if infeasible,
    clipping passes)."""
    if method == "heuristic":
        out = _active_set(a, c, cost_bound, lo, r2, release=False, max_passes=a.size + 1)
        return out.x, out.passes
    out = _active_set(a, c, cost_bound, lo, r2, release=True, max_passes=_EXACT_MAX_PASSES)
    if out.certified:
        return out.x, out.passes
    return _bisect_cost_angle(a, c, cost_bound, lo, r2), out.passes


@dataclass(frozen=True, eq=False)
class _Outcome:
    """x (None: infeasible), re-solves after clipping, and whether x (or None) is the answer
    of the method: always for the heuristic, only at a KKT point for the exact method."""

    x: np.ndarray | None
    passes: int
    certified: bool


def _active_set(a: np.ndarray, c: np.ndarray, cost_bound: float, lo: float, r2: float, *,
                release: bool, max_passes: int) -> _Outcome:
    """Clip-and-re-solve passes (Algorithm 1 with exact budgets; with ``release`` a primal-dual
    active-set method). B is the set of entries fixed at lo; each pass is O(N)."""
    n = a.size
    tol = 1e-12 * max(-lo, np.sqrt(r2 / n))
    tiny_a = 1e-12 * float(np.linalg.norm(a))
    c_sum = float(c.sum())
    bound = np.zeros(n, dtype=bool)
    for passes in range(max_passes):
        free = (~bound).astype(np.float64)
        k = float(free.sum())
        nb = n - k
        b = -nb * lo / k  # mean of the free entries: their sum cancels the fixed ones'
        c_free = float(c @ free)
        a_cent = a - (a @ free) / k
        c_cent = c - c_free / k
        af, cf = a_cent * free, c_cent * free
        aa, ac, cc = float(af @ af), float(af @ cf), float(cf @ cf)
        perp = cf - (ac / aa) * af if aa > 0 else cf
        step = _plane(aa, ac, cc, float(perp @ perp),
                      radius2=r2 - nb * lo * lo - k * b * b,  # norm left for the centred part
                      cost_bound=cost_bound - lo * (c_sum - c_free) - b * c_free,  # cost left for it
                      tiny_a=tiny_a, slack=1e-12 * r2)
        if step is None:  # this pass's problem is infeasible; with B empty, so is the QCQP
            return _Outcome(None, passes, certified=not release or passes == 0)
        z = b + step.t * a_cent - step.s * c_cent  # the KKT candidate, on every entry
        if step.flat_mu is not None:  # norm multiplier 0: z is +-inf off F, by the sign of g
            g = a_cent - step.flat_mu * c_cent  # constant (0) on F
            z = np.where(bound, np.where(g > 1e-12 * np.abs(g).max(), np.inf, -np.inf), z)
        below = z < lo - tol
        # Exact: B = {z < lo}, with hysteresis against round-off; heuristic: B only grows.
        new = (below | (bound & (z < lo + tol))) if release else (bound | below)
        if np.array_equal(new, bound):
            x = np.where(bound, lo, z)
            x -= free * (x.sum() / k)  # t is large where free entries nearly tie: re-centre
            return _Outcome(x, passes, certified=not release or step.kkt)
        bound = new
    return _Outcome(None, max_passes, certified=False)


@dataclass(frozen=True)
class _Step:
    """y = t * a_hat - s * c_hat. ``kkt``: y is a KKT point of the pass's problem with
    t = 1 / (norm multiplier) and s = t * (cost multiplier); or, where ``flat_mu`` is set,
    with norm multiplier 0 and cost multiplier flat_mu (a_hat - flat_mu c_hat = 0: the
    Lagrangian is flat on the free entries)."""

    t: float
    s: float
    kkt: bool
    flat_mu: float | None = None


def _plane(aa: float, ac: float, cc: float, pp: float, *, radius2: float, cost_bound: float,
           tiny_a: float, slack: float) -> _Step | None:
    """Theorem 3.4 in the plane of a_hat and c_hat (centred on the free entries):

        max a_hat.y  s.t.  c_hat.y <= cost_bound,  |y|^2 <= radius2,

    from the Gram entries aa = |a_hat|^2, ac = a_hat.c_hat, cc = |c_hat|^2 and pp = |c_perp|^2,
    c_perp = c_hat - (ac / aa) a_hat (Gram-Schmidt). With e1 = a_hat / |a_hat| and
    e2 = c_perp / |c_perp|, c_hat = alpha e1 + beta e2 and y = p e1 + q e2 (angle atan2(q, p)):
    case 1: y = radius e1 if alpha radius <= cost_bound; case 3 (None): the line
    alpha p + beta q = cost_bound misses the disc; case 2: the intersection of line and circle
    with the larger p.
    """
    if radius2 < -slack:  # the fixed entries alone exceed the trust region
        return None
    radius = np.sqrt(max(radius2, 0.0))
    na, cn = np.sqrt(aa), np.sqrt(cc)
    if na <= tiny_a:  # flat reward: every feasible y is optimal; take the smallest one
        if cost_bound >= 0:
            return _Step(0.0, 0.0, kkt=True, flat_mu=0.0)
        return None if cost_bound < -radius * cn else _Step(0.0, -cost_bound / cc, kkt=True, flat_mu=0.0)
    alpha = ac / na
    if alpha * radius <= cost_bound:  # case 1: the pure reward direction is cost-feasible
        return _Step(radius / na, 0.0, kkt=True)
    if cost_bound < -radius * cn:  # case 3
        return None
    d = cost_bound / cn  # signed distance of the cost line from the origin
    h = np.sqrt(max(radius2 - d * d, 0.0))
    beta = np.sqrt(pp)
    p, q = (d * alpha + h * beta) / cn, (d * beta - h * alpha) / cn
    if beta <= _COLLINEAR * cn:  # c_hat ~ alpha e1 (alpha > 0): the cost line is p = cost_bound / alpha
        # and the ball is slack; a KKT point only if exactly collinear (e.g. two free entries).
        return _Step(p / na, 0.0, kkt=beta <= 1e-12 * cn and alpha > 0, flat_mu=na / alpha)
    s = -q / beta
    t = (p + s * alpha) / na
    return _Step(t, s, kkt=t > 0 and s >= 0)


def _bisect_cost_angle(a: np.ndarray, c: np.ndarray, cost_bound: float, lo: float,
                       r2: float) -> np.ndarray | None:
    """Exact fallback: x(theta) = argmax g(theta).x over the feasible set without the cost
    constraint, g(theta) = cos(theta) a/|a| - sin(theta) c/|c|, theta in [0, pi/2]
    (theta = atan(cost multiplier), after scaling). A_c.x(theta) does not increase with theta;
    bisect for A_c.x = cost_bound, then mix the two bracketing maximisers, both optimal for the
    limiting multiplier, so that the cost constraint is met exactly (this also covers a jump in
    x(theta), e.g. when A_c is collinear with A). The inner problem, one direction and no cost
    constraint, is solved exactly by the clipping passes: as in Michelot's projection onto the
    simplex, they never fix an entry that the optimum frees (checked against SLSQP in the tests).
    """
    zero = np.zeros_like(a)

    def argmax(g: np.ndarray) -> np.ndarray:
        out = _active_set(g, zero, 0.0, lo, r2, release=False, max_passes=a.size + 1)
        assert out.x is not None  # without a cost constraint a pass is never infeasible
        return out.x

    def unit(u: np.ndarray) -> np.ndarray:
        u = u - u.mean()
        norm = np.linalg.norm(u)
        return u / norm if norm > 0 else u

    ua, uc = unit(a), unit(c)
    tol = _tolerance(c, cost_bound, r2)
    x_lo = argmax(ua)
    f_lo = c @ x_lo - cost_bound
    if f_lo <= tol:
        return x_lo
    x_hi = argmax(-uc)
    f_hi = c @ x_hi - cost_bound
    if f_hi > tol:
        return None
    if f_hi >= 0:
        return x_hi
    th_lo, th_hi = 0.0, np.pi / 2
    for _ in range(_BISECT_STEPS):
        th = 0.5 * (th_lo + th_hi)
        x = argmax(np.cos(th) * ua - np.sin(th) * uc)
        f = c @ x - cost_bound
        if abs(f) <= tol:
            return x
        if f > 0:
            th_lo, x_lo, f_lo = th, x, f
        else:
            th_hi, x_hi, f_hi = th, x, f
    w = f_lo / (f_lo - f_hi)
    return (1.0 - w) * x_lo + w * x_hi


def _angle(x: np.ndarray, a: np.ndarray, c: np.ndarray) -> float:
    """atan2(x.e2, x.e1) with e1, e2 the Gram-Schmidt basis of centred A and A_c (0 if flat)."""
    a_hat, c_hat = a - a.mean(), c - c.mean()
    na = np.linalg.norm(a_hat)
    e1 = a_hat / na if na > 0 else np.zeros_like(a)
    perp = c_hat - (c_hat @ e1) * e1
    np_ = np.linalg.norm(perp)
    e2 = perp / np_ if np_ > _COLLINEAR * np.linalg.norm(c_hat) else np.zeros_like(a)
    return float(np.arctan2(x @ e2, x @ e1))
