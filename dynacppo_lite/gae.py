"""Dual GAE: generalised advantage estimation for rewards and for costs (paper section 3.1).

For one stream (rewards with V_r, or costs with V_c), at step t of a rollout of length T:

    delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done_t = terminated_t or truncated_t
    A_T     = 0                                                (the rollout's end bootstraps)
    return_t = A_t + V(s_t)

``V(s_{t+1})`` is the value of the *true* next state: at an episode end, the final observation
(not the first observation of the next episode). On ``terminated`` the next value is 0; on
``truncated`` (a time limit) it is kept, and only the recursion stops. Treating truncation as
termination biases the advantages of every step before a time limit: the original code's bug.

Arrays have shape (T,) or (T, num_envs); time is the first axis. Inputs are numpy arrays or
torch tensors; the outputs are of the kind, dtype (if floating) and device of ``rewards``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass(frozen=True, eq=False)
class DualGAE:
    """Raw (unnormalised) advantages and returns, each shaped like the rewards."""

    adv_r: np.ndarray | torch.Tensor
    adv_c: np.ndarray | torch.Tensor
    ret_r: np.ndarray | torch.Tensor
    ret_c: np.ndarray | torch.Tensor


def gae(rewards: Array, values: Array, next_values: Array, terminated: Array, truncated: Array,
        *, gamma: float, lam: float) -> Array:
    """GAE(gamma, lam) advantages A_t of one stream (module docstring); shape of ``rewards``.

    ``values`` is V(s_t), ``next_values`` V(s_{t+1}); ``terminated``/``truncated`` are
    boolean (or 0/1) flags of the transition t -> t+1. The returns are ``A + values``.
    """
    r, v, nv, term, trunc = _as_float_like(rewards, values, next_values, terminated, truncated)
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {x}")
    not_term = 1 - term
    deltas = r + gamma * not_term * nv - v
    decay = gamma * lam * not_term * (1 - trunc)  # gamma lam (1 - done)
    adv = deltas.clone() if isinstance(deltas, torch.Tensor) else deltas.copy()
    for t in range(len(adv) - 2, -1, -1):  # adv[T-1] = delta[T-1]: A_T = 0
        adv[t] = deltas[t] + decay[t] * adv[t + 1]
    return adv


def dual_gae(rewards: Array, costs: Array, values_r: Array, values_c: Array, next_values_r: Array,
             next_values_c: Array, terminated: Array, truncated: Array, *, gamma: float,
             lam: float, cost_gamma: float, cost_lam: float) -> DualGAE:
    """``gae`` on rewards (gamma, lam; paper 0.99, 0.97) and on costs (cost_gamma, cost_lam;
    paper 0.99, 0.95), with the same episode boundaries."""
    adv_r = gae(rewards, values_r, next_values_r, terminated, truncated, gamma=gamma, lam=lam)
    adv_c = gae(costs, values_c, next_values_c, terminated, truncated, gamma=cost_gamma,
                lam=cost_lam)
    val_r, val_c = _as_float_like(adv_r, values_r, values_c)[1:]
    return DualGAE(adv_r=adv_r, adv_c=adv_c, ret_r=adv_r + val_r, ret_c=adv_c + val_c)


def _as_float_like(first: Array, *rest: Array) -> list[Array]:
    """All arguments as arrays of ``first``'s kind, floating dtype and device, after checking that
    they share one shape (T,) or (T, num_envs) with T >= 1."""
    if isinstance(first, torch.Tensor):
        dtype = first.dtype if first.is_floating_point() else torch.get_default_dtype()
        out = [torch.as_tensor(x, device=first.device).to(dtype) for x in (first, *rest)]
    else:
        first = np.asarray(first)
        dtype = first.dtype if np.issubdtype(first.dtype, np.floating) else np.float64
        out = [np.asarray(x).astype(dtype, copy=False) for x in (first, *rest)]
    shape = tuple(out[0].shape)
    if len(shape) not in (1, 2) or shape[0] == 0:
        raise ValueError(f"GAE arrays must have shape (T,) or (T, num_envs) with T >= 1, "
                         f"got {shape}")
    bad = [tuple(x.shape) for x in out[1:] if tuple(x.shape) != shape]
    if bad:
        raise ValueError(f"GAE arrays must share the shape {shape} of the rewards (or costs), "
                         f"got {bad[0]}")
    return out
