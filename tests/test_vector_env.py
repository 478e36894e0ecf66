"""The lean vector envs (envs/vector.py) against gymnasium's stack: the same numbers, step by step."""

import numpy as np
import pytest
from gymnasium.wrappers.normalize import RunningMeanStd

from dynacppo_lite.envs import TOY_ENV_ID, make_env
from dynacppo_lite.envs.vector import AsyncSafeVectorEnv, SyncSafeVectorEnv


def trace(env_id: str, num_envs: int, lean: bool, steps: int, seed: int = 5,
          float32_actions: bool = False) -> tuple[list, dict]:
    """Everything ``make_env`` hands out over ``steps`` random steps with a reseed half-way."""
    env = make_env(env_id, num_envs, seed, lean=lean)
    if lean:
        assert isinstance(env.unwrapped, SyncSafeVectorEnv if num_envs == 1 else AsyncSafeVectorEnv)
    obs, info = env.reset()
    out: list = [("reset", obs, info["raw_obs"])]
    for t in range(steps):
        act = env.action_space.sample()
        obs, rew, cost, term, trunc, info = env.step(act.astype(np.float32) if float32_actions else act)
        row = [obs, rew, cost, term, trunc, info["raw_obs"]]
        if "final_observation" in info:
            mask = info["_final_observation"]
            ep = info["episode"]
            row += [mask, np.stack(info["final_observation"][mask]),
                    np.stack(info["raw_final_observation"][mask]), ep["r"], ep["c"], ep["l"],
                    info["_episode"]]
        out.append(row)
        if t == steps // 2:
            obs, info = env.reset(seed=seed + 100)
            out.append(("reseed", obs, info["raw_obs"]))
    state = env.state_dict()
    env.close()
    return out, state


@pytest.mark.parametrize(("env_id", "num_envs", "steps"), [
    (TOY_ENV_ID, 1, 260), (TOY_ENV_ID, 2, 260),
    ("CPPO-PointCircle1-v0", 1, 230), ("CPPO-PointCircle1-v0", 2, 230),
])
def test_lean_equals_gymnasium_stack(env_id, num_envs, steps):
    lean, lean_state = trace(env_id, num_envs, True, steps)
    ref, ref_state = trace(env_id, num_envs, False, steps)
    assert sum(len(row) > 6 for row in ref) >= 4  # several episode ends, across a reseed
    assert len(lean) == len(ref)
    for a, b in zip(lean, ref, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            if not isinstance(x, str):
                assert np.asarray(x).dtype == np.asarray(y).dtype
                np.testing.assert_array_equal(x, y)  # bit for bit, normaliser included
    for key in ref_state:
        np.testing.assert_array_equal(lean_state[key], ref_state[key])


def test_float32_actions_reach_the_workers_unchanged():
    # HalfCheetah's action space is float32 and its control cost is computed in the action's
    # dtype: the shared float64 action buffer must hand the workers float32 again.
    lean, _ = trace("SafetyHalfCheetahVelocity-v1", 2, True, 20, float32_actions=True)
    ref, _ = trace("SafetyHalfCheetahVelocity-v1", 2, False, 20, float32_actions=True)
    for a, b in zip(lean, ref, strict=True):
        for x, y in zip(a, b, strict=True):
            if not isinstance(x, str):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("batch", [1, 3])
def test_normaliser_update_is_gymnasiums_bit_for_bit(batch):
    env = make_env(TOY_ENV_ID, 1, 0)
    ref = RunningMeanStd(shape=(3,))
    rng = np.random.default_rng(batch)
    for _ in range(500):
        x = rng.normal(size=(batch, 3)) * rng.choice([1e-3, 1.0, 1e3])
        env.update(x)
        ref.update(x)
        np.testing.assert_array_equal(env.obs_rms.mean, ref.mean)
        np.testing.assert_array_equal(env.obs_rms.var, ref.var)
        assert env.obs_rms.count == ref.count
        y = rng.normal(size=(2, 3)) * 30
        expected = np.clip((y - ref.mean) / np.sqrt(ref.var + env.eps), -env.clip, env.clip)
        np.testing.assert_array_equal(env.normalize(y), expected)
        np.testing.assert_array_equal(env.normalize(y[0]), expected[0])
    env.close()


def test_loaded_statistics_are_used_at_once():
    # normalize caches sqrt(var + eps): a load_state_dict must not leave it stale.
    env = make_env(TOY_ENV_ID, 1, 0)
    env.reset()
    env.frozen = True
    state = {"mean": np.array([1.0, 2.0, 3.0]), "var": np.array([4.0, 9.0, 16.0]), "count": 10.0}
    env.load_state_dict(state)
    np.testing.assert_allclose(env.normalize(np.array([3.0, 5.0, 7.0])), [1.0, 1.0, 1.0])
    env.close()


@pytest.mark.parametrize("num_envs", [1, 2])
def test_errors_and_call(num_envs):
    env = make_env(TOY_ENV_ID, num_envs, 0, normalize_obs=False)
    env.reset()
    assert env.call("horizon") == (50,) * num_envs
    with pytest.raises(ValueError, match="actions of shape"):
        env.step(np.zeros(2))  # one env's action for a batch: would broadcast silently
    bad = np.zeros((num_envs, 2))
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="finite action"):  # the env's own error, also from a worker
        env.step(bad)
    env.close()
    assert env.closed
