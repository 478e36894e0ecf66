"""The simulator as a perfect model: a MuJoCo task behind ``dynamics.ModelEnv``'s batched
``reset``/``step``. Dyna-CPPO branches in it with ``Config.dyna_model = "simulator"`` (the
ceiling of what imagined branches can give), and ``bench model`` compares the learned model
with it.

* :class:`SimulatorEnv`: tasks whose observation is the simulator state without the x position
  (``qpos[1:]``, ``qvel``: the Safety velocity tasks such as SafetyHalfCheetahVelocity-v1),
  where a state can be set from an observation.
* :class:`NavigationSimulatorEnv`: the navigation tasks (Goal, Circle), whose lidar observation
  is not the state. Their branches start from the rows the rollout records
  (``make_env(coordinates=True, physics=True)``: the coordinate state, then the MuJoCo state,
  ``envs.coordinates.PhysicsReader``), which put the simulator back where the real env was.

:func:`navigation_task` says which of the two a task takes.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch

from dynacppo_lite.envs.coordinates import (
    PhysicsReader,
    RecordCoordinates,
    StateReader,
    moving_bodies,
    observation,
    state_from_vector,
    state_size,
)
from dynacppo_lite.envs.fast import BUILDER_ENTRY_POINT
from dynacppo_lite.envs.make import check_env_id, single_env_factory
from dynacppo_lite.envs.presets import PRESETS

__all__ = ["NavigationSimulatorEnv", "SimulatorEnv", "navigation_task", "step_tensors"]


def navigation_task(env_id: str) -> bool:
    """Whether ``env_id`` (or the task of its preset) is a Safety-Gymnasium navigation task (a
    ``Builder`` env): the simulator as its model is :class:`NavigationSimulatorEnv`, and its
    rollout must record the coordinate and MuJoCo state."""
    check_env_id(env_id)
    base = PRESETS[env_id].env_id if env_id in PRESETS else env_id
    spec = gymnasium.envs.registry.get(base)
    return spec is not None and spec.entry_point == BUILDER_ENTRY_POINT


def step_tensors(obs: np.ndarray, rew: np.ndarray, cost: np.ndarray, term: np.ndarray,
                 trunc: np.ndarray, info: dict, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """``ModelEnv.step``'s 6-tuple from B branches' numpy results: next obs (B, obs_dim), reward
    and cost (B,) as float32, terminated and truncated (B,) as bool, on ``device``; ``info`` as
    given."""
    f32 = torch.float32
    return (torch.as_tensor(obs, dtype=f32, device=device),
            torch.as_tensor(rew, dtype=f32, device=device),
            torch.as_tensor(cost, dtype=f32, device=device),
            torch.as_tensor(term, dtype=torch.bool, device=device),
            torch.as_tensor(trunc, dtype=torch.bool, device=device), info)


class SimulatorEnv:
    """The simulator behind ``ModelEnv``'s interface: B branches stepped one after another in
    one MuJoCo env, each set to its branch's state (``qpos = (0, obs[:nq - 1])``, ``qvel =
    obs[nq - 1:]``) before its step. Reward and cost are the env's; it never truncates a
    branch (the caller cuts it at its horizon). Tensors come back on ``device``.

    Raises a one-line ValueError for a task whose observation is not the MuJoCo state.
    """

    def __init__(self, env_id: str, seed: int = 0, *, fast: bool = True,
                 device: torch.device | str = "cpu") -> None:
        self.env = single_env_factory(env_id, fast=fast)()
        self.device = torch.device(device)
        obs, _ = self.env.reset(seed=seed)
        self.sim = self.env.unwrapped
        data = getattr(self.sim, "data", None)
        state = None if data is None else np.concatenate([data.qpos[1:], data.qvel])
        if state is None or state.shape != obs.shape or not np.allclose(state, obs):
            self.env.close()
            raise ValueError(f"the simulator as a model needs a task whose observation is the "
                             f"MuJoCo state (qpos[1:], qvel), like SafetyHalfCheetahVelocity-v1, "
                             f"or a navigation task's recorded rows (NavigationSimulatorEnv); "
                             f"{env_id} is neither")
        self.nq = data.qpos.shape[0]
        self._obs: np.ndarray | None = None

    def reset(self, start_obs: Any) -> tuple[torch.Tensor, dict]:
        """Start B branches at ``start_obs`` (B, obs_dim); returns (obs, {}) like ``ModelEnv``."""
        self._obs = np.asarray(torch.as_tensor(start_obs).cpu(), dtype=np.float64).copy()
        return torch.as_tensor(self._obs, dtype=torch.float32, device=self.device), {}

    def step(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor, dict]:
        """Advance every branch by one simulator step; ``actions`` is (B, act_dim). Returns
        ``ModelEnv.step``'s 6-tuple: next obs (B, obs_dim), reward, cost, terminated,
        truncated (all False) and an empty info."""
        if self._obs is None:
            raise RuntimeError("SimulatorEnv: call reset(start_obs) before step(actions)")
        acts = np.asarray(torch.as_tensor(actions).cpu(), dtype=np.float64)
        out = []
        for obs, act in zip(self._obs, acts, strict=True):
            self.env.reset()  # clears the time limit; the state is set just below
            self.sim.set_state(np.concatenate([[0.0], obs[:self.nq - 1]]), obs[self.nq - 1:])
            nxt, r, c, term, _, _ = self.env.step(act)
            out.append((nxt, r, c, term))
        nxt, r, c, term = (np.array(x) for x in zip(*out, strict=True))
        self._obs = nxt
        return step_tensors(nxt, r, c, term, np.zeros(len(r), dtype=bool), {}, self.device)

    def close(self) -> None:
        """Close the MuJoCo env."""
        self.env.close()


#: Task families the navigation simulator restores: their objects are fixed bodies (goal,
#: hazards: placed from the coordinate row) or free bodies (vases: in qpos). Button's resampling
#: timer and goal button, and the gremlins' mocap motion, are not restored.
_RESTORED_FAMILIES = ("goal", "circle")
#: Object groups whose bodies hang from the world, placed at their row's x-y.
_PLACED_GROUPS = {"goal": "goal", "hazards": "hazard{}"}


class NavigationSimulatorEnv:
    """The simulator behind ``ModelEnv``'s interface for a navigation task: B branches stepped
    one after another in one MuJoCo env of the task, each restored to its branch's recorded row
    before its step.

    ``reset(start)`` takes (B, D + P) rows, the coordinate state (D,
    ``envs.coordinates.state_vector``) then the MuJoCo state (P, ``PhysicsReader``), as
    ``make_env(coordinates=True, physics=True)`` records them; ``state_dim`` is D + P. A row is
    restored by placing the episode's bodies (the agent's start pose from the MuJoCo part, the
    goal and hazards at the row's x-y), setting what MuJoCo computed from the episode's layout
    (``dof_M0``, ``body_invweight0``, the mean inertia), qpos, qvel and the solver's warm start
    (the vases move in qpos); the goal distance of the reward's last step is the row's.

    ``step(actions)`` then runs the env's own step for each branch, in the env's order (its
    action clipping and frame skip, reward, cost, observation): the observation, reward and
    cost are the real env's for the same state and action, to the last bit. Unlike the env it
    draws no new goal: a goal step (the bonus is paid) truncates its branch, as in
    ``CoordinateModelEnv``, and its observation still shows the old goal. No episode time
    limit (the caller cuts branches at their horizon). Returns ``ModelEnv.step``'s 6-tuple
    (tensors on ``device``) with the info keys ``goal`` (B,) bool and ``n_nonfinite`` (0).

    Raises a one-line ValueError for a task without coordinates, and for the Button tasks and
    gremlins, whose state it does not restore.
    """

    def __init__(self, env_id: str, seed: int = 0, *, fast: bool = True,
                 device: torch.device | str = "cpu") -> None:
        env = single_env_factory(env_id, fast=fast)()
        try:
            self.env = RecordCoordinates(env, physics=True)
        except ValueError as exc:
            env.close()
            raise ValueError(f"the simulator as a model: {exc}") from None
        self.spec = self.env.state_spec
        groups = dict(self.spec.groups)
        if self.spec.family not in _RESTORED_FAMILIES or "gremlins" in groups:
            self.env.close()
            raise ValueError(f"the simulator as a model restores the Goal and Circle tasks without "
                             f"gremlins, not {self.spec.task_id}")
        self.device = torch.device(device)
        self.env.reset(seed=seed)
        self.builder = self.env.unwrapped
        self.task = self.builder.task
        self.coord_dim = state_size(self.spec)
        self.state_dim = self.env.state_dim
        self._coordinates = StateReader(self.builder, self.spec)
        self._physics = PhysicsReader(self.builder)
        world = self.task.world
        self._model, self._data = world.model, world.data  # fixed from here: no more resets
        self._agent = self._model.body("agent").id
        start, self._placed, self._goal_at = 12 + len(self.spec.sensor_index), [], 0
        for name, n in self.spec.groups:
            if name == "goal":
                self._goal_at = start  # the goal's x-y in a row
            if name in _PLACED_GROUPS:
                ids = np.array([self._model.body(_PLACED_GROUPS[name].format(i)).id
                                for i in range(n)], dtype=np.intp)
                self._placed.append((ids, slice(start, start + 2 * n)))
            start += 2 * n
        m = self._model
        self._moving = moving_bodies(m)
        sizes = {"body_invweight0": 2 * len(self._moving), "dof_M0": m.nv, "qpos": m.nq,
                 "qvel": m.nv, "act": m.na, "qacc_warmstart": m.nv}
        self._slices, at = {}, self.coord_dim + 8
        for key, n in sizes.items():
            self._slices[key] = slice(at, at + n)
            at += n
        self._goal = self.spec.family == "goal"
        self._rows: np.ndarray | None = None

    def reset(self, start: Any) -> tuple[torch.Tensor, dict]:
        """Start B branches at (B, D + P) rows; returns (their observation, {})."""
        rows = start.detach().cpu().numpy() if torch.is_tensor(start) else np.asarray(start)
        rows = np.array(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.state_dim:
            raise ValueError(f"{self.spec.task_id}: the simulator restores rows of the coordinate "
                             f"and MuJoCo state (B, {self.state_dim}) (make_env(coordinates=True, "
                             f"physics=True)), got {rows.shape}")
        self._rows = rows
        obs = observation(state_from_vector(self.spec, rows[:, :self.coord_dim]))
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device), {}

    def restore(self, row: np.ndarray) -> None:
        """Put the simulator into the state of one (D + P,) row."""
        model, data, d = self._model, self._data, self.coord_dim
        model.body_pos[self._agent] = row[d:d + 3]
        model.body_quat[self._agent] = row[d + 3:d + 7]
        model.stat.meaninertia = row[d + 7]
        for ids, where in self._placed:
            model.body_pos[ids, :2] = row[where].reshape(-1, 2)
        sl = self._slices
        model.body_invweight0[self._moving] = row[sl["body_invweight0"]].reshape(-1, 2)
        model.dof_M0[:] = row[sl["dof_M0"]]
        for key in ("qpos", "qvel", "act", "qacc_warmstart"):
            getattr(data, key)[:] = row[sl[key]]
        if self._goal:  # the reward's last goal distance, as stock's dist_xy computes it
            dx, dy = row[self._goal_at] - row[0], row[self._goal_at + 1] - row[1]
            self.task.last_dist_goal = np.sqrt(dx * dx + dy * dy)

    def step(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor, dict]:
        """Advance every branch by one simulator step; ``actions`` is (B, act_dim)."""
        if self._rows is None:
            raise RuntimeError("NavigationSimulatorEnv: call reset(start) before step(actions)")
        acts = np.asarray(torch.as_tensor(actions).detach().cpu(), dtype=np.float64)
        batch = len(self._rows)
        obs = np.empty((batch, self.spec.obs_size))
        rows = np.empty_like(self._rows)
        rew, cost = np.empty(batch), np.empty(batch)
        goal, term = np.zeros(batch, dtype=bool), np.zeros(batch, dtype=bool)
        builder, task = self.builder, self.task
        for i in range(batch):
            self.restore(self._rows[i])
            # FastBuilder.step's order, without the new goal, the step count and the time limit
            task.simulation_forward(acts[i])
            rew[i] = builder._reward()
            cost[i] = builder._cost()["cost_sum"]
            task.specific_step()
            goal[i] = self._goal and task.goal_achieved
            term[i] = not task.agent.is_alive()
            obs[i] = task.obs()
            rows[i, :self.coord_dim] = self._coordinates(obs[i])
            rows[i, self.coord_dim:] = self._physics()
        self._rows = rows
        info = {"goal": torch.as_tensor(goal, dtype=torch.bool, device=self.device), "n_nonfinite": 0}
        return step_tensors(obs, rew, cost, term, goal, info, self.device)

    def close(self) -> None:
        """Close the MuJoCo env."""
        self.env.close()
