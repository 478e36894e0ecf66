"""M-step of CPPO: fit the policy ratio r = pi_theta / pi_old to the E-step's target v
(paper section 3.4, appendix C.2-C.3).

The L2 tracking objective E[(v - r)^2] is minimised with (v - r) treated as a stop-gradient
"advantage" and a PPO-like lower clip b on the ratio (Theorem 3.7 keeps the forward KL small):

    loss = - mean( min( D * r,  D * clamp(r, min=b) ) ),   D = (v - r).detach()

Where r >= b the two terms agree and d loss / d r = -D / B: the gradient of
0.5 * mean((v - r)^2). Where r < b and v < r (D < 0) the second term is the smaller and
constant, so the loss stops pushing r further down; where r < b and v > r it still pulls r up.

Where the package departs from the paper: the tracking loss is a regression onto per-sample
targets that a Gaussian policy over shared features can follow only in small part (the slope
of r - 1 on v - 1, the CSV's ``reach``, is about a tenth), so the policy moves a fraction of
the E-step's step and CPPO learned more slowly than PPO without a constraint (docs/results.md,
"The M-step"). ``Config.mstep = "linear"`` (the
default) instead takes the E-step's target as a *direction*: the linear surrogate

    loss = - mean( min( (v - 1) * r,  (v - 1) * clamp(r, 1 - eps, 1 + eps) ) )

is PPO's clipped objective with the advantage replaced by v - 1 (the E-step's choice of where
in the (A, A_c) plane to go, with its trust region and its bound already applied) and the clip
eps = 1 - b. It keeps pushing along v - 1 until the clip or the KL early stop, as PPO does
along A, so the realised step is set by ``target_kl`` rather than by how well per-sample
targets can be fitted. The tracking loss stays available (``mstep = "tracking"``) as the
paper's M-step, taught in notebook 04.

All tensors are (B,) over the minibatch; the loss is a scalar.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal, kl_divergence


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
    return _clipped_loss(ratio, _recovery_direction(v_target - ratio, adv_c, beta), lower_clip)


def linear_mstep_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor, *,
                      lower_clip: float) -> torch.Tensor:
    """The linear surrogate above: PPO's clipped loss with advantage v - 1 and clip range
    [b, 2 - b], b = ``lower_clip``. Its gradient in r_i is -(v_i - 1) / B inside the clip and 0
    outside it on the side that v_i asks for (a sample already moved far enough stops pulling)."""
    ratio = _ratio(logp_new, logp_old, v_target, lower_clip=lower_clip)
    return _two_sided_loss(ratio, v_target - 1.0, lower_clip)


def linear_recovery_mstep_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor,
                               adv_c: torch.Tensor, *, lower_clip: float, beta: float) -> torch.Tensor:
    """The recovery M-step for ``mstep = "linear"``: the linear surrogate along
    D = beta (v - 1) + (1 - beta) P_c (v - 1), P_c the projection onto the line of A_c over the
    minibatch, exactly as ``recovery_mstep_loss`` mixes the tracking residual v - r."""
    ratio = _ratio(logp_new, logp_old, v_target, lower_clip=lower_clip)
    direction = _recovery_direction(v_target - 1.0, adv_c, beta)
    return _two_sided_loss(ratio, direction, lower_clip)


def decoupled_likelihood_loss(dist_new: Normal, dist_old: Normal, act: torch.Tensor,
                              v_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The likelihood M-step with separate trust regions for the mean and the spread (MPO,
    Abdolmaleki et al. 2018, eq. 11; V-MPO): a fit of the policy to the E-step's reweighted batch,

        loss = - mean( v * (log N(a; mu_new, std_old) + log N(a; mu_old, std_new)) ),

    returned with the two KLs that bound it, KL(pi_old || pi with the new mean) and
    KL(pi_old || pi with the new std), each (per sample, summed over action dims) averaged over
    the minibatch. The caller keeps each KL under its own bound (MPO: Lagrange multipliers);
    without the split the unweighted part of the likelihood shrinks the std toward the batch's
    own actions and spends the whole KL budget on it. ``act`` (B, act_dim); ``v_target`` (B,).
    """
    old_mean, old_std = dist_old.mean.detach(), dist_old.stddev.detach()
    logp_mean = Normal(dist_new.mean, old_std).log_prob(act).sum(-1)
    logp_std = Normal(old_mean, dist_new.stddev).log_prob(act).sum(-1)
    loss = -(v_target.detach() * (logp_mean + logp_std)).mean()
    kl_mean = kl_divergence(Normal(old_mean, old_std), Normal(dist_new.mean, old_std)).sum(-1).mean()
    kl_std = kl_divergence(Normal(old_mean, old_std), Normal(old_mean, dist_new.stddev)).sum(-1).mean()
    return loss, kl_mean, kl_std


def mstep_diagnostics(logp_new: torch.Tensor, logp_old: torch.Tensor, *,
                      lower_clip: float, upper_clip: float = math.inf) -> dict[str, float]:
    """Floats for the log: ``approx_kl`` = mean((r - 1) - log r) (an unbiased, non-negative
    estimator of KL(pi_old || pi_theta)), ``clip_frac`` = fraction of r outside the loss's clip
    range [lower_clip, upper_clip] (:func:`clip_range`), ``ratio_mean`` = mean(r)."""
    with torch.no_grad():
        log_ratio = logp_new - logp_old
        ratio = log_ratio.exp()
        outside = (ratio < lower_clip) | (ratio > upper_clip)
        return {"approx_kl": float(((ratio - 1.0) - log_ratio).mean()),
                "clip_frac": float(outside.to(ratio.dtype).mean()),
                "ratio_mean": float(ratio.mean())}


def clip_range(mstep: str, lower_clip: float) -> tuple[float, float]:
    """The ratio range [lo, hi] outside which the M-step loss ``mstep`` stops pulling: the
    tracking losses clip below only, [b, inf); the linear surrogates on both sides, [b, 2 - b]."""
    return (lower_clip, math.inf) if mstep == "tracking" else (lower_clip, 2.0 - lower_clip)


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


def choose_target(ratio: torch.Tensor, budgets: list[float]) -> int:
    """Section 3.4's multiple targets: which of the E-step's targets, solved for the increasing
    trust-region budgets ``budgets`` (delta'_1 < ... < delta'_K), the M-step should fit next.

    The step already taken is measured in the E-step's own units, 0.5 mean((r - 1)^2) (its trust
    region is mean((v - 1)^2) <= 2 delta'); the answer is the first target whose budget is
    larger than that, or the last. ``ratio``: (N,) over the whole batch.
    """
    moved = 0.5 * float(((ratio.detach().double() - 1.0) ** 2).mean())
    return next((k for k, budget in enumerate(budgets) if moved < budget), len(budgets) - 1)


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


def _recovery_direction(step: torch.Tensor, adv_c: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * step + (1 - beta) * (projection of step onto the line of adv_c), detached; step
    has the shape of logp_new."""
    if adv_c.shape != step.shape:
        raise ValueError(f"adv_c must have the shape {tuple(step.shape)} of logp_new, "
                         f"got {tuple(adv_c.shape)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    with torch.no_grad():
        step = step.detach()
        cc = adv_c @ adv_c
        proj = (step @ adv_c) / cc * adv_c if cc > 0 else torch.zeros_like(step)
        return beta * step + (1.0 - beta) * proj


def _two_sided_loss(ratio: torch.Tensor, direction: torch.Tensor, lower_clip: float) -> torch.Tensor:
    """-mean(min(D r, D clamp(r, b, 2 - b))) for a detached direction D (PPO's clip, eps = 1 - b)."""
    direction = direction.detach()
    clipped = ratio.clamp(lower_clip, 2.0 - lower_clip)
    return -torch.min(direction * ratio, direction * clipped).mean()


def _clipped_loss(ratio: torch.Tensor, direction: torch.Tensor, lower_clip: float) -> torch.Tensor:
    """-mean(min(D r, D clamp(r, min=b))) for a detached direction D."""
    return -torch.min(direction * ratio, direction * ratio.clamp(min=lower_clip)).mean()
