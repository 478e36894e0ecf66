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
