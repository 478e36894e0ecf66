"""A FIFO replay buffer of real transitions, the training set of the dynamics model.

Dyna-CPPO fits its model on *recent* real experience (MBPO keeps a bounded buffer): once the
buffer is full, each new transition overwrites the oldest one. Storage is preallocated numpy
(the model fit moves one big array to torch; nothing here needs autograd).

Shapes: ``obs``/``next_obs`` (B, obs_dim), ``act`` (B, act_dim), ``rew``/``cost``/``terminated``
(B,). Observations, actions, rewards and costs are stored as float32, ``terminated`` as bool.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """Transitions, field order matching ``DynamicsEnsemble.fit(obs, act, rew, cost, next_obs)``,
    so ``ensemble.fit(*buffer.all()[:5])`` works."""

    obs: np.ndarray  # (B, obs_dim) float32
    act: np.ndarray  # (B, act_dim) float32
    rew: np.ndarray  # (B,) float32
    cost: np.ndarray  # (B,) float32
    next_obs: np.ndarray  # (B, obs_dim) float32
    terminated: np.ndarray  # (B,) bool


class ReplayBuffer:
    """Ring buffer of the last ``capacity`` real transitions.

    Row ``(start + i) % capacity`` holds the i-th oldest transition, where ``start`` is the
    write pointer once the buffer has wrapped (0 before that).
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        self._obs = np.zeros((capacity, obs_dim), np.float32)
        self._act = np.zeros((capacity, act_dim), np.float32)
        self._rew = np.zeros(capacity, np.float32)
        self._cost = np.zeros(capacity, np.float32)
        self._next_obs = np.zeros((capacity, obs_dim), np.float32)
        self._terminated = np.zeros(capacity, bool)
        self._ptr = 0  # next row to write
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self._obs, self._act, self._rew, self._cost, self._next_obs, self._terminated)

    def add(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray, cost: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray) -> None:
        """Append a batch of B transitions (oldest first), overwriting the oldest rows if full.

        If B > capacity only the last ``capacity`` rows of the batch are kept, as if they had
        been added one at a time.
        """
        new = [np.asarray(a) for a in (obs, act, rew, cost, next_obs, terminated)]
        if new[0].ndim != 2:
            raise ValueError(f"obs has shape {new[0].shape}, expected (B, {self.obs_dim})")
        n = new[0].shape[0]
        expected = [(n, self.obs_dim), (n, self.act_dim), (n,), (n,), (n, self.obs_dim), (n,)]
        for name, a, shape in zip(Batch._fields, new, expected, strict=True):
            if a.shape != shape:
                raise ValueError(f"{name} has shape {a.shape}, expected {shape} (a batch)")
        if n > self.capacity:
            new = [a[-self.capacity:] for a in new]
            n = self.capacity
        rows = (self._ptr + np.arange(n)) % self.capacity
        for store, a in zip(self._arrays(), new, strict=True):
            store[rows] = a
        self._ptr = (self._ptr + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def _order(self) -> np.ndarray:
        """Row indices from oldest to newest."""
        start = self._ptr if self._size == self.capacity else 0
        return (start + np.arange(self._size)) % self.capacity

    def all(self) -> Batch:
        """Every stored transition, oldest first, as copies (safe to keep after later ``add``)."""
        rows = self._order()
        return Batch(*(a[rows] for a in self._arrays()))

    def sample_with_newest(self, batch_size: int, newest: int, rng: np.random.Generator) -> Batch:
        """The ``newest`` most recent transitions (all of them, at most ``batch_size``), then
        ``batch_size - newest`` of the older ones drawn uniformly *without* replacement (fewer if
        fewer are stored): the model's fit set, in which fresh data always counts."""
        order = self._order()
        newest = min(newest, batch_size, self._size)
        older = order[:self._size - newest]
        picked = rng.choice(len(older), min(len(older), batch_size - newest), replace=False)
        rows = np.concatenate([order[self._size - newest:], older[np.sort(picked)]])
        return Batch(*(a[rows] for a in self._arrays()))

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement (copies)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer; add transitions first")
        rows = rng.integers(0, self._size, size=batch_size)
        # Any row below _size is valid whether or not the buffer has wrapped.
        return Batch(*(a[rows] for a in self._arrays()))
