"""The cost direction pooled over the last real batches (``cost_pool.py``)."""

import csv

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from dynacppo_lite.batch import Batch
from dynacppo_lite.config import TOY_CONTROL, Config
from dynacppo_lite.cost_pool import CostPool, truncated_weights
from dynacppo_lite.envs import TOY_ENV_ID
from dynacppo_lite.train import Trainer, train


def toy(tmp_path, **kw):
    return Config(env_id=TOY_ENV_ID, total_steps=5_000, num_envs=1, steps_per_iter=1_000,
                  log_dir=str(tmp_path), pi_lr=3e-3, checkpoint_every=1, **TOY_CONTROL, **kw)


def fake_batch(n, seed, real=None):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, dtype=torch.bool) if real is None else real
    return Batch(obs=torch.randn(n, 3, generator=g), act=torch.randn(n, 2, generator=g),
                 logp=torch.randn(n, generator=g), adv_r=torch.randn(n, generator=g),
                 adv_c=torch.randn(n, generator=g), ret_r=torch.randn(n, generator=g),
                 ret_c=torch.randn(n, generator=g), critic_mask=mask)


def test_truncated_weights_are_the_capped_likelihood_ratio():
    now, mu = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([0.0, 0.0, 0.0, 1.0])
    expected = torch.tensor([1.0, min(np.e, 1.5), np.exp(-2.0), np.exp(-0.5)], dtype=torch.float32)
    assert torch.allclose(truncated_weights(now, mu, 1.5), expected)
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_weights(now, mu, 0.0)


def test_uncapped_weights_turn_samples_of_mu_into_an_expectation_under_pi():
    """E_mu[(pi/mu) f] = E_pi[f]: actions from mu = N(0, 1), pi = N(0.3, 1), f(a) = a."""
    a = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = truncated_weights(Normal(0.3, 1.0).log_prob(a), Normal(0.0, 1.0).log_prob(a), cap=1e9)
    assert float((w * a).mean()) == pytest.approx(0.3, abs=0.01)
    assert float(a.mean()) == pytest.approx(0.0, abs=0.01)  # without the weights: mu's mean


def test_the_pool_keeps_the_last_real_batches_and_lends_them_as_cost_only_samples():
    pool = CostPool(size=2, cap=1.0)
    real = torch.tensor([True, True, True, False])  # the last sample is imagined: not kept
    batches = [fake_batch(4, seed, real) for seed in range(3)]
    assert pool.cost_batch(lambda o, a: o[:, 0]) is None
    for b in batches:
        pool.push(b)
    kept = torch.cat([b.obs[:3] for b in batches[1:]])  # the oldest batch left the pool

    def log_prob(obs, act):
        return obs[:, 0] * 0.1

    lent = pool.cost_batch(log_prob)
    assert torch.equal(lent.obs, kept)
    assert torch.equal(lent.logp, log_prob(kept, None))
    assert not lent.adv_r.any() and not lent.critic_mask.any()
    logp_mu = torch.cat([b.logp[:3] for b in batches[1:]])
    adv_c = torch.cat([b.adv_c[:3] for b in batches[1:]])
    assert torch.allclose(lent.adv_c, (lent.logp - logp_mu).exp().clamp(max=1.0) * adv_c)
    again = CostPool(size=2)
    again.load_state_dict(pool.state_dict())
    assert torch.equal(again.cost_batch(log_prob).adv_c, lent.adv_c)


def test_a_pool_of_one_batch_leaves_the_batch_alone():
    pool = CostPool(size=0)
    pool.push(fake_batch(4, 0))
    assert pool.cost_batch(lambda o, a: o[:, 0]) is None


def test_the_estep_sees_this_batch_then_the_pooled_cost_only_samples(tmp_path):
    seen = []

    def recording_estep(adv_r, adv_c, **kw):
        seen.append((len(adv_r), float(np.abs(adv_r[1000:]).sum()), float(np.abs(adv_c[1000:]).sum())))
        return np.ones_like(adv_r)

    train(toy(tmp_path, cost_pool=3, run_name="p"), estep=recording_estep)
    assert [n for n, _, _ in seen] == [1000, 2000, 3000, 3000, 3000]
    assert all(r == 0.0 for _, r, _ in seen)  # pooled samples carry no reward direction
    assert all(c > 0.0 for n, _, c in seen if n > 1000)


def test_a_resumed_run_gets_its_pool_back(tmp_path):
    """The checkpoint after iteration 2 holds the pool of iterations 1 and 2, as the run that
    went on holds it (the envs restart their episodes on resume, so the two then part)."""
    whole = Trainer(toy(tmp_path, cost_pool=3, run_name="whole"))
    for it in range(3):
        whole.iteration(it)

    def stop(row):
        if row["iteration"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(toy(tmp_path, cost_pool=3, run_name="cut")).run(callback=stop)
    resumed = Trainer(resume=tmp_path / "cut")
    assert resumed.start_iter == 3 and len(resumed.cost_pool.batches) == 2
    for a, b in zip(resumed.cost_pool.batches, whole.cost_pool.batches, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in CostPool.KEYS)


def rows(run):
    with open(run / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_bad_pool_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="cost_pool must be >= 1"):
        Config(cost_pool=0).validate()
    with pytest.raises(ValueError, match="cost_pool_cap must be > 0"):
        Config(cost_pool_cap=0.0).validate()
