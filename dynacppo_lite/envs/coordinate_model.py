"""The coordinate model of a navigation task: a learned motion, the task's formulas for the rest.

Issue 27, item 2. Dyna-CPPO's model on the Goal and Circle tasks (``Config.dyna_model =
"coordinates"``). Its state is the privileged :class:`~.coordinates.CoordinateState` that the
rollout records (``make_env(coordinates=True)``, one :func:`~.coordinates.state_vector` row per
step); the policy still sees only the task's observation.

* The learned part: a :class:`~dynacppo_lite.dynamics.DynamicsEnsemble` from x = (sensors (S),
  action) to y = the :class:`~.coordinates.Motion` of one step, (translation (3), rotation
  vector (3), sensor change (S)), all in the robot's body frame (:func:`motion_ensemble`,
  :func:`fit_motion`). Why these inputs: in the body frame the robot's motion depends on its
  velocities and the action, not on where it is or which way it faces (the floor is flat and
  hazards are not solid), so the world pose and the objects would only be inputs to ignore.
  The one thing left out: contacts with vases (Goal1 has one vase, pushed aside).
* The exact part: every object stays where it is in the world frame
  (:func:`~.coordinates.apply_motion`), and the lidar observation, the reward (goal distance
  change and goal bonus; Circle's) and the cost (hazard entry; Circle's boundary) are the task's
  own formulas of the predicted coordinates, vectorised over branches.
* :class:`CoordinateModelEnv`: ``dynamics.ModelEnv``'s batched interface over that model:
  members drawn per sample (TS1), the members' disagreement cuts a branch, and the imagined cost
  is pessimistic over members: c = max(0, mean_e c_e + kappa std_e c_e), c_e the task's cost
  where member e's mean motion puts the robot (the 0/1 hazard indicator of each member's pose).
* :func:`coordinate_open_loop_errors`: the ensemble-mean motion run open loop along real
  trajectories, its errors per group (sensors, pose, objects) and of the reward and cost;
  :func:`one_step_r2`: the one-step R^2 per group (sensors, pose, objects, and the lidar
  observation computed from the predicted coordinates); :func:`flat_one_step_r2`: the same
  groups of the flat ensemble's observation (sensors, lidar), reward and cost, to compare.

Covered: the tasks whose reward and cost are both functions of coordinates (Goal0-1 and
Circle0-2 on Point and Car). Goal2 (vase contacts), Button (the goal button's bonus and the
buttons' and gremlins' costs are contacts) are a one-line ValueError (:func:`check_covered`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dynacppo_lite.dynamics import DynamicsEnsemble, FitResult
from dynacppo_lite.envs.coordinates import (
    CoordinateSpec,
    CoordinateState,
    Motion,
    apply_motion,
    cost,
    motion_between,
    observation,
    reward,
    reward_terms,
    state_from_vector,
)
from dynacppo_lite.envs.lidar import ego_xy

__all__ = [
    "CoordinateErrors",
    "CoordinateModelEnv",
    "check_covered",
    "coordinate_open_loop_errors",
    "fit_motion",
    "flat_one_step_r2",
    "motion_ensemble",
    "motion_from_vector",
    "motion_targets",
    "motion_vector",
    "one_step_r2",
    "r_squared",
    "redrawn",
    "take",
]

#: Object groups that never move within an episode unless the task redraws them (a new goal).
_FIXED_GROUPS = ("goal", "hazards", "buttons", "circle")


def check_covered(spec: CoordinateSpec) -> None:
    """Raise a one-line ValueError unless the task's reward and cost are both computable from
    coordinates (the coordinate model computes them; it cannot learn contacts)."""
    missing = [*spec.uncovered_reward, *(f"the cost of {name}" for name in spec.uncovered_cost)]
    if missing:
        raise ValueError(f"{spec.task_id}: the coordinate model computes the reward and the cost "
                         f"from coordinates, but {', '.join(missing)} need contacts")


def take(state: CoordinateState, index: Any) -> CoordinateState:
    """The states ``state[index]`` (an index array or mask over the batch), as one batch."""
    return CoordinateState(spec=state.spec, position=state.position[index],
                           rotation=state.rotation[index], sensors=state.sensors[index],
                           objects={k: v[index] for k, v in state.objects.items()},
                           timer=state.timer[index])


def motion_vector(motion: Motion) -> np.ndarray:
    """(B, 6 + S) rows ``[translation, rotation vector, sensor change]``: the learned targets."""
    return np.concatenate([motion.translation, motion.rotation, motion.sensors], axis=1)


def motion_from_vector(rows: np.ndarray) -> Motion:
    """The :class:`Motion` of (B, 6 + S) :func:`motion_vector` rows."""
    rows = np.asarray(rows, dtype=np.float64)
    return Motion(translation=rows[:, :3], rotation=rows[:, 3:6], sensors=rows[:, 6:])


def motion_targets(spec: CoordinateSpec, rows: np.ndarray,
                   next_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The learned part's data from (N, D) state rows and their successors: inputs (N, S), the
    sensors, and targets (N, 6 + S), the true motion (:func:`~.coordinates.motion_between`)."""
    state, after = state_from_vector(spec, rows), state_from_vector(spec, next_rows)
    return state.sensors, motion_vector(motion_between(state, after))


def motion_ensemble(spec: CoordinateSpec, act_dim: int, **kwargs: Any) -> DynamicsEnsemble:
    """A :class:`DynamicsEnsemble` from (sensors (S), action (act_dim)) to a motion (6 + S);
    ``kwargs``: the ensemble's (size, hidden layers, lr, device, seed)."""
    sensors = len(spec.sensor_index)
    return DynamicsEnsemble(sensors, act_dim, out_dim=6 + sensors, **kwargs)


def fit_motion(ensemble: DynamicsEnsemble, spec: CoordinateSpec, rows: np.ndarray,
               act: np.ndarray, next_rows: np.ndarray, **options: Any) -> FitResult:
    """Fit the learned part on N transitions: state rows and their successors (N, D), actions
    (N, act_dim); ``options``: :meth:`DynamicsEnsemble.fit_targets`'s."""
    inputs, targets = motion_targets(spec, rows, next_rows)
    return ensemble.fit_targets(inputs, act, targets, **options)


class CoordinateModelEnv:
    """A batched environment over the coordinate model, with ``dynamics.ModelEnv``'s interface.

    ``reset(start)`` takes (B, D) state rows (numpy or torch) and returns the task's observation
    of them; ``step(actions)`` returns ``ModelEnv.step``'s 6-tuple of tensors on the ensemble's
    device: next observation (B, obs_dim) float32, reward, cost (B,) float32, terminated (all
    False), truncated (B,) bool, and an info with ``disagreement``, ``cost_mean``, ``cost_std``
    (B,), ``goal`` (B,) bool and ``n_nonfinite``. Per step, with each member's mean mu_e and
    variance var_e of the motion:

    - next state: each sample picks a member uniformly and draws its motion from N(mu_e,
      var_e) (``deterministic``: mu_e); the robot moves by it, the objects stay;
    - observation and reward: the task's, of the state before and after (float64 coordinates);
    - cost: max(0, mean_e c_e + kappa std_e c_e) (population std), c_e = the task's cost at the
      pose of member e's mean motion; kappa = 0 gives the members' mean cost;
    - disagreement: max over motion dims of std_e(mu_e) / the model's ``out_std`` (as
      ``ModelEnv``), truncated where it exceeds ``disagreement_threshold``;
    - a goal step (the goal bonus is paid) truncates the branch there: the env would draw a new
      goal, which the model does not, and a robot parked on the old goal would collect the bonus
      step after step;
    - non-finite predictions: truncated, the state kept, reward and cost 0, disagreement +inf.
    """

    def __init__(self, ensemble: DynamicsEnsemble, spec: CoordinateSpec, *, kappa: float = 1.0,
                 disagreement_threshold: float = 1.0, deterministic: bool = False,
                 generator: torch.Generator | None = None) -> None:
        if kappa < 0:
            raise ValueError(f"kappa must be >= 0 (a pessimistic cost), got {kappa}")
        check_covered(spec)
        self.ensemble, self.spec, self.kappa = ensemble, spec, kappa
        self.disagreement_threshold = disagreement_threshold
        self.deterministic, self.generator = deterministic, generator
        self._state: CoordinateState | None = None

    def _tensor(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=self.ensemble.device)

    @property
    def state(self) -> CoordinateState:
        """The branches' current coordinate state (B of them), e.g. to draw where the robot is;
        read only: ``step`` replaces it."""
        if self._state is None:
            raise RuntimeError("CoordinateModelEnv: call reset(start) before reading the state")
        return self._state

    def reset(self, start: Any) -> tuple[torch.Tensor, dict]:
        """Start B branches at (B, D) state rows; returns (their observation, {})."""
        rows = start.detach().cpu().numpy() if torch.is_tensor(start) else np.asarray(start)
        self._state = state_from_vector(self.spec, rows)
        return self._tensor(observation(self._state)), {}

    @torch.no_grad()
    def step(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor, dict]:
        """Advance every branch by one imagined step; ``actions`` is (B, act_dim)."""
        state = self._state
        if state is None:
            raise RuntimeError("CoordinateModelEnv: call reset(start) before step(actions)")
        dev = self.ensemble.device
        act = actions.detach().cpu().numpy() if torch.is_tensor(actions) else actions
        mean, var = self.ensemble.predict(state.sensors, self._tensor(act))  # (E, B, 6 + S)
        n_members, batch = mean.shape[:2]
        rows = torch.arange(batch, device=dev)
        member = torch.randint(n_members, (batch,), generator=self.generator, device=dev)
        y = mean[member, rows]
        if not self.deterministic:
            noise = torch.randn(y.shape, generator=self.generator, device=dev)
            y = y + var[member, rows].sqrt() * noise
        disagreement = (mean.std(0, correction=0) / self.ensemble.out_std).amax(-1)
        y, means = y.double().cpu().numpy(), mean.double().cpu().numpy()
        finite = np.isfinite(y).all(-1) & np.isfinite(means).all((0, 2))
        y[~finite], means[:, ~finite] = 0.0, 0.0  # held still; reported and cut below
        after = apply_motion(state, motion_from_vector(y))

        terms = reward_terms(state, after)
        reward = sum(terms.values(), np.zeros(batch))  # stock's order, as coordinates.reward
        goal = terms["goal"] > 0 if "goal" in terms else np.zeros(batch, dtype=bool)
        # The members' poses: p + R t_e (the cost reads only the position and the objects).
        member_cost = np.stack([
            cost(dataclasses.replace(state, position=state.position + np.einsum(
                "bij,bj->bi", state.rotation, means[e, :, :3])))
            for e in range(n_members)])
        cost_mean, cost_std = member_cost.mean(0), member_cost.std(0)
        imagined_cost = np.maximum(cost_mean + self.kappa * cost_std, 0.0)
        reward, imagined_cost, cost_mean, cost_std = (np.where(finite, x, 0.0) for x in (
            reward, imagined_cost, cost_mean, cost_std))

        disagreement = torch.where(self._tensor(finite, torch.bool), disagreement, math.inf)
        truncated = (~self._tensor(finite, torch.bool)
                     | (disagreement > self.disagreement_threshold) | self._tensor(goal, torch.bool))
        self._state = after
        info = {"disagreement": disagreement, "cost_mean": self._tensor(cost_mean),
                "cost_std": self._tensor(cost_std), "goal": self._tensor(goal, torch.bool),
                "n_nonfinite": int((~finite).sum())}
        return (self._tensor(observation(after)), self._tensor(reward),
                self._tensor(imagined_cost), torch.zeros(batch, dtype=torch.bool, device=dev),
                truncated, info)


@dataclass
class CoordinateErrors:
    """Errors of the ensemble-mean motion run open loop along real trajectories, one entry per
    horizon h = 1..k (index h - 1); each field is a (k,) numpy array.

    From every real start the robot is moved by the members' mean motion under the real actions,
    the objects held where they were at the start; windows stop at an episode end and after a
    step in which the task redrew an object (a new goal), so the count shrinks with h.

    sensors: sqrt(mean over windows and sensors of ((s^ - s) / sigma)^2), sigma the model's
             ``out_std`` of the sensor change (the unit of ``OpenLoopErrors.obs``).
    pose:    RMS over windows of |p^ - p|, the robot's position error (metres).
    objects: RMS over windows and objects of the error of their robot-frame x-y, what the lidar
             reads (metres; it grows with the heading error times the distance). The objects
             are the start's on both sides: what the model holds fixed (a pushed vase's own
             motion is not in it).
    rew, cost: RMSE of the h-step summed reward and cost (the task's formulas of the predicted
             states, cost without pessimism) against the real ones.
    count:   windows scored at each h.
    """

    sensors: np.ndarray
    pose: np.ndarray
    objects: np.ndarray
    rew: np.ndarray
    cost: np.ndarray
    count: np.ndarray


def redrawn(spec: CoordinateSpec, rows: np.ndarray, next_rows: np.ndarray) -> np.ndarray:
    """(N,) bool: the steps, from (N, D) state rows to their successors, in which the fixed
    objects moved (the env drew a new goal)."""
    state, after = state_from_vector(spec, rows), state_from_vector(spec, next_rows)
    moved = np.zeros(len(rows), dtype=bool)
    for name, _ in spec.groups:
        if name in _FIXED_GROUPS:
            moved |= (state.objects[name] != after.objects[name]).any(axis=(1, 2))
    return moved


@torch.no_grad()
def coordinate_open_loop_errors(ensemble: DynamicsEnsemble, spec: CoordinateSpec,
                                states: np.ndarray, act: np.ndarray, rewards: np.ndarray,
                                costs: np.ndarray, next_states: np.ndarray, done: np.ndarray,
                                horizon: int, max_starts: int | None = None) -> CoordinateErrors:
    """:class:`CoordinateErrors` at h = 1..``horizon`` on T steps of N trajectories, time first:
    states/next_states (T, N, D) rows (``next_states[t]`` the true successor, at an episode end
    the state it ended in), act (T, N, act_dim), rewards/costs/done (T, N). ``max_starts``: as
    ``DynamicsEnsemble.open_loop_errors`` (h = 1 scores every transition)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    T, N = np.shape(rewards)
    flat = T * N
    rows, next_rows = (np.asarray(x, dtype=np.float64).reshape(flat, -1) for x in (states, next_states))
    act = np.asarray(act).reshape(flat, -1)
    rewards, costs = (np.asarray(x, dtype=np.float64).reshape(flat) for x in (rewards, costs))
    stop = np.asarray(done, dtype=bool).reshape(flat) | redrawn(spec, rows, next_rows)
    sigma = ensemble.out_std[6:].double().cpu().numpy()
    t0 = np.repeat(np.arange(T), N)
    n = np.tile(np.arange(N), T)
    start = state_from_vector(spec, rows)
    s = start
    objects = start.objects
    zero = np.zeros(flat)
    pred_r, pred_c, real_r, real_c = zero, zero, zero, zero
    ended = np.zeros(flat, dtype=bool)
    out = {key: np.full(horizon, np.nan) for key in ("sensors", "pose", "objects", "rew", "cost")}
    count = np.zeros(horizon, dtype=np.int64)
    for j in range(horizon):
        keep = (t0 + j < T) & ~ended
        t0, n, pred_r, pred_c, real_r, real_c = (x[keep] for x in (t0, n, pred_r, pred_c,
                                                                   real_r, real_c))
        s = take(s, keep)
        objects = {k: v[keep] for k, v in objects.items()}
        if len(t0) == 0:
            break
        i = (t0 + j) * N + n  # the flat index of step t0 + j of each window
        mean = ensemble.predict(s.sensors, act[i])[0].mean(0).double().cpu().numpy()
        after = apply_motion(s, motion_from_vector(mean))
        real = state_from_vector(spec, next_rows[i])
        pred_r = pred_r + sum(reward_terms(s, after).values(), np.zeros(len(i)))
        pred_c = pred_c + cost(after)
        real_r, real_c = real_r + rewards[i], real_c + costs[i]
        count[j] = len(i)
        out["sensors"][j] = np.sqrt(np.mean(((after.sensors - real.sensors) / sigma) ** 2))
        out["pose"][j] = np.sqrt(np.mean(np.sum((after.position - real.position) ** 2, axis=1)))
        xy = np.concatenate(list(objects.values()), axis=1)
        seen = ego_xy(xy, after.position, after.rotation) - ego_xy(xy, real.position, real.rotation)
        out["objects"][j] = np.sqrt(np.mean(np.sum(seen ** 2, axis=-1)))
        out["rew"][j] = np.sqrt(np.mean((pred_r - real_r) ** 2))
        out["cost"][j] = np.sqrt(np.mean((pred_c - real_c) ** 2))
        s, ended = after, stop[i]
        if j == 0 and max_starts is not None and len(i) > max_starts:
            thin = np.ones(len(i), dtype=bool)
            thin[np.linspace(0, len(i) - 1, max_starts).astype(np.int64)] = False
            ended = ended | thin
    return CoordinateErrors(count=count, **out)


def r_squared(pred: np.ndarray, true: np.ndarray) -> float:
    """The mean over the live columns (variance > 1e-20) of 1 - SSE / SST of (N, K) predictions
    ``pred`` of (N, K) targets ``true``: 0 is no better than predicting each column's mean, 1 is
    exact; NaN without a live column."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    sst = ((true - true.mean(0)) ** 2).sum(0)
    live = sst > 1e-20 * len(true)
    if not live.any():
        return math.nan
    return float(np.mean(1.0 - ((pred - true) ** 2).sum(0)[live] / sst[live]))


@torch.no_grad()
def one_step_r2(ensemble: DynamicsEnsemble, spec: CoordinateSpec, rows: np.ndarray,
                act: np.ndarray, next_rows: np.ndarray) -> dict[str, float]:
    """:func:`r_squared` per group of the ensemble-mean one-step prediction on N transitions
    (state rows and successors (N, D), actions (N, act_dim)), each target a change over the
    step: ``sensors`` (S), ``pose`` (the body-frame translation and rotation vector),
    ``objects`` (their robot-frame x-y, the objects of the start on both sides) and ``lidar``
    (the observation's lidar entries, computed from the predicted coordinates; steps in which
    the env drew a new goal are left out here, since no model of coordinates predicts where it
    is drawn); and the step's ``reward`` and ``cost`` (the task's formulas of the predicted
    coordinates against those of the real ones, which are the env's)."""
    rows, next_rows = np.asarray(rows, dtype=np.float64), np.asarray(next_rows, dtype=np.float64)
    state, real = state_from_vector(spec, rows), state_from_vector(spec, next_rows)
    mean = ensemble.predict(state.sensors, act)[0].mean(0).double().cpu().numpy()
    after = apply_motion(state, motion_from_vector(mean))
    true_motion = motion_vector(motion_between(state, real))
    xy = np.concatenate(list(state.objects.values()), axis=1)
    seen = ego_xy(xy, state.position, state.rotation).reshape(len(xy), -1)

    def objects(s: CoordinateState) -> np.ndarray:
        return ego_xy(xy, s.position, s.rotation).reshape(len(xy), -1) - seen

    kept = ~redrawn(spec, rows, next_rows)
    lidar = np.setdiff1d(np.arange(spec.obs_size), spec.sensor_index)
    before = observation(take(state, kept))[:, lidar]
    return {"sensors": r_squared(mean[:, 6:], true_motion[:, 6:]),
            "pose": r_squared(mean[:, :6], true_motion[:, :6]),
            "objects": r_squared(objects(after), objects(real)),
            "lidar": r_squared(observation(take(after, kept))[:, lidar] - before,
                               observation(take(real, kept))[:, lidar] - before),
            "reward": r_squared(reward(state, after)[:, None], reward(state, real)[:, None]),
            "cost": r_squared(cost(after)[:, None], cost(real)[:, None])}


@torch.no_grad()
def flat_one_step_r2(ensemble: DynamicsEnsemble, spec: CoordinateSpec, obs: np.ndarray,
                     act: np.ndarray, rew: np.ndarray, cost: np.ndarray, next_obs: np.ndarray,
                     lidar_steps: np.ndarray | None = None) -> dict[str, float]:
    """:func:`r_squared` per group of a flat ``DynamicsEnsemble``'s ensemble-mean one-step
    prediction of y = (s' - s, r, c) on N transitions (observations (N, obs_dim), actions,
    rewards and costs (N,)): ``sensors`` and ``lidar``, the change of the observation's entries
    of each kind (``spec.sensor_index`` tells them apart), and the step's ``reward`` and
    ``cost``; the flat model has no pose or objects. ``lidar_steps``: (N,) bool, the steps whose
    lidar is scored (default all); pass ``~redrawn(spec, rows, next_rows)`` to leave out the
    steps with a new goal, as :func:`one_step_r2` does."""
    pred = ensemble.predict(obs, act)[0].mean(0).double().cpu().numpy()
    obs, next_obs = np.asarray(obs, dtype=np.float64), np.asarray(next_obs, dtype=np.float64)
    d = obs.shape[1]
    sensors = np.asarray(spec.sensor_index, dtype=np.intp)
    lidar = np.setdiff1d(np.arange(d), sensors)
    keep = np.ones(len(obs), dtype=bool) if lidar_steps is None else np.asarray(lidar_steps, bool)
    change = next_obs - obs
    return {"sensors": r_squared(pred[:, sensors], change[:, sensors]),
            "lidar": r_squared(pred[keep][:, lidar], change[keep][:, lidar]),
            "reward": r_squared(pred[:, d:d + 1], np.asarray(rew, dtype=np.float64)[:, None]),
            "cost": r_squared(pred[:, d + 1:d + 2], np.asarray(cost, dtype=np.float64)[:, None])}
