"""The training batch of one iteration, shared by the trainer and the Dyna half.

Its own module so that :mod:`~dynacppo_lite.imagine` (which builds imagined batches) and
:mod:`~dynacppo_lite.train` (which trains on them) both import it and neither imports the other
backwards: ``train`` imports ``imagine``, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """The flat training batch of one iteration: real samples, then any imagined ones. (N, ...)."""

    obs: torch.Tensor
    act: torch.Tensor
    logp: torch.Tensor
    adv_r: torch.Tensor
    adv_c: torch.Tensor
    ret_r: torch.Tensor
    ret_c: torch.Tensor
    critic_mask: torch.Tensor
    """True where the sample also trains the critics."""

    def cat(self, other: Batch) -> Batch:
        return Batch(**{k: torch.cat([getattr(self, k), getattr(other, k)]) for k in self.__dict__})


def first_order_change(ratio: torch.Tensor, batch: Batch) -> tuple[float, float]:
    """``(mean((r - 1) A), mean((r - 1) A_c))`` for ratios r (N,) on the batch's samples: the
    first-order change of reward and cost per step that moving the policy to r buys, in the
    units of the E-step's ``estep_cost_change`` (mean((v - 1) A_c))."""
    return float(((ratio - 1) * batch.adv_r).mean()), float(((ratio - 1) * batch.adv_c).mean())
