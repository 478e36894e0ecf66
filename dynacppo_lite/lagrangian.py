"""PPO-Lagrangian, the comparison baseline: PPO's clipped surrogate on A_r - lambda A_c."""

from __future__ import annotations

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
