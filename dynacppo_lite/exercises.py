"""Checkers for the notebooks' exercises: one ``check_<topic>(fn)`` per notebook.

Each checker calls the learner's function on several cases, compares it with the reference
(the library's own code wherever the library computes the quantity) and prints either a
success line or, at the *first* wrong case, a specific hint. The checker never raises on a
wrong answer (a notebook that runs under nbval must not fail because a learner is still
working); it returns a :class:`CheckResult` that is truthy when every case passed.

A wrong answer is matched against *typical mistakes*: small, deliberately wrong variants of the
computation (truncation treated as termination in GAE, the lower clip on the wrong side in
the M-step, ...). When the learner's output equals a mistake's output on the failing case (and
that mistake does make a difference there), the hint names the mistake. Otherwise the hint
says where the output first differs.

=========================  ============  ==================================================
checker                    notebook      the learner writes
=========================  ============  ==================================================
check_one_step_error       01            (model MSE, no-change MSE) of a one-step prediction
check_gae                  02            single-stream GAE with termination vs truncation
check_estep_case           03            which case of Theorem 3.4 a batch falls in
check_mstep_gradient       04            d loss / d r of the clipped tracking loss
check_run_summary          05            tail means of a run and whether it meets the limit
check_smoothing            06            the trailing moving average of the run browser
=========================  ============  ==================================================
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynacppo_lite.plots import ESTEP_CASES, estep_plane, smooth, synthetic_advantages, tracking_gradient

__all__ = [
    "CheckResult",
    "check_estep_case",
    "check_gae",
    "check_mstep_gradient",
    "check_one_step_error",
    "check_run_summary",
    "check_smoothing",
    "reference_estep_case",
    "reference_gae",
    "reference_mstep_gradient",
    "reference_one_step_error",
    "reference_run_summary",
    "reference_smoothing",
]


# ------------------------------------------------------------------------------------ engine
@dataclass
class CheckResult:
    """What a checker found. Truthy when every case passed.

    ``case``: the name of the first wrong case (None if all passed); ``mistake``: the key of
    the typical mistake recognised on it (None if none was); ``message``: what was printed.
    """

    topic: str
    passed: bool
    n_cases: int
    case: str | None = None
    mistake: str | None = None
    message: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message


@dataclass
class _Case:
    name: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Mistake:
    key: str
    fn: Callable[..., Any]
    hint: str


Compare = Callable[[Any, Any], tuple[bool, str]]


def _run(topic: str, fn: Callable[..., Any], cases: Sequence[_Case],
         reference: Callable[..., Any], mistakes: Sequence[_Mistake], compare: Compare,
         quiet: bool) -> CheckResult:
    """Run ``fn`` on every case; stop at the first wrong one with the best hint we have."""

    def call(f: Callable[..., Any], case: _Case) -> Any:
        # Deep copies: a learner's in-place edit must not change the reference's inputs.
        return f(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))

    n = len(cases)
    for i, case in enumerate(cases, start=1):
        want = call(reference, case)
        head = f"{topic}: case {i}/{n} ({case.name})"
        try:
            got = call(fn, case)
        except Exception as exc:  # the learner's code: anything can happen
            msg = (f"{head}: your function raised {type(exc).__name__}: {exc}\n"
                   "Hint: check the argument order and that you return a value (see the "
                   "exercise's signature).")
            return _finish(CheckResult(topic, False, n, case.name, None, msg), quiet)
        ok, detail = compare(got, want)
        if ok:
            continue
        mistake = _diagnose(fn, case, cases, reference, mistakes, compare, call)
        if mistake is not None:
            msg = f"{head} is wrong.\nHint: {mistake.hint}\n({detail})"
            return _finish(CheckResult(topic, False, n, case.name, mistake.key, msg), quiet)
        msg = f"{head} is wrong: {detail}."
        return _finish(CheckResult(topic, False, n, case.name, None, msg), quiet)
    msg = f"{topic}: all {n} cases match the reference. Well done!"
    return _finish(CheckResult(topic, True, n, message=msg), quiet)


def _diagnose(fn: Callable[..., Any], failed: _Case, cases: Sequence[_Case],
              reference: Callable[..., Any], mistakes: Sequence[_Mistake], compare: Compare,
              call: Callable[[Callable[..., Any], _Case], Any]) -> _Mistake | None:
    """The typical mistake that explains the learner's answer, or None.

    Candidates are the mistakes that change the answer on the failing case and reproduce the
    learner's answer there. When several do (a label has few values), the one that also
    reproduces the learner's answers on the most other cases wins; ties go to the list order.
    """
    def same(f: Callable[..., Any], g_out: Any, case: _Case) -> bool:
        try:
            return compare(g_out, call(f, case))[0]
        except Exception:  # a mistake variant that cannot handle a case: no evidence
            return False

    got = call(fn, failed)
    want = call(reference, failed)
    candidates = [m for m in mistakes
                  if not compare(call(m.fn, failed), want)[0] and same(m.fn, got, failed)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    outputs = []
    for case in cases:
        try:
            outputs.append((case, call(fn, case)))
        except Exception:  # the learner's function fails on another case: skip that case
            continue
    scores = [sum(same(m.fn, out, case) for case, out in outputs) for m in candidates]
    return candidates[int(np.argmax(scores))]


def _finish(result: CheckResult, quiet: bool) -> CheckResult:
    if not quiet:
        print(result.message)
    return result


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _compare_arrays(rtol: float = 1e-5, atol: float = 1e-8, index_name: str = "i") -> Compare:
    def compare(got: Any, want: Any) -> tuple[bool, str]:
        try:
            g = _as_array(got)
        except (TypeError, ValueError):
            return False, f"expected an array of numbers, got {type(got).__name__}"
        w = _as_array(want)
        if g.shape != w.shape:
            return False, f"expected shape {w.shape}, got shape {g.shape}"
        close = np.isclose(g, w, rtol=rtol, atol=atol)
        if close.all():
            return True, ""
        j = int(np.flatnonzero(~close.ravel())[0])
        idx = np.unravel_index(j, w.shape)
        where = idx[0] if len(idx) == 1 else idx
        return False, (f"first wrong entry at {index_name}={where}: expected {w[idx]:.6g}, "
                       f"got {g[idx]:.6g}")
    return compare


def _compare_tuple(names: Sequence[str], rtol: float = 1e-6, atol: float = 1e-10) -> Compare:
    def compare(got: Any, want: Any) -> tuple[bool, str]:
        if isinstance(got, np.ndarray) and got.ndim == 1:
            got = tuple(got)
        if not isinstance(got, tuple | list) or len(got) != len(names):
            return False, f"expected a tuple ({', '.join(names)}), got {got!r:.80}"
        for name, g, w in zip(names, got, want, strict=True):
            if isinstance(w, bool | np.bool_):
                if not isinstance(g, bool | np.bool_) or bool(g) != bool(w):
                    return False, f"{name}: expected {bool(w)}, got {g!r}"
                continue
            try:
                g_arr = _as_array(g)
            except (TypeError, ValueError):
                return False, f"{name}: expected a number, got {type(g).__name__}"
            if g_arr.shape != ():
                return False, f"{name}: expected a single number, got shape {g_arr.shape}"
            if not np.isclose(float(g_arr), float(w), rtol=rtol, atol=atol):
                return False, f"{name}: expected {float(w):.6g}, got {float(g_arr):.6g}"
        return True, ""
    return compare


# ------------------------------------------------------------- 01 dynamics: one-step error
def reference_one_step_error(obs: np.ndarray, rew: np.ndarray, cost: np.ndarray,
                             next_obs: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(model MSE, predict-no-change MSE), as ``DynamicsEnsemble.one_step_loss`` defines them.

    The model predicts y = (s' - s, r, c) (B, obs_dim + 2); ``pred`` is its ensemble-mean
    prediction. Model MSE = mean((pred - y)^2) over samples and the obs_dim + 2 entries; the
    no-change baseline predicts s' = s, r = c = 0, i.e. y_hat = 0, so its MSE is mean(y^2).
    """
    y = np.concatenate([next_obs - obs, np.asarray(rew)[:, None], np.asarray(cost)[:, None]], axis=1)
    return float(np.mean((pred - y) ** 2)), float(np.mean(y ** 2))


def _one_step_cases() -> list[_Case]:
    cases = []
    for k, (b, d) in enumerate([(6, 3), (40, 5), (200, 8)]):
        rng = np.random.default_rng(100 + k)
        obs = rng.normal(2.0, 1.0, (b, d))  # far from 0: a zero-state baseline is very wrong
        next_obs = obs + rng.normal(0.0, 0.1, (b, d))
        rew = rng.normal(0.5, 0.3, b)
        cost = (rng.random(b) < 0.3).astype(float)
        y = np.concatenate([next_obs - obs, rew[:, None], cost[:, None]], 1)
        pred = y + rng.normal(0.0, 0.05, y.shape)
        cases.append(_Case(f"{b} samples, obs_dim {d}", (obs, rew, cost, next_obs, pred)))
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


def _one_step_mistake(kind: str, hint: str) -> _Mistake:
    return _Mistake(kind, lambda *a, **kw: _one_step_variant(*a, **kw, kind=kind), hint)


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


def check_one_step_error(fn: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Check ``fn(obs, rew, cost, next_obs, pred) -> (model_mse, baseline_mse)``.

    obs/next_obs (B, obs_dim), rew/cost (B,), pred (B, obs_dim + 2): the ensemble-mean
    prediction of y = (s' - s, r, c). See :func:`reference_one_step_error`.
    """
    return _run("check_one_step_error", fn, _one_step_cases(), reference_one_step_error,
                _ONE_STEP_MISTAKES, _compare_tuple(("model_mse", "baseline_mse")), quiet)


# ------------------------------------------------------------------------ 02 dual GAE
def reference_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                  terminated: np.ndarray, truncated: np.ndarray, *, gamma: float,
                  lam: float) -> np.ndarray:
    """GAE advantages (T,) of one env's rollout, from the library's ``gae.gae`` (the stream
    function behind ``gae.dual_gae``).

    ``values[t]`` = V(s_t); ``next_values[t]`` = V(s_{t+1}) of the true next state (at an episode
    end: of the episode's final observation), as ``rollout.Collector`` records them.
    """
    from dynacppo_lite.gae import gae

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


def _gae_mistake(key: str, hint: str, **variant: Any) -> _Mistake:
    return _Mistake(key, lambda *a, **kw: _gae_variant(*a, **kw, **variant), hint)


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
              gamma: float = 0.9, lam: float = 0.8) -> _Case:
    rng = np.random.default_rng(seed)
    rewards = rng.normal(0.5, 1.0, T)
    values = rng.normal(1.0, 1.0, T)
    next_values = np.concatenate([values[1:], rng.normal(1.0, 1.0, 1)])
    terminated, truncated = np.zeros(T, bool), np.zeros(T, bool)
    terminated[list(term_at)] = True
    truncated[list(trunc_at)] = True
    for t in (*term_at, *trunc_at):  # V of the true final observation, not of the next start
        next_values[t] = rng.normal(3.0, 1.0)
    return _Case(name, (rewards, values, next_values, terminated, truncated),
                 {"gamma": gamma, "lam": lam})


def _gae_cases() -> list[_Case]:
    return [
        _gae_case("one episode, no end inside the batch", 6, 1),
        _gae_case("terminated at t=3", 8, 2, term_at=[3]),
        _gae_case("truncated (time limit) at t=3", 8, 3, trunc_at=[3]),
        _gae_case("terminations and truncations, gamma=0.99, lam=0.95", 30, 4, term_at=[6, 21],
                  trunc_at=[13, 29], gamma=0.99, lam=0.95),
        _gae_case("truncated on the last step", 5, 5, trunc_at=[4], gamma=0.97, lam=0.9),
    ]


def check_gae(fn: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Check ``fn(rewards, values, next_values, terminated, truncated, *, gamma, lam) -> adv``.

    All inputs are (T,) arrays of one env; returns the GAE advantages (T,). The reference is
    the library's ``gae.gae``, the stream function of ``gae.dual_gae`` (see
    :func:`reference_gae`).
    """
    return _run("check_gae", fn, _gae_cases(), reference_gae, _GAE_MISTAKES,
                _compare_arrays(rtol=1e-6, atol=1e-8, index_name="t"), quiet)


# ------------------------------------------------------------------ 03 E-step geometry
def reference_estep_case(adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
                         kl_budget: float) -> str:
    """``"unconstrained"``, ``"constrained"`` or ``"infeasible"``: Theorem 3.4's case of the
    E-step problem without the element-wise bound (:func:`dynacppo_lite.plots.estep_plane`)."""
    return estep_plane(adv_r, adv_c, cost_margin=cost_margin, kl_budget=kl_budget).case


def _case_variant(adv_r, adv_c, *, cost_margin, kl_budget, center=True, n_radius=True, n_kappa=True,
                  infeasible_if_violating=False, unconstrained_if_safe=False, reach_alpha=False):
    a = np.asarray(adv_r, dtype=np.float64)
    c = np.asarray(adv_c, dtype=np.float64)
    n = a.size
    if center:
        a, c = a - a.mean(), c - c.mean()
    radius = np.sqrt(2 * kl_budget * (n if n_radius else 1))
    kappa = cost_margin * (n if n_kappa else 1)
    if infeasible_if_violating and cost_margin < 0:
        return "infeasible"
    if unconstrained_if_safe and cost_margin >= 0:
        return "unconstrained"
    alpha = float(c @ a) / float(np.linalg.norm(a))
    if alpha * radius <= kappa:
        return "unconstrained"
    reach = abs(alpha) if reach_alpha else float(np.linalg.norm(c))
    return "infeasible" if kappa < -radius * reach else "constrained"


def _case_mistake(key: str, hint: str, **variant: Any) -> _Mistake:
    return _Mistake(key, lambda *a, **kw: _case_variant(*a, **kw, **variant), hint)


_ESTEP_MISTAKES = [
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
        "with N * cost_margin.", n_kappa=False),
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


def _estep_cases() -> list[_Case]:
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
    for name, n, rho, margin, seed, mean_a, mean_c in specs:
        a, c = synthetic_advantages(n, rho, seed, reward_mean=mean_a, cost_mean=mean_c)
        cases.append(_Case(name, (a, c), {"cost_margin": margin, "kl_budget": kl}))
    return cases


def _compare_label(got: Any, want: Any) -> tuple[bool, str]:
    if got not in ESTEP_CASES:
        return False, f"return one of {ESTEP_CASES}, got {got!r}"
    return (got == want), f"expected {want!r}, got {got!r}"


def check_estep_case(fn: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Check ``fn(adv_r, adv_c, *, cost_margin, kl_budget) -> str``: the case of Theorem 3.4
    (``"unconstrained"``, ``"constrained"`` or ``"infeasible"``), no element-wise bound.
    The reference agrees with ``estep.solve_estep`` (see tests/test_exercises.py)."""
    return _run("check_estep_case", fn, _estep_cases(), reference_estep_case, _ESTEP_MISTAKES,
                _compare_label, quiet)


# ------------------------------------------------------------------ 04 M-step clipping
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


def _grad_mistake(key: str, hint: str, **variant: Any) -> _Mistake:
    return _Mistake(key, lambda *a, **kw: _grad_variant(*a, **kw, **variant), hint)


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


def _mstep_cases() -> list[_Case]:
    r1 = np.array([1.3, 0.9, 1.05, 0.75, 1.6])
    v1 = np.array([1.0, 1.2, 0.8, 0.75, 1.9])
    r2 = np.array([0.3, 0.45, 0.9, 1.2, 1.5, 0.55, 0.5])
    v2 = np.array([0.2, 0.8, 1.1, 0.7, 1.5, 0.4, 0.35])
    rng = np.random.default_rng(4)
    r3 = np.exp(rng.normal(0.0, 0.5, 50))
    v3 = np.exp(rng.normal(0.0, 0.6, 50))
    return [
        _Case("all ratios above the clip", (r1, v1, 0.6)),
        _Case("ratios below b = 0.6, targets on both sides", (r2, v2, 0.6)),
        _Case("random batch, b = 0.4", (r3, v3, 0.4)),
        _Case("random batch, b = 0.8", (r3[::-1].copy(), v3, 0.8)),
    ]


def check_mstep_gradient(fn: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Check ``fn(ratio, v, lower_clip) -> grad``: d loss / d r_i (N,) of the clipped tracking
    loss ``-mean(min((v - r).detach() r, (v - r).detach() clamp(r, min=b)))``. The reference is
    autograd through the library's ``mstep.mstep_loss``."""
    return _run("check_mstep_gradient", fn, _mstep_cases(), reference_mstep_gradient,
                _MSTEP_MISTAKES, _compare_arrays(rtol=1e-6, atol=1e-9), quiet)


# -------------------------------------------------------------- 05 training runs: summary
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


def _summary_mistake(key: str, hint: str, kind: str) -> _Mistake:
    return _Mistake(key, lambda *a, **kw: _summary_variant(*a, **kw, kind=kind), hint)


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


def _summary_cases() -> list[_Case]:
    rng = np.random.default_rng(11)
    r10, c10 = np.linspace(0, 20, 10) + rng.normal(0, 1, 10), np.linspace(40, 8, 10)
    c_eq = np.array([30.0, 20.0, 12.0, 8.0, 10.0, 10.0, 10.0, 10.0, 9.0, 11.0])
    r7, c7 = rng.normal(5, 2, 7), np.array([50.0, 30.0, 28.0, 27.0, 26.0, 24.0, 23.0])
    return [
        _Case("10 iterations, tail 0.2", (r10, c10, 10.0), {"tail": 0.2}),
        _Case("mean tail cost exactly at the limit", (r10, c_eq, 10.0), {"tail": 0.2}),
        _Case("7 iterations, tail 0.3 (k = 2)", (r7, c7, 25.0), {"tail": 0.3}),
        _Case("3 iterations, tail 0.2 (k = 1)", (r7[:3], c7[:3], 25.0), {"tail": 0.2}),
        _Case("still violating at the end", (r10, c10 + 20.0, 25.0), {"tail": 0.5}),
    ]


def check_run_summary(fn: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Check ``fn(ep_return, ep_cost, cost_limit, tail=0.2) -> (mean_return, mean_cost,
    satisfied)`` over the last ``max(1, int(len * tail))`` iterations (see
    :func:`reference_run_summary`)."""
    return _run("check_run_summary", fn, _summary_cases(), reference_run_summary,
                _SUMMARY_MISTAKES, _compare_tuple(("mean_return", "mean_cost", "satisfied")), quiet)


# ----------------------------------------------------------------- 06 run browser smoothing
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


def _smooth_mistake(key: str, hint: str, kind: str) -> _Mistake:
    return _Mistake(key, lambda *a, **kw: _smooth_variant(*a, **kw, kind=kind), hint)


_SMOOTH_MISTAKES = [
    _smooth_mistake("centred", "the window must trail: point t averages y[t - window + 1 : t + 1]; "
                    "a centred window lets the curve see the future.", "centred"),
    _smooth_mistake("zero_padded", "the first window - 1 points average only the values that "
                    "exist (t + 1 of them): you divided by the full window, as if zeros came "
                    "before the run.", "zero_padded"),
    _smooth_mistake("valid", "keep one smoothed point per iteration (same length as y): the first "
                    "points average what exists.", "valid"),
    _smooth_mistake("off_by_one", "the window holds exactly `window` points, the current one "
                    "included: y[t - window + 1 : t + 1].", "one_more"),
]


def _smooth_cases() -> list[_Case]:
    rng = np.random.default_rng(21)
    y = np.cumsum(rng.normal(0.0, 1.0, 12))
    return [
        _Case("window 1 (no smoothing)", (y, 1)),
        _Case("window 3", (y, 3)),
        _Case("window 5 on a noisy curve", (y + rng.normal(0, 2, 12), 5)),
        _Case("window longer than the run", (y[:4], 10)),
    ]


def check_smoothing(fn: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Check ``fn(y, window) -> smoothed``: the trailing moving average of the run browser,
    same length as y, the first points averaging what exists (``plots.smooth``)."""
    return _run("check_smoothing", fn, _smooth_cases(), reference_smoothing, _SMOOTH_MISTAKES,
                _compare_arrays(rtol=1e-9, atol=1e-9, index_name="t"), quiet)
