"""The lean vector envs (envs/vector.py) against gymnasium's stack: the same numbers, step by step."""

import multiprocessing as mp

import numpy as np
import pytest
from gymnasium.wrappers.normalize import RunningMeanStd

from dynacppo_lite.envs import TOY_ENV_ID, ToySpeedLimitEnv, make_env, vector
from dynacppo_lite.envs.vector import AsyncSafeVectorEnv, SyncSafeVectorEnv


def trace(env_id: str, num_envs: int, lean: bool, steps: int, seed: int = 5,
          float32_actions: bool = False, num_workers: int | None = None) -> tuple[list, dict]:
    """Everything ``make_env`` hands out over ``steps`` random steps with a reseed half-way."""
    env = make_env(env_id, num_envs, seed, lean=lean, num_workers=num_workers)
    if lean:
        assert isinstance(env.unwrapped, AsyncSafeVectorEnv if num_workers else SyncSafeVectorEnv)
        if num_workers:
            assert env.unwrapped.num_workers == num_workers
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


# (num_envs, num_workers): all in this process; this process + 1 worker, one env each; 3
# steppers of 1, 1 and 2 envs; this process 1 env and a worker 2 (uneven groups).
LAYOUTS = [(1, 0), (2, 0), (2, 1), (4, 2), (3, 1)]


@pytest.mark.parametrize(("num_envs", "num_workers"), LAYOUTS)
@pytest.mark.parametrize(("env_id", "steps"), [(TOY_ENV_ID, 260), ("CPPO-PointCircle1-v0", 230)])
def test_lean_equals_gymnasium_stack(env_id, steps, num_envs, num_workers):
    lean, lean_state = trace(env_id, num_envs, True, steps, num_workers=num_workers)
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
    lean, _ = trace("SafetyHalfCheetahVelocity-v1", 3, True, 20, float32_actions=True, num_workers=1)
    ref, _ = trace("SafetyHalfCheetahVelocity-v1", 3, False, 20, float32_actions=True)
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


@pytest.mark.parametrize(("num_envs", "num_workers"), LAYOUTS)
def test_errors_and_call(num_envs, num_workers):
    env = make_env(TOY_ENV_ID, num_envs, 0, normalize_obs=False, num_workers=num_workers)
    env.reset()
    assert env.call("horizon") == (50,) * num_envs
    with pytest.raises(ValueError, match="actions of shape"):
        env.step(np.zeros(2))  # one env's action for a batch: would broadcast silently
    env.close()
    assert env.closed


def tagged_toy(i: int):
    def factory() -> ToySpeedLimitEnv:
        env = ToySpeedLimitEnv()
        env.tag = i
        return env

    return factory


def test_workers_only_layout_equals_sync():
    # in_process=False: this process only waits (the layout before issue #14, with groups).
    factories = [tagged_toy(i) for i in range(4)]
    sync = SyncSafeVectorEnv(factories, seed=3)
    workers = AsyncSafeVectorEnv(factories, seed=3, num_workers=2, in_process=False)
    assert workers.num_workers == 2 and workers.call("tag") == (0, 1, 2, 3)
    np.testing.assert_array_equal(workers.reset()[0], sync.reset()[0])
    rng = np.random.default_rng(0)
    for _ in range(120):
        act = rng.uniform(-1, 1, (4, 2))
        a, b = workers.step(act), sync.step(act)
        for x, y in zip(a[:5], b[:5], strict=True):
            np.testing.assert_array_equal(x, y)
        assert a[5].keys() == b[5].keys()
        if "episode" in b[5]:
            for key in ("r", "c", "l"):
                np.testing.assert_array_equal(a[5]["episode"][key], b[5]["episode"][key])
    workers.close()
    sync.close()


def test_call_and_reset_seeds_follow_env_order_across_groups():
    factories = [tagged_toy(i) for i in range(5)]
    env = AsyncSafeVectorEnv(factories, num_workers=2)  # groups of 1 (here), 2 and 2 envs
    assert env.call("tag") == (0, 1, 2, 3, 4)
    env.reset(seed=10)
    seeds = [int(rng.bit_generator.state["state"]["state"]) for rng in env.call("np_random")]
    ref = SyncSafeVectorEnv(factories)
    ref.reset(seed=10)
    assert seeds == [int(rng.bit_generator.state["state"]["state"]) for rng in ref.call("np_random")]
    env.close()
    ref.close()


@pytest.mark.parametrize("bad_env", [0, 1, 3], ids=["this-process", "worker-1", "worker-2"])
def test_an_env_error_surfaces_the_same_from_any_process(bad_env):
    # 4 envs: env 0 here, env 1 in worker 1, envs 2 and 3 in worker 2.
    env = AsyncSafeVectorEnv([tagged_toy(i) for i in range(4)], num_workers=2)
    procs = list(env._procs)
    env.reset()
    bad = np.zeros((4, 2))
    bad[bad_env, 0] = np.nan
    with pytest.raises(ValueError, match="finite action") as caught:
        env.step(bad)
    notes = getattr(caught.value, "__notes__", [])
    if bad_env > 0 and hasattr(caught.value, "add_note"):
        assert "in an AsyncSafeVectorEnv worker" in notes[0] and "finite action" in notes[0]
    assert env.closed
    assert not any(p.is_alive() for p in procs)


def test_close_is_clean():
    env = AsyncSafeVectorEnv([tagged_toy(i) for i in range(3)], num_workers=2)
    procs = list(env._procs)
    assert all(p.is_alive() for p in procs)
    env.reset()
    env.step(np.zeros((3, 2)))
    env.close()
    assert env.closed
    assert [p.exitcode for p in procs] == [0, 0]  # each worker left its loop, not terminated
    assert not set(procs) & set(mp.active_children())


def test_layouts_and_their_defaults(monkeypatch):
    assert [list(g) for g in vector._groups(5, 3)] == [[0], [1, 2], [3, 4]]  # the smaller first
    assert [list(g) for g in vector._groups(4, 2)] == [[0, 1], [2, 3]]
    monkeypatch.setattr(vector, "_cpus", lambda: 2)
    assert vector.default_num_workers(1) == 0
    assert vector.default_num_workers(2) == 1 and vector.default_num_workers(16) == 1
    assert vector.default_num_workers(16, in_process=False) == 2
    with pytest.raises(ValueError, match="3 envs cannot be shared by 3 workers and this process"):
        AsyncSafeVectorEnv([ToySpeedLimitEnv] * 3, num_workers=3)
    with pytest.raises(ValueError, match="lean"):
        make_env(TOY_ENV_ID, 2, lean=False, num_workers=1)
