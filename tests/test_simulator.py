"""The simulator as the model on the navigation tasks (envs/simulator.py, NavigationSimulatorEnv).

Rows recorded by a real env (``RecordCoordinates(physics=True)``: the coordinate state, then the
MuJoCo state) put a second env of the task, built for another layout, back where the real one
was: one restored step with the real action gives the real env's next observation, reward,
cost and row to the last bit (a goal step: the same reward, the branch truncated), and so do
several steps in a row; rows from worker processes and episode ends restore too; dyna-cppo
with ``dyna_model="simulator"`` runs, repeats itself and resumes on PointGoal1; what it cannot
restore says so in one line.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_run
from test_coordinates import _policy

from dynacppo_lite.config import Config
from dynacppo_lite.envs import make_env
from dynacppo_lite.envs.coordinates import RecordCoordinates, state_size
from dynacppo_lite.envs.make import single_env_factory
from dynacppo_lite.envs.simulator import NavigationSimulatorEnv, navigation_task
from dynacppo_lite.imagine import DynaModel, records_coordinates, records_physics
from dynacppo_lite.train import Trainer, train

TASKS = ["SafetyPointGoal1-v0", "SafetyCarGoal1-v0", "SafetyPointGoal2-v0", "SafetyPointCircle1-v0"]


def _record(env_id: str, steps: int = 250, seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """Real steps of one env over several episodes (layouts): the goal-seeking policy of
    ``test_coordinates``, the last seed seeking hazards. Per step: the row it starts from, the
    action, and what the env returned (observation, reward, cost, goal met, the next row)."""
    env = RecordCoordinates(single_env_factory(env_id)(), physics=True)
    rng = np.random.default_rng(7)
    out: dict[str, list] = {key: [] for key in ("row", "act", "obs", "rew", "cost", "goal", "next")}
    for seed in seeds:
        act = _policy(env.unwrapped.task, env.action_space.shape, rng, seed == seeds[-1])
        _, info = env.reset(seed=seed)
        row = info["state"]
        for _ in range(steps):
            a = act()
            obs, rew, cost, _, _, info = env.step(a)
            for key, x in zip(out, (row, a, obs, rew, cost, bool(info.get("goal_met")),
                                    info["state"]), strict=True):
                out[key].append(x)
            row = info["state"]
    env.close()
    return {key: np.array(x) for key, x in out.items()}


@pytest.mark.parametrize("env_id", TASKS)
def test_one_restored_step_is_the_real_envs_step(env_id: str) -> None:
    real = _record(env_id)
    sim = NavigationSimulatorEnv(env_id, seed=11)  # another layout than any recorded episode
    obs0, _ = sim.reset(real["row"])
    coord = state_size(sim.spec)
    same = (real["row"][1:] == real["next"][:-1]).all(1)  # row i + 1 is step i's end
    np.testing.assert_allclose(obs0.numpy()[1:][same], real["obs"][:-1][same], rtol=1e-6, atol=1e-7)
    obs, rew, cost, terminated, truncated, info = sim.step(torch.as_tensor(real["act"]))
    goal = real["goal"]
    assert real["cost"].any() and ("Circle" in env_id or goal.any())  # both are exercised
    kept = ~goal  # after a goal step the real env has drawn a new goal; the branch ends there
    np.testing.assert_array_equal(obs.numpy()[kept], real["obs"][kept].astype(np.float32))
    np.testing.assert_array_equal(sim._rows[kept], real["next"][kept])  # the row, bit for bit
    np.testing.assert_array_equal(rew.numpy(), real["rew"].astype(np.float32))
    np.testing.assert_array_equal(cost.numpy(), real["cost"].astype(np.float32))
    np.testing.assert_array_equal(truncated.numpy(), goal)
    np.testing.assert_array_equal(info["goal"].numpy(), goal)
    assert not terminated.any()
    # the goal step's robot is the real one's too; only the goal moved
    np.testing.assert_array_equal(sim._rows[goal][:, :12], real["next"][goal][:, :12])
    assert sim.state_dim == real["row"].shape[1] > coord
    sim.close()


def test_several_restored_steps_in_a_row_follow_the_real_env() -> None:
    real = _record("SafetyPointGoal1-v0", steps=120, seeds=(3,))
    starts = np.array([0, 30, 55])  # three branches of 40 steps, no goal in between
    assert not real["goal"][:starts[-1] + 40].any()
    sim = NavigationSimulatorEnv("SafetyPointGoal1-v0", seed=4)
    sim.reset(torch.as_tensor(real["row"][starts]))  # float64 rows, as the buffer keeps them
    for j in range(40):
        obs, rew, cost, *_ = sim.step(real["act"][starts + j])
        np.testing.assert_array_equal(obs.numpy(), real["obs"][starts + j].astype(np.float32))
        np.testing.assert_array_equal(rew.numpy(), real["rew"][starts + j].astype(np.float32))
        np.testing.assert_array_equal(cost.numpy(), real["cost"][starts + j].astype(np.float32))
    np.testing.assert_array_equal(sim._rows, real["next"][starts + 39])


def test_rows_from_worker_processes_and_episode_ends_restore() -> None:
    """The lean vector env's rows (one env in a worker process) and its final rows at the end
    of an episode are what a restored step reaches."""
    env_id = "SafetyPointGoal1-v0"
    envs = make_env(env_id, 2, seed=5, normalize_obs=False, max_episode_steps=3, num_workers=1,
                    coordinates=True, physics=True)
    sim = NavigationSimulatorEnv(env_id)
    _, info = envs.reset(seed=5)
    rows = info["state"]
    assert rows.shape == (2, sim.state_dim)
    rng = np.random.default_rng(0)
    for t in range(3):
        act = rng.uniform(-1, 1, (2, 2))
        obs, rew, cost, terminated, truncated, info = envs.step(act)
        sim.reset(rows)
        sim_obs, sim_rew, sim_cost, *_ = sim.step(act)
        after = info["final_state"] if t == 2 else info["state"]
        if t == 2:
            assert truncated.all()
            obs = np.stack(info["final_observation"])
        np.testing.assert_array_equal(sim._rows, after)
        np.testing.assert_array_equal(sim_obs.numpy(), np.asarray(obs, dtype=np.float32))
        np.testing.assert_array_equal(sim_rew.numpy(), np.asarray(rew, dtype=np.float32))
        np.testing.assert_array_equal(sim_cost.numpy(), np.asarray(cost, dtype=np.float32))
        rows = info["state"]
    envs.close()


def _config(tmp_path, **changes) -> Config:
    return Config(algo="dyna-cppo", env_id="SafetyPointGoal1-v0", dyna_model="simulator",
                  total_steps=1_000, steps_per_iter=500, num_envs=1, model_start_iter=1,
                  model_horizon=4, ensemble_size=2, model_hidden=(16, 16), device="cpu",
                  log_dir=str(tmp_path), **changes)


def test_dyna_cppo_with_the_simulator_on_goal_repeats_itself_and_resumes(tmp_path) -> None:
    cfg = _config(tmp_path, run_name="a")
    assert records_coordinates(cfg) and records_physics(cfg)
    assert not records_physics(dataclasses.replace(cfg, env_id="SafetyHalfCheetahVelocity-v1"))
    tables = [pd.read_csv(train(dataclasses.replace(cfg, run_name=name)) / "progress.csv")
              for name in ("a", "b")]
    first = tables[0]
    for column in ("loss_dyn_train", "dyn_fit_epochs", "dyn_err_obs_1", "dyn_err_pose_1"):
        assert first[column].isna().all(), column  # nothing is fitted or measured
    imagined = first.iloc[1:]
    for column in ("imagined_frac", "imagined_cost_rate", "imag_adv_r_corr", "imag_adv_c_corr"):
        assert np.isfinite(imagined[column]).all(), column
    assert (imagined["branch_len_mean"] <= 4).all()
    assert_same_run(first, tables[1])
    resumed = train(resume=tmp_path / "a", changes={"total_steps": 1_500})
    assert len(pd.read_csv(resumed / "progress.csv")) == 3


@pytest.mark.parametrize(("env_id", "match"), [
    ("SafetyPointButton1-v0", "restores the Goal and Circle tasks without gremlins"),
    ("SafetyPointPush1-v0", "coordinates cover the Goal, Button and Circle tasks"),
])
def test_tasks_the_simulator_cannot_restore_say_so(tmp_path, env_id: str, match: str) -> None:
    assert navigation_task(env_id)
    with pytest.raises(ValueError, match=match) as error:
        Trainer(dataclasses.replace(_config(tmp_path), env_id=env_id))
    assert "\n" not in str(error.value)


def test_rows_without_the_mujoco_state_say_so() -> None:
    sim = NavigationSimulatorEnv("SafetyPointGoal1-v0")
    rows = np.zeros((2, state_size(sim.spec)))  # what make_env(coordinates=True) alone records
    with pytest.raises(ValueError, match=r"physics=True\)\), got \(2, 45\)") as error:
        sim.reset(rows)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="only with coordinates=True"):
        make_env("SafetyPointGoal1-v0", physics=True)
    # without recorded rows a navigation task is not the MuJoCo state the flat simulator sets
    with pytest.raises(ValueError, match="observation is the MuJoCo state"):
        DynaModel(_config("."), 60, 2, torch.device("cpu"))
    assert not navigation_task("SafetyHalfCheetahVelocity-v1")
    assert navigation_task("CPPO-PointCircle1-v0")  # a preset of a navigation task
