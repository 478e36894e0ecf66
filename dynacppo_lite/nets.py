"""Policy and critic networks (paper Table 2: (64, 64) tanh MLPs).

Shapes: ``obs`` is (B, obs_dim); actions are (B, act_dim); values are (B,).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh,
        out_gain: float = 1.0) -> nn.Sequential:
    """A tanh MLP with orthogonal init (hidden gain sqrt(2), output gain ``out_gain``)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        linear = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, out_gain if last else np.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(activation())
    return nn.Sequential(*layers)


def sample_action(mean: Any, std: Any, rng: Any = None, *, deterministic: bool = False) -> Any:
    """An action of the Gaussian policy: ``mean + std * noise``, noise ~ N(0, 1) (B, act_dim),
    or the ``mean`` itself when ``deterministic``. The one place the package draws actions.

    torch tensors draw the noise with ``torch.randn`` from the generator ``rng`` (None: torch's
    global generator) on ``mean``'s device; numpy arrays (``NumpyActor``, the real rollouts)
    draw float32 noise from the ``np.random.Generator`` ``rng``. Unclipped: the envs and the
    model clip to the action space."""
    if deterministic:
        return mean
    if isinstance(mean, np.ndarray):
        return mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
    return mean + std * torch.randn(mean.shape, generator=rng, device=mean.device)


class GaussianPolicy(nn.Module):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2) with a state-independent log-std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64),
                 init_log_std: float = -0.5) -> None:
        super().__init__()
        self.mu = mlp([obs_dim, *hidden, act_dim], out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), init_log_std))

    def forward(self, obs: torch.Tensor) -> Normal:
        """The action distribution at ``obs`` (B, obs_dim); its batch shape is (B, act_dim)."""
        # validate_args=False: the checks cost more than the tiny networks on every env step.
        return Normal(self.mu(obs), self.log_std.exp().expand(obs.shape[0], -1), validate_args=False)

    @staticmethod
    def log_prob(dist: Normal, act: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) summed over action dimensions: (B,)."""
        return dist.log_prob(act).sum(-1)


class Critic(nn.Module):
    """V(s): (B, obs_dim) -> (B,). Used for both the reward and the cost critic."""

    def __init__(self, obs_dim: int, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        self.v = mlp([obs_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(obs).squeeze(-1)


class ActorCritic(nn.Module):
    """The policy and the two critics (reward V_r and cost V_c) of one agent."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64),
                 init_log_std: float = -0.5) -> None:
        super().__init__()
        self.pi = GaussianPolicy(obs_dim, act_dim, hidden, init_log_std)
        self.v_r = Critic(obs_dim, hidden)
        self.v_c = Critic(obs_dim, hidden)

    @torch.no_grad()
    def values(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_r(obs), V_c(obs)), each (B,)."""
        return self.v_r(obs), self.v_c(obs)


class NumpyActor:
    """A numpy snapshot of a :class:`GaussianPolicy` for acting one env step at a time.

    For (64, 64) networks and a handful of observations, torch's per-operation overhead costs
    more than the arithmetic (about 100-150 µs per step here); numpy's small matmuls take a few
    microseconds. Take a new snapshot after each policy update. ``act(obs (B, obs_dim))`` samples
    a ~ N(mu(obs), std^2) with ``rng``: (B, act_dim) float32.
    """

    def __init__(self, policy: GaussianPolicy, rng: np.random.Generator) -> None:
        linears = [m for m in policy.mu if isinstance(m, nn.Linear)]
        self.layers = [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
                       for m in linears]
        self.std = policy.log_std.detach().exp().cpu().numpy()
        self.rng = rng

    def mean(self, obs: np.ndarray) -> np.ndarray:
        x = obs
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = np.tanh(x)
        return x

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return sample_action(self.mean(obs), self.std, self.rng)
