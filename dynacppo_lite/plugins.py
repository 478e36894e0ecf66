"""The trainer's plug-in points: what each must accept and return, and the checks of its answer.

Three steps of the iteration are :class:`~dynacppo_lite.train.Trainer` methods with the
signature of the library function they call. A course replaces one piece without copying
library code: ``Trainer(cfg, estep=...)`` (or ``train(cfg, estep=...)``), or a subclass that
overrides the method.

    advantages   dual GAE of the real rollout      (default ``gae.dual_gae``)       :class:`Advantages`
    estep        the E-step's target ratios v*     (default ``estep.solve_estep``)  :class:`EStep`
    policy_loss  the normal-mode M-step loss       (default: ``Config.mstep``'s)    :class:`PolicyLoss`

Each protocol's docstring is the contract (inputs, shapes, units, what to return, an example);
``check_*`` turns a wrong answer into a one-line :class:`PluginError` that says what was expected.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from dynacppo_lite.estep import EStepResult, estep_result
from dynacppo_lite.gae import DualGAE

#: The keyword names of the plug-ins (``Trainer(..., estep=f)``).
PLUGINS = ("advantages", "estep", "policy_loss")


class PluginError(TypeError):
    """A plug-in (``estep``, ``policy_loss``, ``advantages``) returned something the trainer
    cannot use; the message says what was expected."""


class Advantages(Protocol):
    """Dual GAE of the real rollout (plug-in ``advantages``; default ``gae.dual_gae``).

    Inputs: float32 torch tensors of shape (T, num_envs), time first, on the trainer's
    device: the raw rewards and costs of each step (env units, per step), V_r and V_c of
    s_t and of the true next state s_{t+1} (at an episode end: of its final observation),
    and the ``terminated``/``truncated`` flags (1.0 / 0.0) of the transition t -> t+1.
    ``gamma, lam`` are for the rewards, ``cost_gamma, cost_lam`` for the costs.

    Returns ``gae.DualGAE(adv_r, adv_c, ret_r, ret_c)`` (or that 4-tuple): raw, unnormalised
    advantages and returns (return = advantage + V(s_t)), each (T, num_envs); numpy arrays
    are accepted. Imagined branches of dyna-cppo keep the library's ``dual_gae``.

    Example (the library's own, spelled out)::

        def my_dual_gae(rew, cost, v_r, v_c, nv_r, nv_c, term, trunc, *, gamma, lam,
                        cost_gamma, cost_lam):
            adv_r = my_gae(rew, v_r, nv_r, term, trunc, gamma=gamma, lam=lam)
            adv_c = my_gae(cost, v_c, nv_c, term, trunc, gamma=cost_gamma, lam=cost_lam)
            return adv_r, adv_c, adv_r + v_r, adv_c + v_c
    """

    def __call__(self, rewards: torch.Tensor, costs: torch.Tensor, values_r: torch.Tensor,
                 values_c: torch.Tensor, next_values_r: torch.Tensor, next_values_c: torch.Tensor,
                 terminated: torch.Tensor, truncated: torch.Tensor, *, gamma: float, lam: float,
                 cost_gamma: float, cost_lam: float) -> DualGAE: ...


class EStep(Protocol):
    """The E-step (plug-in ``estep``; default ``estep.solve_estep``, whose docstring states the
    problem).

    Inputs: ``adv_r``, ``adv_c``: float64 numpy arrays (N,), the *raw* (unnormalised) reward
    and cost advantages of the whole batch (real samples, then imagined ones for dyna-cppo).
    ``cost_margin``: d' of eq. 4 as a per-step cost rate (negative when the policy is over the
    limit). ``kl_budget``: delta' of eq. 5 (mean((v - 1)^2) <= 2 kl_budget).
    ``lower_bound``: Algorithm 1's clip b (v >= b). ``method``: ``Config.estep_method``
    ("exact" or "heuristic"; ignore it if you have one method). ``recovery``: True when the
    cost control asks for the recovery rule (section 3.2.2).

    Returns an ``estep.EStepResult`` or just the target ratios ``v`` (N,), float, mean 1,
    every entry >= lower_bound; a bare ``v`` is wrapped by ``estep.estep_result`` (its mode is
    "recovery" when ``recovery`` was asked, else "normal").

    Example (a student's E-step that keeps only the trust region, ignoring the cost)::

        def my_estep(adv_r, adv_c, *, cost_margin, kl_budget, lower_bound, method, recovery):
            a = adv_r - adv_r.mean()
            x = a * np.sqrt(2 * kl_budget) / (np.sqrt(np.mean(a**2)) + 1e-12)
            return np.maximum(1 + x, lower_bound)
    """

    def __call__(self, adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
                 kl_budget: float, lower_bound: float, method: str,
                 recovery: bool) -> EStepResult | np.ndarray: ...


class PolicyLoss(Protocol):
    """The normal-mode M-step loss (plug-in ``policy_loss``; default ``mstep.linear_mstep_loss``,
    or ``mstep.mstep_loss`` with ``Config.mstep = "tracking"``).

    Inputs, all (B,) float32 tensors over one minibatch: ``logp_new`` = log pi_theta(a|s)
    (carries the gradient), ``logp_old`` = log pi_old(a|s) of the rollout's policy,
    ``v_target`` = the E-step's target ratios v*; ``lower_clip`` is the ratio clip b of the
    M-step (scheduled, see ``Config.lower_clip``).

    Returns a scalar tensor to *minimise*, differentiable in ``logp_new``. Recovery mode keeps
    the library's recovery loss. The logged ``clip_frac`` counts the ratios outside the clip
    range of ``Config.mstep``'s loss.

    Example (plain L2 tracking, no clip)::

        def my_loss(logp_new, logp_old, v_target, *, lower_clip):
            ratio = (logp_new - logp_old).exp()
            return 0.5 * ((v_target - ratio) ** 2).mean()
    """

    def __call__(self, logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor,
                 *, lower_clip: float) -> torch.Tensor: ...


def check_advantages(out: Any, like: torch.Tensor) -> DualGAE:
    """A plug-in's dual GAE as float32 tensors shaped like the rewards, or a PluginError."""
    if isinstance(out, tuple | list) and len(out) == 4:
        out = DualGAE(*out)
    if not isinstance(out, DualGAE):
        raise PluginError(f"advantages plug-in returned {type(out).__name__}: expected a "
                          "gae.DualGAE(adv_r, adv_c, ret_r, ret_c) (or a 4-tuple in that order)")
    fields = {}
    for name in ("adv_r", "adv_c", "ret_r", "ret_c"):
        x = getattr(out, name)
        try:
            t = torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x))
        except (TypeError, ValueError, RuntimeError):
            raise PluginError(f"advantages plug-in: {name} is a {type(x).__name__}, expected an "
                              f"array of shape {tuple(like.shape)}") from None
        if tuple(t.shape) != tuple(like.shape):
            raise PluginError(f"advantages plug-in: {name} has shape {tuple(t.shape)}, expected "
                              f"{tuple(like.shape)} (T steps, num_envs), like the rewards")
        if not torch.isfinite(t.double()).all():
            raise PluginError(f"advantages plug-in: {name} contains NaN or inf")
        fields[name] = t.to(dtype=like.dtype, device=like.device)
    return DualGAE(**fields)


def _check_v_shape(v: np.ndarray, n: int) -> None:
    if v.shape != (n,):
        raise PluginError(f"estep plug-in: v has shape {v.shape}, expected ({n},): one target "
                          "ratio per sample of the batch")


def check_estep(out: Any, adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
                lower_bound: float, recovery: bool) -> EStepResult:
    """A plug-in's E-step answer as an EStepResult (a bare v (N,) is wrapped), or a PluginError."""
    n = adv_r.shape[0]
    if not isinstance(out, EStepResult):
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        if not isinstance(out, np.ndarray | list):
            raise PluginError(f"estep plug-in returned {type(out).__name__}: expected an "
                              f"estep.EStepResult or the target ratios v as an array of shape ({n},)")
        try:
            v = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise PluginError("estep plug-in returned a list that is not numbers: expected the "
                              f"target ratios v as an array of shape ({n},)") from None
        _check_v_shape(v, n)
        out = estep_result(v, adv_r, adv_c, cost_margin=cost_margin,
                           mode="recovery" if recovery else "normal")
    v = np.asarray(out.v)
    _check_v_shape(v, n)
    if not np.all(np.isfinite(v)):
        raise PluginError("estep plug-in: v contains NaN or inf")
    if v.min() < lower_bound - 1e-6:
        raise PluginError(f"estep plug-in: v has entries below lower_bound={lower_bound:g} "
                          f"(min {v.min():.4g}); clip them (Algorithm 1)")
    if out.mode not in ("normal", "recovery"):
        raise PluginError(f"estep plug-in: mode must be 'normal' or 'recovery', got {out.mode!r}")
    return out


def check_loss(loss: Any) -> torch.Tensor:
    """A plug-in's M-step loss if it is a differentiable scalar tensor, else a PluginError."""
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) \
            else type(loss).__name__
        raise PluginError(f"policy_loss plug-in returned {what}: expected a scalar torch tensor "
                          "(take the mean over the minibatch)")
    if not loss.requires_grad:
        raise PluginError("policy_loss plug-in returned a tensor without gradient: build it from "
                          "logp_new with torch operations (no .item(), .detach() or numpy)")
    return loss


def check_plugins(plugins: dict[str, Any], uses_estep: bool | None = None) -> None:
    """Raise unless each plug-in named in ``plugins`` is one of :data:`PLUGINS`, is a function
    (or None) and, where ``uses_estep`` is known, is used by the run's update (PPO-Lag's update,
    ``uses_estep`` False, has no E-step and no CPPO M-step)."""
    unknown = set(plugins) - set(PLUGINS)
    if unknown:
        raise TypeError(f"unknown plug-in {sorted(unknown)[0]!r}: the plug-ins are {', '.join(PLUGINS)}")
    for name, fn in plugins.items():
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
    unused = [name for name in ("estep", "policy_loss") if plugins.get(name) is not None]
    if unused and uses_estep is False:
        raise ValueError(f"algo 'ppo-lag' has no E-step or CPPO M-step: {', '.join(unused)} "
                         "would be ignored (use algo 'cppo' or 'dyna-cppo')")
