"""``make_env``: the one door to every task the package runs."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import gymnasium as gym

from dynacppo_lite.envs.compat import safety_env_ids
from dynacppo_lite.envs.custom import is_gymnasium_env, make_gymnasium_env
from dynacppo_lite.envs.presets import PRESETS
from dynacppo_lite.envs.toy import TOY_ENV_ID, ToySpeedLimitEnv
from dynacppo_lite.envs.wrappers import CostInInfo, NormalizeObservation, SafeVectorEnv


def known_env_ids() -> list[str]:
    """Every id :func:`make_env` accepts: the toy task, the presets, Safety-Gymnasium's, and any
    env registered with gymnasium (``register_env`` or ``gym.register``)."""
    return sorted({TOY_ENV_ID, *PRESETS, *safety_env_ids(), *gym.envs.registry})


def check_env_id(env_id: str) -> None:
    """Raise a one-line ValueError naming close matches if ``env_id`` is not a known task."""
    if env_id == TOY_ENV_ID or env_id in PRESETS or is_gymnasium_env(env_id):
        return
    ids = known_env_ids()
    if env_id not in ids:
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else f" Try e.g. {TOY_ENV_ID}."
        raise ValueError(f"unknown env id {env_id!r}.{hint} Your own task: register it first with "
                         "dynacppo_lite.register_env(id, entry_point, cost_limit=...) (or "
                         "gymnasium.register)")


def _single_env_factory(env_id: str, *, fast: bool, render_mode: str | None,
                        max_episode_steps: int | None) -> Callable[[], gym.Env]:
    if env_id == TOY_ENV_ID:
        return lambda: CostInInfo(ToySpeedLimitEnv())
    kwargs: dict = {}
    if env_id in PRESETS:
        preset = PRESETS[env_id]
        env_id, kwargs = preset.env_id, dict(preset.make_kwargs)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if env_id not in PRESETS and is_gymnasium_env(env_id) and env_id not in safety_env_ids():
        return lambda: make_gymnasium_env(env_id, render_mode=render_mode,
                                          max_episode_steps=max_episode_steps)

    def factory() -> gym.Env:
        from dynacppo_lite.envs.fast import make_safety_env

        return CostInInfo(make_safety_env(env_id, fast=fast, render_mode=render_mode, **kwargs))

    return factory


def make_env(env_id: str, num_envs: int = 1, seed: int = 0, *, normalize_obs: bool = True,
             fast: bool = True, render_mode: str | None = None,
             max_episode_steps: int | None = None) -> gym.vector.VectorEnv:
    """A vector env over ``num_envs`` copies of ``env_id`` that steps with the 6-tuple API.

    Args:
        env_id: a Safety-Gymnasium id (``SafetyPointGoal1-v0``), a preset
            (``CPPO-PointCircle1-v0``), the toy task (``ToySpeedLimit-v0``), or your own task
            registered with gymnasium (``register_env``; see ``envs/custom.py``): its step returns
            the 6-tuple or carries the cost in ``info["cost"]``.
        num_envs: one env runs in this process (``SyncVectorEnv``); more run in async worker
            processes (``AsyncVectorEnv``), one per env.
        seed: the first ``reset()`` seeds env ``i`` with ``seed + i``; action spaces are
            seeded too.
        normalize_obs: wrap in :class:`NormalizeObservation` (running mean/var).
        fast: Safety-Gymnasium's fast reset and step path (bit-identical results, see
            ``envs/fast.py``); ``False`` gives stock behaviour for comparison.
        render_mode: passed to each env (``"rgb_array"`` for videos).
        max_episode_steps: override the task's episode length.

    Returns:
        ``env`` with ``env.step(a) -> (obs, reward, cost, terminated, truncated, info)``, all
        batched over envs; ``info["episode"]`` carries finished episodes' raw return, cost and
        length; ``info["final_observation"]`` the (normalised) last observation of an episode.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    check_env_id(env_id)
    factory = _single_env_factory(env_id, fast=fast, render_mode=render_mode,
                                  max_episode_steps=max_episode_steps)
    if num_envs == 1:
        vec: gym.vector.VectorEnv = gym.vector.SyncVectorEnv([factory])
    else:
        vec = gym.vector.AsyncVectorEnv([factory] * num_envs)
    vec.action_space.seed(seed)
    vec.single_action_space.seed(seed)
    env: gym.vector.VectorEnv = SafeVectorEnv(vec, seed=seed)
    if normalize_obs:
        env = NormalizeObservation(env)
    return env
