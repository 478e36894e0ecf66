"""M-step of CPPO: fit the policy ratio r = pi_theta / pi_old to the E-step's target v
(paper section 3.4, appendix C.2-C.3).

The L2 tracking objective E[(v - r)^2] is minimised with (v - r) treated as a stop-gradient
"advantage" and a PPO-like lower clip b on the ratio (Theorem 3.7 keeps the forward KL small):

    loss = - mean( min( D * r,  D * clamp(r, min=b) ) ),   D = (v - r).detach()

Where r >= b the two terms agree and d loss / d r = -D / B: the gradient of
0.5 * mean((v - r)^2). Where r < b and v < r (D < 0) the second term is the smaller and
constant, so the loss stops pushing r further down; where r < b and v > r it still pulls r up.

All tensors are (B,) over the minibatch; the loss is a scalar.
"""

from __future__ import annotations

import torch


def mstep_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor, *,
               lower_clip: float) -> torch.Tensor:
    """The clipped L2 tracking loss above, with r = exp(logp_new - logp_old) and b = lower_clip
    (paper: 0.6; Table 2: 0.4)."""
    ratio = _ratio(logp_new, logp_old, v_target, lower_clip=lower_clip)
    return _clipped_loss(ratio, (v_target - ratio).detach(), lower_clip)


def recovery_mstep_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor,
                        adv_c: torch.Tensor, *, lower_clip: float, beta: float) -> torch.Tensor:
    """The recovery M-step (appendix C.2): the same clipped loss with the "advantage"

        D = beta * (v - r) + (1 - beta) * A'_c,   A'_c = ((v - r) . A_c / |A_c|^2) A_c,

    all detached, where A'_c is the orthogonal projection of the minibatch vector (v - r) onto
    the line of the cost advantage vector A_c (the same minibatch, as given: the projection does
    not depend on A_c's scale). It keeps the part of the step that moves along A_c (the cost
    descent of a recovery E-step) at full weight and shrinks the rest by beta (paper 0.3).
    beta = 1 is ``mstep_loss``; A_c = 0 leaves beta * (v - r).
    """
    ratio = _ratio(logp_new, logp_old, v_target, lower_clip=lower_clip)
    if adv_c.shape != ratio.shape:
        raise ValueError(f"adv_c must have the shape {tuple(ratio.shape)} of logp_new, "
                         f"got {tuple(adv_c.shape)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    with torch.no_grad():
        track = v_target - ratio
        cc = adv_c @ adv_c
        proj = (track @ adv_c) / cc * adv_c if cc > 0 else torch.zeros_like(track)
        direction = beta * track + (1.0 - beta) * proj
    return _clipped_loss(ratio, direction, lower_clip)


def mstep_diagnostics(logp_new: torch.Tensor, logp_old: torch.Tensor, *,
                      lower_clip: float) -> dict[str, float]:
    """Floats for the log: ``approx_kl`` = mean((r - 1) - log r) (an unbiased, non-negative
    estimator of KL(pi_old || pi_theta)), ``clip_frac`` = fraction of r < lower_clip,
    ``ratio_mean`` = mean(r)."""
    with torch.no_grad():
        log_ratio = logp_new - logp_old
        ratio = log_ratio.exp()
        return {"approx_kl": float(((ratio - 1.0) - log_ratio).mean()),
                "clip_frac": float((ratio < lower_clip).to(ratio.dtype).mean()),
                "ratio_mean": float(ratio.mean())}


def realised_fraction(ratio: torch.Tensor, v_target: torch.Tensor) -> tuple[float, float]:
    """How much of the E-step's step the M-step took: (slope, correlation) of r - 1 on v - 1.

    ``slope`` = cov(r, v) / var(v): 1 when the policy moved exactly to v, 0.1 when it moved a
    tenth of the way along it (the part of r that does not follow v is noise to this fit).
    Both are 0 for a constant v. Inputs (N,).
    """
    with torch.no_grad():
        x = v_target.double() - v_target.double().mean()
        y = ratio.double() - ratio.double().mean()
        xx, yy = float(x @ x), float(y @ y)
        if xx <= 0.0:
            return 0.0, 0.0
        xy = float(x @ y)
        return xy / xx, (xy / (xx * yy) ** 0.5 if yy > 0.0 else 0.0)


def _ratio(logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor, *,
           lower_clip: float) -> torch.Tensor:
    """r = exp(logp_new - logp_old), after checking shapes (B,) and the clip."""
    if logp_new.ndim != 1 or logp_new.shape != logp_old.shape or v_target.shape != logp_new.shape:
        raise ValueError(f"logp_new, logp_old and v_target must share one shape (B,), got "
                         f"{tuple(logp_new.shape)}, {tuple(logp_old.shape)}, "
                         f"{tuple(v_target.shape)}")
    if not 0.0 <= lower_clip < 1.0:
        raise ValueError(f"lower_clip must lie in [0, 1), got {lower_clip}")
    return (logp_new - logp_old.detach()).exp()


def _clipped_loss(ratio: torch.Tensor, direction: torch.Tensor, lower_clip: float) -> torch.Tensor:
    """-mean(min(D r, D clamp(r, min=b))) for a detached direction D."""
    return -torch.min(direction * ratio, direction * ratio.clamp(min=lower_clip)).mean()
