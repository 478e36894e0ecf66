"""dynacppo_lite.envs.coordinates against the env: observation, reward and cost from coordinates.

For each covered task (Goal, Button, Circle on Point and Car, levels 0-2) an env runs 300 steps
from each of three seeds, steering 70% of the time and acting at random otherwise: to the goal
from the first two seeds, to the nearest hazard from the third, around the circle on Circle, so
that goals are reached and hazards and boundaries entered. Its
coordinate state is read after every reset and step, and what the module computes from those
states, all steps as one batch, must equal what the env returned, within ``RTOL`` relative
(+ ``ATOL`` near 0), the tolerance of ``tests/test_fast_env.py``: the observation, the reward,
the cost and its terms, and the next state's lidar from the true motion.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from dynacppo_lite.envs import make_env
from dynacppo_lite.envs.coordinates import (
    CoordinateState,
    Motion,
    StateReader,
    apply_motion,
    coordinate_spec,
    cost,
    cost_terms,
    motion_between,
    observation,
    read_state,
    reward,
    reward_terms,
    robot_frame,
    stack_states,
    state_from_vector,
    state_size,
    state_vector,
)
from dynacppo_lite.envs.fast import make_safety_env

RTOL = 1e-9  # as tests/test_fast_env.py: relative ...
ATOL = 1e-12  # ... and absolute, for readings near 0
STEPS = 300
SEEDS = (0, 1, 2)
TASKS = ["SafetyPointGoal0-v0", "SafetyPointGoal1-v0", "SafetyCarGoal1-v0", "SafetyPointGoal2-v0",
         "SafetyPointButton1-v0", "SafetyCarButton2-v0", "SafetyPointCircle1-v0",
         "SafetyCarCircle2-v0"]
#: Object groups that never move: their lidar after a motion must be the env's.
STATIC_GROUPS = ("goal", "hazards", "buttons", "circle")


@dataclass(frozen=True)
class Run:
    """States read from one env (all seeds, one batch) and what the env returned."""

    states: CoordinateState  # after every reset and every step
    obs: np.ndarray  # (N, obs_dim): the env's observation of each state
    before: np.ndarray  # (T,) index into states of each step's start ...
    after: np.ndarray  # ... and of its end
    rewards: np.ndarray  # (T,)
    costs: np.ndarray  # (T,)
    actions: np.ndarray  # (T, act_dim): what each step was given
    infos: tuple[dict, ...]  # (T,)
    task: object  # the env's task, for its constants

    def goal_met(self) -> np.ndarray:
        return np.array([bool(info.get("goal_met")) for info in self.infos])


def _policy(task, shape: tuple[int, ...], rng: np.random.Generator,
            to_hazards: bool) -> Callable[[], np.ndarray]:
    """Steer 70% of the time, else act at random: to the goal, or (``to_hazards``) to the
    nearest hazard; on Circle to a point ahead on a 1.6 m ring."""
    car = type(task.agent).__name__ == "Car"

    def target(agent: np.ndarray) -> np.ndarray:
        if not hasattr(task, "goal"):
            angle = np.arctan2(agent[1], agent[0]) + 0.5
            return 1.6 * np.array([np.cos(angle), np.sin(angle)])
        if to_hazards and hasattr(task, "hazards"):
            hazards = np.array(task.hazards.pos)[:, :2]
            return hazards[np.argmin(np.linalg.norm(hazards - agent, axis=1))]
        return task.goal.pos[:2]

    def act() -> np.ndarray:
        if rng.random() < 0.3:
            return rng.uniform(-1, 1, shape)
        ego = (np.r_[target(task.agent.pos[:2]), 0.0] - task.agent.pos) @ task.agent.mat
        theta = np.arctan2(ego[1], ego[0]) + (np.pi / 2 if car else 0.0)  # the car drives along -y
        theta = (theta + np.pi) % (2 * np.pi) - np.pi
        turn, forward = np.clip(2 * theta, -1, 1), float(abs(theta) < 0.6)
        return np.array([forward + turn, forward - turn]) if car else np.array([forward, turn])

    return act


@functools.cache
def _run(env_id: str, fast: bool = True, seeds: tuple[int, ...] = SEEDS, steps: int = STEPS,
         shaped: bool = False) -> Run:
    """``shaped``: the costs without the registered tasks' 0/1 indicator."""
    env = make_safety_env(env_id, fast=fast)
    task = env.unwrapped.task
    task.cost_conf.constrain_indicator = not shaped
    rng = np.random.default_rng(zlib.crc32(env_id.encode()))
    states, observations, before, after, rewards, costs, infos = [], [], [], [], [], [], []
    actions = []
    spec = None
    for seed in seeds:
        # the last of several seeds seeks hazards, the others the goal
        act = _policy(task, env.action_space.shape, rng, len(seeds) > 1 and seed == seeds[-1])
        obs, _ = env.reset(seed=seed)
        spec = spec or coordinate_spec(env)
        states.append(read_state(env, spec))
        observations.append(obs)
        for _ in range(steps):
            actions.append(act())
            obs, rew, cst, terminated, truncated, info = env.step(actions[-1])
            before.append(len(states) - 1)
            states.append(read_state(env, spec))
            observations.append(obs)
            after.append(len(states) - 1)
            rewards.append(rew)
            costs.append(cst)
            infos.append(info)
            if terminated or truncated:
                obs, _ = env.reset()
                states.append(read_state(env, spec))
                observations.append(obs)
    env.close()
    return Run(stack_states(states), np.array(observations), np.array(before), np.array(after),
               np.array(rewards), np.array(costs, dtype=np.float64), np.array(actions),
               tuple(infos), task)


def _rows(states: CoordinateState, index: np.ndarray) -> CoordinateState:
    """The states at ``index``, as one batch."""
    return CoordinateState(
        spec=states.spec, position=states.position[index], rotation=states.rotation[index],
        sensors=states.sensors[index], timer=states.timer[index],
        objects={name: xy[index] for name, xy in states.objects.items()})


@pytest.mark.parametrize("env_id", TASKS)
def test_observation_is_the_envs(env_id: str) -> None:
    run = _run(env_id)
    np.testing.assert_allclose(observation(run.states), run.obs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("env_id", TASKS)
def test_reward_is_the_envs(env_id: str) -> None:
    run = _run(env_id)
    start, end = _rows(run.states, run.before), _rows(run.states, run.after)
    goal_met = run.goal_met()
    if "Circle" in env_id:
        np.testing.assert_allclose(reward(start, end), run.rewards, rtol=RTOL, atol=ATOL)
        return
    assert goal_met.any(), "no goal was reached: the goal bonus went untested"
    if "Button" in env_id:  # the bonus is a contact: only the distance term is computed
        with pytest.raises(ValueError, match="contact") as error:
            reward(start, end)
        assert "\n" not in str(error.value)
        assert set(reward_terms(start, end)) == {"distance"}
        distance = run.rewards - goal_met * run.task.buttons.reward_goal
        np.testing.assert_allclose(reward_terms(start, end)["distance"], distance, rtol=RTOL,
                                   atol=ATOL)
        return
    np.testing.assert_allclose(reward(start, end), run.rewards, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(reward_terms(start, end)["goal"] > 0, goal_met)


def _check_cost(run: Run, covered: bool) -> None:
    end = _rows(run.states, run.after)
    terms = cost_terms(end)
    for key, values in terms.items():  # every computed term is the env's
        np.testing.assert_allclose(values, [info[key] for info in run.infos], rtol=RTOL,
                                   atol=ATOL, err_msg=key)
        assert (values > 0).any(), f"{key} was never incurred: its formula went untested"
    env_terms = {key for info in run.infos for key in info if key.startswith("cost_")}
    if covered:
        assert set(terms) == env_terms - {"cost_sum"}
        np.testing.assert_allclose(cost(end), run.costs, rtol=RTOL, atol=ATOL)
    else:  # contacts (vases, buttons, gremlins) cannot be computed
        assert set(terms) < env_terms - {"cost_sum"}
        with pytest.raises(ValueError, match="need contacts") as error:
            cost(end)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("env_id", TASKS)
def test_cost_is_the_envs(env_id: str) -> None:
    covered = not any(family in env_id for family in ("Goal2", "Button"))
    _check_cost(_run(env_id), covered)


@pytest.mark.parametrize("env_id", ["SafetyCarGoal1-v0", "SafetyPointCircle2-v0"])
def test_shaped_cost_is_the_envs(env_id: str) -> None:
    """Without the indicator: the hazards' depth and Circle's bool, as ``cal_cost`` has them."""
    run = _run(env_id, shaped=True)
    assert not run.states.spec.indicator
    if "Goal" in env_id:  # shaped: below 1 (depth into a hazard of size 0.2)
        assert 0 < run.costs.max() < 0.2
    _check_cost(run, covered=True)


@pytest.mark.parametrize("env_id", TASKS)
def test_true_motion_gives_the_next_lidar(env_id: str) -> None:
    run = _run(env_id)
    keep = ~run.goal_met()  # a goal step draws a new goal (and Button's timer restarts)
    start, end = _rows(run.states, run.before[keep]), _rows(run.states, run.after[keep])
    moved = apply_motion(start, motion_between(start, end))
    np.testing.assert_allclose(moved.position, end.position, rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved.rotation, end.rotation, rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved.sensors, end.sensors, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(moved.timer, end.timer)
    for name, xy in moved.objects.items():  # fixed in the world frame
        np.testing.assert_array_equal(xy, start.objects[name], err_msg=name)
    predicted, env_obs = observation(moved), run.obs[run.after[keep]]
    bins = start.spec.lidar_settings.num_bins
    blocks = [start for name, start in start.spec.lidar if name in STATIC_GROUPS]
    assert blocks
    for block in blocks:
        np.testing.assert_allclose(predicted[:, block:block + bins],
                                   env_obs[:, block:block + bins], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("env_id", ["SafetyPointGoal1-v0", "SafetyCarGoal1-v0"])
def test_motion_is_in_the_body_frame(env_id: str) -> None:
    """The Point turns about z only, by its change of heading; a motion and its inverse cancel."""
    run = _run(env_id)
    start, end = _rows(run.states, run.before), _rows(run.states, run.after)
    motion = motion_between(start, end)
    turn = (end.heading - start.heading + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(turn).max() > 0.01  # the robot turned
    if "Point" in env_id:
        np.testing.assert_allclose(motion.rotation[:, :2], 0, atol=1e-12)
        np.testing.assert_allclose(motion.translation[:, 2], 0, atol=1e-12)
        np.testing.assert_allclose(motion.rotation[:, 2], turn, rtol=0, atol=1e-12)
    else:  # the car tilts
        assert np.abs(motion.rotation[:, :2]).max() > 1e-4
    back = apply_motion(end, motion_between(end, start))
    np.testing.assert_allclose(back.position, start.position, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.rotation, start.rotation, rtol=0, atol=1e-12)


def test_point_driving_forward_moves_along_body_x() -> None:
    """The translation is in the body frame: thrust along the Point's x axis, no turn, moves it
    along x whatever its heading (0.92 rad here)."""
    env = make_safety_env("SafetyPointGoal0-v0")
    env.reset(seed=1)
    states = [read_state(env)]
    for _ in range(30):
        env.step(np.array([1.0, 0.0]))
        states.append(read_state(env))
    motion = motion_between(stack_states(states[:-1]), stack_states(states[1:]))
    assert abs(states[0].heading[0]) > 0.5
    assert (motion.translation[:, 0] > 0).all()
    assert (np.abs(motion.translation[:, 1]) < 0.02 * motion.translation[:, 0]).all()  # world: 1.3
    env.close()


@pytest.mark.parametrize("env_id", ["SafetyPointGoal1-v0", "SafetyCarGoal1-v0"])
def test_robot_frame_is_stock_ego_xy(env_id: str) -> None:
    env = make_safety_env(env_id)
    env.reset(seed=5)
    task, rng = env.unwrapped.task, np.random.default_rng(5)
    for _ in range(30):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
        frame = robot_frame(read_state(env))
        for name in ("goal", "hazards"):
            positions = np.array(getattr(task, name).pos, ndmin=2)
            stock = [task._ego_xy(pos[:2]) for pos in positions]
            np.testing.assert_allclose(frame[name][0], stock, rtol=RTOL, atol=ATOL, err_msg=name)
    env.close()


@pytest.mark.parametrize(("max_dist", "alias"), [(None, True), (3.0, False), (None, False)])
def test_other_lidar_settings(max_dist: float | None, alias: bool) -> None:
    """The exponential and the unaliased lidar (no registered task uses them) against stock's,
    from coordinates and in the fast env."""
    env = make_safety_env("SafetyCarGoal1-v0")
    env.reset(seed=4)
    task, rng = env.unwrapped.task, np.random.default_rng(4)
    task.lidar_conf.max_dist, task.lidar_conf.alias = max_dist, alias
    spec = coordinate_spec(env)
    assert (spec.lidar_settings.max_dist, spec.lidar_settings.alias) == (max_dist, alias)
    states, stock, fast = [], [], []
    for _ in range(40):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        fast.append(obs[spec.lidar[0][1]:])  # the fast env reads the same lidar module
        states.append(read_state(env, spec))
        seen = [o for o in task._obstacles if o.is_lidar_observed]
        stock.append(np.concatenate([task._obs_lidar_pseudo(o.pos) for o in seen]))
    lidar = observation(stack_states(states))[:, spec.lidar[0][1]:]
    np.testing.assert_allclose(lidar, stock, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(fast, stock, rtol=RTOL, atol=ATOL)
    env.close()


def test_reading_leaves_the_env_alone() -> None:
    """Two envs, the same seed and actions; reading one at every step changes nothing."""
    read, untouched = make_safety_env("SafetyCarGoal1-v0"), make_safety_env("SafetyCarGoal1-v0")
    rng = np.random.default_rng(0)
    obs_a, _ = read.reset(seed=2)
    obs_b, _ = untouched.reset(seed=2)
    for _ in range(100):
        read_state(read)
        action = rng.uniform(-1, 1, 2)
        obs_a, *_ = read.step(action)
        obs_b, *_ = untouched.step(action)
        np.testing.assert_array_equal(obs_a, obs_b)
    read.close()
    untouched.close()


def test_stock_env_too() -> None:
    """Reading a stock env (no fast path) gives the same formulas."""
    run = _run("SafetyPointGoal1-v0", fast=False, seeds=(0,), steps=150)
    start, end = _rows(run.states, run.before), _rows(run.states, run.after)
    np.testing.assert_allclose(observation(run.states), run.obs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(reward(start, end), run.rewards, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(cost(end), run.costs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("env_id", "message"), [
    ("SafetyPointPush1-v0", "Goal, Button and Circle"),
    ("SafetyRacecarGoal1-v0", "robots"),
    ("SafetyHalfCheetahVelocity-v1", "navigation task"),
])
def test_uncovered_tasks_say_so(env_id: str, message: str) -> None:
    env = make_safety_env(env_id)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message) as error:
        coordinate_spec(env)
    assert "\n" not in str(error.value)
    env.close()


def _one_line_error(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_bad_shapes_say_so() -> None:
    run = _run("SafetyPointGoal1-v0")
    state = _rows(run.states, np.arange(4))
    fields = dict(spec=state.spec, position=state.position, rotation=state.rotation,
                  sensors=state.sensors, objects=state.objects, timer=state.timer)
    for name, bad, match in [
        ("position", state.position[:, :2], r"position has shape \(4, 2\), expected \(4, 3\)"),
        ("position", state.position[0], r"position has shape \(3,\), expected \(B, 3\)"),
        ("rotation", state.rotation[:3], r"rotation has shape \(3, 3, 3\)"),
        ("sensors", state.sensors[:, 1:], r"sensors has shape \(4, 11\), expected \(4, 12\)"),
        ("objects", {"goal": state.objects["goal"]}, "the task has"),
        ("objects", {**state.objects, "hazards": state.objects["hazards"][:, :3]},
         r"objects\['hazards'\] has shape"),
        ("timer", state.timer[:, None], "timer has shape"),
    ]:
        _one_line_error(lambda name=name, bad=bad: CoordinateState(**{**fields, name: bad}), match)
    motion = motion_between(state, state)
    _one_line_error(lambda: apply_motion(state, Motion(motion.translation[:, :2], motion.rotation,
                                                       motion.sensors)), "motion.translation")
    _one_line_error(lambda: reward(state, _rows(run.states, np.arange(3))), "do not pair up")
    other = _run("SafetyPointCircle1-v0")
    _one_line_error(lambda: stack_states([state, _rows(other.states, np.arange(2))]),
                    "cannot share a batch")
    _one_line_error(lambda: stack_states([]), "at least one")


@pytest.mark.parametrize("env_id", TASKS)
def test_state_rows_round_trip(env_id: str) -> None:
    states = _run(env_id).states
    rows = state_vector(states)
    assert rows.shape == (states.batch, state_size(states.spec))
    back = state_from_vector(states.spec, rows)
    np.testing.assert_array_equal(state_vector(back), rows)
    np.testing.assert_array_equal(observation(back), observation(states))
    _one_line_error(lambda: state_from_vector(states.spec, rows[:, 1:]), "state rows have shape")


@pytest.mark.parametrize("env_id", ["SafetyPointGoal1-v0", "SafetyCarGoal1-v0", "SafetyCarButton2-v0",
                                    "SafetyPointCircle1-v0"])
def test_the_fast_reader_is_read_state(env_id: str) -> None:
    """Every step of goal-seeking episodes, goal steps (a new goal) and resets included."""
    env = make_safety_env(env_id, max_episode_steps=200)
    task = env.unwrapped.task
    obs, _ = env.reset(seed=3)
    spec = coordinate_spec(env)
    read = StateReader(env, spec)
    act = _policy(task, env.action_space.shape, np.random.default_rng(3), to_hazards=False)
    goals = 0
    for _ in range(500):
        np.testing.assert_array_equal(read(obs), state_vector(read_state(env, spec))[0])
        obs, _, _, terminated, truncated, info = env.step(act())
        goals += bool(info.get("goal_met"))
        if terminated or truncated:
            obs, _ = env.reset()
    assert goals or "Circle" in env_id
    env.close()


@pytest.mark.parametrize(("num_envs", "num_workers"), [(1, 0), (2, 1)])
def test_make_env_records_the_state_and_leaves_the_steps_alone(num_envs: int,
                                                               num_workers: int) -> None:
    """The same seed and actions with and without coordinates give the same numbers; the
    recorded rows are the states the observations show, the final row of an episode that ended
    included."""
    recording = make_env("SafetyPointGoal1-v0", num_envs, 3, num_workers=num_workers,
                         coordinates=True, max_episode_steps=40)
    plain = make_env("SafetyPointGoal1-v0", num_envs, 3, num_workers=num_workers,
                     max_episode_steps=40)
    spec = recording.state_spec
    assert plain.state_spec is None and spec.task_id == "SafetyPointGoal1-v0"

    def shown(rows: np.ndarray) -> np.ndarray:
        return observation(state_from_vector(spec, rows))

    obs, info = recording.reset()
    np.testing.assert_array_equal(obs, plain.reset()[0])
    np.testing.assert_allclose(shown(info["state"]), info["raw_obs"], rtol=RTOL, atol=ATOL)
    ends = 0
    for _ in range(90):
        action = recording.action_space.sample()
        out, ref = recording.step(action), plain.step(action)
        for x, y in zip(out[:5], ref[:5], strict=True):
            np.testing.assert_array_equal(x, y)
        info = out[5]
        np.testing.assert_allclose(shown(info["state"]), info["raw_obs"], rtol=RTOL, atol=ATOL)
        if "final_observation" in info:
            mask = info["_final_observation"]
            ends += mask.sum()
            np.testing.assert_allclose(shown(info["final_state"][mask]),
                                       np.stack(info["raw_final_observation"][mask]),
                                       rtol=RTOL, atol=ATOL)
    assert ends >= 2 * num_envs
    recording.close()
    plain.close()


def test_a_task_without_coordinates_cannot_record_them() -> None:
    _one_line_error(lambda: make_env("SafetyHalfCheetahVelocity-v1", coordinates=True),
                    "navigation task")
