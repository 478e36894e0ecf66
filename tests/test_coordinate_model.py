"""The coordinate model (envs/coordinate_model.py) and dyna-cppo with ``dyna_model="coordinates"``.

On real states and the true motion the model env gives the env's observation, reward and cost;
the learned motion beats "the mean change" (R^2 > 0) per group on held-out episodes; its
open-loop windows stop where the data says; a short dyna-cppo run logs the new columns, repeats
itself, and resumes; tasks it does not cover say so in one line.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_run
from test_coordinates import STATIC_GROUPS, _rows, _run

from dynacppo_lite.config import Config
from dynacppo_lite.envs.coordinate_model import (
    CoordinateModelEnv,
    coordinate_open_loop_errors,
    fit_motion,
    flat_one_step_r2,
    motion_ensemble,
    motion_from_vector,
    motion_vector,
    one_step_r2,
    r_squared,
    take,
)
from dynacppo_lite.envs.coordinates import (
    apply_motion,
    cost,
    motion_between,
    state_vector,
)
from dynacppo_lite.runlog import CSV_COLUMNS
from dynacppo_lite.train import Trainer, train

RTOL, ATOL = 1e-6, 1e-7  # the model env hands out float32, as the policy sees them
COVERED = ["SafetyPointGoal0-v0", "SafetyPointGoal1-v0", "SafetyCarGoal1-v0",
           "SafetyPointCircle1-v0", "SafetyCarCircle2-v0"]
GROUP_COLUMNS = [f"dyn_err_{g}_{h}" for g in ("sensors", "pose", "objects", "rew", "cost")
                 for h in (1, "k")]


class GivenMotions:
    """A stand-in for the motion ensemble: member e predicts ``motions + offsets[e]`` (float64,
    exactly), with no variance, whatever the state and action."""

    def __init__(self, motions: np.ndarray, offsets: np.ndarray | None = None) -> None:
        offsets = np.zeros((1, motions.shape[1])) if offsets is None else offsets
        self.means = torch.as_tensor(motions[None] + offsets[:, None])
        self.out_std = torch.ones(motions.shape[1], dtype=torch.float64)
        self.device = torch.device("cpu")

    def predict(self, obs, act):
        return self.means[:, :len(obs)], torch.zeros_like(self.means[:, :len(obs)])


def _steps(env_id: str):
    run = _run(env_id)
    start, end = _rows(run.states, run.before), _rows(run.states, run.after)
    return run, start, end, motion_vector(motion_between(start, end))


@pytest.mark.parametrize("env_id", COVERED)
def test_real_states_and_the_true_motion_give_the_envs_steps(env_id: str) -> None:
    run, start, end, motion = _steps(env_id)
    env = CoordinateModelEnv(GivenMotions(motion), start.spec)
    np.testing.assert_allclose(env.reset(state_vector(start))[0].numpy(), run.obs[run.before],
                               rtol=RTOL, atol=ATOL)
    obs, rew, cst, terminated, truncated, info = env.step(np.zeros((start.batch, 2)))
    goal = run.goal_met()
    assert (goal.any() or "Circle" in env_id) and not terminated.any()
    np.testing.assert_array_equal(truncated.numpy(), goal)  # cut at a goal step, nowhere else
    np.testing.assert_array_equal(info["goal"].numpy(), goal)
    bins = start.spec.lidar_settings.num_bins  # pushed vases move; the model holds them still
    moving = [i for name, at in start.spec.lidar if name not in STATIC_GROUPS
              for i in range(at, at + bins)]
    fixed = np.setdiff1d(np.arange(start.spec.obs_size), moving)
    np.testing.assert_allclose(obs.numpy()[~goal][:, fixed], run.obs[run.after][~goal][:, fixed],
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(rew.numpy(), run.rewards, rtol=RTOL, atol=ATOL)
    assert run.costs.any() or "0-v0" in env_id  # level 0 has no cost
    np.testing.assert_array_equal(cst.numpy(), run.costs)  # 0/1, exact
    np.testing.assert_array_equal(info["disagreement"].numpy(), 0.0)


def test_the_imagined_cost_is_pessimistic_over_the_members_poses() -> None:
    """Members whose mean motions differ: c = max(0, mean + kappa std) of the task's cost where
    each member's mean motion puts the robot; kappa = 0 gives the mean; the spread cuts."""
    _, start, _, motion = _steps("SafetyPointGoal1-v0")
    offsets = np.zeros((4, motion.shape[1]))
    offsets[:, 0] = [0.0, 0.05, 0.1, 0.15]  # metres along the body's x axis
    member_cost = np.stack([cost(apply_motion(start, motion_from_vector(motion + o)))
                            for o in offsets])
    assert (member_cost.std(0) > 0).sum() > 10  # the members disagree on hazard entry
    for kappa in (0.0, 1.0):
        env = CoordinateModelEnv(GivenMotions(motion, offsets), start.spec, kappa=kappa,
                                 disagreement_threshold=1.0)
        env.reset(state_vector(start))
        _, _, cst, _, truncated, info = env.step(np.zeros((start.batch, 2)))
        expected = member_cost.mean(0) + kappa * member_cost.std(0)
        np.testing.assert_allclose(cst.numpy(), expected, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(info["cost_std"].numpy(), member_cost.std(0), rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(truncated.numpy(), info["goal"].numpy())  # no cut below 1
    env = CoordinateModelEnv(GivenMotions(motion, offsets), start.spec,
                             disagreement_threshold=0.05)  # the spread: 0.056 m
    env.reset(state_vector(start))
    assert env.step(np.zeros((start.batch, 2)))[4].all()


def test_a_nonfinite_prediction_is_cut_and_holds_the_state() -> None:
    _, start, _, motion = _steps("SafetyPointGoal1-v0")
    motion = motion.copy()
    motion[3, 0] = np.nan
    env = CoordinateModelEnv(GivenMotions(motion), start.spec)
    before = env.reset(state_vector(start))[0]
    obs, rew, cst, _, truncated, info = env.step(np.zeros((start.batch, 2)))
    assert info["n_nonfinite"] == 1 and truncated[3] and info["disagreement"][3] == np.inf
    assert rew[3] == 0 and cst[3] == 0 and torch.equal(obs[3], before[3])


def _fitted(env_id: str):
    """The motion ensemble fitted on the test run's three seeds (900 steps), and held-out
    transitions of two more seeds (new layouts; the second seeks hazards)."""
    run, start, end, _ = _steps(env_id)
    acts = np.clip(run.actions, -1, 1)
    ensemble = motion_ensemble(start.spec, 2, ensemble_size=3, hidden=(64, 64), seed=0)
    fit_motion(ensemble, start.spec, state_vector(start), acts, state_vector(end),
               max_epochs=200, patience=10, batch_size=64)
    held = _run(env_id, seeds=(7, 8), steps=300)
    h_start, h_end = _rows(held.states, held.before), _rows(held.states, held.after)
    return ensemble, held, h_start, h_end, np.clip(held.actions, -1, 1)


@pytest.mark.parametrize("env_id", ["SafetyPointGoal1-v0", "SafetyCarGoal1-v0"])
def test_the_learned_motion_beats_the_mean_change_on_held_out_episodes(env_id: str) -> None:
    ensemble, _, start, end, acts = _fitted(env_id)
    r2 = one_step_r2(ensemble, start.spec, state_vector(start), acts, state_vector(end))
    assert set(r2) == {"sensors", "pose", "objects", "lidar", "reward", "cost"}
    assert all(value > 0 for value in r2.values()), r2


def test_open_loop_windows_stop_at_episode_ends_and_new_goals() -> None:
    """The held-out run's transitions as one trajectory (T steps, N = 1; done where the next
    transition does not start where this one ended, and at one more step): the true motions
    give zero error at h = 1; a window goes on only while no episode ended and no goal was
    drawn."""
    ensemble, held, start, end, acts = _fitted("SafetyPointGoal1-v0")
    rows, next_rows = state_vector(start)[:, None], state_vector(end)[:, None]
    T = len(rows)
    done = np.zeros((T, 1), dtype=bool)
    done[:-1, 0] = held.after[:-1] != held.before[1:]
    assert done.sum() == 1  # the change of seed
    done[100] = True
    goal = held.goal_met()
    assert goal.any()
    err = coordinate_open_loop_errors(ensemble, start.spec, rows, acts[:, None],
                                      held.rewards[:, None], held.costs[:, None], next_rows, done, 3)
    stop = done[:, 0] | goal
    assert err.count[0] == T
    assert err.count[1] == sum(not stop[t] for t in range(T - 1))
    assert err.count[2] == sum(not (stop[t] or stop[t + 1]) for t in range(T - 2))
    assert np.all(np.isfinite([err.sensors, err.pose, err.objects, err.rew, err.cost]))
    assert err.pose[2] > err.pose[0]  # errors compound

    true = GivenMotions(motion_vector(motion_between(start, end)))
    true.out_std = ensemble.out_std.double()
    exact = coordinate_open_loop_errors(true, start.spec, rows, acts[:, None],
                                        held.rewards[:, None], held.costs[:, None], next_rows,
                                        done, 1)
    for key in ("sensors", "pose", "objects", "rew", "cost"):
        assert getattr(exact, key)[0] < 1e-9, key


def test_r_squared_is_per_live_column() -> None:
    true = np.array([[0.0, 1.0, 5.0], [1.0, 1.0, 7.0], [2.0, 1.0, 9.0]])
    assert r_squared(true, true) == 1.0
    assert r_squared(np.tile(true.mean(0), (3, 1)), true) == 0.0  # the constant column skipped
    assert np.isnan(r_squared(true[:, 1:2], true[:, 1:2]))
    state = take(_run("SafetyPointGoal1-v0").states, np.array([2, 0]))
    assert state.batch == 2


def _config(tmp_path, **changes) -> Config:
    return Config(algo="dyna-cppo", env_id="SafetyPointGoal1-v0", dyna_model="coordinates",
                  total_steps=3_000, steps_per_iter=1_000, num_envs=1, model_start_iter=1,
                  model_hidden=(32, 32), ensemble_size=3, device="cpu", log_dir=str(tmp_path),
                  **changes)


def test_dyna_cppo_on_coordinates_logs_its_columns_and_repeats_itself(tmp_path) -> None:
    tables = [pd.read_csv(train(_config(tmp_path, run_name=name)) / "progress.csv")
              for name in ("a", "b")]
    first = tables[0]
    assert set(GROUP_COLUMNS) <= set(CSV_COLUMNS)
    fitted = first.iloc[1:]  # the errors need a model fitted on an earlier iteration
    for column in [*GROUP_COLUMNS, "imagined_cost_rate", "real_cost_rate", "imag_adv_r_corr",
                   "imag_adv_c_corr", "loss_dyn_holdout"]:
        assert np.isfinite(fitted[column]).all(), column
    assert first["dyn_err_obs_1"].isna().all()  # the flat model's column
    assert (first["imagined_frac"].iloc[1:] > 0).all()
    assert_same_run(first, tables[1])
    resumed = train(resume=tmp_path / "a", changes={"total_steps": 4_000})
    assert len(pd.read_csv(resumed / "progress.csv")) == 4


@pytest.mark.parametrize(("env_id", "match"), [
    ("SafetyHalfCheetahVelocity-v1", "navigation task"),
    ("SafetyPointButton1-v0", "dyna_model='coordinates'.*need contacts"),
    ("SafetyPointGoal2-v0", "dyna_model='coordinates'.*the cost of vases need contacts"),
])
def test_tasks_the_coordinate_model_does_not_cover_say_so(tmp_path, env_id: str, match: str) -> None:
    cfg = dataclasses.replace(_config(tmp_path), env_id=env_id)
    with pytest.raises(ValueError, match=match) as error:
        Trainer(cfg)
    assert "\n" not in str(error.value)


def test_flat_r2_scores_the_sensor_and_lidar_entries_apart_and_can_leave_steps_out() -> None:
    """A stand-in flat ensemble that predicts y = (s' - s, r, c) exactly scores 1 everywhere;
    spoiling the lidar entries of some steps lowers only the lidar's R^2, and leaving those
    steps out (``lidar_steps``) restores it; spoiling one sensor lowers only the sensors'."""
    run, start, _, _ = _steps("SafetyPointGoal1-v0")
    spec = start.spec
    obs, nxt = run.obs[run.before], run.obs[run.after]
    acts = np.clip(run.actions, -1, 1)
    y = np.concatenate([nxt - obs, run.rewards[:, None], run.costs[:, None]], axis=1)
    assert run.costs.std() > 0  # the hazard-seeking seed: the cost column is live

    def r2(pred: np.ndarray, **kwargs) -> dict[str, float]:
        return flat_one_step_r2(GivenMotions(pred), spec, obs, acts, run.rewards, run.costs, nxt,
                                **kwargs)

    assert r2(y) == pytest.approx({"sensors": 1.0, "lidar": 1.0, "reward": 1.0, "cost": 1.0})
    lidar = np.setdiff1d(np.arange(spec.obs_size), spec.sensor_index)
    spoiled = y.copy()
    spoiled[:50, lidar] += 1.0
    worse = r2(spoiled)
    assert worse["lidar"] < 0.9 and worse["sensors"] == pytest.approx(1.0)
    kept = np.arange(len(y)) >= 50
    assert r2(spoiled, lidar_steps=kept)["lidar"] == pytest.approx(1.0)
    spoiled = y.copy()
    spoiled[:, spec.sensor_index[0]] = 0.0
    worse = r2(spoiled)
    assert worse["sensors"] < 1.0 and worse["lidar"] == pytest.approx(1.0)


def test_the_model_env_shows_its_state_after_each_step() -> None:
    """``CoordinateModelEnv.state``: the start after ``reset``, the moved robot after ``step``
    (the true motion: the real end state), the objects where they were."""
    run, start, end, motion = _steps("SafetyPointGoal1-v0")
    env = CoordinateModelEnv(GivenMotions(motion), start.spec, deterministic=True)
    with pytest.raises(RuntimeError, match="reset"):
        _ = env.state
    env.reset(state_vector(start))
    np.testing.assert_allclose(env.state.position, start.position)
    env.step(np.zeros((start.batch, 2)))
    np.testing.assert_allclose(env.state.position, end.position, atol=1e-9)
    np.testing.assert_array_equal(env.state.objects["hazards"], start.objects["hazards"])
