"""The cost estimate, the PI margin controller, PPO-Lag's advantage mix and the M-step's reach."""

import dataclasses

import numpy as np
import pytest
import torch

from dynacppo_lite.cli import parse_overrides
from dynacppo_lite.config import Config
from dynacppo_lite.cost_control import MarginController, RealisedShare, margin_from_fraction
from dynacppo_lite.cost_estimate import CostEstimate
from dynacppo_lite.envs import TOY_ENV_ID
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.lagrangian import lagrangian_advantage
from dynacppo_lite.mstep import realised_fraction
from dynacppo_lite.train import Trainer


def test_cost_estimate_is_a_window_over_episodes_with_its_standard_error():
    est = CostEstimate(window=3)
    assert est.count == 0 and est.cost == 0.0 and np.isnan(est.cost_se)
    assert est.update([(1.0, 10.0, 100), (2.0, 20.0, 100)])
    assert est.update([(3.0, 60.0, 50), (4.0, 0.0, 50)])
    kept = np.array([20.0, 60.0, 0.0])  # the oldest episode left the window
    assert est.count == 3 and est.cost == pytest.approx(kept.mean())
    assert est.cost_se == pytest.approx(kept.std(ddof=1) / np.sqrt(3))
    assert est.ret == pytest.approx(3.0) and est.length == pytest.approx(200 / 3)
    assert not est.update([])  # nothing ended: no new evidence, the estimate stays
    assert est.cost == pytest.approx(kept.mean())
    again = CostEstimate(window=1)
    again.load_state_dict(est.state_dict())
    assert again.window == 3 and again.cost == est.cost
    with pytest.raises(ValueError, match="window"):
        CostEstimate(0)


def test_margin_controller_integrates_the_violation_and_saturates():
    ctl = MarginController(ki=0.1, integral_min=-1.0)
    assert ctl.update(10.0, 25.0, fresh=True) == 1.0  # safe from the start: unconstrained
    outs = [ctl.update(50.0, 25.0, fresh=True) for _ in range(5)]  # relative violation 1
    assert outs == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert ctl.update(50.0, 25.0, fresh=False) == pytest.approx(0.5)  # no new evidence
    for _ in range(30):
        u = ctl.update(500.0, 25.0, fresh=True)  # the error is clipped at -2 per step
    assert u == -1.0
    assert MarginController(ki=0.0, kp=0.5).update(50.0, 25.0, fresh=True) == pytest.approx(0.5)


def test_margin_controller_anti_windup_lets_go_as_soon_as_cost_is_under_the_limit():
    ctl = MarginController(ki=0.1, kp=0.5, integral_min=-0.5)
    for _ in range(100):  # a long violation: the integral stops at its floor
        ctl.update(75.0, 25.0, fresh=True)
    assert ctl.integral == -0.5
    assert ctl.update(75.0, 25.0, fresh=True) == -1.0  # the proportional part still saturates u
    # Once cost is at the limit the proportional part is 0 and u is the (bounded) integral;
    # below it, u rises at once instead of waiting for the integral to unwind from -1.
    assert ctl.update(25.0, 25.0, fresh=True) == pytest.approx(-0.5)
    assert ctl.update(0.0, 25.0, fresh=True) == pytest.approx(-0.4 + 0.5)


def test_margin_fraction_spans_unconstrained_to_pure_cost_descent():
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    c = 0.6 * a + rng.normal(size=400)  # the reward direction also raises cost
    kl = 0.01
    free = solve_estep(a, c, cost_margin=margin_from_fraction(1.0, c, kl), kl_budget=kl,
                       lower_bound=0.0)
    assert free.mode == "normal" and abs(free.angle) < 1e-9  # u = 1: pure reward direction
    tight = solve_estep(a, c, cost_margin=margin_from_fraction(-0.999, c, kl), kl_budget=kl,
                        lower_bound=0.0)
    x, c_hat = tight.v - 1.0, c - c.mean()
    cos = x @ c_hat / (np.linalg.norm(x) * np.linalg.norm(c_hat))
    assert tight.mode == "normal" and cos < -0.99  # u -> -1: nearly pure cost descent
    zero = solve_estep(a, c, cost_margin=margin_from_fraction(0.0, c, kl), kl_budget=kl,
                       lower_bound=0.0)
    assert zero.cost_change == pytest.approx(0.0, abs=1e-9)


def test_a_margin_beyond_the_reachable_cut_turns_the_estep_to_recovery():
    """Sparse, heavy-tailed A_c (5% hazard samples) with v >= 0.4: the sphere's scale overstates
    the reachable cut, so already u = -0.3 cannot be met and the E-step returns its recovery
    case 3, pure cost descent, whose cut is the largest the bound allows."""
    rng = np.random.default_rng(0)
    n, kl, b = 4000, 0.1 / (2 * np.log(2) - 1), 0.4
    c = np.where(rng.random(n) < 0.05, rng.exponential(20.0, n), 0.0) + rng.normal(0.0, 0.3, n)
    a = rng.normal(size=n)
    descent = solve_estep(-c, np.zeros(n), cost_margin=0.0, kl_budget=kl, lower_bound=b)
    best = np.mean((descent.v - 1.0) * c)
    assert best > margin_from_fraction(-0.3, c, kl)  # the reachable cut is under 30% of the sphere's
    est = solve_estep(a, c, cost_margin=margin_from_fraction(-0.3, c, kl), kl_budget=kl, lower_bound=b)
    assert est.mode == "recovery" and not est.feasible
    np.testing.assert_allclose(est.v, descent.v, atol=1e-6)
    mild = solve_estep(a, c, cost_margin=0.5 * best, kl_budget=kl, lower_bound=b)
    assert mild.mode == "normal" and mild.cost_change == pytest.approx(0.5 * best, rel=1e-6)


def test_lagrangian_advantage_mixes_as_omnisafe():
    gen = torch.Generator().manual_seed(0)
    adv_r = 0.1 * torch.randn(1000, generator=gen) + 3.0
    adv_c = 4.0 * torch.randn(1000, generator=gen) + 1.0
    z_r = (adv_r - adv_r.mean()) / adv_r.std()
    torch.testing.assert_close(lagrangian_advantage(adv_r, adv_c, 0.0), z_r, rtol=0, atol=1e-5)
    lam = 0.5
    expected = (z_r - lam * (adv_c - adv_c.mean())) / (1 + lam)
    torch.testing.assert_close(lagrangian_advantage(adv_r, adv_c, lam), expected, rtol=0, atol=1e-5)
    # The reward part keeps unit weight, whatever the spread of A_c (no re-standardising).
    mixed = lagrangian_advantage(adv_r, adv_c, 0.05)
    assert torch.corrcoef(torch.stack([mixed, z_r]))[0, 1] > 0.5


def test_realised_fraction_is_the_slope_of_r_on_v():
    gen = torch.Generator().manual_seed(1)
    v = 1.0 + 0.3 * torch.randn(5000, generator=gen)
    noise = 0.05 * torch.randn(5000, generator=gen)
    noise -= (noise @ (v - v.mean())) / ((v - v.mean()) @ (v - v.mean())) * (v - v.mean())
    slope, corr = realised_fraction(1.0 + 0.25 * (v - 1.0) + noise, v)
    assert slope == pytest.approx(0.25, abs=1e-6) and 0.7 < corr < 1.0
    assert realised_fraction(torch.rand(10), torch.ones(10)) == (0.0, 0.0)


def test_lagrange_multiplier_is_not_moved_on_stale_cost(tmp_path):
    cfg = Config(algo="ppo-lag", env_id=TOY_ENV_ID, total_steps=4_000, num_envs=1, steps_per_iter=1_000,
                 cost_limit=0.0, lagrangian_lr=0.2, log_dir=str(tmp_path), run_name="stale")
    trainer = Trainer(cfg)
    real_collect = trainer.collector.collect
    calls = {"n": 0}

    def collect_hiding_episodes_after_the_first(num_steps):
        calls["n"] += 1
        ro = real_collect(num_steps)
        return ro if calls["n"] == 1 else dataclasses.replace(ro, episodes=[])

    trainer.collector.collect = collect_hiding_episodes_after_the_first
    lambdas = [trainer.iteration(it)["lagrange"] for it in range(3)]
    trainer.envs.close()
    assert lambdas[0] > 0.0  # the first iteration's episodes violate a limit of 0
    assert lambdas[1] == lambdas[0] == lambdas[2]


@pytest.mark.parametrize("control", ["pid", "margin", "bang-bang"])
def test_every_cost_control_logs_its_diagnostics(tmp_path, control):
    cfg = Config(env_id=TOY_ENV_ID, total_steps=3_000, num_envs=1, steps_per_iter=1_000,
                 cost_limit=0.5, cost_control=control, log_dir=str(tmp_path), run_name=control)
    trainer = Trainer(cfg)
    rows = [trainer.iteration(it) for it in range(3)]
    trainer.envs.close()
    for row in rows:
        assert row["cost_est_n"] > 0 and np.isfinite(row["cost_est_se"])
        assert 0.0 < row["reach_est"] <= 1.0 and np.isfinite(row["reach"])
        assert (row["margin_u"] is not None) == (control == "pid")
    assert rows[-1]["cost_est"] > 0.5  # a limit of 0.5 on the toy task is violated...
    if control == "pid":  # ... so the controller tightens the margin
        assert rows[-1]["margin_u"] < rows[0]["margin_u"]


def test_realised_share_is_the_slope_of_the_realised_on_the_predicted_cost_change():
    rng = np.random.default_rng(0)
    share = RealisedShare(initial=0.2, smoothing=0.9, floor=0.05)
    assert share.value == 0.2  # nothing measured yet
    for _ in range(200):
        x = rng.normal()
        share.update(x, 0.3 * x + 0.01 * rng.normal())
    assert share.value == pytest.approx(0.3, abs=0.01)
    before = share.value
    for _ in range(20):  # iterations that predict no cost change carry no evidence
        share.update(0.0, rng.normal())
    assert share.value == before
    for _ in range(200):  # a step that moves the cost the wrong way: rho is held at its floor
        x = rng.normal()
        share.update(x, -x)
    assert share.value == 0.05
    again = RealisedShare()
    again.load_state_dict(share.state_dict())
    assert again.value == share.value


def test_margin_mode_asks_the_estep_for_the_margin_over_the_realised_share(tmp_path):
    cfg = Config(env_id=TOY_ENV_ID, total_steps=4_000, num_envs=1, steps_per_iter=1_000,
                 cost_limit=0.5, cost_control="margin", log_dir=str(tmp_path), run_name="share")
    trainer = Trainer(cfg)
    rows = [trainer.iteration(it) for it in range(4)]
    trainer.envs.close()
    expected = RealisedShare(cfg.reach_init, cfg.reach_smoothing, cfg.reach_min)
    for row in rows:
        assert row["estep_margin"] == pytest.approx(row["cost_margin"] / expected.value)
        assert row["reach_est"] == pytest.approx(expected.value)
        expected.update(row["estep_cost_change"], row["mstep_cost_change"])
    assert rows[-1]["reach_est"] != cfg.reach_init  # measured by now


def test_set_overrides_are_typed_and_checked():
    got = parse_overrides(["pi_lr=3e-4", "hidden=32,32", "target_kl=none", "realised_radius=false",
                           "cost_window=5", "cost_control=bang-bang"])
    assert got == {"pi_lr": 3e-4, "hidden": (32, 32), "target_kl": None, "realised_radius": False,
                   "cost_window": 5, "cost_control": "bang-bang"}
    with pytest.raises(ValueError, match="Config field"):
        parse_overrides(["no_such_field=1"])
    with pytest.raises(ValueError, match="not a valid value"):
        parse_overrides(["cost_window=many"])


def test_default_controller_never_saturates_within_twice_the_limit():
    """With the default gains the controller can ask for pure cost descent (u = -1) only while
    the windowed cost is above 2x the limit: below it, whatever the history, some reward is
    kept (issue: long runs of u = -1 threw the reward away near the limit)."""
    cfg = Config()
    rng = np.random.default_rng(0)
    limit = 25.0
    for _ in range(20):
        ctl = MarginController(cfg.pid_ki, cfg.pid_kp, cfg.pid_integral_min, cfg.pid_integral_init)
        for cost in rng.uniform(0, 300, size=400):  # drive the integral anywhere it can go
            u = ctl.update(float(cost), limit, fresh=True)
            if cost < 2 * limit:
                assert u > -1.0
        assert ctl.integral >= cfg.pid_integral_min
