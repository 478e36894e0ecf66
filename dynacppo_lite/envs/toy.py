"""A tiny constrained task for tests, notebooks in smoke mode and teaching.

``ToySpeedLimit-v0`` (pure numpy, registered with gymnasium): a cart on a line is rewarded
for speed and pays a cost whenever it drives above a speed limit.

* action ``a`` in [-1, 1]^2 (clipped); only ``a[0]``, the throttle, moves the cart; ``a[1]`` is
  a distractor that the policy must learn to ignore.
* reward ``r_t = a0`` (speed), cost ``c_t = 1[a0 > speed_limit]``.
* observation: (position / horizon, throttle of the previous step, time fraction).
* episodes end by truncation after ``horizon`` steps (50), never by termination.

The trade-off is real: the highest-reward behaviour (full throttle, return 50) costs 50 per
episode, far above the default cost limit of 10, so an unconstrained learner breaks the
constraint and a constrained one must settle at a throttle mostly under the speed limit.
Step returns the Safety-Gymnasium 6-tuple ``(obs, reward, cost, terminated, truncated, info)``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

TOY_ENV_ID = "ToySpeedLimit-v0"
TOY_COST_LIMIT = 10.0


class ToySpeedLimitEnv(gym.Env):
    """Drive fast, but not above ``speed_limit`` too often (see module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, horizon: int = 50, speed_limit: float = 0.5) -> None:
        self.horizon = horizon
        self.speed_limit = speed_limit
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float64)
        self._t = 0
        self._x = 0.0
        self._last = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self._x / self.horizon, self._last, self._t / self.horizon])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._x = 0.0
        self._last = float(self.np_random.uniform(-0.1, 0.1))
        return self._obs(), {}

    def step(self, action: Any):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"ToySpeedLimit expects a finite action of shape (2,), got {action!r}")
        throttle = float(np.clip(action[0], -1.0, 1.0))
        self._t += 1
        self._x += throttle
        self._last = throttle
        reward = throttle
        cost = float(throttle > self.speed_limit)
        truncated = self._t >= self.horizon
        return self._obs(), reward, cost, False, truncated, {}


def register_toy_env() -> None:
    """Register the toy task with gymnasium (idempotent)."""
    if TOY_ENV_ID not in gym.registry:
        gym.register(id=TOY_ENV_ID, entry_point=ToySpeedLimitEnv)
