"""dynacppo_lite.envs.fast against stock Safety-Gymnasium 1.0.0: the same env, only faster.

For each navigation task family (Point and Car x Goal, Button, Push, Circle at level 1, plus
PointGoal2) a fast and a stock env get the same seed and the same actions for 3,000 steps
(longer until the first goal where none was reached by then), across resets, and must agree at every step:

* physics state (qpos, qvel), costs, terminated/truncated flags and ``info``: exactly;
* the compiled model after every reset: exactly, every array but the skybox texture (the
  fast-reset change must be bit-identical for everything the simulation reads);
* observations and rewards: within ``RTOL`` relative (+ ``ATOL`` for values near 0), the
  tolerance for the vectorised pseudo-lidar/distances on other BLAS/CPU builds; on the
  development machine they are bit-identical too.

The actions steer to the goal (or push the box, or circle the arena) 70% of the time and are
random otherwise, so goal resampling, button presses and hazard/vase/gremlin/pillar/boundary
costs all happen. Stock resets cost ~1.4 s (HD skybox decoding), so each task runs once.
"""

from __future__ import annotations

import importlib
import os
import zlib
from collections.abc import Callable

import mujoco
import numpy as np
import pytest
import yaml

from dynacppo_lite.envs.compat import import_safety_gymnasium
from dynacppo_lite.envs.fast import FastBuilder, make_safety_env
from dynacppo_lite.envs.fast_world import FAST_SKYBOX

RTOL = 1e-9  # observations and rewards, relative
ATOL = 1e-12  # observations and rewards, absolute (lidar readings near 0)
STEPS = 3000
# Coverage before stopping: at least STEPS steps, and past them until a goal was reached (the
# goal-resampling path), for at most MAX_STEPS. The push tasks reach their first goal anywhere
# from step 113 to 8,796 depending on the BLAS kernel's last bits (6 starts x 2 kernels measured).
MAX_STEPS = 20_000
FAMILIES = ("Goal", "Button", "Push", "Circle")
TASKS = [f"Safety{agent}{family}1-v0" for agent in ("Point", "Car") for family in FAMILIES]
TASKS.append("SafetyPointGoal2-v0")


def _policy(task, shape: tuple[int, ...], rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """Steer towards the task's target 70% of the time (from the stock env's state), else random.

    Random actions span [-1.5, 1.5], beyond the [-1, 1] control range, to exercise clipping.
    """
    car = type(task.agent).__name__ == "Car"

    def target() -> np.ndarray:
        agent = task.agent.pos[:2]
        if hasattr(task, "push_box"):  # get behind the box, then drive it to the goal
            box, goal = task.push_box.pos[:2], task.goal.pos[:2]
            push = (box - goal) / (np.linalg.norm(box - goal) + 1e-9)
            to_box = box - agent
            behind = np.dot(to_box, -push) > 0.9 * np.linalg.norm(to_box)
            return goal if behind and np.linalg.norm(to_box) < 0.6 else box + 0.4 * push
        if hasattr(task, "goal"):
            return task.goal.pos[:2]
        angle = np.arctan2(agent[1], agent[0]) + 0.5  # circle: a point ahead on a 1.6 m ring
        return 1.6 * np.array([np.cos(angle), np.sin(angle)])

    def act() -> np.ndarray:
        if rng.random() < 0.3:
            return rng.uniform(-1.5, 1.5, shape)
        ego = (np.r_[target(), 0.0] - task.agent.pos) @ task.agent.mat
        theta = np.arctan2(ego[1], ego[0]) + (np.pi / 2 if car else 0.0)  # car drives along -y
        theta = (theta + np.pi) % (2 * np.pi) - np.pi
        turn, forward = np.clip(2 * theta, -1, 1), float(abs(theta) < 0.6)
        return np.array([forward + turn, forward - turn]) if car else np.array([forward, turn])

    return act


def _skybox_width(model) -> int:
    return int(model.tex_width[model.tex_type == mujoco.mjtTexture.mjTEXTURE_SKYBOX][0])


def _assert_same_world(fast, stock) -> None:
    """After a reset: the same compiled model (all but the skybox texture) and the same state."""
    fm, sm = fast.unwrapped.task.model, stock.unwrapped.task.model
    assert _skybox_width(fm) == int(FAST_SKYBOX["@width"]) < _skybox_width(sm)  # stock: HD
    for name in dir(sm):
        value = getattr(sm, name)
        if name == "_sizes":  # mujoco 3: every size in one array; the skybox's bytes differ
            texture = np.isin(value, [sm.ntexdata, sm.nbuffer])  # texture bytes, model buffer
            assert texture.sum() == 2 and (getattr(fm, name)[texture] < value[texture]).all()
            np.testing.assert_array_equal(getattr(fm, name)[~texture], value[~texture],
                                          err_msg="model._sizes")
        elif isinstance(value, np.ndarray) and not name.startswith("tex_"):
            np.testing.assert_array_equal(getattr(fm, name), value, err_msg=f"model.{name}")
    fd, sd = fast.unwrapped.task.data, stock.unwrapped.task.data
    for name in ("qpos", "qvel", "act", "xpos", "sensordata", "qacc_warmstart"):
        np.testing.assert_array_equal(getattr(fd, name), getattr(sd, name), err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", TASKS)
def test_fast_env_matches_stock(env_id: str) -> None:
    fast, stock = make_safety_env(env_id), make_safety_env(env_id, fast=False)
    assert isinstance(fast.unwrapped, FastBuilder) and type(stock.unwrapped) is not FastBuilder
    assert [type(w) for w in _wrappers(fast)] == [type(w) for w in _wrappers(stock)]
    limit = stock.spec.max_episode_steps
    act = _policy(stock.unwrapped.task, stock.action_space.shape,
                  np.random.default_rng(zlib.crc32(env_id.encode())))

    fast_obs, fast_info = fast.reset(seed=11)
    stock_obs, stock_info = stock.reset(seed=11)
    episodes, goals, cost_steps, length = 0, 0, 0, 0
    needs_goal = "Circle" not in env_id
    for step in range(MAX_STEPS):
        if step >= STEPS and (goals > 0 or not needs_goal):
            break
        action = act()
        if step == 0 or length == 0:  # after every reset
            _assert_same_world(fast, stock)
            np.testing.assert_allclose(fast_obs, stock_obs, rtol=RTOL, atol=ATOL)
            assert fast_info == stock_info
        fast_obs, fast_r, fast_c, fast_te, fast_tr, fast_info = fast.step(action)
        stock_obs, stock_r, stock_c, stock_te, stock_tr, stock_info = stock.step(action)
        where = f"{env_id} step {step}"
        task_f, task_s = fast.unwrapped.task, stock.unwrapped.task
        np.testing.assert_array_equal(task_f.data.qpos, task_s.data.qpos, err_msg=where)
        np.testing.assert_array_equal(task_f.data.qvel, task_s.data.qvel, err_msg=where)
        np.testing.assert_allclose(fast_obs, stock_obs, rtol=RTOL, atol=ATOL, err_msg=where)
        np.testing.assert_allclose(fast_r, stock_r, rtol=RTOL, atol=ATOL, err_msg=where)
        assert (fast_c, fast_te, fast_tr) == (stock_c, stock_te, stock_tr), where
        assert fast_info == stock_info, where
        length += 1
        goals += bool(stock_info.get("goal_met"))
        cost_steps += stock_c > 0
        assert stock_tr == (length == limit) or stock_te, where  # TimeLimit truncates at limit
        if stock_te or stock_tr:
            episodes += 1
            length = 0
            fast_obs, fast_info = fast.reset()  # no seed: both continue their layout RNG
            stock_obs, stock_info = stock.reset()
    assert episodes >= 3
    assert cost_steps > 0, "no cost was incurred: the cost paths went untested"
    if needs_goal:
        assert goals > 0, "no goal was reached: the goal-resampling path went untested"
    fast.close()
    stock.close()


def _wrappers(env) -> list:
    chain = [env]
    while hasattr(chain[-1], "env"):
        chain.append(chain[-1].env)
    return chain[:-1]


def test_fast_is_default_and_other_ids_stay_stock() -> None:
    sg = import_safety_gymnasium()
    env = make_safety_env("SafetyPointCircle0-v0")
    assert isinstance(env.unwrapped, FastBuilder)
    assert env.spec.max_episode_steps == 500
    env.reset(seed=0)
    # the cached-assets stand-in only lives inside FastWorld.build: stock builds read the file
    assert importlib.import_module("safety_gymnasium.world").yaml is yaml
    velocity = make_safety_env("SafetyHalfCheetahVelocity-v1")  # not a Builder task: stock
    assert type(velocity.unwrapped) is type(sg.make("SafetyHalfCheetahVelocity-v1").unwrapped)


def test_bad_actions_raise_value_error() -> None:
    env = make_safety_env("SafetyPointCircle0-v0")
    env.reset(seed=0)
    for action in (np.zeros(3), np.array([np.nan, 0.0]), "forward"):
        with pytest.raises(ValueError, match="action"):
            env.step(action)
    env.step(np.array([1e9, -np.inf]))  # out of range but valid: clipped, as stock does


def _egl_problem() -> str | None:
    """Why EGL rendering cannot work here, or None if it can."""
    try:
        context = mujoco.GLContext(16, 16)
        context.make_current()
        context.free()
    except Exception as exc:  # whatever fails here, there is no GL context to render with
        return f"no GL context (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc!r}"
    return None


def test_rgb_array_rendering_with_fast_env() -> None:
    if int(mujoco.__version__.split(".")[0]) >= 3:
        # Seen on Python 3.12/3.13 here (mujoco 3.17, Mesa EGL): stock safety-gymnasium frames
        # crash the process in gymnasium 0.28.1's renderer (mujoco.mjr_render), torch or not.
        pytest.skip("rgb_array frames segfault in gymnasium 0.28.1's renderer on mujoco 3")
    problem = _egl_problem()
    if problem:
        pytest.skip(problem)
    env = make_safety_env("SafetyPointGoal1-v0", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.array([1.0, 0.2]))
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # a picture, not a blank buffer
    assert _skybox_width(env.unwrapped.task.model) > int(FAST_SKYBOX["@width"])  # HD kept
    env.close()
