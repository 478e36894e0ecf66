"""The world layer: make_env, the toy task, presets, wrappers, the compat fixes, seeding."""

import dataclasses
import importlib
import os
import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

from dynacppo_lite.envs import PRESETS, TOY_COST_LIMIT, TOY_ENV_ID, ToySpeedLimitEnv, make_env
from dynacppo_lite.envs.compat import (
    NEEDS_FIX,
    NEEDS_MUJOCO3_FIX,
    IntIdModel,
    import_safety_gymnasium,
    int_joint_ids,
    ndarray_defaults_as_factories,
)
from dynacppo_lite.envs.fast import make_safety_env
from dynacppo_lite.seeding import seed_everything


def rollout(env, steps, seed):
    """Random actions from a seeded action space: (first obs, rewards, costs, dones)."""
    env.action_space.seed(seed)
    obs0, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        _, r, c, te, tr, _ = env.step(env.action_space.sample())
        out.append((r.copy(), c.copy(), te | tr))
    env.close()
    return obs0, np.array([o[0] for o in out]), np.array([o[1] for o in out]), np.array([o[2] for o in out])


def test_toy_six_tuple_and_shapes():
    env = make_env(TOY_ENV_ID, num_envs=3, seed=0)
    obs, info = env.reset()
    assert obs.shape == (3, 3)
    step = env.step(env.action_space.sample())
    assert len(step) == 6
    obs, r, c, te, tr, info = step
    assert obs.shape == (3, 3) and r.shape == c.shape == te.shape == tr.shape == (3,)
    assert te.dtype == bool and tr.dtype == bool
    env.close()


@pytest.mark.parametrize("env_id", [TOY_ENV_ID, "SafetyPointGoal1-v0"])
def test_same_seed_same_trajectory(env_id):
    a = rollout(make_env(env_id, num_envs=1, seed=3, normalize_obs=False), 200, seed=3)
    b = rollout(make_env(env_id, num_envs=1, seed=3, normalize_obs=False), 200, seed=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = rollout(make_env(env_id, num_envs=1, seed=4, normalize_obs=False), 200, seed=4)
    assert not np.array_equal(a[0], c[0])


def test_safety_gym_vector_env_two_workers():
    env = make_env("SafetyPointGoal1-v0", num_envs=2, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (2, 60)
    obs, r, c, te, tr, info = env.step(env.action_space.sample())
    assert obs.shape == (2, 60) and r.shape == c.shape == (2,)
    assert np.all(np.abs(obs) <= 10.0)
    env.close()


def test_final_observation_is_normalised_and_episode_stats():
    env = make_env(TOY_ENV_ID, num_envs=2, seed=1)
    env.reset()
    rewards, costs = np.zeros(2), np.zeros(2)
    for _ in range(50):
        obs, r, c, te, tr, info = env.step(env.action_space.sample())
        rewards += r
        costs += c
    assert tr.all() and "final_observation" in info
    for i in range(2):
        raw = info["raw_final_observation"][i]
        np.testing.assert_allclose(info["final_observation"][i], env.normalize(raw))
        assert not np.allclose(info["final_observation"][i], raw)
    np.testing.assert_allclose(info["episode"]["r"], rewards)
    np.testing.assert_allclose(info["episode"]["c"], costs)  # raw costs, never normalised
    np.testing.assert_array_equal(info["episode"]["l"], [50, 50])
    env.close()


def test_frozen_normaliser_keeps_statistics():
    env = make_env(TOY_ENV_ID, num_envs=1, seed=0)
    env.reset()
    env.step(env.action_space.sample())
    env.frozen = True
    before = env.state_dict()
    for _ in range(5):
        env.step(env.action_space.sample())
    after = env.state_dict()
    np.testing.assert_array_equal(before["mean"], after["mean"])
    assert before["count"] == after["count"]
    env.close()


def test_toy_tradeoff_best_reward_breaks_the_limit():
    def episode(throttle):
        env = ToySpeedLimitEnv()
        env.reset(seed=0)
        ret = cost = 0.0
        for _ in range(env.horizon):
            _, r, c, _, _, _ = env.step(np.array([throttle, 0.0]))
            ret, cost = ret + r, cost + c
        return ret, cost

    fast_ret, fast_cost = episode(1.0)
    safe_ret, safe_cost = episode(0.45)
    assert fast_ret > safe_ret > 0
    assert fast_cost > TOY_COST_LIMIT and safe_cost == 0.0
    with pytest.raises(ValueError, match="finite action"):
        ToySpeedLimitEnv().step(np.array([np.nan, 0.0]))


def test_unknown_env_id_names_close_matches():
    with pytest.raises(ValueError) as err:
        make_env("SafetyPointGoal7-v0")
    message = str(err.value)
    assert "\n" not in message and "SafetyPointGoal1-v0" in message
    with pytest.raises(ValueError, match="num_envs"):
        make_env(TOY_ENV_ID, num_envs=0)


def test_circle_preset_matches_paper_table_1():
    preset = PRESETS["CPPO-PointCircle1-v0"]
    assert preset.cost_limit == 5.0
    env = make_env("CPPO-PointCircle1-v0", num_envs=1, seed=0)
    env.reset()
    for _ in range(50):
        *_, te, tr, info = env.step(env.action_space.sample())
    assert tr[0] and info["episode"]["l"][0] == 50
    env.close()


def test_import_fix_is_scoped():
    import_safety_gymnasium()
    original = dataclasses._get_field
    with ndarray_defaults_as_factories():
        assert (dataclasses._get_field is not original) == NEEDS_FIX  # Python 3.10: a no-op

        @dataclasses.dataclass
        class Colour:
            rgba: np.ndarray = np.array([1.0, 0.0, 0.0, 1.0])

        a, b = Colour(), Colour()
        a.rgba[0] = 0.5
        # 3.11+: each instance owns a copy; 3.10 (nothing patched): the plain shared default
        assert b.rgba[0] == (1.0 if NEEDS_FIX else 0.5)
    assert dataclasses._get_field is original
    # Outside the block dataclasses behave normally again.
    with pytest.raises(ValueError, match="mutable default"):
        @dataclasses.dataclass
        class Bad:
            xs: list = []  # noqa: RUF012
    if NEEDS_FIX:
        with pytest.raises(ValueError, match="mutable default"):
            @dataclasses.dataclass
            class BadArray:
                x: np.ndarray = np.zeros(2)


_HINGE_XML = """
<mujoco><worldbody><body><joint name="j0" type="free"/><geom size="0.1"/>
  <body><joint name="hinge" type="hinge"/><geom size="0.1"/></body></body></worldbody>
  <sensor><jointpos joint="hinge"/></sensor></mujoco>
"""


def test_int_id_model_takes_the_one_element_id_arrays_of_safety_gymnasium():
    model = mujoco.MjModel.from_xml_string(_HINGE_XML)
    objid = model.sensor(0).objid  # what safety-gymnasium passes to jnt(): an int32 array
    assert isinstance(objid, np.ndarray) and objid.shape == (1,)
    if NEEDS_MUJOCO3_FIX:  # the breakage the fix is for
        with pytest.raises(TypeError, match="jnt"):
            model.jnt(objid)
    view = IntIdModel(model)
    assert view.jnt(objid).name == "hinge" == model.jnt(1).name
    assert view.jnt(objid).type == mujoco.mjtJoint.mjJNT_HINGE
    assert view.jnt("hinge").id == 1 and view.jnt(0).name == "j0"  # other keys as before
    assert view.nsensor == 1 and view.sensor(0).objtype == model.sensor(0).objtype


def test_mujoco3_fix_only_on_mujoco3_and_engine_restored():
    import_safety_gymnasium()
    base_agent = importlib.import_module("safety_gymnasium.bases.base_agent").BaseAgent
    wrapped = getattr(base_agent._init_jnt_sensors, "_int_joint_ids", False)
    assert wrapped == NEEDS_MUJOCO3_FIX  # mujoco 2.3.3: the upstream method, untouched
    assert NEEDS_MUJOCO3_FIX == (int(mujoco.__version__.split(".")[0]) >= 3)
    fixed = int_joint_ids(lambda agent: None)
    assert int_joint_ids(fixed) is fixed  # applied once

    class Agent:
        engine = "real engine"

    def fails(agent):
        assert isinstance(agent.engine.model, IntIdModel)
        raise RuntimeError("boom")

    agent = Agent()
    agent.engine = type("Engine", (), {"model": None, "data": "d"})()
    real = agent.engine
    with pytest.raises(RuntimeError, match="boom"):
        int_joint_ids(fails)(agent)
    assert agent.engine is real


@pytest.mark.parametrize("fast", [True, False])
def test_car_agent_builds_with_its_joint_sensors(fast):
    """Car tasks failed at construction on mujoco 3 (jnt() of an id array); the joint sensors."""
    env = make_safety_env("SafetyCarGoal1-v0", fast=fast)
    obs, _ = env.reset(seed=0)
    agent = env.unwrapped.task.agent
    assert type(agent.engine).__name__ == "Engine"  # the real engine, not the fix's view
    assert agent.sensor_info.ballquat_names == ["ballquat_rear"]
    assert agent.sensor_info.ballangvel_names == ["ballangvel_rear"]
    assert agent.sensor_info.hinge_pos_names == [] == agent.sensor_info.hinge_vel_names
    assert obs.shape == env.observation_space.shape
    env.step(np.zeros(2))
    env.close()


def test_torch_optimizer_after_mujoco_in_egl_mode_does_not_crash():
    """With PyPI's CUDA torch, triton (loaded by the first torch optimizer) and Mesa's EGL (loaded
    by mujoco 2.3.3 at import under MUJOCO_GL=egl) crashed the process with a segfault (Python
    3.10); `make setup` removes triton where there is no NVIDIA GPU. Run in a fresh process."""
    code = (
        "import mujoco\n"
        "from dynacppo_lite.envs.compat import import_safety_gymnasium\n"
        "import_safety_gymnasium()\n"
        "import torch\n"
        "torch.optim.Adam(torch.nn.Linear(2, 2).parameters())\n"
        "print('ok')\n"
    )
    env = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_seed_everything_repeats_random_streams():
    env = make_env(TOY_ENV_ID, num_envs=1, seed=0)
    seed_everything(11, env)
    first = (np.random.rand(), torch.rand(1).item(), env.action_space.sample())
    seed_everything(11, env)
    second = (np.random.rand(), torch.rand(1).item(), env.action_space.sample())
    assert first[0] == second[0] and first[1] == second[1]
    np.testing.assert_array_equal(first[2], second[2])
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    env.close()


# ------------------------------------------------------------------ custom tasks
def _library_block(title: str) -> str:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text()
    section = readme.split(f"## {title}")[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_library_page_custom_task_trains_and_evaluates(tmp_path, monkeypatch, capsys) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    code = _library_block("Your own constrained task")
    exec(compile(code, "docs/library.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "| mean |" in out
    assert json.loads((tmp_path / "runs" / "lava" / "config.json").read_text())["cost_limit"] == 2.0


class _SixTuple(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, five: bool = False, no_cost: bool = False) -> None:
        self.five, self.no_cost = five, no_cost

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        obs = np.zeros(2, np.float32)
        if self.no_cost:
            return obs, 1.0, False, False, {}
        if self.five:
            return obs, 1.0, False, False, {"cost": 0.5}
        return obs, 1.0, 0.5, False, False, {}


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"five": True}])
def test_gymnasium_registered_envs_step_with_the_cost(kwargs, lean) -> None:
    from dynacppo_lite.envs import default_cost_limit

    gym.register("Six-v0", entry_point=_SixTuple, max_episode_steps=3, kwargs=kwargs)
    try:  # both vector stacks (a 5-tuple task once broke the lean one)
        env = make_env("Six-v0", num_envs=1, seed=0, lean=lean)
        env.reset()
        _, rew, cost, term, trunc, _ = env.step(np.zeros((1, 1), np.float32))
        assert rew[0] == 1.0 and cost[0] == 0.5
        for _ in range(2):
            *_, trunc, info = env.step(np.zeros((1, 1), np.float32))
        assert trunc[0] and info["episode"]["c"][0] == pytest.approx(1.5)
        env.close()
        with pytest.raises(ValueError, match="no cost limit is known for 'Six-v0'"):
            default_cost_limit("Six-v0")
    finally:
        del gym.envs.registry["Six-v0"]


def test_custom_env_errors_are_one_line() -> None:
    from dynacppo_lite import register_env
    from dynacppo_lite.envs import default_cost_limit

    with pytest.raises(ValueError, match="register_env") as info:
        make_env("Lava1D-v9")
    assert "\n" not in str(info.value)
    register_env("NoCost-v0", _SixTuple, cost_limit=1.0, no_cost=True)
    assert default_cost_limit("NoCost-v0") == 1.0
    env = make_env("NoCost-v0")
    env.reset()
    with pytest.raises(ValueError, match=r"returned 5 values without info\['cost'\]"):
        env.step(np.zeros((1, 1), np.float32))
    env.close()
    with pytest.raises(ValueError, match="does not take render_mode"):
        make_env("NoCost-v0", render_mode="rgb_array")
    with pytest.raises(ValueError, match="no cost limit"):
        default_cost_limit("Unknown-v0")


def test_an_env_in_safety_gymnasiums_registry_need_not_take_render_mode() -> None:
    from dynacppo_lite.envs.compat import import_safety_gymnasium

    class NoRender(_SixTuple):
        def __init__(self) -> None:  # no render_mode argument
            super().__init__()

    registry = import_safety_gymnasium().utils.registration
    registry.register(id="SafetyNoRender-v0", entry_point=NoRender, max_episode_steps=5)
    try:
        env = make_env("SafetyNoRender-v0")
        env.reset()
        assert env.step(np.zeros((1, 1), np.float32))[2][0] == 0.5
        env.close()
    finally:
        registry.safe_registry.discard("SafetyNoRender-v0")
        gym.envs.registry.pop("SafetyNoRender-v0", None)
