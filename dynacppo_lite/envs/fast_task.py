"""Lean step path: per-instance subclasses of Safety-Gymnasium 1.0.0 task and agent classes.

After fast resets (see :mod:`dynacppo_lite.envs.fast_world`) physics is only ~15% of a stock
``env.step``; the rest is Python around it. Profiling ``SafetyPointGoal1-v0`` showed where: a
body/sensor *name* lookup for every position read, pseudo-lidar and hazard distances as
per-object Python loops of tiny numpy calls, contact costs that look up two geom names per
contact, and an observation-space ``contains`` check that cannot fail.

The classes here keep every stock formula and change only how it is evaluated:

* ids, geom flags, sensor addresses and buffers are looked up once per build (per reset);
* pseudo-lidar (:mod:`dynacppo_lite.envs.lidar`) and hazard distances run as numpy operations
  over all objects at once, written with the same elementwise operations in the same order as
  the stock scalar code (e.g. the ``vec @ mat`` product as ``v0*m0 + v1*m1 + v2*m2``), so on
  the development machine they are bit-identical to stock; the equality test allows 1e-9
  relative for other BLAS/CPU builds;
* contact costs test precomputed per-geom flags instead of names;
* gremlins move together (one target per substep) without ``np.r_``;
* resets: the layout's rejection sampling tests keepouts on floats (:class:`FastRandomGenerator`).

What stays: the three ``mj_forward`` calls per step (after physics, in the cost, in the
observation). They look redundant, but MuJoCo 2.3.3's forward pass stores its ``qacc`` as the
next solver warm start, so every call nudges ``qacc_warmstart`` by a few ulps and the next
``mj_step`` depends on it; dropping them, or recomputing only the acceleration stage
(``mj_forwardSkip``), changed accelerometer readings and accelerations at 1e-16..1e-12 at
once, so the trajectory would no longer be stock's.

Anything outside what these paths cover (vision or natural-lidar observations, compass
observations, static-geom costs, debug mode, action noise, object classes not listed below)
uses the stock method, so every task still runs, only without the speed-up.
"""

from __future__ import annotations

import functools
import importlib
import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from dynacppo_lite.envs.compat import import_safety_gymnasium
from dynacppo_lite.envs.fast_world import FastWorld
from dynacppo_lite.envs.lidar import ego_xy, pseudo_lidar

import_safety_gymnasium()
_agents = importlib.import_module("safety_gymnasium.agents")
_tasks = importlib.import_module("safety_gymnasium.tasks")
_geoms = importlib.import_module("safety_gymnasium.assets.geoms")
_free_geoms = importlib.import_module("safety_gymnasium.assets.free_geoms")
_mocaps = importlib.import_module("safety_gymnasium.assets.mocaps")
_base_object = importlib.import_module("safety_gymnasium.bases.base_object")
_quat2mat = importlib.import_module("safety_gymnasium.utils.task_utils").quat2mat
_random_generator = importlib.import_module("safety_gymnasium.utils.random_generator")

#: Body names behind each object class's stock ``pos`` property ('{}' = the object's index).
_BODY_NAMES: dict[type, str] = {
    _geoms.Hazards: "hazard{}",
    _geoms.Buttons: "button{}",
    _geoms.Pillars: "pillar{}",
    _geoms.Goal: "goal",
    _free_geoms.Vases: "vase{}",
    _free_geoms.PushBox: "push_box",
    _mocaps.Gremlins: "gremlin{}obj",
}

#: Up to this many lidar objects (e.g. Circle's one) the stock per-object loop is faster than
#: the ~20 numpy calls of the batched lidar (measured: 8 µs per object vs 19 µs in all).
_STOCK_LIDAR_MAX_OBJECTS = 2

#: Geom-name prefix and cost key of the objects whose cost counts agent contacts.
_CONTACT_COSTS: dict[type, tuple[str, str]] = {
    _geoms.Pillars: ("pillar", "cost_pillars"),
    _geoms.Buttons: ("button", "cost_buttons"),
    _free_geoms.Vases: ("vase", "cost_vases_contact"),
    _mocaps.Gremlins: ("gremlin", "cost_gremlins"),
}


def _body_ids(model: Any, obstacle: Any) -> np.ndarray:
    pattern = _BODY_NAMES[type(obstacle)]
    count = obstacle.num if hasattr(obstacle, "num") else 1
    return np.array([model.body(pattern.format(i)).id for i in range(count)], dtype=np.intp)


def _add_repeatedly(total: Any, unit: float, times: int) -> Any:
    """``total += unit``, ``times`` times: the stock per-contact sum (not ``unit * times``)."""
    for _ in range(times):
        total += unit
    return total


@dataclass(frozen=True)
class _Contacts:
    """This step's contacts as geom-id arrays, and which of them touch the agent."""

    geom1: np.ndarray
    geom2: np.ndarray
    with_agent: np.ndarray


@dataclass(frozen=True)
class _ObsPlan:
    """Where each part of the flat observation comes from, for the current model."""

    size: int
    raw_dst: np.ndarray  # flat-obs indices filled straight from sensordata ...
    raw_src: np.ndarray  # ... at these sensordata indices
    sincos: tuple[tuple[int, int], ...]  # (obs index, sensordata index) of hinge angles
    quats: tuple[tuple[int, int], ...]  # (obs index, sensordata index) of ball quaternions
    lidar: slice | None  # the lidar block, rows in obstacle order
    buttons_lidar: slice | None  # zeroed while the buttons' resampling timer runs


@dataclass(frozen=True)
class _LidarPlan:
    """Which rows of the batched lidar input come from which bodies or objects."""

    count: int  # objects seen by any lidar
    body_rows: np.ndarray  # rows read from data.xpos ...
    body_ids: np.ndarray  # ... of these bodies
    other_rows: tuple[tuple[slice, Any], ...]  # rows read from obstacle.pos (e.g. Circle)
    group: np.ndarray  # (count,): each object's lidar block (its obstacle's row in ``seen``)
    seen: tuple[Any, ...]  # the lidar-observed obstacles, in observation order


class FastRandomGenerator(_random_generator.RandomGenerator):
    """Stock layout and goal sampling with the keepout test on Python floats.

    Rejection sampling draws thousands of candidate positions per reset on the denser tasks
    (~0.1 s for CarButton1), each tested against every placed object with five numpy calls on
    2-vectors. Here the test is plain float arithmetic with the same operations in the same
    order (``sqrt(dx*dx + dy*dy) < other_keepout + margin + keepout``), so every accept/reject
    and therefore every random draw is the stock one.
    """

    def _clear(self, xy: np.ndarray, keepout: float, placed: list[tuple[float, float, float]]
               ) -> bool:
        """No placed ``(x, y, keepout)`` closer than the two keepouts plus the margin."""
        x, y = xy.tolist()
        margin = self.placements_margin
        for other_x, other_y, other_keepout in placed:
            dx, dy = x - other_x, y - other_y
            if math.sqrt(dx * dx + dy * dy) < other_keepout + margin + keepout:
                return False
        return True

    def sample_layout(self) -> bool:
        layout: dict[str, np.ndarray] = {}
        placed: list[tuple[float, float, float]] = []
        for name, (placements, keepout) in self.placements.items():
            for _ in range(100):
                xy = self.draw_placement(placements, keepout)
                if self._clear(xy, keepout, placed):
                    break
            else:
                return False
            layout[name] = xy
            placed.append((*xy.tolist(), keepout))
        self.layout = layout
        return True

    def sample_goal_position(self) -> bool:
        placements, keepout = self.placements["goal"]
        goal_xy = self.draw_placement(placements, keepout)
        placed = [(*np.asarray(xy).tolist(), self.placements[name][1])
                  for name, xy in self.layout.items()]
        if not self._clear(goal_xy, keepout, placed):
            return False
        self.layout["goal"] = goal_xy
        return True


class FastAgentMixin:
    """Agent position, rotation and velocity read by cached body id instead of by name."""

    engine: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_bind()

    def fast_bind(self) -> None:
        """Look up the agent body for the engine's current model (after every world build)."""
        model = self.engine.model
        self._body = model.body("agent").id
        self._jacp = np.zeros((3, model.nv))

    @property
    def pos(self) -> np.ndarray:
        return self.engine.data.xpos[self._body].copy()

    @property
    def mat(self) -> np.ndarray:
        return self.engine.data.xmat[self._body].reshape(3, 3).copy()

    @property
    def com(self) -> np.ndarray:
        return self.engine.data.subtree_com[self._body].copy()

    @property
    def vel(self) -> np.ndarray:
        """Same computation as ``get_body_xvelp`` (``jacp @ qvel``) into a reused Jacobian."""
        mujoco.mj_jacBody(self.engine.model, self.engine.data, self._jacp, None, self._body)
        return np.dot(self._jacp, self.engine.data.qvel)


def _subclass(base: type, mixins: tuple[type, ...]) -> type:
    """``base`` with ``mixins`` in front, under base's own name.

    Stock code reads class names: agents load ``assets/xmls/<name>.xml``, ``PushBox`` resizes
    for ``'Car'``, static geoms load ``configs/<task>.yaml``. The module tells them apart.
    """
    return types.new_class(base.__name__, (*mixins, base), exec_body=lambda ns: ns.update(
        __module__=__name__, __qualname__=base.__name__))


@functools.cache
def fast_agent_class(agent_class: type) -> type:
    """``agent_class`` with :class:`FastAgentMixin` in front."""
    return _subclass(agent_class, (FastAgentMixin,))


class FastTaskMixin:
    """Lean ``simulation_forward``/``calculate_cost``/``obs`` for a stock navigation task class.

    Mixed in *before* the stock class (see :func:`fast_task_class`); cached ids are refreshed
    after every world build by :meth:`_fast_bind`.
    """

    def __init__(self, config: dict, *, hd_skybox: bool = False) -> None:
        self._hd_skybox = hd_skybox
        super().__init__(config=config)
        # the agent holds the same instance: swap its class rather than the object
        self.random_generator.__class__ = FastRandomGenerator

    def _build_agent(self, agent_name: str) -> None:
        assert hasattr(_agents, agent_name), "agent not found"
        agent_class = fast_agent_class(getattr(_agents, agent_name))
        self.agent = agent_class(random_generator=self.random_generator)

    def _build(self) -> None:
        """Stock build, on a :class:`FastWorld` created here (stock would create a ``World``).

        With a world present the stock code takes its ``rebuild`` branch, which ``FastWorld``
        turns into stock's first build when the world has never been built.
        """
        if self.world is None:
            frames = self._hd_skybox or self.observe_vision
            self.world = FastWorld(self.agent, self._obstacles, hd_skybox=frames)
        super()._build()
        self._fast_bind()

    # ----------------------------------------------------------------- per-build lookups
    def _fast_bind(self) -> None:
        model = self._model = self.model
        data = self._data = self.data
        # numpy views into this build's MjData (each attribute access would make a new one)
        self._xpos, self._xmat, self._sensordata = data.xpos, data.xmat, data.sensordata
        self._mocap_pos = data.mocap_pos
        self.agent.fast_bind()
        self._agent_body = model.body("agent").id
        self._goal_body = model.body("goal").id if hasattr(self, "goal") else None
        self._ctrl_low = model.actuator_ctrlrange[:, 0].copy()
        self._ctrl_high = model.actuator_ctrlrange[:, 1].copy()
        names = [model.geom(i).name for i in range(model.ngeom)]
        self._geom_ids = {name: i for i, name in enumerate(names)}
        agent_geoms = set(self.agent.body_info.geom_names)
        self._geom_is_agent = np.array([n in agent_geoms for n in names], dtype=bool)
        self._geom_prefix = {
            prefix: np.array([n.startswith(prefix) for n in names], dtype=bool)
            for prefix, _ in _CONTACT_COSTS.values()
        }
        self._ids = {o.name: _body_ids(model, o) for o in self._obstacles if type(o) in _BODY_NAMES}
        self._moves = [self._mocap_move(m) for m in self._mocaps.values()]
        self._costs = [
            (o, fn) for o in self._obstacles if (fn := self._cost_function(o)) is not None
        ]
        self._contact_obstacles = [o for o, _ in self._costs if type(o) in _CONTACT_COSTS]
        self._lidar_plan = self._make_lidar_plan()
        self._obs_plan = self._make_obs_plan(model)

    def _mocap_move(self, mocap: Any) -> Callable[[], None]:
        if type(mocap) is not _mocaps.Gremlins:
            return mocap.move
        model = self.model
        bodies = [model.body(f"{mocap.name[:-1]}{i}mocap").id for i in range(mocap.num)]
        return functools.partial(self._move_gremlins, mocap, model.body_mocapid[bodies])

    def _move_gremlins(self, gremlins: Any, mocap_ids: np.ndarray) -> None:
        """``Gremlins.move`` for all gremlins at once (they share one target), without ``np.r_``."""
        phase = float(self._data.time)
        travel = gremlins.travel
        self._mocap_pos[mocap_ids] = (
            np.sin(phase) * travel, np.cos(phase) * travel, gremlins.size)

    def _cost_function(self, obstacle: Any) -> Callable[..., None] | None:
        kind = type(obstacle)
        if kind in _COST_FUNCTIONS:
            return _COST_FUNCTIONS[kind]
        if kind.cal_cost is _base_object.BaseObject.cal_cost:
            return None  # stock returns {} (goal, circle, push box)
        return _stock_cost

    def _make_lidar_plan(self) -> _LidarPlan | None:
        if self.lidar_conf.type != "pseudo":
            return None
        body_rows, body_ids, other_rows, obstacle_rows = [], [], [], []
        count = 0
        seen = [o for o in self._obstacles if o.is_lidar_observed]
        for row, obstacle in enumerate(seen):
            if obstacle.name in self._ids:
                ids = self._ids[obstacle.name]
                body_rows.extend(range(count, count + ids.size))
                body_ids.extend(ids)
                n = ids.size
            else:
                n = len(np.array(obstacle.pos, ndmin=2))
                other_rows.append((slice(count, count + n), obstacle))
            obstacle_rows.extend([row] * n)
            count += n
        return _LidarPlan(
            count=count,
            body_rows=np.array(body_rows, dtype=np.intp),
            body_ids=np.array(body_ids, dtype=np.intp),
            other_rows=tuple(other_rows),
            group=np.array(obstacle_rows, dtype=np.intp),
            seen=tuple(seen),
        )

    def _make_obs_plan(self, model: Any) -> _ObsPlan | None:
        """Map the flat observation onto sensordata and lidar; None where stock ``obs`` must run."""
        if not self.observation_flatten or self.observe_vision or self._lidar_plan is None:
            return None
        if any(getattr(o, "is_comp_observed", False) for o in self._obstacles):
            return None
        spaces = self.obs_info.obs_space_dict.spaces
        where, start = {}, 0
        for key, space in spaces.items():
            where[key] = start
            start += int(np.prod(space.shape))
        sensor_info, conf = self.agent.sensor_info, self.agent.sensor_conf

        def adr(name: str) -> int:
            return int(model.sensor_adr[model.sensor(name).id])

        raw = [(s, 0) for s in (*conf.sensors, *sensor_info.hinge_vel_names,
                                *sensor_info.ballangvel_names)]
        if sensor_info.freejoint_pos_name:
            raw.append((sensor_info.freejoint_pos_name, 2))  # stock keeps [2:]
        if sensor_info.freejoint_qvel_name:
            raw.append((sensor_info.freejoint_qvel_name, 0))
        sincos, quats = [], []
        if conf.sensors_angle_components:
            sincos = [(where[s], adr(s)) for s in sensor_info.hinge_pos_names]
            quats = [(where[s], adr(s)) for s in sensor_info.ballquat_names]
        else:
            raw += [(s, 0) for s in (*sensor_info.hinge_pos_names, *sensor_info.ballquat_names)]
        raw_dst, raw_src = [], []
        for name, skip in raw:
            dim = int(model.sensor_dim[model.sensor(name).id]) - skip
            raw_dst.extend(range(where[name], where[name] + dim))
            raw_src.extend(range(adr(name) + skip, adr(name) + skip + dim))
        lidar_keys = [f"{o.name}_lidar" for o in self._obstacles if o.is_lidar_observed]
        covered = {name for name, _ in raw} | set(lidar_keys)
        covered |= set(sensor_info.hinge_pos_names) | set(sensor_info.ballquat_names)
        bins = self.lidar_conf.num_bins
        lidar = None
        if lidar_keys:
            lidar = slice(where[lidar_keys[0]], where[lidar_keys[0]] + bins * len(lidar_keys))
            if [where[k] for k in lidar_keys] != list(range(lidar.start, lidar.stop, bins)):
                return None  # lidar blocks not consecutive: leave it to stock
        if covered != set(spaces):
            return None
        buttons_lidar = None
        if isinstance(self, _tasks.ButtonLevel0) and "buttons_lidar" in where:
            buttons_lidar = slice(where["buttons_lidar"], where["buttons_lidar"] + bins)
        return _ObsPlan(
            size=start,
            raw_dst=np.array(raw_dst, dtype=np.intp),
            raw_src=np.array(raw_src, dtype=np.intp),
            sincos=tuple(sincos),
            quats=tuple(quats),
            lidar=lidar,
            buttons_lidar=buttons_lidar,
        )

    # ----------------------------------------------------------------- per-step paths
    def simulation_forward(self, action: np.ndarray) -> bool:
        """Stock control, frameskip draw, mocap moves, ``mj_step``s and ``mj_forward``.

        The frameskip is still drawn from the task's RNG every step: it advances the RNG state
        that later goal placements use. Returns False: the stock ``MujocoException`` branch is
        unreachable (MuJoCo's Python bindings never raise that safety-gymnasium class).
        """
        if self.debug or self.action_noise:
            return super().simulation_forward(action)
        model, data = self._model, self._data
        # np.clip(a, lo, hi) is defined as minimum(maximum(a, lo), hi), minus its Python overhead
        np.minimum(np.maximum(action, self._ctrl_low), self._ctrl_high, out=data.ctrl)
        substeps = self.random_generator.binomial(
            self.sim_conf.frameskip_binom_n, self.sim_conf.frameskip_binom_p)
        if self._moves:
            for _ in range(substeps):
                for move in self._moves:
                    move()
                mujoco.mj_step(model, data)
        elif substeps:
            mujoco.mj_step(model, data, substeps)
        mujoco.mj_forward(model, data)
        return False

    def calculate_cost(self) -> dict:
        """The stock cost dict (after the stock forward pass), object by object."""
        if self._is_load_static_geoms:
            return super().calculate_cost()
        mujoco.mj_forward(self._model, self._data)
        counts_contacts = any(o.is_constrained for o in self._contact_obstacles)
        contacts = self._contacts() if counts_contacts else None
        cost: dict = {}
        for obstacle, function in self._costs:
            function(self, obstacle, cost, contacts)
        cost["cost_sum"] = sum(v for k, v in cost.items() if k.startswith("cost_"))
        return cost

    def _contacts(self) -> _Contacts:
        contact = self._data.contact
        geom1, geom2 = contact.geom1, contact.geom2
        with_agent = self._geom_is_agent[geom1] | self._geom_is_agent[geom2]
        return _Contacts(geom1, geom2, with_agent)

    def _agent_contacts(self, contacts: _Contacts, prefix: str) -> np.ndarray:
        is_prefix = self._geom_prefix[prefix]
        return (is_prefix[contacts.geom1] | is_prefix[contacts.geom2]) & contacts.with_agent

    def obs(self) -> np.ndarray | dict:
        """The stock flat observation (after the stock forward pass) without the space check."""
        plan = self._obs_plan
        if plan is None or not self.observation_flatten:  # see toggle_observation_space()
            return super().obs()
        mujoco.mj_forward(self._model, self._data)
        sensordata = self._sensordata
        out = np.empty(plan.size)
        out[plan.raw_dst] = sensordata[plan.raw_src]
        for dst, src in plan.sincos:
            theta = float(sensordata[src])
            out[dst] = np.sin(theta)
            out[dst + 1] = np.cos(theta)
        for dst, src in plan.quats:
            out[dst:dst + 9] = _quat2mat(sensordata[src:src + 4]).ravel()
        if plan.lidar is not None:
            out[plan.lidar] = self._lidar()
        if plan.buttons_lidar is not None and self.buttons.timer != 0:
            out[plan.buttons_lidar] = 0.0
        return out

    def _lidar(self) -> np.ndarray:
        """``_obs_lidar_pseudo`` of every lidar-observed obstacle at once, flattened by row
        (:func:`dynacppo_lite.envs.lidar.pseudo_lidar` on a batch of one)."""
        plan = self._lidar_plan
        if plan.count <= _STOCK_LIDAR_MAX_OBJECTS:
            return np.concatenate([self._obs_lidar_pseudo(o.pos) for o in plan.seen])
        xpos = self._xpos
        if plan.other_rows:
            xy = np.empty((plan.count, 2))
            xy[plan.body_rows] = xpos[plan.body_ids, :2]
            for rows, obstacle in plan.other_rows:
                xy[rows] = np.array(obstacle.pos, ndmin=2)[:, :2]
        else:
            xy = xpos[plan.body_ids, :2]
        agent = xpos[self._agent_body]
        mat = self._xmat[self._agent_body]  # row-major 3x3
        ego = ego_xy(xy[None], agent[None], mat.reshape(1, 3, 3))
        return pseudo_lidar(ego, plan.group, len(plan.seen), self.lidar_conf)[0]

    def dist_goal(self) -> float:
        """Stock ``agent.dist_xy(goal.pos)``: sqrt of the summed squares, same order."""
        if self._goal_body is None:
            return super().dist_goal()
        return _distance(self._xpos, self._goal_body, self._agent_body, 2)


def _distance(xpos: np.ndarray, body: int, other: int, dims: int) -> float:
    """``np.sqrt(np.sum(np.square(xpos[body][:dims] - xpos[other][:dims])))`` on floats.

    numpy sums 2 or 3 elements left to right and both square roots are correctly rounded, so
    this is the stock value, without five numpy calls on tiny arrays.
    """
    d = (xpos[body][:dims] - xpos[other][:dims]).tolist()
    total = d[0] * d[0] + d[1] * d[1]
    if dims == 3:
        total += d[2] * d[2]
    return math.sqrt(total)


class _FastButtonMixin:
    """Button tasks: goal contact from geom ids instead of names."""

    @property
    def goal_achieved(self) -> bool:
        contacts = self._contacts()
        goal = self._geom_ids.get(f"button{self.buttons.goal_button}", -1)
        on_goal = (contacts.geom1 == goal) | (contacts.geom2 == goal)
        return bool((on_goal & contacts.with_agent).any())


class _FastPushMixin:
    """Push tasks: box distances by cached body id."""

    def _fast_bind(self) -> None:
        super()._fast_bind()
        self._box_body = self.model.body("push_box").id

    def dist_box(self) -> float:
        return _distance(self._xpos, self._box_body, self._agent_body, 3)

    def dist_box_goal(self) -> float:
        return _distance(self._xpos, self._box_body, self._goal_body, 3)


@functools.cache
def fast_task_class(task_class: type) -> type:
    """``task_class`` (a stock task) with the lean mixins in front of it."""
    mixins: tuple[type, ...] = (FastTaskMixin,)
    if issubclass(task_class, _tasks.ButtonLevel0):
        mixins = (_FastButtonMixin, *mixins)
    if issubclass(task_class, _tasks.PushLevel0):
        mixins = (_FastPushMixin, *mixins)
    return _subclass(task_class, mixins)


# --------------------------------------------------------------------- object costs
# Each writes what the stock ``cal_cost`` returns into ``cost``, reading the forwarded state.
def _stock_cost(task: Any, obstacle: Any, cost: dict, contacts: _Contacts | None) -> None:
    cost.update(obstacle.cal_cost())


def _hazards_cost(task: Any, hazards: Any, cost: dict, contacts: _Contacts | None) -> None:
    if not hazards.is_constrained:
        return
    xpos = task._xpos
    d = xpos[task._ids[hazards.name], :2] - xpos[task._agent_body, :2]
    dist = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
    total = 0
    for h_dist in dist[dist <= hazards.size]:
        total += hazards.cost * (hazards.size - h_dist)
    cost["cost_hazards"] = total


def _contact_cost(task: Any, obstacle: Any, cost: dict, contacts: _Contacts) -> None:
    """Pillars and gremlins: one unit of cost per agent contact."""
    if not obstacle.is_constrained:
        return
    prefix, key = _CONTACT_COSTS[type(obstacle)]
    unit = obstacle.contact_cost if hasattr(obstacle, "contact_cost") else obstacle.cost
    count = int(task._agent_contacts(contacts, prefix).sum())
    cost[key] = _add_repeatedly(0, unit, count)


def _buttons_cost(task: Any, buttons: Any, cost: dict, contacts: _Contacts) -> None:
    assert buttons.goal_button is not None, "the goal button is drawn in reset()"
    if not buttons.is_constrained or buttons.timer != 0:
        return
    goal = task._geom_ids.get(f"button{buttons.goal_button}", -1)
    wrong = ~((contacts.geom1 == goal) | (contacts.geom2 == goal))
    count = int((task._agent_contacts(contacts, "button") & wrong).sum())
    cost["cost_buttons"] = _add_repeatedly(0, buttons.cost, count)


def _vases_cost(task: Any, vases: Any, cost: dict, contacts: _Contacts) -> None:
    if not vases.is_constrained:
        return
    if vases.displace_cost:  # stock reads attributes Vases does not have; keep its behaviour
        cost.update(vases.cal_cost())
        return
    count = int(task._agent_contacts(contacts, "vase").sum()) if vases.contact_cost else 0
    cost["cost_vases_contact"] = _add_repeatedly(0, vases.contact_cost, count)
    if vases.velocity_cost:
        model, data = task._model, task._data
        jacp = np.zeros((3, model.nv))
        total = 0
        for body in task._ids[vases.name]:
            mujoco.mj_jacBody(model, data, jacp, None, body)  # as stock get_body_xvelp
            v = np.dot(jacp, data.qvel)
            speed = np.sqrt((v[0] * v[0] + v[1] * v[1]) + v[2] * v[2])
            if speed >= vases.velocity_threshold:
                total += speed * vases.velocity_cost
        cost["cost_vases_velocity"] = total


def _sigwalls_cost(task: Any, sigwalls: Any, cost: dict, contacts: _Contacts | None) -> None:
    if not sigwalls.is_constrained:
        return
    pos = task._xpos[task._agent_body]
    out = np.abs(pos[0]) > sigwalls.locate_factor
    if sigwalls.num == 4:
        out = out or np.abs(pos[1]) > sigwalls.locate_factor
    cost["cost_out_of_boundary"] = out


_COST_FUNCTIONS: dict[type, Callable[..., None]] = {
    _geoms.Hazards: _hazards_cost,
    _geoms.Pillars: _contact_cost,
    _geoms.Buttons: _buttons_cost,
    _geoms.Sigwalls: _sigwalls_cost,
    _free_geoms.Vases: _vases_cost,
    _mocaps.Gremlins: _contact_cost,
}
