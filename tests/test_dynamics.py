"""DynamicsEnsemble and ModelEnv, on a known linear system.

System: s' = s + A s + B a + 0.01 noise, r = w_r . (s, a), c = w_c . (s, a).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dynacppo_lite.dynamics import DynamicsEnsemble, ModelEnv

OBS_DIM, ACT_DIM = 4, 2
SMALL = {"ensemble_size": 3, "hidden": (32, 32)}


def system() -> tuple[np.ndarray, ...]:
    """(A, B, w_r, w_c): the same system for every call."""
    sys_rng = np.random.default_rng(123)
    A = 0.1 * sys_rng.standard_normal((OBS_DIM, OBS_DIM))
    B = 0.3 * sys_rng.standard_normal((OBS_DIM, ACT_DIM))
    w_r, w_c = sys_rng.standard_normal((2, OBS_DIM + ACT_DIM))
    return A, B, w_r, w_c


def linear_system(n: int, seed: int, noise: float = 0.01) -> tuple[np.ndarray, ...]:
    A, B, w_r, w_c = system()
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, OBS_DIM)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32)
    x = np.concatenate([obs, act], 1)
    next_obs = obs + obs @ A.T + act @ B.T + noise * rng.standard_normal((n, OBS_DIM))
    return (obs, act, (x @ w_r).astype(np.float32), (x @ w_c).astype(np.float32),
            next_obs.astype(np.float32))


@pytest.fixture(scope="module")
def fitted() -> tuple[DynamicsEnsemble, object]:
    ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, seed=0)
    result = ens.fit(*linear_system(2000, seed=1), max_epochs=40, batch_size=64)
    return ens, result


def test_fits_linear_system_far_better_than_no_change(fitted) -> None:
    ens, result = fitted
    obs, act, rew, cost, next_obs = linear_system(500, seed=2, noise=0.0)
    y = np.concatenate([next_obs - obs, rew[:, None], cost[:, None]], 1)
    no_change = float((y ** 2).mean())  # predict s' = s, r = c = 0
    err = ens.one_step_loss(obs, act, rew, cost, next_obs)
    assert err < 1e-3
    assert err < 0.01 * no_change
    assert result.holdout_mse < 1e-3 and result.n_holdout == 400 and result.n_train == 1600
    assert result.epochs >= 5 and result.train_history[-1] < result.train_history[0]
    assert result.holdout_loss <= min(result.holdout_history) + 1e-6


def test_other_targets_are_fitted_with_fit_targets() -> None:
    """With ``out_dim`` the ensemble models other targets of (s, a) (the coordinate model's
    motion): fit_targets with the same seed gives fit's numbers on fit's targets, and fit,
    whose targets are (s' - s, r, c), refuses another out_dim."""
    obs, act, rew, cost, next_obs = linear_system(600, seed=1)
    y = np.concatenate([next_obs - obs, rew[:, None], cost[:, None]], 1)
    flat = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, seed=0)
    general = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, seed=0, out_dim=OBS_DIM + 2)
    a = flat.fit(obs, act, rew, cost, next_obs, max_epochs=3)
    b = general.fit_targets(obs, act, y, max_epochs=3)
    assert a.train_history == b.train_history and a.holdout_mse == b.holdout_mse
    two = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, seed=0, out_dim=2)
    result = two.fit_targets(obs, act, y[:, :2], max_epochs=3)
    assert two.predict(obs, act)[0].shape == (3, 600, 2) and np.isfinite(result.holdout_mse)
    with pytest.raises(ValueError, match="fit_targets"):
        two.fit(obs, act, rew, cost, next_obs)
    with pytest.raises(ValueError, match="other targets"):
        ModelEnv(two)
    with pytest.raises(ValueError, match=r"targets have shape \(600, 3\), expected \(600, 2\)"):
        two.fit_targets(obs, act, y[:, :3])


def test_predict_shapes_and_members_differ(fitted) -> None:
    ens, _ = fitted
    obs, act, *_ = linear_system(50, seed=3)
    mean, var = ens.predict(obs, act)
    assert mean.shape == var.shape == (3, 50, OBS_DIM + 2)
    assert mean.dtype == torch.float32 and bool((var > 0).all())
    assert float(mean.std(0).mean()) > 0  # members are not copies of each other


def test_predict_before_fit_raises() -> None:
    ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, seed=0)
    obs, act, *_ = linear_system(5, seed=0)
    with pytest.raises(RuntimeError, match="predict before fit"):
        ens.predict(obs, act)
    env = ModelEnv(ens)
    env.reset(obs)
    with pytest.raises(RuntimeError, match="predict before fit"):
        env.step(act)


def test_forward_matches_member_loop() -> None:
    ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, seed=0)
    x = torch.randn(3, 7, OBS_DIM + ACT_DIM, generator=torch.Generator().manual_seed(0))
    mean, logvar = ens(x)
    for e in range(3):
        h = x[e]
        for i, (w, b) in enumerate(zip(ens.weights, ens.biases, strict=True)):
            h = h @ w[e] + b[e, 0]
            h = F.silu(h) if i < len(ens.weights) - 1 else h
        mu, raw = h.split(OBS_DIM + 2, dim=-1)
        hi, lo = ens.max_logvar[e, 0], ens.min_logvar[e, 0]
        lv = lo + F.softplus(hi - F.softplus(hi - raw) - lo)
        torch.testing.assert_close(mean[e], mu)
        torch.testing.assert_close(logvar[e], lv)
        assert bool((lv <= hi).all() and (lv >= lo).all())


def test_batched_training_equals_member_by_member() -> None:
    ens3 = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, weight_decay=1e-2, seed=0)
    ens1 = DynamicsEnsemble(OBS_DIM, ACT_DIM, ensemble_size=1, hidden=(32, 32),
                            weight_decay=1e-2, seed=99)
    with torch.no_grad():  # member 1 of ens3 becomes ens1's only member
        for p1, p3 in zip(ens1.parameters(), ens3.parameters(), strict=True):
            p1.copy_(p3[1:2])
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(3, 32, OBS_DIM + ACT_DIM, generator=gen)
        y = torch.randn(3, 32, OBS_DIM + 2, generator=gen)
        nll3 = ens3.train_step(x, y)
        nll1 = ens1.train_step(x[1:2], y[1:2])
        torch.testing.assert_close(nll3[1:2], nll1)
    for p1, p3 in zip(ens1.parameters(), ens3.parameters(), strict=True):
        torch.testing.assert_close(p3[1:2], p1)
    assert not torch.allclose(ens3.weights[0][0], ens3.weights[0][1])


def test_each_member_gets_its_own_minibatch_order() -> None:
    ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, ensemble_size=2, hidden=(16, 16), seed=0)
    with torch.no_grad():  # identical members: only the data order can tell them apart
        for p in ens.parameters():
            p[1] = p[0]
    data = linear_system(200, seed=6)
    ens.fit(*data, max_epochs=1, bootstrap=False, holdout_frac=0.0, batch_size=32)
    mean, _ = ens.predict(data[0], data[1])
    assert not torch.allclose(mean[0], mean[1])


def test_fit_is_deterministic_with_a_seed() -> None:
    data = linear_system(300, seed=4)
    preds = []
    for seed in (7, 7, 8):
        ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, ensemble_size=2, hidden=(16, 16), seed=seed)
        ens.fit(*data, max_epochs=3)
        preds.append(ens.predict(data[0][:20], data[1][:20])[0])
    torch.testing.assert_close(preds[0], preds[1], rtol=0, atol=0)
    assert not torch.allclose(preds[0], preds[2])


def test_normalisation_makes_fit_unit_invariant() -> None:
    """Changing the units of s, a, r, c changes nothing once inputs and targets are normalised."""
    obs, act, rew, cost, next_obs = linear_system(300, seed=5)
    s_scale, s_shift = np.float32(100.0), np.float32(5.0)
    scaled = (s_scale * obs + s_shift, 10 * act, 1000 * rew - 3, 0.01 * cost,
              s_scale * next_obs + s_shift)
    preds = []
    for data in ((obs, act, rew, cost, next_obs), scaled):
        ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, ensemble_size=2, hidden=(16, 16), seed=0)
        ens.fit(*data, max_epochs=3)
        preds.append(ens.predict(data[0][:20], data[1][:20]))
        assert {"in_mean", "in_std", "out_mean", "out_std"} <= set(ens.state_dict())
    unit = torch.tensor([s_scale] * OBS_DIM + [1000.0, 0.01])
    shift = torch.tensor([0.0] * OBS_DIM + [-3.0, 0.0])
    torch.testing.assert_close(preds[1][0], preds[0][0] * unit + shift, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(preds[1][1], preds[0][1] * unit ** 2, rtol=1e-3, atol=1e-8)


def test_early_stopping_keeps_best_weights() -> None:
    rng = np.random.default_rng(0)
    obs, act = rng.standard_normal((100, OBS_DIM)), rng.standard_normal((100, ACT_DIM))
    noise = rng.standard_normal((100, OBS_DIM + 2))  # nothing to learn: it can only overfit
    ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, lr=1e-2, seed=0)
    res = ens.fit(obs, act, noise[:, -2], noise[:, -1], obs + noise[:, :OBS_DIM],
                  max_epochs=300, patience=10, batch_size=16)
    assert res.epochs < 300
    assert res.holdout_history[-1] > 1.1 * min(res.holdout_history)  # it did overfit...
    assert res.holdout_loss <= min(res.holdout_history) + 1e-6  # ...and the best was kept
    with pytest.raises(ValueError, match="at least 2 transitions"):
        ens.fit(obs[:1], act[:1], noise[:1, 0], noise[:1, 1], obs[:1])


def test_a_warm_fit_keeps_its_best_epoch_even_where_the_holdout_does_not_improve(monkeypatch) -> None:
    """Bug: each fit measured its epochs against the weights it started from, so a warm start
    whose held-out loss did not improve was undone, fit after fit (the trainer's model froze
    on HalfCheetah). A fit now keeps the best of its own epochs, as MBPO does."""
    obs, act, rew, cost, next_obs = linear_system(400, seed=0)
    ens = DynamicsEnsemble(OBS_DIM, ACT_DIM, **SMALL, seed=0)
    ens.fit(obs, act, rew, cost, next_obs, max_epochs=3)
    before = [p.detach().clone() for p in ens.weights]
    flat = torch.ones(ens.ensemble_size)
    monkeypatch.setattr(ens, "_holdout_losses", lambda xn, yn: (flat, flat))
    ens.fit(obs, act, rew, cost, next_obs, max_epochs=1)
    for w0, w in zip(before, ens.weights, strict=True):
        assert (w0 != w.detach()).flatten(1).any(1).all()  # every member moved


# ------------------------------------------------------------------------ open-loop errors
def trajectories(T: int, N: int, done_at: list[tuple[int, int]], seed: int = 0) -> tuple:
    """T steps of N noise-free trajectories of the linear system, time first (a rollout's
    layout); after each (t, n) in ``done_at`` env n restarts at a far-away random state."""
    A, B, w_r, w_c = system()
    rng = np.random.default_rng(seed)
    obs, act = np.zeros((T, N, OBS_DIM)), rng.uniform(-1, 1, (T, N, ACT_DIM))
    next_obs, rew, cost = np.zeros((T, N, OBS_DIM)), np.zeros((T, N)), np.zeros((T, N))
    done = np.zeros((T, N), dtype=bool)
    for t, n in done_at:
        done[t, n] = True
    s = rng.standard_normal((N, OBS_DIM))
    for t in range(T):
        obs[t] = s
        x = np.concatenate([s, act[t]], 1)
        next_obs[t] = s + s @ A.T + act[t] @ B.T
        rew[t], cost[t] = x @ w_r, x @ w_c
        s = np.where(done[t][:, None], 10 + 5 * rng.standard_normal((N, OBS_DIM)), next_obs[t])
    return obs, act, rew, cost, next_obs, done


class PlantedModel(DynamicsEnsemble):
    """Two identical members that predict the linear system (with A + ``da``) exactly."""

    def __init__(self, da: float = 0.0) -> None:
        super().__init__(OBS_DIM, ACT_DIM, ensemble_size=2, hidden=(4,), seed=0)
        A, B, w_r, w_c = system()
        self.sys = [torch.as_tensor(m, dtype=torch.float32) for m in (A + da, B, w_r, w_c)]

    def predict(self, obs, act):
        A, B, w_r, w_c = self.sys
        obs, act = self._tensor(obs), self._tensor(act)
        x = torch.cat([obs, act], -1)
        mean = torch.cat([obs @ A.T + act @ B.T, (x @ w_r)[:, None], (x @ w_c)[:, None]], -1)
        return mean.expand(2, -1, -1), torch.ones(2, *mean.shape)


def test_open_loop_error_is_zero_for_the_true_model_and_grows_with_h_for_a_wrong_one() -> None:
    data = trajectories(T=40, N=3, done_at=[])
    exact = PlantedModel().open_loop_errors(*data, horizon=6)
    for err in (exact.obs, exact.rew, exact.cost):
        assert err.shape == (6,) and np.all(err < 1e-4)
    assert exact.count.tolist() == [3 * (40 - j) for j in range(6)]
    wrong = PlantedModel(da=0.02).open_loop_errors(*data, horizon=6)
    assert np.all(wrong.obs > 1e-3) and np.all(np.diff(wrong.obs) > 0)
    for err in (wrong.rew, wrong.cost):  # r(s, a) is exact until the state has drifted
        assert err[0] < 1e-4 and np.all(np.diff(err) > 0)
    # h = 1 is the plain one-step error: the state part, in units of out_std (1 here).
    s_err = np.sqrt(np.mean((data[0] @ (0.02 * np.ones((OBS_DIM, OBS_DIM))).T) ** 2))
    assert wrong.obs[0] == pytest.approx(s_err, rel=1e-4)


def test_open_loop_windows_never_cross_an_episode_end() -> None:
    # Env 0 restarts after step 4, env 1 after steps 1 and 7; a window across a restart would
    # compare the model's state with a far-away new start.
    data = trajectories(T=10, N=2, done_at=[(4, 0), (1, 1), (7, 1)])
    err = PlantedModel().open_loop_errors(*data, horizon=3)
    assert np.all(err.obs < 1e-4) and np.all(err.rew < 1e-3)
    # h windows from t need no end at t..t+h-2 and t+h-1 < 10.
    assert err.count.tolist() == [20, (9 - 1) + (9 - 2), (8 - 2) + (8 - 4)]
    # Thinned: all 20 one-step windows, then 5 evenly spaced starts, still within episodes.
    thin = PlantedModel().open_loop_errors(*data, horizon=3, max_starts=5)
    assert thin.count[0] == 20 and 0 < thin.count[2] <= thin.count[1] <= 5
    wrong = PlantedModel(da=0.02).open_loop_errors(*data, horizon=3, max_starts=5)
    assert np.all(thin.obs < 1e-4) and wrong.obs[0] == pytest.approx(
        PlantedModel(da=0.02).open_loop_errors(*data, horizon=1).obs[0])
    # Too long to fit in any episode: NaN, not a crossing.
    short = trajectories(T=3, N=1, done_at=[(0, 0), (1, 0)])
    assert np.isnan(PlantedModel().open_loop_errors(*short, horizon=2).obs[1])


def test_predict_no_change_scores_the_baseline_on_the_same_windows_and_units() -> None:
    data = trajectories(T=12, N=2, done_at=[(5, 1)])
    obs, _, rew, cost, next_obs, _ = data
    model = PlantedModel()
    model.out_std.fill_(2.0)  # the state unit: the model's typical one-step change
    base = model.open_loop_errors(*data, horizon=2, predict_no_change=True)
    assert base.count.tolist() == model.open_loop_errors(*data, horizon=2).count.tolist()
    assert base.obs[0] == pytest.approx(np.sqrt(np.mean(((next_obs - obs) / 2.0) ** 2)), rel=1e-5)
    assert base.rew[0] == pytest.approx(np.sqrt(np.mean(rew ** 2)), rel=1e-5)
    # h = 2: s^ = s_t against s_{t+2}, and the real two-step sums against 0; windows from
    # t = 11 (past the data) and from (5, 1) (its episode ends) are left out.
    keep = np.ones((11, 2), dtype=bool)
    keep[5, 1] = False
    two_cost = (cost[:-1] + cost[1:])[keep]
    assert base.cost[1] == pytest.approx(np.sqrt(np.mean(two_cost ** 2)), rel=1e-5)
    assert base.obs[1] == pytest.approx(
        np.sqrt(np.mean(((next_obs[1:] - obs[:-1])[keep] / 2.0) ** 2)), rel=1e-5)


# ---------------------------------------------------------------------------------- ModelEnv
def start_states(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start states from well inside to far outside the training distribution."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.1, 6.0, n)[:, None]
    return (scale * torch.randn(n, OBS_DIM, generator=gen),
            2 * torch.rand(n, ACT_DIM, generator=gen) - 1)


def test_model_env_shapes_dtypes_and_ts1(fitted) -> None:
    ens, _ = fitted
    obs, act = start_states(64, seed=0)
    env = ModelEnv(ens, disagreement_threshold=math.inf, deterministic=True)
    first, info0 = env.reset(obs)
    assert info0 == {} and torch.equal(first, obs)
    next_obs, rew, cost, term, trunc, info = env.step(act)
    assert next_obs.shape == (64, OBS_DIM) and next_obs.dtype == torch.float32
    for t in (rew, cost, info["disagreement"], info["cost_mean"], info["cost_std"]):
        assert t.shape == (64,) and t.dtype == torch.float32
    assert term.dtype == trunc.dtype == torch.bool and term.shape == trunc.shape == (64,)
    assert not term.any() and not trunc.any() and info["n_nonfinite"] == 0
    # TS1 with deterministic=True: each sample's step is exactly one member's mean.
    mean, _ = ens.predict(obs, act)
    gap = (obs + mean[..., :OBS_DIM] - next_obs).abs().amax(-1)  # (E, B)
    member = gap.argmin(0)
    assert float(gap.min(0).values.max()) < 1e-5
    assert len(member.unique()) > 1
    torch.testing.assert_close(rew, mean[member, torch.arange(64), OBS_DIM])
    # The env continues from where it stepped; a terminal_fn sets terminated.
    env2 = ModelEnv(ens, terminal_fn=lambda s, a, s2: s2[:, 0] > 0, deterministic=True)
    env2.reset(next_obs)
    after, *_, term2, _, _ = env2.step(act)
    torch.testing.assert_close(term2, after[:, 0] > 0)


def test_pessimistic_cost(fitted) -> None:
    ens, _ = fitted
    obs, act = start_states(64, seed=1)
    costs = {}
    for kappa in (0.0, 2.0):
        env = ModelEnv(ens, kappa=kappa, disagreement_threshold=math.inf)
        env.reset(obs)
        _, _, costs[kappa], _, _, info = env.step(act)
    mean_c, std_c = info["cost_mean"], info["cost_std"]
    assert bool((costs[0.0] >= 0).all())
    torch.testing.assert_close(costs[0.0], mean_c.clamp(min=0))
    torch.testing.assert_close(costs[2.0], (mean_c + 2 * std_c).clamp(min=0))
    assert bool((costs[2.0] >= costs[0.0]).all()) and bool((costs[2.0] > costs[0.0]).any())
    with pytest.raises(ValueError, match="kappa"):
        ModelEnv(ens, kappa=-1.0)


def test_truncation_exactly_where_disagreement_exceeds_threshold(fitted) -> None:
    ens, _ = fitted
    obs, act = start_states(64, seed=2)
    env = ModelEnv(ens, disagreement_threshold=math.inf)
    env.reset(obs)
    disagreement = env.step(act)[5]["disagreement"]
    mean, _ = ens.predict(obs, act)  # the documented formula
    expected = (mean[..., :OBS_DIM].std(0, correction=0) / ens.out_std[:OBS_DIM]).amax(-1)
    torch.testing.assert_close(disagreement, expected)
    ranked = disagreement.sort().values
    threshold = float(ranked[40] + ranked[41]) / 2  # strictly between two observed values
    env = ModelEnv(ens, disagreement_threshold=threshold)
    env.reset(obs)
    *_, trunc, info = env.step(act)
    torch.testing.assert_close(info["disagreement"], disagreement)
    assert torch.equal(trunc, disagreement > threshold) and int(trunc.sum()) == 23


def test_nonfinite_predictions_are_cut_not_propagated(fitted, monkeypatch) -> None:
    ens, _ = fitted
    obs, act = start_states(8, seed=3)
    real_predict = ens.predict
    bad = torch.tensor([1, 5])

    def broken_predict(o, a):
        mean, var = real_predict(o, a)
        mean[0, bad, 0] = torch.nan  # member 0 only: the mean cost over members goes NaN too
        mean[0, 5, OBS_DIM] = torch.inf
        return mean, var

    monkeypatch.setattr(ens, "predict", broken_predict)
    env = ModelEnv(ens, disagreement_threshold=math.inf)
    env.reset(obs)
    next_obs, rew, cost, term, trunc, info = env.step(act)
    assert info["n_nonfinite"] == 2
    good = torch.ones(8, dtype=torch.bool)
    good[bad] = False
    assert torch.equal(trunc, ~good) and not term.any()
    torch.testing.assert_close(next_obs[bad], obs[bad])
    assert not torch.equal(next_obs[good], obs[good])
    for t in (next_obs, rew, cost, info["cost_mean"], info["cost_std"]):
        assert bool(torch.isfinite(t).all())
    assert bool(torch.isinf(info["disagreement"][bad]).all())
    # The next step starts from the kept observation, so nothing non-finite carries over.
    monkeypatch.setattr(ens, "predict", real_predict)
    assert bool(torch.isfinite(env.step(act)[0]).all())


def test_model_env_sampling_is_seeded(fitted) -> None:
    ens, _ = fitted
    obs, act = start_states(32, seed=4)
    outs = []
    for seed in (0, 0, 1):
        env = ModelEnv(ens, generator=torch.Generator().manual_seed(seed))
        env.reset(obs)
        outs.append(env.step(act)[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert not torch.allclose(outs[0], outs[2])
    with pytest.raises(RuntimeError, match="reset"):
        ModelEnv(ens).step(act)


def test_model_env_replay_is_the_step_loop_from_every_start(fitted) -> None:
    ens, _ = fitted
    obs, act = start_states(12, seed=4)
    k = 3
    replayed = ModelEnv(ens, disagreement_threshold=0.5, generator=torch.Generator().manual_seed(0))
    dis, cut = replayed.replay(obs.numpy(), act.numpy(), k)
    assert dis.shape == cut.shape == (k, 12 - k + 1) and cut.dtype == torch.bool
    by_hand = ModelEnv(ens, disagreement_threshold=0.5, generator=torch.Generator().manual_seed(0))
    starts = np.arange(12 - k + 1)
    by_hand.reset(obs[starts])
    for j in range(k):
        *_, trunc, info = by_hand.step(act[starts + j])
        torch.testing.assert_close(dis[j], info["disagreement"])
        assert torch.equal(cut[j], trunc)
