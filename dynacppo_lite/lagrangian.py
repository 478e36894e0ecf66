"""PPO-Lagrangian, the comparison baseline: PPO's clipped surrogate on A_r - lambda A_c, and
the two ways lambda is set (gradient ascent, or a PID controller)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def lagrangian_advantage(adv_r: torch.Tensor, adv_c: torch.Tensor, lagrange: float) -> torch.Tensor:
    """(A_r' - lambda A_c') / (1 + lambda) over the batch: (N,), as OmniSafe's PPOLag mixes them.

    A_r' is A_r standardised (mean 0, std 1); A_c' is A_c centred but *not* scaled, and the mix
    is not standardised again. Standardising the mix instead would hand the policy whichever
    signal has the larger spread: on the Goal tasks std(A_c) is 10-30x std(A_r), so once lambda
    passed ~0.05 the reward would vanish from the update.
    """
    adv_r = (adv_r - adv_r.mean()) / (adv_r.std() + 1e-8)
    adv_c = adv_c - adv_c.mean()
    return (adv_r - lagrange * adv_c) / (1.0 + lagrange)


def ppo_clip_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor,
                  clip_ratio: float) -> torch.Tensor:
    """-mean(min(r A, clip(r, 1-eps, 1+eps) A)), r = exp(logp_new - logp_old); inputs (B,)."""
    ratio = torch.exp(logp_new - logp_old)
    clipped = torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return -torch.min(ratio * adv, clipped * adv).mean()


class LagrangeMultiplier:
    """lambda >= 0, raised by Adam while the episode cost exceeds the limit.

    Gradient ascent on lambda * (J_c - d): lambda grows while J_c > d and shrinks (to 0 at
    least) while the policy is safe.
    """

    def __init__(self, init: float, lr: float, cost_limit: float) -> None:
        self.param = torch.nn.Parameter(torch.tensor(float(init)))
        self.opt = torch.optim.Adam([self.param], lr=lr)
        self.cost_limit = cost_limit

    @property
    def value(self) -> float:
        return float(self.param.detach())

    def update(self, episode_cost: float) -> float:
        self.opt.zero_grad()
        loss = -self.param * (episode_cost - self.cost_limit)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.param.clamp_(min=0.0)
        return self.value

    def state_dict(self) -> dict:
        return {"param": self.param.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.param.copy_(state["param"])
        self.opt.load_state_dict(state["opt"])


@dataclass
class PIDLagrangeMultiplier:
    """lambda by PID control on the episode cost (Stooke et al. 2020, "Responsive Safety in RL
    by PID Lagrangian Methods"), as OmniSafe's ``PIDLagrangian`` (its ``sum_norm`` form, where
    the advantages are mixed as :func:`lagrangian_advantage` does). On each update with the
    episode cost J_c and e = J_c - d:

        I     <- max(0, I + ki e)                        integral, never below 0
        e_p   <- ema e_p + (1 - ema) e                   smoothed error
        C     <- ema C + (1 - ema) J_c                   smoothed cost
        lambda = max(0, kp e_p + I + kd max(0, C - C_{d_delay updates ago}))

    The derivative term only raises lambda while the cost climbs (never lowers it while it
    falls), which damps the overshoot the integral alone makes. ``C`` before the first update,
    and the delayed ``C`` until ``d_delay`` updates have passed, count as 0, as in OmniSafe.
    """

    cost_limit: float
    """d, the per-episode cost limit."""
    kp: float = 0.1
    """Proportional gain (lambda per unit of smoothed episode cost over the limit)."""
    ki: float = 0.01
    """Integral gain (change of I per update per unit of episode cost over the limit)."""
    kd: float = 0.01
    """Derivative gain (lambda per unit of rise of the smoothed cost over ``d_delay`` updates)."""
    d_delay: int = 10
    """Updates over which the derivative term measures the rise of the smoothed cost."""
    ema: float = 0.95
    """Weight of the past in the smoothed error e_p and the smoothed cost C."""
    integral: float = 0.0
    """The integral state I (its start is the initial multiplier)."""
    delta_p: float = 0.0
    """The smoothed error e_p."""
    cost_d: float = 0.0
    """The smoothed cost C."""
    history: list[float] = field(default_factory=lambda: [0.0])
    """The last values of C, oldest first (at most ``d_delay``)."""
    value: float = field(init=False)
    """lambda; before the first update, the initial integral."""

    def __post_init__(self) -> None:
        self.value = max(0.0, self.integral)

    def update(self, episode_cost: float) -> float:
        """Feed the episode cost J_c; returns the new lambda."""
        error = float(episode_cost) - self.cost_limit
        self.integral = max(0.0, self.integral + self.ki * error)
        self.delta_p = self.ema * self.delta_p + (1.0 - self.ema) * error
        self.cost_d = self.ema * self.cost_d + (1.0 - self.ema) * float(episode_cost)
        rise = max(0.0, self.cost_d - self.history[0])
        self.value = max(0.0, self.kp * self.delta_p + self.integral + self.kd * rise)
        self.history = [*self.history, self.cost_d][-self.d_delay:]
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"integral": self.integral, "delta_p": self.delta_p, "cost_d": self.cost_d,
                "history": list(self.history), "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.integral, self.delta_p = float(state["integral"]), float(state["delta_p"])
        self.cost_d, self.value = float(state["cost_d"]), float(state["value"])
        self.history = [float(x) for x in state["history"]]
