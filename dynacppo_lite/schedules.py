"""Linear annealing (learning rate, lower clip) and the bang-bang recovery switch."""

from __future__ import annotations

from dataclasses import dataclass


def linear(start: float, end: float, progress: float) -> float:
    """Value at ``progress`` in [0, 1] of a straight line from ``start`` to ``end``."""
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


@dataclass
class ModeSwitch:
    """Bang-bang switching between normal and recovery updates (paper Fig. 2), with hysteresis.

    Recovery starts when the measured episode cost exceeds the limit ``d`` and ends only when it
    falls below ``switch_ratio * d``; in the band between, the mode stays as it was, so noisy
    cost estimates near the limit do not flip the update every iteration.
    """

    cost_limit: float
    switch_ratio: float = 0.8
    mode: str = "normal"

    def update(self, episode_cost: float) -> str:
        """Feed the latest measured episode cost; returns the mode for this iteration."""
        if episode_cost > self.cost_limit:
            self.mode = "recovery"
        elif episode_cost < self.switch_ratio * self.cost_limit:
            self.mode = "normal"
        return self.mode

    def state_dict(self) -> dict[str, str]:
        return {"mode": self.mode}

    def load_state_dict(self, state: dict[str, str]) -> None:
        self.mode = str(state["mode"])
