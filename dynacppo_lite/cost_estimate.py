"""The episode-cost estimate that the constrained updates steer by.

One iteration of 4,000 steps ends about four 1000-step episodes, and on the Goal tasks one
episode's cost has a standard deviation of 30-80 around a limit of 25: a 4-episode mean is too
noisy to switch modes or move a Lagrange multiplier on. :class:`CostEstimate` keeps the last
``window`` finished episodes (across iterations) and reports their mean cost, its standard
error and the episode count. An iteration in which no episode ended adds no evidence:
``update`` then says so (``fresh`` is False), and the multiplier is not moved on an old value.
OmniSafe does the same kind of averaging over the episodes of a 20,000-step epoch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any


class CostEstimate:
    """Mean episode cost (and return, length) over the last ``window`` finished episodes."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"the cost window must hold >= 1 episode, got {window}")
        self.window = window
        self.episodes: deque[tuple[float, float, float]] = deque(maxlen=window)
        self.fresh = False
        """Whether the last :meth:`update` brought at least one new episode."""

    def update(self, episodes: Iterable[tuple[float, float, float]]) -> bool:
        """Add the (return, cost, length) of episodes that just ended; returns ``fresh``."""
        added = 0
        for ep in episodes:
            self.episodes.append(tuple(float(x) for x in ep))
            added += 1
        self.fresh = added > 0
        return self.fresh

    @property
    def count(self) -> int:
        """Episodes in the window."""
        return len(self.episodes)

    def _column(self, k: int) -> list[float]:
        return [ep[k] for ep in self.episodes]

    @property
    def ret(self) -> float:
        """Mean episode return in the window (0 before any episode ended)."""
        return _mean(self._column(0), 0.0)

    @property
    def cost(self) -> float:
        """Mean episode cost J_c in the window (0 before any episode ended)."""
        return _mean(self._column(1), 0.0)

    @property
    def length(self) -> float:
        """Mean episode length in the window (1 before any episode ended)."""
        return _mean(self._column(2), 1.0)

    @property
    def cost_se(self) -> float:
        """Standard error of :attr:`cost`: sample std / sqrt(count) (NaN below 2 episodes)."""
        costs = self._column(1)
        n = len(costs)
        if n < 2:
            return math.nan
        m = sum(costs) / n
        return math.sqrt(sum((c - m) ** 2 for c in costs) / (n - 1) / n)

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "episodes": [list(ep) for ep in self.episodes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = int(state["window"])
        self.episodes = deque((tuple(ep) for ep in state["episodes"]), maxlen=self.window)


def _mean(values: list[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty
