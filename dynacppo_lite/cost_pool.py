"""The cost direction from more samples than one batch: cost advantages pooled over the last few
real batches, reweighted to the current policy (issue 26, item 2).

On a goal-reaching policy one 4,000-step batch holds a few hazard entries, and the first-order
cost change it promises does not appear on fresh episodes (docs/results.md, ``bench
recovery``). :class:`CostPool` keeps the (obs, act, log mu(a|s), A_c) of the last
``Config.cost_pool - 1`` real batches, collected by earlier policies mu, and lends them to the
update as **cost-only samples**: reward advantage 0, cost advantage

    A_c' = w A_c,   w = min(exp(log pi(a|s) - log mu(a|s)), w_max)          (truncated IS)

and ``logp`` the current policy's own log-probability, so their ratio starts at 1 like the real
batch's. The E-step and the M-step then see the reward direction of this batch and the cost
direction of ``cost_pool`` batches: the two directions from batches of different sizes. The
weight makes sum(w (r - 1) A_c) / n an estimate of the first-order cost change under the
current policy (Precup et al. 2000); the cap w_max (Retrace's and V-trace's c-bar, 1 by default)
trades that estimate's bias for its variance. A_c is kept as estimated when its batch was
collected (the cost critic and the observation normaliser of that iteration), which the cap and
a short pool (KL ~0.02 per iteration) keep close. Pooled samples never train the critics.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import torch

from dynacppo_lite.batch import Batch


def truncated_weights(logp_now: torch.Tensor, logp_behaviour: torch.Tensor,
                      cap: float) -> torch.Tensor:
    """w = min(pi(a|s) / mu(a|s), cap), (N,) from log-probabilities (N,) under the current
    policy pi and the policy mu that collected the samples."""
    if cap <= 0:
        raise ValueError(f"the importance-weight cap must be > 0, got {cap}")
    return (logp_now - logp_behaviour).exp().clamp(max=cap)


class CostPool:
    """The last ``size`` real batches' (obs, act, logp at collection, adv_c), oldest first."""

    KEYS = ("obs", "act", "logp", "adv_c")

    def __init__(self, size: int, cap: float = 1.0) -> None:
        if size < 0:
            raise ValueError(f"the cost pool must hold >= 0 batches, got {size}")
        self.cap = cap
        self.batches: deque[dict[str, torch.Tensor]] = deque(maxlen=size)

    def push(self, batch: Batch) -> None:
        """Keep ``batch``'s real samples (``critic_mask``; imagined ones are not kept)."""
        if self.batches.maxlen == 0:  # the default pool of none: copy nothing
            return
        real = batch.critic_mask
        self.batches.append({k: getattr(batch, k)[real].detach() for k in self.KEYS})

    def cost_batch(self, log_prob: Any) -> Batch | None:
        """The pooled samples as a cost-only :class:`Batch` for the current policy, whose
        log-probability of (obs, act) is ``log_prob(obs, act)`` (N,); ``None`` when empty."""
        if not self.batches:
            return None
        obs, act, logp_mu, adv_c = (torch.cat([b[k] for b in self.batches]) for k in self.KEYS)
        with torch.no_grad():
            logp = log_prob(obs, act)
        zeros = torch.zeros_like(adv_c)
        return Batch(obs=obs, act=act, logp=logp, adv_r=zeros,
                     adv_c=truncated_weights(logp, logp_mu, self.cap) * adv_c,
                     ret_r=zeros, ret_c=zeros, critic_mask=torch.zeros_like(adv_c, dtype=torch.bool))

    def state_dict(self) -> dict[str, Any]:
        return {"batches": [dict(b) for b in self.batches]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.batches.clear()
        for b in state["batches"]:
            self.batches.append(dict(b))
