"""M-step losses: gradients against the L2 tracking objective, the recovery variant, diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacppo_lite.mstep import mstep_diagnostics, mstep_loss, recovery_mstep_loss

CLIP = 0.6


def batch(seed: int = 0, size: int = 400) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logp_new (requires grad), logp_old, v: ratios in [0.3, 2.2] across the clip, v in [0, 2]."""
    gen = torch.Generator().manual_seed(seed)
    logp_old = torch.randn(size, generator=gen, dtype=torch.float64)
    log_ratio = -1.2 + 2.0 * torch.rand(size, generator=gen, dtype=torch.float64)
    v = 2.0 * torch.rand(size, generator=gen, dtype=torch.float64)
    return (logp_old + log_ratio).requires_grad_(), logp_old, v


def unclipped_batch(seed: int) -> tuple[torch.Tensor, ...]:
    """logp_old = 0, logp_new near 0 (requires grad, no ratio near a clip), v ~ 1 + 0.3 N, A_c ~ N:
    300 samples each."""
    gen = torch.Generator().manual_seed(seed)
    logp_new = (0.1 * torch.randn(300, generator=gen, dtype=torch.float64)).requires_grad_()
    v = 1.0 + 0.3 * torch.randn(300, generator=gen, dtype=torch.float64)
    adv_c = torch.randn(300, generator=gen, dtype=torch.float64)
    return torch.zeros(300, dtype=torch.float64), logp_new, v, adv_c


def grad_of(loss_fn, logp_new: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss_fn(logp_new), logp_new)
    return grad


def test_gradient_is_l2_tracking_except_below_the_clip_when_v_is_lower() -> None:
    logp_new, logp_old, v = batch()
    got = grad_of(lambda lp: mstep_loss(lp, logp_old, v, lower_clip=CLIP), logp_new)
    l2 = grad_of(lambda lp: 0.5 * ((v - (lp - logp_old).exp()) ** 2).mean(), logp_new)
    r = (logp_new - logp_old).exp().detach()
    above, stop = r >= CLIP, (r < CLIP) & (v < r)
    pull_up = (r < CLIP) & (v > r)
    assert above.sum() > 50 and stop.sum() > 5 and pull_up.sum() > 5
    torch.testing.assert_close(got[above], l2[above], rtol=1e-12, atol=1e-15)
    assert torch.all(got[stop] == 0)
    torch.testing.assert_close(got[pull_up], l2[pull_up], rtol=1e-12, atol=1e-15)


def test_loss_value_and_no_gradient_to_logp_old() -> None:
    logp_new, logp_old, v = batch(1)
    logp_old = logp_old.clone().requires_grad_()
    loss = mstep_loss(logp_new, logp_old, v, lower_clip=CLIP)
    r = np.exp(logp_new.detach().numpy() - logp_old.detach().numpy())
    d = v.numpy() - r
    want = -np.mean(np.minimum(d * r, d * np.maximum(r, CLIP)))
    assert loss.ndim == 0 and loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    assert logp_old.grad is None or torch.all(logp_old.grad == 0)


def test_recovery_at_beta_one_is_the_plain_loss() -> None:
    logp_new, logp_old, v = batch(2)
    adv_c = torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    plain = grad_of(lambda lp: mstep_loss(lp, logp_old, v, lower_clip=CLIP), logp_new)
    rec = grad_of(lambda lp: recovery_mstep_loss(lp, logp_old, v, adv_c, lower_clip=CLIP,
                                                 beta=1.0), logp_new)
    torch.testing.assert_close(rec, plain, rtol=0, atol=0)
    with torch.no_grad():
        rec_loss = recovery_mstep_loss(logp_new, logp_old, v, adv_c, lower_clip=CLIP, beta=1.0)
        assert rec_loss == mstep_loss(logp_new, logp_old, v, lower_clip=CLIP)


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_recovery_direction_mixes_in_the_projection_on_adv_c(beta: float) -> None:
    """Without clipping (r >= b everywhere) d loss / d logp_i = -D_i r_i / B; recover D and
    check D = beta (v - r) + (1 - beta) P (v - r), P the projection on the line of A_c."""
    logp_old, logp_new, v, adv_c = unclipped_batch(3)
    grad = grad_of(lambda lp: recovery_mstep_loss(lp, logp_old, v, adv_c, lower_clip=0.4,
                                                  beta=beta), logp_new)
    r = logp_new.detach().exp()
    direction = (-grad * 300 / r).numpy()
    track, c = (v - r).numpy(), adv_c.numpy()
    along = (track @ c) / (c @ c) * c
    np.testing.assert_allclose(direction, beta * track + (1 - beta) * along, atol=1e-12)
    if beta == 0.0:  # the pure projection: parallel to A_c, and what it drops is orthogonal
        assert abs(np.corrcoef(direction, c)[0, 1]) == pytest.approx(1.0)
        assert (track - direction) @ c == pytest.approx(0.0, abs=1e-9)


def test_recovery_with_zero_cost_advantages_is_finite() -> None:
    logp_new, logp_old, v = batch(4)
    loss = recovery_mstep_loss(logp_new, logp_old, v, torch.zeros_like(v), lower_clip=CLIP,
                               beta=0.3)
    assert torch.isfinite(loss)
    plain = mstep_loss(logp_new, logp_old, v, lower_clip=CLIP)
    assert loss.item() == pytest.approx(0.3 * plain.item(), rel=1e-12)


def test_diagnostics_match_direct_formulas() -> None:
    logp_new, logp_old, _ = batch(5)
    got = mstep_diagnostics(logp_new, logp_old, lower_clip=CLIP)
    log_r = logp_new.detach().numpy() - logp_old.numpy()
    r = np.exp(log_r)
    assert set(got) == {"approx_kl", "clip_frac", "ratio_mean"}
    assert all(isinstance(x, float) for x in got.values())
    assert got["approx_kl"] == pytest.approx(np.mean(r - 1 - log_r), rel=1e-12)
    assert got["clip_frac"] == pytest.approx(np.mean(r < CLIP), rel=1e-12)
    assert got["ratio_mean"] == pytest.approx(np.mean(r), rel=1e-12)
    assert got["approx_kl"] > 0


def test_diagnostics_at_identity_ratio() -> None:
    logp = torch.randn(50)
    got = mstep_diagnostics(logp, logp.clone(), lower_clip=CLIP)
    assert got == {"approx_kl": 0.0, "clip_frac": 0.0, "ratio_mean": 1.0}


@pytest.mark.parametrize(("shapes", "kw", "match"), [
    (((5,), (4,), (5,)), {}, "shape"),
    (((5,), (5,), (5, 1)), {}, "shape"),
    (((5, 2), (5, 2), (5, 2)), {}, "shape"),
    (((5,), (5,), (5,)), {"lower_clip": 1.0}, "lower_clip"),
])
def test_bad_inputs_raise(shapes, kw: dict, match: str) -> None:
    a, b, c = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        mstep_loss(a, b, c, **{"lower_clip": CLIP, **kw})


@pytest.mark.parametrize(("adv_c", "beta", "match"), [
    (torch.zeros(4), 0.3, "adv_c"),
    (torch.zeros(5), 1.5, "beta"),
])
def test_bad_recovery_inputs_raise(adv_c: torch.Tensor, beta: float, match: str) -> None:
    z = torch.zeros(5)
    with pytest.raises(ValueError, match=match):
        recovery_mstep_loss(z, z, z, adv_c, lower_clip=CLIP, beta=beta)


def test_linear_surrogate_is_ppo_on_v_minus_one() -> None:
    """The linear M-step equals PPO's clipped loss with advantage v - 1 and eps = 1 - b, and its
    gradient in r is -(v - 1) / B inside the clip, 0 outside on the side that v asks for."""
    from dynacppo_lite.lagrangian import ppo_clip_loss
    from dynacppo_lite.mstep import linear_mstep_loss

    logp_new, logp_old, v = batch(6)
    got = linear_mstep_loss(logp_new, logp_old, v, lower_clip=CLIP)
    assert got.item() == pytest.approx(ppo_clip_loss(logp_new, logp_old, v - 1, 1 - CLIP).item(),
                                       rel=1e-12)
    grad = grad_of(lambda lp: linear_mstep_loss(lp, logp_old, v, lower_clip=CLIP), logp_new)
    r = (logp_new - logp_old).exp().detach()
    inside = (r > CLIP) & (r < 2 - CLIP)
    done = ((r >= 2 - CLIP) & (v > 1)) | ((r <= CLIP) & (v < 1))
    assert inside.sum() > 50 and done.sum() > 20
    want = -(v - 1) * r / len(v)  # d/d logp = d/d r * r
    torch.testing.assert_close(grad[inside], want[inside], rtol=1e-12, atol=1e-15)
    assert torch.all(grad[done] == 0)


def test_linear_recovery_mixes_v_minus_one_with_its_projection_on_adv_c() -> None:
    from dynacppo_lite.mstep import linear_mstep_loss, linear_recovery_mstep_loss

    logp_old, logp_new, v, adv_c = unclipped_batch(7)
    grad = grad_of(lambda lp: linear_recovery_mstep_loss(lp, logp_old, v, adv_c, lower_clip=0.4,
                                                         beta=0.3), logp_new)
    direction = (-grad * 300 / logp_new.detach().exp()).numpy()
    x, c = (v - 1).numpy(), adv_c.numpy()
    np.testing.assert_allclose(direction, 0.3 * x + 0.7 * (x @ c) / (c @ c) * c, atol=1e-12)
    with torch.no_grad():
        assert linear_recovery_mstep_loss(logp_new, logp_old, v, adv_c, lower_clip=0.4, beta=1.0) \
            == linear_mstep_loss(logp_new, logp_old, v, lower_clip=0.4)


def test_linear_surrogate_moves_the_policy_further_along_v_than_tracking() -> None:
    """The reason it is the default: a policy over shared features fitted to per-sample targets
    follows them only in part with the tracking loss; the linear surrogate keeps going along
    v - 1 (here, a linear-Gaussian policy on random features, 40 Adam steps each)."""
    from dynacppo_lite.mstep import linear_mstep_loss, realised_fraction

    gen = torch.Generator().manual_seed(8)
    feats, act = torch.randn(2000, 8, generator=gen), torch.randn(2000, 2, generator=gen)
    v = (1 + 0.5 * torch.randn(2000, generator=gen)).clamp(min=0.4)

    def fit(loss_fn) -> float:
        torch.manual_seed(0)
        mu = torch.nn.Linear(8, 2)
        torch.nn.init.zeros_(mu.weight), torch.nn.init.zeros_(mu.bias)
        logp_old = torch.distributions.Normal(mu(feats), 1.0).log_prob(act).sum(-1).detach()
        opt = torch.optim.Adam(mu.parameters(), lr=1e-2)
        for _ in range(40):
            logp = torch.distributions.Normal(mu(feats), 1.0).log_prob(act).sum(-1)
            opt.zero_grad()
            loss_fn(logp, logp_old, v, lower_clip=0.6).backward()
            opt.step()
        ratio = (torch.distributions.Normal(mu(feats), 1.0).log_prob(act).sum(-1) - logp_old).exp()
        return realised_fraction(ratio.detach(), v)[0]

    tracking, linear = fit(mstep_loss), fit(linear_mstep_loss)
    assert 0 < tracking < linear


def test_decoupled_likelihood_kls_split_the_change_of_mean_and_std() -> None:
    from torch.distributions import Normal, kl_divergence

    from dynacppo_lite.mstep import decoupled_likelihood_loss

    gen = torch.Generator().manual_seed(9)
    mean_old, act = torch.randn(50, 2, generator=gen), torch.randn(50, 2, generator=gen)
    old = Normal(mean_old, torch.full((50, 2), 0.6))
    moved_mean = Normal(mean_old + 0.1, torch.full((50, 2), 0.6))
    _, kl_mean, kl_std = decoupled_likelihood_loss(moved_mean, old, act, torch.ones(50))
    assert kl_std.item() == pytest.approx(0.0, abs=1e-12)
    assert kl_mean.item() == pytest.approx(kl_divergence(old, moved_mean).sum(-1).mean().item())
    wider = Normal(mean_old, torch.full((50, 2), 0.7))
    loss, kl_mean, kl_std = decoupled_likelihood_loss(wider, old, act, torch.ones(50))
    assert kl_mean.item() == pytest.approx(0.0, abs=1e-12) and kl_std.item() > 0
    want = -(old.log_prob(act).sum(-1) + wider.log_prob(act).sum(-1)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_choose_target_picks_the_first_budget_not_yet_used() -> None:
    from dynacppo_lite.mstep import choose_target

    budgets = [0.01, 0.02, 0.03]
    # 0.5 mean((r - 1)^2) with r - 1 = +-d: d^2 / 2
    for d, want in ((0.0, 0), (0.1, 0), (0.15, 1), (0.2, 2), (0.3, 2)):
        ratio = torch.tensor([1 + d, 1 - d] * 50)
        assert choose_target(ratio, budgets) == want, d
