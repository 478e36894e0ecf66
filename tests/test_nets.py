"""Networks: the numpy acting snapshot agrees with the torch policy."""

import numpy as np
import torch

from dynacppo_lite.nets import ActorCritic, NumpyActor


def test_numpy_actor_matches_torch_policy():
    torch.manual_seed(0)
    agent = ActorCritic(7, 3)
    with torch.no_grad():
        agent.pi.log_std.fill_(-1.0)
        for p in agent.pi.mu.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the near-zero initial output
    obs = np.random.default_rng(1).standard_normal((4, 7)).astype(np.float32)
    actor = NumpyActor(agent.pi, np.random.default_rng(2))
    mu = agent.pi.mu(torch.as_tensor(obs)).detach().numpy()
    np.testing.assert_allclose(actor.mean(obs), mu, rtol=1e-5, atol=1e-6)
    samples = np.stack([actor(obs) for _ in range(4000)])
    np.testing.assert_allclose(samples.mean(0), mu, atol=0.02)
    np.testing.assert_allclose(samples.std(0), np.exp(-1.0), rtol=0.05)
    # Same generator seed, same actions.
    a = NumpyActor(agent.pi, np.random.default_rng(5))(obs)
    b = NumpyActor(agent.pi, np.random.default_rng(5))(obs)
    np.testing.assert_array_equal(a, b)
