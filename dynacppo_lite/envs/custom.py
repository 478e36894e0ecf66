"""Your own constrained task: any gymnasium-registered env, with the cost limit you give.

``register_env("Lava1D-v0", Lava1D, cost_limit=2.0, max_episode_steps=20)`` registers the env
with gymnasium and records its cost limit; ``make_env("Lava1D-v0")`` and ``train`` then run it
like any task. An env registered with ``gym.register`` directly is accepted too; its cost limit
must then come from ``Config(cost_limit=...)``: an unknown task never silently gets one.

The env's ``step`` may return Safety-Gymnasium's 6-tuple ``(obs, reward, cost, terminated,
truncated, info)`` or gymnasium's 5-tuple with the per-step cost in ``info["cost"]``.
Observations and actions are ``Box`` spaces (1-D). ``render_mode`` is passed only when one is
asked for, so an env whose ``__init__`` does not take it still runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator as load_entry_point
from gymnasium.wrappers import TimeLimit

#: Cost limits of the tasks registered with :func:`register_env`.
CUSTOM_COST_LIMITS: dict[str, float] = {}


def register_env(env_id: str, entry_point: str | Callable[..., gym.Env], *, cost_limit: float,
                 max_episode_steps: int | None = None, **kwargs: Any) -> None:
    """Register a constrained task with gymnasium and record its per-episode cost limit.

    Args:
        env_id: the id, e.g. ``"Lava1D-v0"``.
        entry_point: the env class (or a function making it), or ``"module:Class"``.
        cost_limit: the per-episode (undiscounted) cost limit d the trainer uses by default.
        max_episode_steps: truncate episodes there (a time limit, bootstrapped in GAE).
        kwargs: passed to the entry point.
    """
    if not cost_limit >= 0:
        raise ValueError(f"cost_limit must be >= 0, got {cost_limit}")
    if env_id in gym.envs.registry:
        del gym.envs.registry[env_id]  # re-registering (a notebook cell run twice) replaces it
    gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps,
                 kwargs=kwargs, disable_env_checker=True)
    CUSTOM_COST_LIMITS[env_id] = float(cost_limit)


def is_gymnasium_env(env_id: str) -> bool:
    return env_id in gym.envs.registry


class CostFromStep(gym.Wrapper):
    """Single env: 6-tuple step, or 5-tuple with ``info["cost"]`` -> 5-tuple with a float
    ``info["cost"]``; anything else is a one-line error naming the env."""

    def step(self, action: Any):
        out = self.env.step(action)
        if len(out) == 6:
            obs, reward, cost, terminated, truncated, info = out
        elif len(out) == 5 and isinstance(out[4], dict) and "cost" in out[4]:
            obs, reward, terminated, truncated, info = out
            cost = info["cost"]
        else:
            raise ValueError(f"{self.spec.id if self.spec else type(self.env).__name__}: step() returned "
                             f"{len(out)} values without info['cost']; return (obs, reward, cost, "
                             "terminated, truncated, info) or put the step's cost in info['cost']")
        info = dict(info)
        info["cost"] = float(cost)
        return obs, float(reward), bool(terminated), bool(truncated), info


def make_gymnasium_env(env_id: str, *, render_mode: str | None = None,
                       max_episode_steps: int | None = None) -> gym.Env:
    """One env of a gymnasium-registered id, 5-tuple step with ``info["cost"]``, time limit last.

    Built from the registration's entry point without gymnasium's checker and time-limit
    wrappers, which expect a 5-tuple; :class:`CostFromStep` and then ``TimeLimit`` are added."""
    spec = gym.spec(env_id)
    creator = spec.entry_point if callable(spec.entry_point) else load_entry_point(spec.entry_point)
    kwargs = dict(spec.kwargs)
    if render_mode is not None:
        params = inspect.signature(creator).parameters
        if "render_mode" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise ValueError(f"{env_id} does not take render_mode (asked for {render_mode!r})")
        kwargs["render_mode"] = render_mode
    env = CostFromStep(creator(**kwargs))
    env.unwrapped.spec = spec
    steps = max_episode_steps if max_episode_steps is not None else spec.max_episode_steps
    return TimeLimit(env, steps) if steps is not None else env
