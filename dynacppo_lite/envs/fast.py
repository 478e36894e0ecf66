"""Fast Safety-Gymnasium navigation envs that step exactly like stock: :func:`make_safety_env`.

Stock safety-gymnasium 1.0.0 spends almost all of a reset decoding the HD skybox PNGs, and
most of a step in Python around the physics. ``make_safety_env(env_id)`` returns the same env
as ``safety_gymnasium.make(env_id)`` (same registered config, same wrappers: passive checker,
order enforcing, ``TimeLimit``; same 6-tuple step) whose unwrapped env is a :class:`FastBuilder`:

* fast resets (:mod:`dynacppo_lite.envs.fast_world`): without a render mode (or vision
  observations) the skybox is a tiny builtin gradient instead of six HD PNGs, ``assets.yaml``
  is parsed once per process, the first reset builds the world once instead of twice, and
  the layout's rejection sampling tests keepouts on floats (``fast_task.FastRandomGenerator``).
  With a render mode the HD skybox is kept, so frames look as stock and resets stay ~1.5 s.
* a lean step path (:mod:`dynacppo_lite.envs.fast_task`): cached ids, vectorised
  pseudo-lidar and hazard distances, contact costs by geom id, no observation-space
  ``contains`` check, and one clear action check at the boundary.

Observations, rewards, costs, ``info`` and termination/truncation equal stock for the same seed
and actions (``tests/test_fast_env.py`` compares them step by step, across resets, for every
navigation task family). The only intended difference: an action of the wrong shape or with
NaN raises ``ValueError`` here (stock raises for the shape but feeds NaN to the physics).

All changes are subclasses or per-instance classes except one scoped stand-in for the YAML
loader inside ``World.build`` (see :mod:`dynacppo_lite.envs.fast_world`); stock envs created in
the same process stay stock. This layer relies on safety-gymnasium **1.0.0** internals (the
``Builder``/``World``/task/agent attributes it reads and the formulas it reproduces), which is
why pyproject pins that version: re-run ``tests/test_fast_env.py`` before moving the pin.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import gymnasium
import numpy as np

from dynacppo_lite.envs.compat import import_safety_gymnasium
from dynacppo_lite.envs.fast_task import fast_task_class

_sg = import_safety_gymnasium()
_builder = importlib.import_module("safety_gymnasium.builder")
_tasks = importlib.import_module("safety_gymnasium.tasks")
_task_utils = importlib.import_module("safety_gymnasium.utils.task_utils")
_ResamplingError = importlib.import_module("safety_gymnasium.utils.common_utils").ResamplingError

#: Entry point of every registered navigation (and vision) task in safety-gymnasium 1.0.0.
BUILDER_ENTRY_POINT = "safety_gymnasium.builder:Builder"

__all__ = ["BUILDER_ENTRY_POINT", "FastBuilder", "make_safety_env"]


class FastBuilder(_builder.Builder):
    """``Builder`` whose task is a fast subclass of the stock task, with a lean ``step``."""

    def __init__(
        self,
        task_id: str,
        config: dict | None = None,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        camera_id: int | None = None,
        camera_name: str | None = None,
    ) -> None:
        # read by _get_task, which Builder.__init__ calls: frames need the HD skybox
        self._hd_skybox = render_mode is not None
        super().__init__(task_id, config, render_mode, width, height, camera_id, camera_name)
        self._action_shape = self.action_space.shape

    def _get_task(self) -> Any:
        class_name = _task_utils.get_task_class_name(self.task_id)
        assert hasattr(_tasks, class_name), f"Task={class_name} not implemented."
        task_class = fast_task_class(getattr(_tasks, class_name))
        task = task_class(config=self.config, hd_skybox=self._hd_skybox)
        task.build_observation_space()
        return task

    def _checked_action(self, action: Any) -> np.ndarray:
        """The one action check: numeric, action-space shape, no NaN (clipping does the rest)."""
        try:
            checked = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.task_id}: action must be numeric, got {action!r}") from exc
        if checked.shape != self._action_shape:
            raise ValueError(
                f"{self.task_id}: action shape {checked.shape} != action space shape "
                f"{self._action_shape}"
            )
        if np.isnan(checked).any():
            raise ValueError(f"{self.task_id}: action contains NaN: {checked}")
        return checked

    def step(self, action: Any) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """``Builder.step`` on the lean task paths (same order of task calls, same results).

        Differences to stock: the action check above and no ``MujocoException`` branch (the
        lean ``simulation_forward`` cannot report one; MuJoCo never raised it).
        """
        assert not self.done, "Environment must be reset before stepping."
        task = self.task
        task.simulation_forward(self._checked_action(action))
        reward = self._reward()
        info = dict(self._cost())
        cost = info["cost_sum"]
        task.specific_step()
        if task.goal_achieved:
            info["goal_met"] = True
            if task.mechanism_conf.continue_goal:
                task.update_layout()
                if task.mechanism_conf.terminate_resample_failure:
                    try:
                        task.update_world()
                    except _ResamplingError:
                        self.terminated = True
                else:
                    task.update_world()
            else:
                self.terminated = True
        if not task.agent.is_alive():
            self.terminated = True
        self.steps += 1
        if self.steps >= task.num_steps:
            self.truncated = True
        if self.render_parameters.mode == "human":
            self.render()
        return task.obs(), reward, cost, self.terminated, self.truncated, info


def make_safety_env(
    env_id: str,
    *,
    fast: bool = True,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gymnasium.Env:
    """One Safety-Gymnasium env with the 6-tuple step ``(obs, reward, cost, terminated,
    truncated, info)``, as ``safety_gymnasium.make(env_id, render_mode=..., **kwargs)`` makes it.

    ``fast=False`` is exactly that call. ``fast=True`` (default) swaps the unwrapped env of a
    navigation/vision task (entry point ``Builder``) for a :class:`FastBuilder`, keeping the
    registered config, ``kwargs`` and wrapper stack (``TimeLimit`` truncates at
    ``max_episode_steps``). Other ids (e.g. the velocity tasks, already fast) are made stock.
    """
    if render_mode is not None:  # only when asked: an env registered without it still builds
        kwargs["render_mode"] = render_mode
    if fast:
        spec = gymnasium.spec(env_id)
        if spec.entry_point == BUILDER_ENTRY_POINT:
            fast_spec = dataclasses.replace(spec, entry_point=FastBuilder)
            return _sg.make(fast_spec, **kwargs)
    return _sg.make(env_id, **kwargs)
