"""How the measured episode cost steers the policy update: one :class:`CostControl` per run.

Each iteration the trainer asks the run's control for a :class:`Decision` on the windowed
episode cost J_c (``CostEstimate``), gives the policy update what the decision holds, and tells
the control what the update did (:meth:`CostControl.observe`). The controls, by
``Config.cost_control`` (:func:`make_cost_control` builds the one a run uses):

    pid             PI controller on J_c -> the E-step's cost margin      (cppo, dyna-cppo default)
    margin          the paper's margin (d - J_c) / L over the realised share rho
    bang-bang       that margin, with the paper's recovery switch (Fig. 2, ``schedules.ModeSwitch``)
    lagrangian      PPO-Lag's multiplier, gradient ascent by Adam          (ppo-lag default)
    pid-lagrangian  the multiplier as a PID controller (Stooke et al. 2020; OmniSafe's PIDLagrangian)

The first three feed the E-step (``uses_estep``): a margin, in the per-step cost units of
``mean((v - 1) A_c)``; the last two feed PPO's clipped loss a multiplier lambda on A_c.

The PI margin controller (:class:`MarginController`): the paper's margin
d' = (1 - gamma)(d - J_c) asks one E-step to remove the whole violation, at the full
trust-region radius, through a first-order cost model. On the Goal tasks that model is weak
(the M-step follows the E-step's target with a slope of about 0.1 and a correlation of about
0.3, and A_c is noisy), and the paper's bang-bang switch then alternates between "ignore cost"
and "ignore reward". :class:`MarginController` instead sets the margin by integral control on
the measured violation, the idea of OmniSafe's PID-Lagrangian (Stooke et al. 2020)
applied to the E-step's cost constraint rather than to a multiplier.

Its output u is the margin in units of the largest cost change the trust region allows,

    cost_margin = u * sqrt(2 kl_budget) * std(A_c),        u in [-1, 1],

so u = 1 leaves the pure reward direction feasible on any batch (no constraint), u = 0 asks for
no predicted cost increase, and u = -1 admits only pure cost descent (-A_c), which is also what
the E-step's recovery case 3 (section 3.2.2) returns where the margin cannot be met. The error
e = (d - J_c) / max(d, 1) is clipped to [error_min, 1] (``Config.pid_error_min``, -10: a cost
of 11x the limit counts as 11x; J_c is a 20-episode mean, so one bad episode moves it little).

The integral may fall to -1 (full authority): on SafetyPointGoal1-v0 a floor of -0.5 let u
reach -1 only above about twice the limit and the run ended at 1.9x its limit. The gains
ki 0.02, kp 0.5 hold where the estimate's relative standard error se / d is ``noise_ref``
(0.8, PointGoal1's early noise) or worse, and grow as noise_ref d / se up to ``max_speedup``
(4x) where it is precise (HalfCheetah's se / d is about 0.12): fast fixed gains held
HalfCheetah's and Circle's limit but kept PointGoal1 in recovery before it learned to reach
goals, and slow ones left HalfCheetah at 1.3x its limit (docs/results.md, "Holding the limit:
the controller's defaults").

The sphere overstates the cut the E-step can reach: with the bound v >= b and a sparse,
heavy-tailed A_c (a few samples that enter a hazard) the hazard samples sit at the bound, and
the largest reachable cut can be a fifth of sqrt(2 kl_budget) std(A_c); a margin beyond it is
infeasible and the E-step turns to recovery. u < 0 keeps the sphere's scale nonetheless (scaled
by the reachable cut instead, recovery came later and rarer and the cost settled higher:
docs/results.md, "The PI controller's gains"), so the infeasible part of its range is recovery
by design; a saturated controller (u = -1) always takes the recovery step
(:class:`PIMarginControl`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dynacppo_lite.config import Config
from dynacppo_lite.lagrangian import LagrangeMultiplier, PIDLagrangeMultiplier
from dynacppo_lite.schedules import ModeSwitch


@dataclass
class MarginController:
    """u = clip(I + g kp e, -1, 1) with I <- clip(I + g ki e, integral_min, 1) on each fresh
    estimate, g = clip(noise_ref d / se, 1, max_speedup) (:meth:`speedup`; 1 when noise_ref is 0).

    The policy integrates u by itself (each E-step moves cost at a rate set by u; u = 0 holds
    it), so the proportional term does most of the work and the integral only removes the
    steady offset. ``integral_min`` > -1 is an anti-windup: the cost answers u with a long
    delay, and an integral at -1 holds the policy in pure cost descent until the cost has been
    under the limit for a while; the default is -1 nonetheless, because any higher floor
    leaves a violation under twice the limit that no integral can remove (module docstring).
    """

    ki: float
    """Integral gain: change of u per fresh iteration per unit of relative violation."""
    kp: float = 0.0
    """Proportional gain (damps the integral's overshoot; noisy estimates argue for little)."""
    integral_min: float = -1.0
    """Lower bound of the integral state (anti-windup above -1)."""
    integral: float = 1.0
    """The integral state I; 1 = unconstrained, where a run starts."""
    error_min: float = -10.0
    """Lower clip of the relative error e (how many limits over the limit still count)."""
    noise_ref: float = 0.0
    """Relative standard error se / d of J_c at which ki and kp are as stated; a more precise
    estimate speeds both up by noise_ref d / se, up to ``max_speedup`` (0: fixed gains)."""
    max_speedup: float = 1.0
    """Largest factor on the gains for a precise estimate."""

    def speedup(self, cost_limit: float, cost_se: float) -> float:
        """The factor on ki and kp for an estimate with standard error ``cost_se``."""
        if self.noise_ref <= 0 or not math.isfinite(cost_se):  # fewer than 2 episodes: no evidence
            return 1.0
        rel_se = cost_se / max(cost_limit, 1.0)
        return float(np.clip(self.noise_ref / max(rel_se, 1e-12), 1.0, self.max_speedup))

    def update(self, cost_estimate: float, cost_limit: float, fresh: bool, cost_se: float = 0.0) -> float:
        """Feed the windowed episode cost J_c (standard error ``cost_se``); returns u for this
        iteration's E-step."""
        error = float(np.clip((cost_limit - cost_estimate) / max(cost_limit, 1.0), self.error_min, 1.0))
        gain = self.speedup(cost_limit, cost_se)
        if fresh:  # an iteration without finished episodes adds no evidence to integrate
            self.integral = float(np.clip(self.integral + gain * self.ki * error, self.integral_min, 1.0))
        return float(np.clip(self.integral + gain * self.kp * error, -1.0, 1.0))

    def state_dict(self) -> dict[str, float]:
        return {"integral": self.integral}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.integral = float(state["integral"])


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
    changes the cost by the margin (``Config.realised_radius``). Logged as ``rho``; its measured
    range is in docs/results.md ("The realised share rho").
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


@dataclass(frozen=True)
class Decision:
    """One iteration's cost decision: the mode and what the policy update receives."""

    mode: str
    """``normal`` or ``recovery`` (E-step controls; the E-step may still turn a normal iteration
    to recovery where the margin cannot be met), or ``lagrange`` (the Lagrangian controls)."""
    cost_margin: float
    """The paper's margin (d - J_c) / L: cost per environment step the policy may still add."""
    u: float | None = None
    """``pid``: the controller output, the margin as a fraction of the largest cost change the
    trust region allows (:func:`margin_from_fraction`); None for the other controls."""
    lagrange: float | None = None
    """Lagrangian controls: the multiplier lambda >= 0, the weight of A_c against A_r in PPO's
    loss (``lagrangian.lagrangian_advantage``); None for the E-step controls."""


class CostControl:
    """What every cost control answers; the trainer calls these and nothing else.

    Per iteration: :meth:`decide` on the windowed cost, then the update (the E-step takes
    :meth:`estep_margin`, PPO's loss takes ``Decision.lagrange``), then :meth:`observe`.
    :meth:`fields` are its ``progress.csv`` columns; :meth:`state_dict` goes into checkpoints.
    """

    name: str
    """The ``Config.cost_control`` value that selects it."""
    uses_estep: ClassVar[bool]
    """True: the update is CPPO's E-step/M-step on a cost margin; False: PPO's clipped loss on
    A_r - lambda A_c."""

    parts: dict[str, Any]
    """What it carries between iterations, by name: objects with ``state_dict`` and
    ``load_state_dict`` (the multiplier, the PI state, the switch, rho)."""

    def decide(self, cost_est: float, fresh: bool, cost_margin: float, cost_se: float = 0.0) -> Decision:
        """This iteration's decision from the windowed mean episode cost ``cost_est`` (J_c, cost
        per episode), whether it holds an episode that just ended (``fresh``: else it brings no
        new evidence and integrating controls hold still), the paper's ``cost_margin`` and the
        estimate's standard error ``cost_se`` (how much of J_c is noise)."""
        raise NotImplementedError

    def estep_margin(self, decision: Decision, adv_c: np.ndarray, kl_budget: float) -> float:
        """The cost margin the E-step is given at budget ``kl_budget`` on a batch with cost
        advantages ``adv_c`` (N,): a bound on mean((v - 1) A_c), cost per step."""
        raise TypeError(f"cost_control {self.name!r} has no E-step margin: its update is PPO's loss")

    def observe(self, estep_cost_change: float | None, mstep_cost_change: float) -> None:
        """The update's outcome: the E-step's predicted first-order cost change per step
        (``None`` without an E-step) and the one the M-step realised (``batch.first_order_change``)."""

    def fields(self, decision: Decision) -> dict[str, Any]:
        """Its ``progress.csv`` columns for this iteration (read before :meth:`observe`)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Its parts' states (numbers, strings, tensors: a checkpoint holds them)."""
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state[name])

    def legacy_state(self, ckpt: Mapping[str, Any]) -> dict[str, Any]:
        """Its :meth:`state_dict` from a checkpoint written before the controls had one (keys
        ``lagrange``, ``mode``, ``reach``, ``controller`` at the top level)."""
        raise NotImplementedError


class EStepControl(CostControl):
    """The controls that give CPPO's E-step a cost margin. Each keeps the realised share rho
    (:class:`RealisedShare`, logged as ``rho``), which ``margin`` and ``bang-bang``
    divide their margin by and ``pid`` only reports."""

    uses_estep = True

    def __init__(self, share: RealisedShare) -> None:
        self.share = share
        self.parts = {"share": share}

    def observe(self, estep_cost_change: float | None, mstep_cost_change: float) -> None:
        if estep_cost_change is not None:
            self.share.update(estep_cost_change, mstep_cost_change)

    def fields(self, decision: Decision) -> dict[str, Any]:
        return {"margin_u": decision.u, "rho": self.share.value}

    def legacy_state(self, ckpt: Mapping[str, Any]) -> dict[str, Any]:
        # Runs saved before rho was measured stored a number there: they restart rho afresh.
        reach = ckpt["reach"]
        return {"share": reach if isinstance(reach, dict) else self.share.state_dict()}


class PIMarginControl(EStepControl):
    """``pid``: :class:`MarginController` sets u, the margin as a fraction of the trust region's
    largest cost change; saturated (u <= -1) the iteration is recovery, whose M-step always
    takes the pure cost-descent step (the recovery loss, which keeps the step along A_c at full
    weight, where the normal loss on that target follows it only in part)."""

    name = "pid"

    def __init__(self, controller: MarginController, cost_limit: float, share: RealisedShare) -> None:
        super().__init__(share)
        self.controller = controller
        self.cost_limit = cost_limit
        self.parts["controller"] = controller

    def decide(self, cost_est: float, fresh: bool, cost_margin: float, cost_se: float = 0.0) -> Decision:
        u = self.controller.update(cost_est, self.cost_limit, fresh, cost_se)
        return Decision("recovery" if u <= -1.0 else "normal", cost_margin, u=u)

    def estep_margin(self, decision: Decision, adv_c: np.ndarray, kl_budget: float) -> float:
        return margin_from_fraction(decision.u, adv_c, kl_budget)

    def legacy_state(self, ckpt: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().legacy_state(ckpt), "controller": {"integral": ckpt["controller"]}}


class PaperMarginControl(EStepControl):
    """``margin``: the paper's margin (d - J_c) / L, in normal mode; the E-step is asked for
    margin / rho (``realised_radius``) so that the step the M-step takes, a share rho of the
    E-step's, changes the cost by the margin. Recovery only where the E-step cannot meet it."""

    name = "margin"

    def __init__(self, share: RealisedShare, realised_radius: bool = True) -> None:
        super().__init__(share)
        self.realised_radius = realised_radius

    def decide(self, cost_est: float, fresh: bool, cost_margin: float, cost_se: float = 0.0) -> Decision:
        return Decision("normal", cost_margin)

    def estep_margin(self, decision: Decision, adv_c: np.ndarray, kl_budget: float) -> float:
        # rho is read when the E-step runs: dyna-cppo's imagined rounds see the iteration's own
        return decision.cost_margin / self.share.value if self.realised_radius else decision.cost_margin


class BangBangControl(PaperMarginControl):
    """``bang-bang``: the paper's margin with its recovery switch (Fig. 2): recovery while
    J_c > d, until J_c < switch_ratio * d (:class:`schedules.ModeSwitch`). The switch moves on
    every estimate, fresh or not, as the paper's does on each batch."""

    name = "bang-bang"

    def __init__(self, switch: ModeSwitch, share: RealisedShare, realised_radius: bool = True) -> None:
        super().__init__(share, realised_radius)
        self.switch = switch
        self.parts["switch"] = switch

    def decide(self, cost_est: float, fresh: bool, cost_margin: float, cost_se: float = 0.0) -> Decision:
        return Decision(self.switch.update(cost_est), cost_margin)

    def legacy_state(self, ckpt: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().legacy_state(ckpt), "switch": {"mode": ckpt["mode"]}}


class LagrangianControl(CostControl):
    """``lagrangian`` and ``pid-lagrangian``: a multiplier lambda on A_c in PPO's clipped loss.

    ``multiplier`` is a ``lagrangian.LagrangeMultiplier`` (Adam on lambda (J_c - d)) or a
    ``lagrangian.PIDLagrangeMultiplier``: anything with ``value``, ``update(J_c)``,
    ``state_dict`` and ``load_state_dict``. It moves only on a fresh estimate (an old one
    would push lambda again on the same evidence)."""

    uses_estep = False

    def __init__(self, name: str, multiplier: LagrangeMultiplier | PIDLagrangeMultiplier) -> None:
        self.name = name
        self.multiplier = multiplier
        self.parts = {"multiplier": multiplier}

    def decide(self, cost_est: float, fresh: bool, cost_margin: float, cost_se: float = 0.0) -> Decision:
        lagrange = self.multiplier.update(cost_est) if fresh else self.multiplier.value
        return Decision("lagrange", cost_margin, lagrange=lagrange)

    def fields(self, decision: Decision) -> dict[str, Any]:
        return {"lagrange": decision.lagrange}

    def legacy_state(self, ckpt: Mapping[str, Any]) -> dict[str, Any]:
        return {"multiplier": ckpt["lagrange"]}


#: Environment steps per update that the ``pid_lag_*`` gains are stated for (OmniSafe's epoch).
PID_LAG_EPOCH_STEPS = 20_000


def make_cost_control(cfg: Config, cost_limit: float) -> CostControl:
    """The control ``cfg.cost_control`` names (``auto``: the algorithm's own, see
    ``Config.cost_control``) for the per-episode cost limit ``cost_limit``."""
    name = cfg.resolved_cost_control
    if name == "lagrangian":
        return LagrangianControl(name, LagrangeMultiplier(cfg.lagrangian_init, cfg.lagrangian_lr,
                                                          cost_limit))
    if name == "pid-lagrangian":
        # The gains are OmniSafe's, per 20,000-step epoch; this update runs once per iteration,
        # so the integral, the smoothing and the derivative's delay are converted per step.
        per_epoch = cfg.steps_per_iter / PID_LAG_EPOCH_STEPS
        return LagrangianControl(name, PIDLagrangeMultiplier(
            cost_limit, kp=cfg.pid_lag_kp, ki=cfg.pid_lag_ki * per_epoch, kd=cfg.pid_lag_kd,
            d_delay=max(1, round(cfg.pid_lag_d_delay / per_epoch)), ema=cfg.pid_lag_ema ** per_epoch,
            integral=cfg.lagrangian_init))
    share = RealisedShare(cfg.rho_init, cfg.rho_smoothing, cfg.rho_min)
    if name == "pid":
        return PIMarginControl(MarginController(cfg.pid_ki, cfg.pid_kp, cfg.pid_integral_min,
                                                cfg.pid_integral_init, cfg.pid_error_min,
                                                cfg.pid_noise_ref, cfg.pid_max_speedup),
                                cost_limit, share)
    if name == "margin":
        return PaperMarginControl(share, cfg.realised_radius)
    if name == "bang-bang":
        return BangBangControl(ModeSwitch(cost_limit, cfg.switch_ratio), share, cfg.realised_radius)
    raise ValueError(f"unknown cost_control {name!r}")
