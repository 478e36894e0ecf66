"""``make_env``: the one door to every task the package runs."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import gymnasium as gym

from dynacppo_lite.envs.compat import safety_env_ids
from dynacppo_lite.envs.custom import is_gymnasium_env, make_gymnasium_env
from dynacppo_lite.envs.presets import PRESETS
from dynacppo_lite.envs.toy import TOY_ENV_ID, ToySpeedLimitEnv
from dynacppo_lite.envs.vector import AsyncSafeVectorEnv, SyncSafeVectorEnv, default_num_workers
from dynacppo_lite.envs.wrappers import CostInInfo, CostInStep, NormalizeObservation, SafeVectorEnv


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


def single_env_factory(env_id: str, *, fast: bool = True, render_mode: str | None = None,
                       max_episode_steps: int | None = None) -> Callable[[], gym.Env]:
    """A factory of one ``env_id`` env stepping with the 6-tuple ``(obs, reward, cost,
    terminated, truncated, info)``: what :func:`make_env` batches (``bench throughput`` times
    it alone as the raw env). Arguments as :func:`make_env`'s."""
    check_env_id(env_id)
    if env_id == TOY_ENV_ID:
        return ToySpeedLimitEnv
    kwargs: dict = {}
    if env_id in PRESETS:
        preset = PRESETS[env_id]
        env_id, kwargs = preset.env_id, dict(preset.make_kwargs)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if env_id not in PRESETS and is_gymnasium_env(env_id) and env_id not in safety_env_ids():
        return lambda: CostInStep(make_gymnasium_env(env_id, render_mode=render_mode,
                                                     max_episode_steps=max_episode_steps))

    def factory() -> gym.Env:
        from dynacppo_lite.envs.fast import make_safety_env

        return make_safety_env(env_id, fast=fast, render_mode=render_mode, **kwargs)

    return factory


def make_env(env_id: str, num_envs: int = 1, seed: int = 0, *, normalize_obs: bool = True,
             fast: bool = True, render_mode: str | None = None,
             max_episode_steps: int | None = None, lean: bool = True,
             num_workers: int | None = None, coordinates: bool = False,
             physics: bool = False) -> gym.vector.VectorEnv:
    """A vector env over ``num_envs`` copies of ``env_id`` that steps with the 6-tuple API.

    Args:
        env_id: a Safety-Gymnasium id (``SafetyPointGoal1-v0``), a preset
            (``CPPO-PointCircle1-v0``), the toy task (``ToySpeedLimit-v0``), or your own task
            registered with gymnasium (``register_env``; see ``envs/custom.py``): its step returns
            the 6-tuple or carries the cost in ``info["cost"]``.
        num_envs: envs stepped together; see ``num_workers`` for where they run.
        seed: the first ``reset()`` seeds env ``i`` with ``seed + i``; action spaces are
            seeded too.
        normalize_obs: wrap in :class:`NormalizeObservation` (running mean/var).
        fast: Safety-Gymnasium's fast reset and step path (bit-identical results, see
            ``envs/fast.py``); ``False`` gives stock behaviour for comparison.
        render_mode: passed to each env (``"rgb_array"`` for videos).
        max_episode_steps: override the task's episode length.
        lean: the package's own vector envs (:mod:`dynacppo_lite.envs.vector`: same numbers,
            less work per step, shared memory for the workers); ``False`` gives gymnasium's
            ``SyncVectorEnv``/``AsyncVectorEnv`` under :class:`SafeVectorEnv` for comparison,
            whose ``info`` also carries the sub-envs' own keys (one env in this process, more in
            one worker process each).
        num_workers: worker processes stepping the envs in parallel with this process, which
            steps the first share itself (:class:`AsyncSafeVectorEnv`); ``0`` steps every env
            here (:class:`SyncSafeVectorEnv`). Default: one stepper per core, at most one per
            env (:func:`~dynacppo_lite.envs.vector.default_num_workers`). Lean envs only.
        coordinates: record the coordinate state of a navigation task at every reset and step
            (:class:`~dynacppo_lite.envs.coordinates.RecordCoordinates`): ``info["state"]``
            (num_envs, D) and, at episode ends, ``info["final_state"]``; ``env.state_spec``
            is the task's ``CoordinateSpec``. Privileged, for a model: the observations are
            unchanged. Lean envs only; a task without coordinates is a one-line ValueError.
        physics: with ``coordinates``, each row also carries the env's MuJoCo state after the
            coordinate state (``envs.coordinates.PhysicsReader``): what the simulator as a
            model restores (``envs.simulator.NavigationSimulatorEnv``).

    Returns:
        ``env`` with ``env.step(a) -> (obs, reward, cost, terminated, truncated, info)``, all
        batched over envs; ``info["episode"]`` carries finished episodes' raw return, cost and
        length; ``info["final_observation"]`` the (normalised) last observation of an episode.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    factory = single_env_factory(env_id, fast=fast, render_mode=render_mode,
                                 max_episode_steps=max_episode_steps)
    if coordinates:
        if not lean:
            raise ValueError("coordinates are recorded by the lean vector envs: not with lean=False")
        factory = _recording(factory, physics)
    elif physics:
        raise ValueError("physics is recorded beside the coordinate state: only with coordinates=True")
    env: gym.vector.VectorEnv
    if lean:
        if num_workers is None:
            num_workers = default_num_workers(num_envs)
        env = (AsyncSafeVectorEnv([factory] * num_envs, seed=seed, num_workers=num_workers,
                                  record_state=coordinates)
               if num_workers else SyncSafeVectorEnv([factory] * num_envs, seed=seed,
                                                     record_state=coordinates))
    elif num_workers is not None:
        raise ValueError("num_workers picks the lean vector env's layout: not with lean=False")
    else:
        def wrapped() -> gym.Env:
            return CostInInfo(factory())

        vec = (gym.vector.SyncVectorEnv if num_envs == 1 else gym.vector.AsyncVectorEnv)(
            [wrapped] * num_envs)
        env = SafeVectorEnv(vec, seed=seed)
    env.action_space.seed(seed)
    env.single_action_space.seed(seed)
    if normalize_obs:
        env = NormalizeObservation(env)
    return env


def _recording(factory: Callable[[], gym.Env], physics: bool = False) -> Callable[[], gym.Env]:
    """``factory`` with its env wrapped in ``RecordCoordinates`` (closed again if the task has
    no coordinates); ``physics``: its rows carry the MuJoCo state too."""
    def recording() -> gym.Env:
        from dynacppo_lite.envs.coordinates import RecordCoordinates

        env = factory()
        try:
            return RecordCoordinates(env, physics=physics)
        except ValueError:
            env.close()
            raise

    return recording
