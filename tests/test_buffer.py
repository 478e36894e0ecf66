"""ReplayBuffer: FIFO ring storage of real transitions, uniform sampling."""

import numpy as np
import pytest

from dynacppo_lite.buffer import ReplayBuffer

OBS_DIM, ACT_DIM = 3, 2


def transitions(ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Transitions whose every field encodes its id, so order and identity can be checked."""
    ids = np.asarray(ids, dtype=np.float32)
    return (np.repeat(ids[:, None], OBS_DIM, 1), np.repeat(-ids[:, None], ACT_DIM, 1), ids + 0.5,
            ids * 2, np.repeat(ids[:, None] + 1, OBS_DIM, 1), ids.astype(int) % 2 == 0)


def test_add_and_all_in_insertion_order() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=10)
    assert len(buf) == 0
    buf.add(*transitions(np.arange(4)))
    buf.add(*transitions(np.arange(4, 7)))
    assert len(buf) == 7
    data = buf.all()
    expected = transitions(np.arange(7))
    for got, want in zip(data, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert data.obs.dtype == np.float32 and data.terminated.dtype == bool


def test_wrap_around_keeps_newest_in_order() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=5)
    buf.add(*transitions(np.arange(3)))
    buf.add(*transitions(np.arange(3, 7)))  # writes rows 3, 4, 0, 1: wraps mid-batch
    assert len(buf) == 5
    np.testing.assert_array_equal(buf.all().rew, np.arange(2, 7) + 0.5)
    buf.add(*transitions(np.arange(7, 9)))
    np.testing.assert_array_equal(buf.all().obs[:, 0], np.arange(4, 9))
    np.testing.assert_array_equal(buf.all().next_obs[:, 0], np.arange(4, 9) + 1)


def test_batch_larger_than_capacity_keeps_its_tail() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=4)
    buf.add(*transitions(np.arange(2)))
    buf.add(*transitions(np.arange(2, 12)))
    assert len(buf) == 4
    np.testing.assert_array_equal(buf.all().cost, np.arange(8, 12) * 2)


def test_all_returns_copies() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=4)
    buf.add(*transitions(np.arange(3)))
    buf.all().obs[:] = 99.0
    np.testing.assert_array_equal(buf.all().obs[:, 0], np.arange(3))


def test_sample_uniform_with_replacement_from_current_contents() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=6)
    buf.add(*transitions(np.arange(10)))  # only ids 4..9 remain
    batch = buf.sample(6000, np.random.default_rng(0))
    assert batch.obs.shape == (6000, OBS_DIM) and batch.act.shape == (6000, ACT_DIM)
    assert batch.rew.shape == batch.cost.shape == batch.terminated.shape == (6000,)
    ids = batch.obs[:, 0].astype(int)
    # Rows stay whole transitions.
    np.testing.assert_array_equal(batch.rew, ids + 0.5)
    np.testing.assert_array_equal(batch.next_obs[:, 0], ids + 1)
    counts = np.bincount(ids, minlength=10)
    assert counts[:4].sum() == 0
    assert np.all(np.abs(counts[4:] - 1000) < 150)  # uniform: 1000 each, sd ~ 29
    # More draws than stored rows is fine (with replacement) and seeded draws repeat.
    again = buf.sample(6000, np.random.default_rng(0))
    np.testing.assert_array_equal(again.obs, batch.obs)


def test_sample_empty_raises() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=3)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1, np.random.default_rng(0))


def test_bad_shapes_raise() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=3)
    obs, act, rew, cost, next_obs, term = transitions(np.arange(2))
    with pytest.raises(ValueError, match="act"):
        buf.add(obs, act[:, :1], rew, cost, next_obs, term)
    with pytest.raises(ValueError, match="obs"):
        buf.add(obs[0], act, rew, cost, next_obs, term)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(OBS_DIM, ACT_DIM, capacity=0)


def test_sample_with_newest_keeps_every_new_transition_and_distinct_older_ones() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=20)
    buf.add(*transitions(np.arange(25)))  # wrapped: ids 5..24 stored
    rng = np.random.default_rng(0)
    ids = buf.sample_with_newest(10, newest=4, rng=rng).obs[:, 0]
    np.testing.assert_array_equal(ids[:4], [21, 22, 23, 24])
    older = ids[4:]
    assert len(older) == 6 and len(set(older)) == 6 and set(older) <= set(range(5, 21))
    # Fewer stored than asked: everything once; more new than asked: the newest ones.
    np.testing.assert_array_equal(np.sort(buf.sample_with_newest(50, 4, rng).obs[:, 0]),
                                  np.arange(5, 25))
    np.testing.assert_array_equal(buf.sample_with_newest(3, 4, rng).obs[:, 0], [22, 23, 24])
