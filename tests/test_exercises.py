"""The notebooks' checkers: the reference passes, typical mistakes get their own hint, and the
references agree with the library they stand for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacppo_lite import exercises as ex
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.exercises import (
    advantages,
    estep_case,
    mstep_gradient,
    one_step_error,
    run_summary,
    smoothing,
)

CHECKERS = {
    "one_step": (ex.check_one_step_error, ex.reference_one_step_error, one_step_error._ONE_STEP_MISTAKES),
    "gae": (ex.check_gae, ex.reference_gae, advantages._GAE_MISTAKES),
    "estep": (ex.check_estep_case, ex.reference_estep_case, estep_case._ESTEP_MISTAKES),
    "mstep": (ex.check_mstep_gradient, ex.reference_mstep_gradient, mstep_gradient._MSTEP_MISTAKES),
    "summary": (ex.check_run_summary, ex.reference_run_summary, run_summary._SUMMARY_MISTAKES),
    "smoothing": (ex.check_smoothing, ex.reference_smoothing, smoothing._SMOOTH_MISTAKES),
}


@pytest.mark.parametrize("topic", CHECKERS)
def test_reference_passes(topic: str, capsys) -> None:
    check, reference, _ = CHECKERS[topic]
    result = check(reference, library_ok=True)
    assert result and result.passed and result.case is None
    assert "Well done" in capsys.readouterr().out


@pytest.mark.parametrize(("topic", "key"), [(t, m.key) for t, (_, _, ms) in CHECKERS.items() for m in ms])
def test_every_listed_mistake_is_recognised_as_itself(topic: str, key: str) -> None:
    check, _, mistakes = CHECKERS[topic]
    mistake = next(m for m in mistakes if m.key == key)
    result = check(mistake.fn, quiet=True, strict=False, library_ok=True)
    assert not result
    assert result.mistake == key, f"{key} diagnosed as {result.mistake}: {result.message}"
    assert mistake.hint in result.message


# ---------------------------------------------------------- learner-style wrong solutions
def gae_truncation_as_termination(rewards, values, next_values, terminated, truncated, *, gamma, lam):
    """A typical learner's GAE that treats every episode end as a termination."""
    adv, last = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        done = terminated[t] or truncated[t]
        delta = rewards[t] + gamma * next_values[t] * (1 - done) - values[t]
        last = delta + gamma * lam * (1 - done) * last
        adv[t] = last
    return adv


def gae_without_resets(rewards, values, next_values, terminated, truncated, *, gamma, lam):
    adv, last = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t]) - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


def test_gae_truncation_bug_gets_its_hint(capsys) -> None:
    result = ex.check_gae(gae_truncation_as_termination, strict=False)
    out = capsys.readouterr().out
    assert not result and result.mistake == "truncation_as_termination"
    assert "truncated" in result.case and "bootstrap" in out and "Hint:" in out


def test_gae_recursion_across_episodes_gets_its_hint() -> None:
    result = ex.check_gae(gae_without_resets, quiet=True, strict=False)
    assert result.mistake == "no_stop_at_all" and "across episode ends" in result.message


def test_mstep_without_clip_gets_its_hint() -> None:
    result = ex.check_mstep_gradient(lambda r, v, b: -(v - r) / len(r), quiet=True, strict=False)
    assert result.mistake == "no_clip" and "stops pushing r further down" in result.message


def test_estep_without_centring_gets_its_hint() -> None:
    def uncentred(adv_r, adv_c, *, cost_margin, kl_budget):
        n = len(adv_r)
        radius = np.sqrt(2 * n * kl_budget)
        if radius * (adv_r @ adv_c) / np.linalg.norm(adv_r) <= n * cost_margin:
            return "unconstrained"
        return "infeasible" if -radius * np.linalg.norm(adv_c) > n * cost_margin else "constrained"

    result = ex.check_estep_case(uncentred, quiet=True, strict=False)
    assert result.mistake == "not_centred" and "centred" in result.message


def test_smoothing_with_zero_padding_gets_its_hint() -> None:
    result = ex.check_smoothing(lambda y, w: np.convolve(y, np.ones(w) / w)[:len(y)], quiet=True,
                               strict=False)
    assert result.mistake == "zero_padded" and "average only the values that exist" in result.message


def test_one_step_error_against_next_state_gets_its_hint() -> None:
    def against_next_state(obs, rew, cost, next_obs, pred):
        y = np.concatenate([next_obs, rew[:, None], cost[:, None]], 1)
        y_base = np.concatenate([next_obs - obs, rew[:, None], cost[:, None]], 1)
        return float(np.mean((pred - y) ** 2)), float(np.mean(y_base ** 2))

    result = ex.check_one_step_error(against_next_state, quiet=True, strict=False)
    assert result.mistake == "next_state_target" and "change" in result.message


def test_run_summary_strict_inequality_gets_its_hint() -> None:
    def strict(step, ep_return, ep_cost, cost_limit):
        keep = step > 0.9 * step[-1]
        return float(ep_return[keep].mean()), float(ep_cost[keep].mean()), ep_cost[keep].mean() < cost_limit

    result = ex.check_run_summary(strict, quiet=True, strict=False)
    assert result.mistake == "strict" and "at most" in result.message


# ------------------------------------------------------------------------ robustness
def test_exceptions_shapes_and_unknown_mistakes_are_reported_not_raised(capsys) -> None:
    def broken(*args, **kwargs):
        raise KeyError("oops")

    result = ex.check_gae(broken, strict=False)
    assert not result and "KeyError" in capsys.readouterr().out
    result = ex.check_gae(lambda r, *a, **k: np.zeros(len(r) + 1), quiet=True, strict=False)
    assert not result and result.mistake is None and "shape" in result.message
    result = ex.check_gae(lambda r, *a, **k: np.full(len(r), 7.0), quiet=True, strict=False)
    assert result.mistake is None and "first wrong entry at t=0" in result.message
    result = ex.check_estep_case(lambda *a, **k: "feasible", quiet=True, strict=False)
    assert "return one of" in result.message
    result = ex.check_run_summary(lambda *a, **k: 3.0, quiet=True, strict=False)
    assert "expected a tuple" in result.message


def test_learner_may_mutate_inputs_and_return_tensors() -> None:
    def mutating_smooth(y, window):
        out = torch.tensor(ex.reference_smoothing(y, window))  # a copy, not a view of y
        y[:] = 0.0  # must not change what the reference sees
        return out

    assert ex.check_smoothing(mutating_smooth, quiet=True, library_ok=True)


# --------------------------------------------------------- references vs the library
def test_reference_gae_follows_the_documented_recursion() -> None:
    for case in advantages._gae_cases():
        want = advantages._gae_variant(*case.args, **case.kwargs)  # the recursion in gae.py's docstring
        np.testing.assert_allclose(ex.reference_gae(*case.args, **case.kwargs), want, atol=1e-12)


def test_reference_mstep_gradient_is_the_analytic_one() -> None:
    for case in mstep_gradient._mstep_cases():
        r, v, b = case.args
        want = np.where((r < b) & (v < r), 0.0, -(v - r) / len(r))
        np.testing.assert_allclose(ex.reference_mstep_gradient(r, v, b), want, atol=1e-12)


def test_reference_estep_case_agrees_with_solve_estep() -> None:
    """Without the element-wise bound (lower_bound=0 never binds on these batches), case 1 is the
    pure reward direction, case 2 has the cost constraint active, case 3 is not feasible."""
    for case in estep_case._estep_cases():
        a, c = case.args
        margin, kl = case.kwargs["cost_margin"], case.kwargs["kl_budget"]
        label = ex.reference_estep_case(a, c, **case.kwargs)
        res = solve_estep(a, c, cost_margin=margin, kl_budget=kl, lower_bound=0.0)
        assert res.v.min() > 0.0, "the bound binds: the case would not be Theorem 3.4's"
        if label == "unconstrained":
            assert res.feasible and abs(res.angle) < 1e-6
        elif label == "constrained":
            assert res.feasible and res.mode == "normal"
            assert res.cost_change == pytest.approx(margin, abs=1e-8)
        else:
            assert not res.feasible and res.mode == "recovery"


def test_reference_one_step_error_is_one_step_loss() -> None:
    from dynacppo_lite.dynamics import DynamicsEnsemble

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(200, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, (200, 2)).astype(np.float32)
    next_obs = (obs + 0.1 * act @ np.ones((2, 3))).astype(np.float32)
    rew, cost = act[:, 0].copy(), (act[:, 1] > 0.5).astype(np.float32)
    ens = DynamicsEnsemble(3, 2, ensemble_size=2, hidden=(16,), seed=0)
    ens.fit(obs, act, rew, cost, next_obs, max_epochs=2)
    pred = ens.predict(obs, act)[0].mean(0).numpy()
    model, baseline = ex.reference_one_step_error(obs, rew, cost, next_obs, pred)
    assert model == pytest.approx(ens.one_step_loss(obs, act, rew, cost, next_obs), rel=1e-5)
    y = np.concatenate([next_obs - obs, rew[:, None], cost[:, None]], 1)
    assert baseline == pytest.approx(float(np.mean(y ** 2)), rel=1e-6)


# ------------------------------------------------------------- grading: raise, verdict, library
def test_a_wrong_answer_raises_with_its_hint_and_verdict_returns_it(capsys) -> None:
    with pytest.raises(ex.CheckFailed) as info:
        ex.check_gae(gae_truncation_as_termination)
    assert isinstance(info.value, AssertionError) and "Hint:" in str(info.value)
    assert info.value.result.mistake == "truncation_as_termination"
    result = ex.verdict(ex.check_gae, gae_truncation_as_termination)
    assert not result and "bootstrap" in capsys.readouterr().out


def my_gae_via_library(rewards, values, next_values, terminated, truncated, *, gamma, lam):
    import dynacppo_lite

    return dynacppo_lite.gae.gae(rewards, values, next_values, terminated, truncated, gamma=gamma,
                                 lam=lam)


@pytest.mark.parametrize("fn", [
    pytest.param(lambda: __import__("dynacppo_lite.gae").gae.gae, id="the library function"),
    pytest.param(lambda: ex.reference_gae, id="the reference"),
    pytest.param(lambda: my_gae_via_library, id="a function that calls it"),
])
def test_handing_back_the_library_answer_fails(fn) -> None:
    result = ex.check_gae(fn(), quiet=True, strict=False)
    assert not result and result.mistake == "uses_library" and "write it yourself" in result.message


def test_library_use_sees_globals_closures_and_nested_functions() -> None:
    from dynacppo_lite import plots
    from dynacppo_lite.exercises.checking import library_use

    def closure():
        return plots

    def nested(y, w):
        def inner():
            return smooth_alias(y, w)  # noqa: F821 - resolved in the globals below
        return inner()

    assert library_use(closure, ("dynacppo_lite.plots",)) == "dynacppo_lite.plots"
    glb = {"smooth_alias": plots.smooth}
    rebuilt = type(nested)(nested.__code__, glb)
    assert library_use(rebuilt, ("dynacppo_lite.plots",)) == "dynacppo_lite.plots.smooth"
    assert library_use(lambda y, w: np.convolve(y, np.ones(w)), ("dynacppo_lite.plots",)) is None
