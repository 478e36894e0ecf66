"""The coordinate state of a navigation task, and the task's formulas computed from it.

Issue 27, item 2: a world model for the Safety-Gymnasium 1.0.0 navigation tasks whose learned
part predicts only the robot's motion, while the observation's lidar, the reward and the cost
are computed exactly from coordinates. This module is that exact part, and how a rollout
records the state (:class:`StateReader`, :class:`RecordCoordinates`, one flat row per step:
:func:`state_vector`; with ``physics=True`` the MuJoCo state appended, :class:`PhysicsReader`,
for the simulator as the model in :mod:`.simulator`); the learned part and the model env are in
:mod:`.coordinate_model`.

A :class:`CoordinateState` holds, for a batch of B robots of one task (its
:class:`CoordinateSpec`):

* ``position`` (B, 3) and ``rotation`` (B, 3, 3): the robot's pose in the world frame (MuJoCo's
  ``xpos``/``xmat`` of the body ``agent``). A full 3-D pose rather than (x, y, heading): the Car
  tilts (up to 0.07 rad in 300 random steps) and bobs (z from 0.0988 to 0.106), and stock's
  lidar projects through the full rotation (``_ego_xy``), so a planar pose would be off by
  ~1e-3. ``heading`` gives the planar angle of the body's x axis;
* ``sensors`` (B, S): the robot's own sensors, i.e. every non-lidar entry of the flat
  observation, in the observation's order (accelerometer, velocimeter, gyro, magnetometer,
  and the Car's ``ballangvel_rear`` and ``ballquat_rear`` as its 3x3 matrix);
* ``objects``: for each object group (goal, hazards, vases, buttons, gremlins, circle), (B, n, 2)
  world x-y of its n objects. The positions are privileged: they come from the simulator, for
  the model only; the policy sees the task's observation (:func:`observation`);
* ``timer`` (B,): the Button tasks' resampling timer (the buttons' lidar reads 0 while it runs).

Covered, each to stock's formula (``tests/test_coordinates.py`` compares with the env, fast and
stock, step by step): the Goal, Button and Circle tasks, levels 0-2, on Point and Car.

* observation: all of it (sensors and every group's pseudo-lidar, :mod:`.lidar`);
* reward: Goal (goal-distance change times ``reward_distance``, plus ``reward_goal`` within the
  goal), Circle (from position and velocity, the velocity as ``rotation @ velocimeter``, equal
  to stock's ``agent.vel`` to ~4e-16). Button: only the distance term; its bonus is a contact
  with the goal button, so :func:`reward` raises and :func:`reward_terms` leaves it out;
* cost: hazard entry (``cost_hazards``) and Circle's boundary (``cost_out_of_boundary``), shaped
  or, as the registered tasks have it (``constrain_indicator``), as 0/1 indicators. Vases
  (contacts, velocities), buttons, gremlins and pillars count contacts: :func:`cost` raises where
  any of them is constrained (Goal2, Button1-2) and :func:`cost_terms` leaves them out.

Motion (:class:`Motion`, what the learned part predicts): the body-frame displacement and
rotation of the robot and the change of its sensors; :func:`apply_motion` moves a state by it
with every object fixed in the world frame.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from dynacppo_lite.envs.compat import import_safety_gymnasium
from dynacppo_lite.envs.lidar import LidarSettings, ego_xy, pseudo_lidar

import_safety_gymnasium()
_tasks = importlib.import_module("safety_gymnasium.tasks")
_geoms = importlib.import_module("safety_gymnasium.assets.geoms")
_base_object = importlib.import_module("safety_gymnasium.bases.base_object")

__all__ = [
    "SUPPORTED_AGENTS",
    "CoordinateSpec",
    "CoordinateState",
    "Motion",
    "PhysicsReader",
    "RecordCoordinates",
    "StateReader",
    "apply_motion",
    "coordinate_spec",
    "cost",
    "cost_terms",
    "motion_between",
    "moving_bodies",
    "observation",
    "physics_size",
    "read_state",
    "reward",
    "reward_terms",
    "robot_frame",
    "stack_states",
    "state_from_vector",
    "state_size",
    "state_vector",
]

#: Task family of each stock task base class.
_FAMILIES: dict[type, str] = {
    _tasks.GoalLevel0: "goal",
    _tasks.ButtonLevel0: "button",
    _tasks.CircleLevel0: "circle",
}
#: The robots the tests cover.
SUPPORTED_AGENTS = ("Point", "Car")


@dataclass(frozen=True)
class CoordinateSpec:
    """What the formulas need from one task; constant over its episodes.

    ``groups``: (name, count) of each object group a state holds, lidar groups first in
    observation order. ``lidar``: (group, start) of each lidar block in the flat observation.
    Reward and cost constants are None where the task has no such term.
    """

    task_id: str
    family: str  # "goal", "button" or "circle"
    obs_size: int
    sensor_index: tuple[int, ...]  # flat-observation index of each sensor entry, in order
    lidar_settings: LidarSettings
    lidar: tuple[tuple[str, int], ...]
    groups: tuple[tuple[str, int], ...]
    velocimeter: int | None  # where the velocimeter starts in ``sensors`` (Circle's reward)
    goal_size: float | None  # Goal: the bonus is paid within this distance of the goal
    reward_distance: float | None  # Goal, Button: reward per metre of goal distance closed
    reward_goal: float | None  # Goal: the bonus
    circle_radius: float | None  # Circle
    circle_factor: float | None  # Circle: ``reward_factor``
    hazard_size: float | None  # constrained hazards: within size, cost * (size - distance)
    hazard_cost: float | None
    boundary: float | None  # constrained sigwalls: cost 1 beyond |x| (and |y|) > boundary
    boundary_y: bool  # four sigwalls: |y| counts too
    indicator: bool  # ``cost_conf.constrain_indicator`` (stock default): each cost is 1.0 if > 0
    uncovered_reward: tuple[str, ...]  # reward terms that need contacts (Button's bonus)
    uncovered_cost: tuple[str, ...]  # constrained objects whose cost needs contacts

    @property
    def group_counts(self) -> dict[str, int]:
        return dict(self.groups)


@dataclass(frozen=True)
class CoordinateState:
    """A batch of B coordinate states of one task (shapes in the module docstring).

    Checked on construction: a wrong shape raises a one-line ValueError.
    """

    spec: CoordinateSpec
    position: np.ndarray  # (B, 3) world frame
    rotation: np.ndarray  # (B, 3, 3) world from body
    sensors: np.ndarray  # (B, S) non-lidar observation entries, observation order
    objects: dict[str, np.ndarray] = field(repr=False)  # group -> (B, n, 2) world x-y
    timer: np.ndarray  # (B,) Button's resampling timer, 0 elsewhere

    def __post_init__(self) -> None:
        spec = self.spec
        if np.ndim(self.position) != 2:
            raise ValueError(f"{spec.task_id}: position has shape {np.shape(self.position)}, "
                             "expected (B, 3) (batch first)")
        batch = np.shape(self.position)[0]
        counts = spec.group_counts
        if set(self.objects) != set(counts):
            raise ValueError(f"{spec.task_id}: objects has groups {sorted(self.objects)}, "
                             f"the task has {sorted(counts)}")
        checks = [("position", self.position, (batch, 3)),
                  ("rotation", self.rotation, (batch, 3, 3)),
                  ("sensors", self.sensors, (batch, len(spec.sensor_index))),
                  ("timer", self.timer, (batch,))]
        checks += [(f"objects[{name!r}]", self.objects[name], (batch, n, 2))
                   for name, n in counts.items()]
        for label, value, shape in checks:
            if np.shape(value) != shape:
                raise ValueError(f"{spec.task_id}: {label} has shape {np.shape(value)}, "
                                 f"expected {shape} (batch first)")

    @property
    def batch(self) -> int:
        return self.position.shape[0]

    @property
    def heading(self) -> np.ndarray:
        """(B,) planar angle of the body's x axis in the world frame (radians, (-pi, pi])."""
        return np.arctan2(self.rotation[:, 1, 0], self.rotation[:, 0, 0])


@dataclass(frozen=True)
class Motion:
    """One step of a batch of robots, in the body frame of the state it starts from.

    translation: (B, 3) displacement of the body origin; rotation: (B, 3) rotation vector
    (axis times angle, |angle| < pi) with ``R' = R exp([rotation]x)``; sensors: (B, S) change of
    the sensor vector.
    """

    translation: np.ndarray
    rotation: np.ndarray
    sensors: np.ndarray


# --------------------------------------------------------------------- reading a live env
def _task(env: gymnasium.Env) -> Any:
    task = getattr(env.unwrapped, "task", None)
    if task is None:
        raise ValueError(f"{env.unwrapped.spec.id if env.unwrapped.spec else env}: coordinates "
                         "need a Safety-Gymnasium navigation task (a Builder env with .task)")
    return task


def coordinate_spec(env: gymnasium.Env) -> CoordinateSpec:
    """The :class:`CoordinateSpec` of a live navigation env (fast or stock, after a reset).

    Raises a one-line ValueError for what is not covered: other task families (Push, Run,
    velocity tasks), other robots, natural lidar, vision or compass observations, static geoms.
    """
    task = _task(env)
    task_id = env.unwrapped.task_id
    family = next((f for base, f in _FAMILIES.items() if isinstance(task, base)), None)
    if family is None:
        raise ValueError(f"{task_id}: coordinates cover the Goal, Button and Circle tasks, "
                         f"not {type(task).__name__}")
    agent = type(task.agent).__name__
    if agent not in SUPPORTED_AGENTS:
        raise ValueError(f"{task_id}: coordinates cover the robots {SUPPORTED_AGENTS}, not {agent}")
    obstacles = task._obstacles
    if (task.lidar_conf.type != "pseudo" or task.observe_vision or not task.observation_flatten
            or task._is_load_static_geoms
            or any(getattr(o, "is_comp_observed", False) for o in obstacles)):
        raise ValueError(f"{task_id}: coordinates need the flat observation of pseudo-lidar and "
                         "sensors (no natural lidar, vision, compass or static geoms)")

    where, size = {}, 0
    for key, space in task.obs_info.obs_space_dict.spaces.items():
        where[key] = (size, int(np.prod(space.shape)))
        size += where[key][1]
    seen = [o for o in obstacles if o.is_lidar_observed]
    lidar = tuple((o.name, where[f"{o.name}_lidar"][0]) for o in seen)
    lidar_keys = {f"{o.name}_lidar" for o in seen}
    sensor_keys = [k for k in where if k not in lidar_keys]
    sensor_index = tuple(i for k in sensor_keys for i in range(where[k][0], sum(where[k])))
    velocimeter = None
    if "velocimeter" in where:
        velocimeter = sensor_index.index(where["velocimeter"][0])
    elif family == "circle":
        raise ValueError(f"{task_id}: Circle's reward needs the velocimeter in the observation")

    grouped = seen + [o for o in obstacles if isinstance(o, _geoms.Hazards) and o not in seen]
    groups = tuple((o.name, len(np.array(o.pos, ndmin=2))) for o in grouped)

    hazards = next((o for o in obstacles if isinstance(o, _geoms.Hazards) and o.is_constrained),
                   None)
    walls = next((o for o in obstacles if isinstance(o, _geoms.Sigwalls) and o.is_constrained),
                 None)
    covered = (_geoms.Hazards, _geoms.Sigwalls)
    uncovered_cost = tuple(
        o.name for o in obstacles
        if o.is_constrained and not isinstance(o, covered)
        and type(o).cal_cost is not _base_object.BaseObject.cal_cost)
    reward_distance = None  # Button scales the distance to its goal by the buttons' factor
    if family != "circle":
        reward_distance = (task.goal if family == "goal" else task.buttons).reward_distance
    return CoordinateSpec(
        task_id=task_id,
        family=family,
        obs_size=size,
        sensor_index=sensor_index,
        lidar_settings=LidarSettings.of(task.lidar_conf),
        lidar=lidar,
        groups=groups,
        velocimeter=velocimeter,
        goal_size=task.goal.size if family == "goal" else None,
        reward_distance=reward_distance,
        reward_goal=task.goal.reward_goal if family == "goal" else None,
        circle_radius=task.circle.radius if family == "circle" else None,
        circle_factor=task.reward_factor if family == "circle" else None,
        hazard_size=None if hazards is None else hazards.size,
        hazard_cost=None if hazards is None else hazards.cost,
        boundary=None if walls is None else walls.locate_factor,
        boundary_y=walls is not None and walls.num == 4,
        indicator=bool(task.cost_conf.constrain_indicator),
        uncovered_reward=("goal (a contact with the goal button)",) if family == "button" else (),
        uncovered_cost=uncovered_cost,
    )


def read_state(env: gymnasium.Env, spec: CoordinateSpec | None = None) -> CoordinateState:
    """The env's current coordinate state, a batch of one (after ``reset`` or ``step``).

    Reads the simulator without running it (no ``mj_forward``: every forward pass nudges
    MuJoCo's solver warm start, see :mod:`.fast_task`), so reading never changes the env's
    trajectory. Pass ``spec`` (from :func:`coordinate_spec`) to skip rebuilding it.
    """
    spec = coordinate_spec(env) if spec is None else spec
    task = _task(env)
    agent = task.agent
    by_name = {o.name: o for o in task._obstacles}
    sensors = agent.obs_sensor()  # the sensor entries of the observation, unflattened
    spaces = task.obs_info.obs_space_dict.spaces
    flat = np.concatenate([np.ravel(sensors[k]) for k in spaces if k in sensors])
    buttons = by_name.get("buttons")
    return CoordinateState(
        spec=spec,
        position=agent.pos[None],
        rotation=agent.mat[None],
        sensors=flat[None],
        objects={name: np.array(by_name[name].pos, ndmin=2)[None, :, :2]
                 for name, _ in spec.groups},
        timer=np.array([0.0 if buttons is None else float(buttons.timer)]),
    )


def stack_states(states: Sequence[CoordinateState]) -> CoordinateState:
    """One batch from states of one task (e.g. :func:`read_state` of several steps or envs)."""
    if not states:
        raise ValueError("stack_states needs at least one state")
    spec = states[0].spec
    for state in states:
        if state.spec != spec:
            raise ValueError(f"stack_states: states of {state.spec.task_id} and {spec.task_id} "
                             "(or of different layouts) cannot share a batch")
    return CoordinateState(
        spec=spec,
        position=np.concatenate([s.position for s in states]),
        rotation=np.concatenate([s.rotation for s in states]),
        sensors=np.concatenate([s.sensors for s in states]),
        objects={name: np.concatenate([s.objects[name] for s in states]) for name, _ in spec.groups},
        timer=np.concatenate([s.timer for s in states]),
    )


# --------------------------------------------------------------------- one flat row per state
def state_size(spec: CoordinateSpec) -> int:
    """D, the length of a :func:`state_vector` row: position 3, rotation 9, the S sensors, two
    per object (groups in ``spec.groups`` order), and the timer."""
    return 12 + len(spec.sensor_index) + 2 * sum(n for _, n in spec.groups) + 1


def state_vector(state: CoordinateState) -> np.ndarray:
    """(B, D) rows ``[position, rotation (row-major), sensors, each group's x-y, timer]``: how
    rollouts and the replay buffer store states (:func:`state_from_vector` is the inverse)."""
    batch = state.batch
    return np.concatenate([state.position, state.rotation.reshape(batch, 9), state.sensors,
                           *(state.objects[name].reshape(batch, -1) for name, _ in state.spec.groups),
                           state.timer[:, None]], axis=1)


def state_from_vector(spec: CoordinateSpec, rows: np.ndarray) -> CoordinateState:
    """The :class:`CoordinateState` of (B, D) :func:`state_vector` rows (float64 views of them)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != state_size(spec):
        raise ValueError(f"{spec.task_id}: state rows have shape {rows.shape}, expected "
                         f"(B, {state_size(spec)})")
    batch, sensors = rows.shape[0], len(spec.sensor_index)
    objects, start = {}, 12 + sensors
    for name, n in spec.groups:
        objects[name] = rows[:, start:start + 2 * n].reshape(batch, n, 2)
        start += 2 * n
    return CoordinateState(spec=spec, position=rows[:, :3], rotation=rows[:, 3:12].reshape(batch, 3, 3),
                           sensors=rows[:, 12:12 + sensors], objects=objects, timer=rows[:, -1])


#: The MuJoCo body of each object of a group, as stock's ``pos`` properties name them (the
#: circle sits at the origin and has none).
_BODIES = {"goal": "goal", "hazards": "hazard{}", "vases": "vase{}", "buttons": "button{}",
           "gremlins": "gremlin{}obj"}


class StateReader:
    """:func:`read_state` of one live env as a :func:`state_vector` row, cheaply enough for every
    step of a rollout: one indexed read of MuJoCo's body positions, the sensors taken from the
    observation the env just returned (they are its non-lidar entries). The body ids are looked
    up again whenever the env has built a new MuJoCo model (a reset does).
    """

    def __init__(self, env: gymnasium.Env, spec: CoordinateSpec | None = None) -> None:
        self.spec = coordinate_spec(env) if spec is None else spec
        self._task = _task(env)
        unknown = [name for name, _ in self.spec.groups if name not in _BODIES and name != "circle"]
        if unknown:
            raise ValueError(f"{self.spec.task_id}: no body names known for the groups {unknown}")
        self._sensors = np.array(self.spec.sensor_index, dtype=np.intp)
        self._row = np.zeros(state_size(self.spec))  # the circle's entries stay 0
        start, self._slots = 12 + len(self._sensors), []  # (row slice, body names) per group
        for name, n in self.spec.groups:
            if name != "circle":
                names = [_BODIES[name].format(i) for i in range(n)]  # "goal": one, no index
                self._slots.append((slice(start, start + 2 * n), names))
            start += 2 * n
        self._model: Any = None
        self._buttons = next((o for o in self._task._obstacles if o.name == "buttons"), None)

    def _bind(self, model: Any) -> None:
        self._model = model
        self._agent = model.body("agent").id
        self._ids = [np.array([model.body(b).id for b in names]) for _, names in self._slots]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(D,) the state the env is in, given the observation it returned for it."""
        world = self._task.world
        if world.model is not self._model:
            self._bind(world.model)
        xpos, row = world.data.xpos, self._row.copy()
        row[:3] = xpos[self._agent]
        row[3:12] = world.data.xmat[self._agent]
        row[12:12 + len(self._sensors)] = obs[self._sensors]
        for (where, _), ids in zip(self._slots, self._ids, strict=True):
            row[where] = xpos[ids, :2].ravel()
        if self._buttons is not None:
            row[-1] = self._buttons.timer
        return row


class PhysicsReader:
    """The MuJoCo state of one live navigation env as a flat row (P,), what puts a simulator of
    the task back into the state the env is in (``envs.simulator.NavigationSimulatorEnv``):
    ``[agent body pos (3), agent body quat (4), mean inertia (1), body_invweight0 of the bodies
    that move (2 each), dof_M0 (nv), qpos (nq), qvel (nv), act (na), qacc_warmstart (nv)]``.

    The agent's body placement is the episode's start pose (its slide and hinge joints move it
    from there); the goal's and the other fixed objects' placements are the coordinate row's
    object positions; a vase's pose is in qpos (a free joint). The rest is kept only because
    the next step depends on it in the last bits: the solver's warm start (each ``mj_forward``
    of a step nudges it, see ``envs.fast_task``) and what MuJoCo computes from each episode's
    layout when it builds the model (``dof_M0`` and ``body_invweight0``, from the mass matrix at
    the layout's qpos0, which the contacts' regularisation uses, and the mean inertia that
    scales the solver's tolerance: they differ from episode to episode in the last digits).
    With them a restored step is the env's own to the last bit (``tests/test_simulator.py``).
    """

    def __init__(self, env: gymnasium.Env) -> None:
        self._task = _task(env)
        self.size = physics_size(self._task.world.model)
        self._model: Any = None

    def __call__(self) -> np.ndarray:
        """(P,) the MuJoCo state the env is in now."""
        world = self._task.world
        model, data = world.model, world.data
        if model is not self._model:  # a reset builds a new model
            self._model, self._agent = model, model.body("agent").id
            self._moving = moving_bodies(model)
        return np.concatenate([model.body_pos[self._agent], model.body_quat[self._agent],
                               [model.stat.meaninertia], model.body_invweight0[self._moving].ravel(),
                               model.dof_M0, data.qpos, data.qvel, data.act, data.qacc_warmstart])


def moving_bodies(model: Any) -> np.ndarray:
    """The ids of the bodies with degrees of freedom (the agent's, the vases)."""
    return np.flatnonzero(model.body_dofnum > 0)


def physics_size(model: Any) -> int:
    """P, the length of a :class:`PhysicsReader` row of a MuJoCo model."""
    return 8 + 2 * len(moving_bodies(model)) + model.nq + 3 * model.nv + model.na


class RecordCoordinates(gymnasium.Wrapper):
    """A navigation env whose ``reset`` and ``step`` infos carry ``info["state"]``, the
    :func:`state_vector` row (D,) of the state the env is in, for the vector envs to collect
    (``make_env(coordinates=True)``). The policy's observation is unchanged.

    ``physics=True`` appends the env's MuJoCo state (:class:`PhysicsReader`, P numbers) to each
    row, (D + P,): what the simulator as a model restores (``make_env(physics=True)``).

    ``state_dim`` (D, or D + P) and ``state_spec`` (the :class:`CoordinateSpec`) are known from
    construction, for which the env is reset once (seed 0; the first reset of a rollout
    reseeds it). Raises a one-line ValueError for a task :func:`coordinate_spec` does not cover.
    """

    def __init__(self, env: gymnasium.Env, physics: bool = False) -> None:
        super().__init__(env)
        env.reset(seed=0)
        self.state_spec = coordinate_spec(env)
        self.state_dim = state_size(self.state_spec)
        self._read = StateReader(env, self.state_spec)
        self._physics = PhysicsReader(env) if physics else None
        if self._physics is not None:
            self.state_dim += self._physics.size

    def row(self, obs: np.ndarray) -> np.ndarray:
        """The row of the state the env is in, given the observation it returned for it."""
        if self._physics is None:
            return self._read(obs)
        return np.concatenate([self._read(obs), self._physics()])

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        info["state"] = self.row(obs)
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        obs, reward, cost, terminated, truncated, info = self.env.step(action)
        info["state"] = self.row(obs)
        return obs, reward, cost, terminated, truncated, info


# --------------------------------------------------------------------- the task's formulas
def robot_frame(state: CoordinateState) -> dict[str, np.ndarray]:
    """Each group's (B, n, 2) object positions in the robot frame (stock ``_ego_xy``): the
    model's view of the objects."""
    return {name: ego_xy(xy, state.position, state.rotation) for name, xy in state.objects.items()}


def observation(state: CoordinateState) -> np.ndarray:
    """(B, obs_size): the task's flat observation, as the env returns it.

    Sensors where the observation has them; each lidar group's block is the pseudo-lidar of
    its objects (:func:`.lidar.pseudo_lidar`), and the buttons' block reads 0 while the Button
    timer runs (stock ``ButtonLevel0.obs``).
    """
    spec = state.spec
    out = np.empty((state.batch, spec.obs_size))
    out[:, np.array(spec.sensor_index, dtype=np.intp)] = state.sensors
    names = [name for name, _ in spec.lidar]
    counts = spec.group_counts
    xy = np.concatenate([state.objects[name] for name in names], axis=1)
    group = np.repeat(np.arange(len(names), dtype=np.intp), [counts[name] for name in names])
    lidar = pseudo_lidar(ego_xy(xy, state.position, state.rotation), group, len(names),
                         spec.lidar_settings)
    bins = spec.lidar_settings.num_bins
    for row, (name, start) in enumerate(spec.lidar):
        out[:, start:start + bins] = lidar[:, row * bins:(row + 1) * bins]
        if name == "buttons":
            out[state.timer != 0, start:start + bins] = 0.0
    return out


def _goal_distance(position: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(B,) stock ``agent.dist_xy(goal.pos)``: sqrt of the summed squares, in stock's order."""
    d = goal[:, 0, :] - position[:, :2]
    return np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])


def reward_terms(state: CoordinateState, next_state: CoordinateState) -> dict[str, np.ndarray]:
    """The (B,) reward terms of the steps ``state -> next_state`` that coordinates determine.

    Goal and Button: ``distance`` = (|p - g| - |p' - g|) * reward_distance, with g the goal of
    ``state`` (the env draws a new goal after a goal step, which ``next_state`` read from a live
    env already shows; imagined steps keep it). Goal: ``goal`` = reward_goal where
    |p' - g| <= goal size, else 0. Circle: ``circle`` = ((-u y' + v x') / r) / (1 + |r - R|)
    * reward_factor at ``next_state``, r = |(x', y')|, (u, v) the world-frame velocity.
    """
    spec = state.spec
    _same_task(state, next_state)
    if spec.family == "circle":
        position = next_state.position
        x, y = position[:, 0], position[:, 1]
        u, v = _world_velocity(next_state)
        radius = np.sqrt(x * x + y * y)
        circle = ((-u * y + v * x) / radius) / (1 + np.abs(radius - spec.circle_radius))
        return {"circle": circle * spec.circle_factor}
    goal = state.objects["goal"]
    last = _goal_distance(state.position, goal)
    now = _goal_distance(next_state.position, goal)
    terms = {"distance": (last - now) * spec.reward_distance}
    if spec.family == "goal":
        terms["goal"] = np.where(now <= spec.goal_size, spec.reward_goal, 0.0)
    return terms


def reward(state: CoordinateState, next_state: CoordinateState) -> np.ndarray:
    """(B,) the env's reward of the steps ``state -> next_state`` (:func:`reward_terms`, summed
    in stock's order). Raises a one-line ValueError for terms coordinates cannot give."""
    if state.spec.uncovered_reward:
        raise ValueError(f"{state.spec.task_id}: the reward term "
                         f"{', '.join(state.spec.uncovered_reward)} needs contacts, not "
                         "coordinates; reward_terms gives the rest")
    return sum(reward_terms(state, next_state).values(), np.zeros(state.batch))


def _shaped_cost_terms(state: CoordinateState) -> dict[str, np.ndarray]:
    """The (B,) cost terms as the objects' ``cal_cost`` gives them, before the indicator."""
    spec = state.spec
    terms = {}
    if spec.hazard_size is not None:
        total = np.zeros(state.batch)
        hazards = state.objects["hazards"]
        for h in range(hazards.shape[1]):  # in stock's order: the sum is bit-identical
            d = hazards[:, h, :] - state.position[:, :2]
            dist = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
            total += np.where(dist <= spec.hazard_size, spec.hazard_cost * (spec.hazard_size - dist),
                              0.0)
        terms["cost_hazards"] = total
    if spec.boundary is not None:
        out = np.abs(state.position[:, 0]) > spec.boundary
        if spec.boundary_y:
            out |= np.abs(state.position[:, 1]) > spec.boundary
        terms["cost_out_of_boundary"] = out.astype(np.float64)
    return terms


def _indicator(values: np.ndarray) -> np.ndarray:
    """Stock ``Builder._cost`` with ``constrain_indicator``: ``float(cost > 0.0)``."""
    return (values > 0.0).astype(np.float64)


def cost_terms(state: CoordinateState) -> dict[str, np.ndarray]:
    """The (B,) cost terms at ``state`` that coordinates determine, as the env's ``info`` has them.

    ``cost_hazards`` = sum over hazards within ``size`` of cost * (size - distance), summed
    hazard by hazard as stock does; ``cost_out_of_boundary`` = 1.0 where |x| (or, with four
    sigwalls, |y|) > locate_factor, else 0.0 (stock: a bool). With ``constrain_indicator`` (the
    stock default) each term is then 1.0 where it is > 0, else 0.0.
    """
    terms = _shaped_cost_terms(state)
    if state.spec.indicator:
        return {key: _indicator(value) for key, value in terms.items()}
    return terms


def cost(state: CoordinateState) -> np.ndarray:
    """(B,) the env's cost at ``state`` (``info["cost_sum"]``, the step's cost): the sum of the
    shaped terms, then with ``constrain_indicator`` 1.0 where it is > 0. Raises a one-line
    ValueError where a constrained object's cost needs contacts (:func:`cost_terms` gives the
    rest)."""
    if state.spec.uncovered_cost:
        raise ValueError(f"{state.spec.task_id}: the costs of {', '.join(state.spec.uncovered_cost)} "
                         "need contacts or object velocities, not coordinates; cost_terms gives "
                         "the rest")
    total = sum(_shaped_cost_terms(state).values(), np.zeros(state.batch))
    return _indicator(total) if state.spec.indicator else total


def _world_velocity(state: CoordinateState) -> tuple[np.ndarray, np.ndarray]:
    """World-frame x and y velocity of the body origin: rotation @ velocimeter."""
    start = state.spec.velocimeter
    local = state.sensors[:, start:start + 3]
    world = np.einsum("bij,bj->bi", state.rotation[:, :2], local)
    return world[:, 0], world[:, 1]


def _same_task(state: CoordinateState, other: CoordinateState) -> None:
    if other.spec != state.spec or other.batch != state.batch:
        raise ValueError(f"states of {state.spec.task_id} (batch {state.batch}) and "
                         f"{other.spec.task_id} (batch {other.batch}) do not pair up")


# --------------------------------------------------------------------- the robot's motion
def _skew(w: np.ndarray) -> np.ndarray:
    """(B, 3, 3) cross-product matrices [w]x of (B, 3) vectors."""
    zero = np.zeros(w.shape[0])
    return np.stack([
        np.stack([zero, -w[:, 2], w[:, 1]], axis=-1),
        np.stack([w[:, 2], zero, -w[:, 0]], axis=-1),
        np.stack([-w[:, 1], w[:, 0], zero], axis=-1),
    ], axis=1)


def _exp_rotation(w: np.ndarray) -> np.ndarray:
    """Rodrigues: exp([w]x) = I + a [w]x + b [w]x^2, a = sin t / t, b = (1 - cos t) / t^2."""
    angle = np.linalg.norm(w, axis=-1)
    small = angle < 1e-4  # series: the closed forms lose digits as t -> 0
    safe = np.where(small, 1.0, angle)
    a = np.where(small, 1 - angle**2 / 6, np.sin(safe) / safe)
    b = np.where(small, 0.5 - angle**2 / 24, (1 - np.cos(safe)) / safe**2)
    k = _skew(w)
    return np.eye(3) + a[:, None, None] * k + b[:, None, None] * (k @ k)


def _log_rotation(r: np.ndarray) -> np.ndarray:
    """The rotation vector of (B, 3, 3) rotations of angle < pi: axis * atan2(sin, cos)."""
    w = 0.5 * np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0],
                        r[:, 1, 0] - r[:, 0, 1]], axis=-1)  # sin(angle) * axis
    sin = np.linalg.norm(w, axis=-1)
    cos = 0.5 * (np.trace(r, axis1=1, axis2=2) - 1)
    angle = np.arctan2(sin, cos)
    scale = np.divide(angle, sin, out=np.ones_like(sin), where=sin > 0)
    return w * scale[:, None]


def motion_between(state: CoordinateState, next_state: CoordinateState) -> Motion:
    """The :class:`Motion` that takes ``state`` to ``next_state``: the learned part's target.

    translation = R^T (p' - p); rotation = log(R^T R'); sensors = s' - s.
    """
    _same_task(state, next_state)
    inverse = np.swapaxes(state.rotation, 1, 2)
    return Motion(
        translation=np.einsum("bij,bj->bi", inverse, next_state.position - state.position),
        rotation=_log_rotation(inverse @ next_state.rotation),
        sensors=next_state.sensors - state.sensors,
    )


def apply_motion(state: CoordinateState, motion: Motion) -> CoordinateState:
    """``state`` moved by ``motion``: p' = p + R t, R' = R exp([w]x), s' = s + ds; the Button
    timer ticks (max(t - 1, 0), stock ``timer_tick``).

    Every object stays where it is in the world frame: exact for the goal, hazards, buttons and
    the circle; vases (pushed by the robot) and gremlins (moving on their own) are held fixed,
    an approximation. No goal is drawn when the goal is reached: the goal stays.
    """
    batch, sensors = state.batch, state.sensors.shape[1]
    for name, value, shape in (("translation", motion.translation, (batch, 3)),
                               ("rotation", motion.rotation, (batch, 3)),
                               ("sensors", motion.sensors, (batch, sensors))):
        if np.shape(value) != shape:
            raise ValueError(f"{state.spec.task_id}: motion.{name} has shape {np.shape(value)}, "
                             f"expected {shape}")
    return CoordinateState(
        spec=state.spec,
        position=state.position + np.einsum("bij,bj->bi", state.rotation, motion.translation),
        rotation=state.rotation @ _exp_rotation(motion.rotation),
        sensors=state.sensors + motion.sensors,
        objects=state.objects,
        timer=np.maximum(state.timer - 1, 0),
    )
