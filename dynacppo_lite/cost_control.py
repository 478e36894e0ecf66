"""How CPPO turns the measured episode cost into the E-step's cost margin: a PI controller.

The paper's margin d' = (1 - gamma)(d - J_c) asks one E-step to remove the whole violation, at
the full trust-region radius, through a first-order cost model. On the Goal tasks that model is
weak (the M-step follows the E-step's target with a slope of about 0.1 and a correlation of
about 0.3, and A_c is noisy), and the paper's bang-bang switch then alternates between "ignore
cost" and "ignore reward". :class:`MarginController` instead sets the margin by integral
control on the measured violation, the idea of OmniSafe's PID-Lagrangian (Stooke et al. 2020)
applied to the E-step's cost constraint rather than to a multiplier.

Its output u is the margin in units of the largest cost change the trust region allows,

    cost_margin = u * sqrt(2 kl_budget) * std(A_c),        u in [-1, 1],

so u = 1 leaves the pure reward direction feasible on any batch (no constraint), u = 0 asks for
no predicted cost increase, and u = -1 admits only pure cost descent (-A_c), which is also what
the E-step's recovery case 3 (section 3.2.2) returns where the margin cannot be met. The error
e = (d - J_c) / max(d, 1) is clipped to [-2, 1] so one bad estimate cannot slam u to the bound.

The sphere overstates the cut the E-step can reach: with the bound v >= b and a sparse,
heavy-tailed A_c (a few samples that enter a hazard) the hazard samples sit at the bound, and
the largest reachable cut can be a fifth of sqrt(2 kl_budget) std(A_c); a margin beyond it is
infeasible and the E-step turns to recovery. Scaling u by the reachable cut instead (solved on
the batch) was tried and made the control weaker: recovery came later and rarer, and with the
same gains the cost settled higher (SafetyPointCircle1-v0, `make train`'s set-up, 8.5e5 steps:
cost 40 against 34 with the sphere; the toy task ~10% over its limit). So u < 0 keeps the
sphere's scale, and the infeasible part of its range is recovery by design; a saturated
controller (u = -1) always takes the recovery step (``train.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class MarginController:
    """u = clip(I + kp e, -1, 1) with I <- clip(I + ki e, integral_min, 1) on each fresh estimate.

    The policy integrates u by itself (each E-step moves cost at a rate set by u; u = 0 holds
    it), so the proportional term does most of the work and the integral only removes the
    steady offset. ``integral_min`` > -1 is the anti-windup: with a pure integral the state
    sank to -1 during the long delay before cost fell, held the policy in pure cost descent
    for ~200k steps after the cost was under the limit, and the return collapsed (measured on
    SafetyPointGoal1-v0 with ki = 0.02, kp = 0).
    """

    ki: float
    """Integral gain: change of u per fresh iteration per unit of relative violation."""
    kp: float = 0.0
    """Proportional gain (damps the integral's overshoot; noisy estimates argue for little)."""
    integral_min: float = -0.5
    """Lower bound of the integral state (anti-windup)."""
    integral: float = 1.0
    """The integral state I; 1 = unconstrained, where a run starts."""

    def update(self, cost_estimate: float, cost_limit: float, fresh: bool) -> float:
        """Feed the windowed episode cost J_c; returns u for this iteration's E-step."""
        error = float(np.clip((cost_limit - cost_estimate) / max(cost_limit, 1.0), -2.0, 1.0))
        if fresh:  # an iteration without finished episodes adds no evidence to integrate
            self.integral = float(np.clip(self.integral + self.ki * error, self.integral_min, 1.0))
        return float(np.clip(self.integral + self.kp * error, -1.0, 1.0))


@dataclass
class RealisedShare:
    """The share rho of the E-step's predicted cost change that the M-step realises.

    Each iteration gives x = ``estep_cost_change`` = mean((v - 1) A_c), what the E-step's target
    would change the per-step cost by to first order, and y = ``mstep_cost_change`` =
    mean((r - 1) A_c), what the ratio r the M-step reached changes it by. rho is the regression
    slope of y on x through the origin over recent iterations,

        rho = S_xy / S_xx,   S <- s S + (1 - s) (new term),

    clipped to [``floor``, 1]. An iteration whose E-step predicts no cost change (x = 0, the
    cost direction not in use) adds nothing, where a per-iteration ratio y / x would blow up.
    The paper's margin mode asks the E-step for margin / rho, so that the step actually taken
    changes the cost by the margin (``Config.realised_radius``). Measured with the linear M-step
    on ``make train``'s set-up: rho 0.02-0.1 (the policy's gradient subspace cannot follow the
    few hazard samples that carry A_c).
    """

    initial: float = 0.2
    """rho before any cost change has been both predicted and measured."""
    smoothing: float = 0.8
    """Weight s of the past in the running sums."""
    floor: float = 0.05
    """Lower clip of rho (it divides the margin)."""
    sxy: float = 0.0
    sxx: float = 0.0

    def update(self, predicted: float, realised: float) -> float:
        """Add one iteration's (x, y) = (estep_cost_change, mstep_cost_change); returns rho."""
        self.sxy = self.smoothing * self.sxy + (1.0 - self.smoothing) * predicted * realised
        self.sxx = self.smoothing * self.sxx + (1.0 - self.smoothing) * predicted * predicted
        return self.value

    @property
    def value(self) -> float:
        if self.sxx <= 0.0:
            return self.initial
        return float(np.clip(self.sxy / self.sxx, self.floor, 1.0))

    def state_dict(self) -> dict[str, float]:
        return {"sxy": self.sxy, "sxx": self.sxx}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.sxy, self.sxx = float(state["sxy"]), float(state["sxx"])


def margin_from_fraction(u: float, adv_c: np.ndarray, kl_budget: float) -> float:
    """The E-step cost margin for controller output ``u``: u * sqrt(2 kl_budget) * std(A_c).

    sqrt(2 kl_budget) * std(A_c) = R |A_c - mean A_c| / N is the largest |mean((v - 1) A_c)| on
    the trust-region sphere |v - 1|^2 = R^2 = 2 N kl_budget. ``adv_c``: (N,).
    """
    return u * math.sqrt(2.0 * kl_budget) * float(np.std(adv_c))
