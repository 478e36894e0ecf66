"""The cost estimate, the cost controls (PI margin, paper's margin and switch, PPO-Lag's
multipliers), PPO-Lag's advantage mix and the M-step's reach."""

import csv
import dataclasses
import io
import math
import shutil
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from dynacppo_lite.cli import parse_overrides
from dynacppo_lite.config import FIELDS_ADDED_WITH_DEFAULTS, Config
from dynacppo_lite.cost_control import (
    MarginController,
    RealisedShare,
    make_cost_control,
    margin_from_fraction,
)
from dynacppo_lite.cost_estimate import CostEstimate
from dynacppo_lite.envs import TOY_ENV_ID
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.lagrangian import PIDLagrangeMultiplier, lagrangian_advantage
from dynacppo_lite.mstep import realised_fraction
from dynacppo_lite.runlog import CSV_COLUMNS, load_checkpoint
from dynacppo_lite.train import Trainer, train


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


def test_margin_controller_error_clip_sets_how_much_a_large_violation_counts():
    """At 11x the limit the relative error is -10: clipped at -2 the integral falls 2 ki per
    iteration, clipped at -10 it falls 10 ki (the whole violation counts)."""
    slow = MarginController(ki=0.01, integral_min=-1.0, error_min=-2.0)
    fast = MarginController(ki=0.01, integral_min=-1.0, error_min=-10.0)
    slow.update(275.0, 25.0, fresh=True)
    fast.update(275.0, 25.0, fresh=True)
    assert slow.integral == pytest.approx(1.0 - 0.02)
    assert fast.integral == pytest.approx(1.0 - 0.10)
    fast.update(50.0, 25.0, fresh=True)  # within both clips: the same step as unclipped
    assert fast.integral == pytest.approx(1.0 - 0.10 - 0.01)
    with pytest.raises(ValueError, match="pid_error_min"):
        Config(pid_error_min=0.0).validate()


def test_margin_controller_speeds_up_on_a_precise_estimate_only():
    """With noise_ref 0.8 the gains hold at se = 0.8 d (and noisier); at se = 0.2 d they are 4x,
    capped at max_speedup; without two episodes (se NaN) there is no evidence to speed up."""
    def step(se: float) -> tuple[float, float]:
        ctl = MarginController(ki=0.02, kp=0.5, integral_min=-1.0, noise_ref=0.8, max_speedup=3.0)
        u = ctl.update(35.0, 25.0, fresh=True, cost_se=se)  # e = -0.4
        return ctl.integral, u

    assert step(20.0) == pytest.approx((1 - 0.008, 1 - 0.008 - 0.2))
    assert step(40.0) == step(20.0)  # noisier than the reference: never slower
    assert step(10.0) == pytest.approx((1 - 0.016, 1 - 0.016 - 0.4))  # 2x
    assert step(1.0) == pytest.approx((1 - 0.024, 1 - 0.024 - 0.6))  # 20x, capped at 3x
    assert step(math.nan) == step(20.0)
    fixed = MarginController(ki=0.02, kp=0.5, integral_min=-1.0)
    fixed.update(35.0, 25.0, fresh=True, cost_se=1.0)
    assert fixed.integral == pytest.approx(1 - 0.008)  # noise_ref 0: fixed gains


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
        assert 0.0 < row["rho"] <= 1.0 and np.isfinite(row["reach"])
        assert (row["margin_u"] is not None) == (control == "pid")
    assert rows[-1]["cost_est"] > 0.5  # a limit of 0.5 on the toy task is violated...
    if control == "pid":  # ... so the controller tightens the margin
        assert rows[-1]["margin_u"] < 1.0
        assert trainer.cost_control.controller.integral < cfg.pid_integral_init


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
    expected = RealisedShare(cfg.rho_init, cfg.rho_smoothing, cfg.rho_min)
    for row in rows:
        assert row["estep_margin"] == pytest.approx(row["cost_margin"] / expected.value)
        assert row["rho"] == pytest.approx(expected.value)
        expected.update(row["estep_cost_change"], row["mstep_cost_change"])
    assert rows[-1]["rho"] != cfg.rho_init  # measured by now


def test_set_overrides_are_typed_and_checked():
    got = parse_overrides(["pi_lr=3e-4", "hidden=32,32", "target_kl=none", "realised_radius=false",
                           "cost_window=5", "cost_control=bang-bang"])
    assert got == {"pi_lr": 3e-4, "hidden": (32, 32), "target_kl": None, "realised_radius": False,
                   "cost_window": 5, "cost_control": "bang-bang"}
    with pytest.raises(ValueError, match="Config field"):
        parse_overrides(["no_such_field=1"])
    with pytest.raises(ValueError, match="not a valid value"):
        parse_overrides(["cost_window=many"])


def default_controller() -> MarginController:
    cfg = Config()
    return MarginController(cfg.pid_ki, cfg.pid_kp, cfg.pid_integral_min, cfg.pid_integral_init,
                            cfg.pid_error_min, cfg.pid_noise_ref, cfg.pid_max_speedup)


def test_default_controller_has_full_authority_and_lets_go_under_the_limit():
    """With the default gains a violation of only 10% held long enough drives u to -1 (pure
    cost descent); the floor -0.5 used before never did below twice the limit and left
    SafetyPointGoal1-v0 at 1.9x its limit. Once the cost is under the limit, the proportional
    term lifts u at once. A precise estimate (HalfCheetah's se of about 3) gets there 4x
    sooner than a noisy one (PointGoal1's se of about 20)."""
    cfg, limit = Config(), 25.0
    first = {}
    for se in (20.0, 2.5):
        ctl = default_controller()
        us = [ctl.update(1.1 * limit, limit, fresh=True, cost_se=se) for _ in range(2000)]
        assert us[0] > 0.75 and us[-1] == -1.0
        first[se] = us.index(-1.0)
        gain = ctl.speedup(limit, se)
        assert ctl.update(0.5 * limit, limit, fresh=True, cost_se=se) == pytest.approx(
            -1.0 + gain * (cfg.pid_ki + cfg.pid_kp) * 0.5)
    assert first[20.0] > 100  # a small violation is integrated, not slammed to the bound
    assert first[20.0] / first[2.5] > 0.9 * cfg.pid_max_speedup
    old = MarginController(cfg.pid_ki, cfg.pid_kp, integral_min=-0.5, error_min=-2.0)
    assert min(old.update(1.9 * limit, limit, fresh=True) for _ in range(2000)) > -1.0


def test_configs_saved_before_the_noise_scaled_gains_resume_as_they_ran():
    saved = Config().to_dict()
    for key in FIELDS_ADDED_WITH_DEFAULTS:
        del saved[key]
    old = Config.from_dict(saved)
    assert (old.pid_error_min, old.pid_noise_ref, old.pid_max_speedup) == (-2.0, 0.0, 1.0)
    ctl = make_cost_control(old, 25.0).controller
    assert ctl.speedup(25.0, 1.0) == 1.0 and ctl.error_min == -2.0


def omnisafe_pid_lagrangian(costs, limit, kp, ki, kd, d_delay, ema, init=0.0):
    """lambda after each cost, written out as OmniSafe's PIDLagrangian.pid_update (sum_norm)."""
    pid_i, delta_p, cost_d, ds, out = init, 0.0, 0.0, deque([0.0], maxlen=d_delay), []
    for cost in costs:
        delta = cost - limit
        pid_i = max(0.0, pid_i + delta * ki)
        delta_p = ema * delta_p + (1 - ema) * delta
        cost_d = ema * cost_d + (1 - ema) * cost
        out.append(max(0.0, kp * delta_p + pid_i + kd * max(0.0, cost_d - ds[0])))
        ds.append(cost_d)
    return out


def test_pid_lagrange_multiplier_follows_its_formula():
    pid = PIDLagrangeMultiplier(25.0)  # OmniSafe's defaults: kp 0.1, ki 0.01, kd 0.01, 10, 0.95
    assert pid.value == 0.0
    # e = 10: I = 0.1, e_p = 0.05 * 10, C = 0.05 * 35 rose from 0 by 1.75
    assert pid.update(35.0) == pytest.approx(0.1 * 0.5 + 0.1 + 0.01 * 1.75)
    rng = np.random.default_rng(0)
    costs = [35.0, *rng.uniform(0.0, 80.0, size=60), *np.full(40, 5.0)]
    for gains in [dict(kp=0.1, ki=0.01, kd=0.01, d_delay=10, ema=0.95),
                  dict(kp=1.0, ki=0.05, kd=0.5, d_delay=3, ema=0.5)]:
        pid = PIDLagrangeMultiplier(25.0, **gains, integral=0.2)
        assert pid.value == 0.2  # the initial multiplier
        got = [pid.update(c) for c in costs]
        np.testing.assert_allclose(got, omnisafe_pid_lagrangian(costs, 25.0, **gains, init=0.2),
                                   rtol=0, atol=1e-12)
        assert min(got) >= 0.0 and got[-1] == 0.0  # long under the limit: lambda back to 0
        again = PIDLagrangeMultiplier(25.0, **gains)
        again.load_state_dict(pid.state_dict())
        assert [again.update(c) for c in costs[:15]] == [pid.update(c) for c in costs[:15]]


def test_pid_lagrange_derivative_term_raises_lambda_only_while_cost_climbs():
    def lam(costs, d_delay=1):  # no smoothing, no P or I term: lambda = 0.1 x the rise
        pid = PIDLagrangeMultiplier(25.0, kp=0.0, ki=0.0, kd=0.1, d_delay=d_delay, ema=0.0)
        return [pid.update(c) for c in costs]

    assert lam([10.0, 30.0, 60.0]) == pytest.approx([1.0, 2.0, 3.0])  # the rise since last time
    assert lam([60.0, 30.0, 10.0]) == pytest.approx([6.0, 0.0, 0.0])  # a fall adds nothing
    assert lam([10.0, 30.0, 60.0], d_delay=2) == pytest.approx([1.0, 3.0, 5.0])  # 2 updates back


def test_pid_lagrangian_drives_ppo_lag_on_fresh_estimates(tmp_path):
    cfg = Config(algo="ppo-lag", cost_control="pid-lagrangian", env_id=TOY_ENV_ID, total_steps=3_000,
                 num_envs=1, steps_per_iter=1_000, cost_limit=0.5, pid_lag_ki=0.05,
                 log_dir=str(tmp_path), run_name="pidlag")
    trainer = Trainer(cfg)
    rows = [trainer.iteration(it) for it in range(3)]
    trainer.envs.close()
    # The gains are per 20,000-step epoch (OmniSafe's); 1,000-step iterations are 1/20 of one.
    expected = PIDLagrangeMultiplier(0.5, kp=cfg.pid_lag_kp, ki=0.05 / 20, kd=cfg.pid_lag_kd,
                                     d_delay=cfg.pid_lag_d_delay * 20, ema=cfg.pid_lag_ema ** (1 / 20))
    for row in rows:
        assert row["mode"] == "lagrange" and "margin_u" not in row
        assert row["lagrange"] == pytest.approx(expected.update(row["cost_est"]))
    assert rows[-1]["lagrange"] > 0.0


def test_cost_control_must_suit_the_algorithm():
    assert Config().resolved_cost_control == "pid"
    assert Config(algo="dyna-cppo").resolved_cost_control == "pid"
    assert Config(algo="ppo-lag").resolved_cost_control == "lagrangian"
    assert Config(algo="ppo-lag", cost_control="pid-lagrangian").validate().resolved_cost_control \
        == "pid-lagrangian"
    for algo, control in [("ppo-lag", "pid"), ("ppo-lag", "bang-bang"), ("cppo", "lagrangian"),
                          ("dyna-cppo", "pid-lagrangian")]:
        with pytest.raises(ValueError, match=f"cost_control '{control}' does not apply to algo "
                                             f"'{algo}'") as info:
            Config(algo=algo, cost_control=control).validate()
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="cost_control must be one of"):
        Config(cost_control="pi").validate()
    with pytest.raises(ValueError, match="pid_lag_ema"):
        Config(algo="ppo-lag", pid_lag_ema=1.0).validate()


def test_configs_saved_when_ppo_lag_ignored_cost_control_still_load():
    # Before cost_control applied to ppo-lag, its runs saved the cppo default ("pid").
    old = Config.from_dict({"algo": "ppo-lag", "cost_control": "pid"}).validate()
    assert old.cost_control == "auto" and old.resolved_cost_control == "lagrangian"
    assert Config.from_dict({"algo": "cppo", "cost_control": "bang-bang"}).cost_control == "bang-bang"
    reference = Path(__file__).resolve().parents[1] / "dynacppo_lite" / "bench" / "reference"
    saved = load_checkpoint(reference / "ppolag_SafetyPointGoal1-v0_2e5" / "checkpoint.pt")["config"]
    assert Config.from_dict(saved).validate().resolved_cost_control == "lagrangian"


def test_each_control_keeps_its_state_through_state_dict():
    for control, algo in [("pid", "cppo"), ("bang-bang", "cppo"), ("lagrangian", "ppo-lag"),
                          ("pid-lagrangian", "ppo-lag")]:
        cfg = Config(algo=algo, cost_control=control, lagrangian_lr=0.1)
        ctl, fresh_ctl = make_cost_control(cfg, 25.0), make_cost_control(cfg, 25.0)
        for cost in (60.0, 80.0, 10.0):
            decision = ctl.decide(cost, True, (25.0 - cost) / 100)
            if ctl.uses_estep:
                ctl.observe(0.01, 0.002)
        buf = io.BytesIO()  # as a checkpoint stores it: tensors, numbers, strings only
        torch.save(ctl.state_dict(), buf)
        buf.seek(0)
        fresh_ctl.load_state_dict(torch.load(buf, weights_only=True))
        assert fresh_ctl.decide(70.0, True, -0.45) == ctl.decide(70.0, True, -0.45), control
        assert fresh_ctl.fields(decision) == ctl.fields(decision), control


def _same_state(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def _csv_rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    timing = {c for c in CSV_COLUMNS if c.startswith("t_") or c in ("time_s", "sps")}
    return [{k: v for k, v in r.items() if k not in timing} for r in rows]


@pytest.mark.parametrize("algo,control", [("cppo", "pid"), ("cppo", "bang-bang"),
                                          ("ppo-lag", "lagrangian")])
def test_checkpoints_from_before_the_control_state_dict_resume_the_same(tmp_path, algo, control):
    """Old checkpoints kept the controls' state in top-level keys (lagrange, mode, reach,
    controller); they restore to the same state and continue with the same numbers."""
    cfg = Config(algo=algo, cost_control=control, env_id=TOY_ENV_ID, total_steps=3_000, num_envs=1,
                 steps_per_iter=1_000, cost_limit=2.0, lagrangian_lr=0.2, checkpoint_every=1,
                 log_dir=str(tmp_path), run_name="new")

    def stop(row):
        if row["iteration"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg).run(callback=stop)
    new, old = tmp_path / "new", tmp_path / "old"
    shutil.copytree(new, old)
    ckpt = load_checkpoint(old / "checkpoint.pt")
    state = ckpt.pop("cost_control")
    unused = make_cost_control(Config(algo="ppo-lag"), 2.0).state_dict()["multiplier"]
    ckpt.update(lagrange=state.get("multiplier", unused),
                mode=state.get("switch", {"mode": "normal"})["mode"],
                reach=state.get("share", {"sxy": 0.0, "sxx": 0.0}),
                controller=state.get("controller", {"integral": 1.0})["integral"])
    torch.save(ckpt, old / "checkpoint.pt")
    restored = {}
    for run in (new, old):
        trainer = Trainer(resume=run)
        restored[run.name] = trainer.cost_control.state_dict()
        trainer.envs.close()
    assert _same_state(restored["old"], restored["new"])
    for run in (new, old):
        train(resume=run)
    assert _csv_rows(old) == _csv_rows(new) and len(_csv_rows(new)) == 3
