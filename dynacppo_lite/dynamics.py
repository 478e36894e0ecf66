"""Dyna-CPPO's learned model: a probabilistic ensemble and a batched model environment.

The model (MBPO, Janner et al. 2019; PETS, Chua et al. 2018). Each of E members is an MLP

    x = (s, a)  ->  N( mu_e(x), diag(exp(logvar_e(x))) )   over   y = (s' - s, r, c),

so a member predicts a Gaussian over the state change, the reward and the cost. Inputs and
targets are normalised with the train split's mean/std (buffers ``in_mean``/``in_std``,
``out_mean``/``out_std``); the networks only ever see normalised x and y. Training minimises, per
member and averaged over the minibatch and the D = obs_dim + 2 target dimensions, the Gaussian
negative log-likelihood in nats

    nll_e = mean( 0.5 * (log(2 pi) + logvar_e + (y - mu_e)^2 / exp(logvar_e)) ),

plus 0.01 * sum(max_logvar_e - min_logvar_e), which tightens the learnable soft bounds
(MBPO/PETS):

    logvar = max_logvar - softplus(max_logvar - raw);  logvar = min_logvar + softplus(logvar - min_logvar).

All members run in one batched pass: layer weights are (E, in, out) tensors applied with
``torch.baddbmm``, so a (E, B, in) input gives (E, B, out) outputs. The total loss is the *sum*
over members, hence each member receives exactly the gradient it would get if trained alone
(Adam and weight decay act element-wise, so the updates match too; a test checks this).

Uncertainty in ``ModelEnv``: the members' spread (epistemic) drives both the pessimistic cost and
the truncation of imagined branches; each member's own variance (aleatoric) is what a sampled
next state draws from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ArrayLike = np.ndarray | torch.Tensor

# Patience counts only epochs where some member improves its held-out loss by > 1 % (MBPO).
_MIN_REL_IMPROVEMENT = 0.01
# MBPO's weight on the log-variance bound penalty.
_LOGVAR_BOUND_COEF = 0.01
# Normaliser std floor: a constant dimension (e.g. a cost that was always 0) keeps std 1.
_STD_FLOOR = 1e-6


def _as_tensor(a: ArrayLike, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32, device=device)


@dataclass
class FitResult:
    """What ``DynamicsEnsemble.fit`` reports.

    train_loss:      Gaussian NLL per target dimension (nats, normalised units), averaged over
                     the minibatches of the last epoch and over members.
    holdout_loss:    held-out MSE of each member's mean in normalised units, averaged over members,
                     for the kept (best) weights. This is the early-stopping criterion (MBPO's
                     choice: unlike the NLL it cannot be gamed by an over-confident variance).
    holdout_nll:     held-out Gaussian NLL per target dimension of the kept weights.
    holdout_mse:     held-out ``one_step_loss``: MSE of the ensemble-mean prediction of
                     y = (s' - s, r, c) in original units.
    epochs:          epochs run (<= max_epochs).
    train_history / holdout_history: train_loss and holdout_loss after each epoch.
    The held-out fields are NaN (and early stopping is off) when holdout_frac == 0.
    """

    train_loss: float
    holdout_loss: float
    holdout_nll: float
    holdout_mse: float
    epochs: int
    n_train: int
    n_holdout: int
    train_history: list[float] = field(default_factory=list)
    holdout_history: list[float] = field(default_factory=list)


@dataclass
class OpenLoopErrors:
    """Errors of the ensemble-mean model run open loop along real trajectories, one entry per
    horizon h = 1..k (index h - 1); each field is a (k,) numpy array.

    From every real start s_t the model is fed the real actions a_t..a_{t+h-1}, its state
    propagated by the members' mean prediction: s^_{t+j+1} = s^_{t+j} + mean_e mu_e^{s'}(s^_{t+j},
    a_{t+j}), s^_t = s_t. Only windows that stay inside one episode and the data are scored, so
    the count shrinks with h; at h = 1 every transition is scored (the plain one-step error).

    obs:   sqrt(mean over starts and state dims of ((s^_{t+h} - s_{t+h}) / sigma)^2), sigma the
           model's ``out_std`` of the state change (the typical one-step change in its training
           data, the unit of ModelEnv's disagreement).
    rew:   RMSE over starts of sum_{j<h} r^_{t+j} - sum_{j<h} r_{t+j}: the error of an h-step
           branch's undiscounted return, in reward units (h = 1: per-step RMSE).
    cost:  the same for the cost (the members' mean cost, without the pessimism of ModelEnv).
    count: starts scored at each h (NaN errors where 0).
    """

    obs: np.ndarray
    rew: np.ndarray
    cost: np.ndarray
    count: np.ndarray


class DynamicsEnsemble(nn.Module):
    """E probabilistic MLPs (SiLU hidden layers) predicting y = (s' - s, r, c) from (s, a).

    Parameters are ``weights[i]`` (E, in_i, out_i), ``biases[i]`` (E, 1, out_i) and per-member
    ``max_logvar``/``min_logvar`` (E, 1, D) with D = obs_dim + 2; the last layer outputs 2 D
    numbers: the mean and the raw log-variance. ``weight_decay`` is an L2 penalty on the
    weights (not biases), MBPO-style. ``seed`` fixes the initial weights and, unless ``fit`` is
    given its own generator, the split, bootstrap and shuffling of every fit.

    ``out_dim`` other than obs_dim + 2 makes it a model of other targets y (D = out_dim) from
    (s, a), fitted with :meth:`fit_targets` (the coordinate model's motion,
    ``envs.coordinate_model``); :meth:`fit`, :meth:`open_loop_errors` and :class:`ModelEnv`
    are for y = (s' - s, r, c) only.
    """

    def __init__(self, obs_dim: int, act_dim: int, *, ensemble_size: int = 5,
                 hidden: tuple[int, ...] = (200, 200), lr: float = 1e-3,
                 weight_decay: float = 5e-5, min_logvar: float = -10.0,
                 max_logvar: float = 0.5, device: str | torch.device = "cpu",
                 seed: int | None = None, out_dim: int | None = None) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.ensemble_size = obs_dim, act_dim, ensemble_size
        self.in_dim = obs_dim + act_dim
        self.out_dim = obs_dim + 2 if out_dim is None else out_dim
        self._gen = torch.Generator()
        if seed is None:
            self._gen.seed()
        else:
            self._gen.manual_seed(seed)

        sizes = [self.in_dim, *hidden, 2 * self.out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            # MBPO's init: normal with std 1 / (2 sqrt(fan_in)), truncated at 2 std.
            std = 1.0 / (2.0 * math.sqrt(fan_in))
            w = torch.empty(ensemble_size, fan_in, fan_out)
            nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std, generator=self._gen)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(ensemble_size, 1, fan_out)))
        bound_shape = (ensemble_size, 1, self.out_dim)
        # Per-member bounds (MBPO shares them) keep the members' losses fully independent.
        self.max_logvar = nn.Parameter(torch.full(bound_shape, float(max_logvar)))
        self.min_logvar = nn.Parameter(torch.full(bound_shape, float(min_logvar)))

        self.register_buffer("in_mean", torch.zeros(self.in_dim))
        self.register_buffer("in_std", torch.ones(self.in_dim))
        self.register_buffer("out_mean", torch.zeros(self.out_dim))
        self.register_buffer("out_std", torch.ones(self.out_dim))
        self.register_buffer("fitted", torch.tensor(False))
        self.to(device)
        self.optimizer = torch.optim.Adam(
            [{"params": list(self.weights), "weight_decay": weight_decay},
             {"params": [*self.biases, self.max_logvar, self.min_logvar], "weight_decay": 0.0}],
            lr=lr)

    @property
    def device(self) -> torch.device:
        return self.in_mean.device

    # ----------------------------------------------------------------- tensors and normalisation
    def _tensor(self, a: ArrayLike) -> torch.Tensor:
        return _as_tensor(a, self.device)

    def _inputs(self, obs: ArrayLike, act: ArrayLike) -> torch.Tensor:
        """x = (s, a): (B, obs_dim + act_dim), original units."""
        return torch.cat([self._tensor(obs), self._tensor(act)], dim=-1)

    def _targets(self, obs: ArrayLike, rew: ArrayLike, cost: ArrayLike,
                 next_obs: ArrayLike) -> torch.Tensor:
        """y = (s' - s, r, c): (B, obs_dim + 2), original units."""
        obs, next_obs = self._tensor(obs), self._tensor(next_obs)
        return torch.cat([next_obs - obs, self._tensor(rew)[:, None], self._tensor(cost)[:, None]],
                         dim=-1)

    # --------------------------------------------------------------------------- network
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised x (E, B, in) - or (B, in), shared by all members - to the normalised
        mean and bounded log-variance of y, each (E, B, D)."""
        h = x.expand(self.ensemble_size, -1, -1) if x.dim() == 2 else x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)  # b + h @ w, member by member, in one kernel
            if i < last:
                h = F.silu(h)
        mean, raw_logvar = h.split(self.out_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    @staticmethod
    def _nll(mean: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL per target dimension, averaged over batch and dims: (E,)."""
        nll = 0.5 * (math.log(2 * math.pi) + logvar + (y - mean) ** 2 * torch.exp(-logvar))
        return nll.mean(dim=(1, 2))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One Adam step on normalised minibatches, one per member: x (E, B, in), y (E, B, D).

        Returns each member's NLL before the step, (E,), detached.
        """
        mean, logvar = self(x)
        nll = self._nll(mean, logvar, y)
        bound_penalty = _LOGVAR_BOUND_COEF * (self.max_logvar - self.min_logvar).sum(dim=(1, 2))
        # Sum, not mean, over members: a member's gradient is then independent of E.
        loss = (nll + bound_penalty).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return nll.detach()

    # ----------------------------------------------------------------------------- fitting
    @torch.no_grad()
    def _set_normaliser(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for (mean_buf, std_buf), data in (((self.in_mean, self.in_std), x),
                                          ((self.out_mean, self.out_std), y)):
            mean_buf.copy_(data.mean(0))
            std = data.std(0, correction=0)
            std_buf.copy_(torch.where(std < _STD_FLOOR, torch.ones_like(std), std))

    @torch.no_grad()
    def _holdout_losses(self, xn: torch.Tensor, yn: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-member normalised MSE and NLL on normalised held-out data: two (E,) tensors."""
        mean, logvar = self(xn)
        return ((mean - yn) ** 2).mean(dim=(1, 2)), self._nll(mean, logvar, yn)

    def fit(self, obs: ArrayLike, act: ArrayLike, rew: ArrayLike, cost: ArrayLike,
            next_obs: ArrayLike, **options: Any) -> FitResult:
        """Fit all members on N transitions: obs/next_obs (N, obs_dim), act (N, act_dim),
        rew/cost (N,), numpy or torch; the targets are y = (s' - s, r, c). ``options``: those
        of :meth:`fit_targets`."""
        if self.out_dim != self.obs_dim + 2:
            raise ValueError(f"this ensemble predicts {self.out_dim} targets, not (s' - s, r, c): "
                             "fit it with fit_targets")
        return self.fit_targets(obs, act, self._targets(obs, rew, cost, next_obs), **options)

    def fit_targets(self, obs: ArrayLike, act: ArrayLike, targets: ArrayLike, *,
                    holdout_frac: float = 0.2, max_epochs: int = 100, batch_size: int = 256,
                    patience: int = 5, bootstrap: bool = True, max_holdout: int = 5000,
                    generator: torch.Generator | None = None) -> FitResult:
        """Fit all members on N samples x = (obs (N, obs_dim), act (N, act_dim)) -> targets
        (N, out_dim), numpy or torch.

        A random ``holdout_frac`` of the data, at most ``max_holdout`` transitions (MBPO's cap:
        the held-out set is evaluated in one pass), is held out and shared by all members; the
        normalisers are recomputed from the rest, the train split. Each member trains on its own
        bootstrap resample of the train split (``bootstrap=False``: on the split itself), in
        its own shuffled order every epoch. After each epoch every member's held-out MSE is
        measured and its best weights so far are kept; training stops after ``patience`` epochs
        in which no member improved by more than 1 %, or after ``max_epochs``. The model is
        warm-started: calling fit again continues from the current weights and optimiser state.
        ``generator`` (CPU) drives split, bootstrap and shuffling; default: the seeded one.
        """
        x, y = self._inputs(obs, act), self._tensor(targets)
        if y.shape != (x.shape[0], self.out_dim):
            raise ValueError(f"targets have shape {tuple(y.shape)}, expected "
                             f"({x.shape[0]}, {self.out_dim})")
        n = x.shape[0]
        n_min = 2 if holdout_frac > 0 else 1  # one to train on, one to hold out
        if n < n_min:
            raise ValueError(f"fit needs at least {n_min} transitions, got {n}")
        n_hold = min(max(1, int(n * holdout_frac)), n - 1, max_holdout) if holdout_frac > 0 else 0
        gen = self._gen if generator is None else generator
        perm = torch.randperm(n, generator=gen).to(self.device)
        hold, train = perm[:n_hold], perm[n_hold:]
        self._set_normaliser(x[train], y[train])
        xn = (x - self.in_mean) / self.in_std
        yn = (y - self.out_mean) / self.out_std
        xn_tr, yn_tr, xn_ho, yn_ho = xn[train], yn[train], xn[hold], yn[hold]

        n_tr, E = len(train), self.ensemble_size
        idx = (torch.randint(n_tr, (E, n_tr), generator=gen) if bootstrap
               else torch.arange(n_tr).expand(E, -1))
        params = list(self.parameters())
        best_params = [p.detach().clone() for p in params]
        # Every fit keeps its best epoch (MBPO's snapshots): measured against the weights it
        # started from, a warm start on mostly familiar data was undone fit after fit and the
        # model froze (members updated per fit on HalfCheetah: 0 of 5, 25 fits in a row).
        best = torch.full((E,), math.inf, device=self.device) if n_hold else None
        stale, result = 0, FitResult(math.nan, math.nan, math.nan, math.nan, 0, n_tr, n_hold)
        for _ in range(max_epochs):
            # A fresh order per member and epoch: permute each row of idx independently.
            idx = idx.gather(1, torch.argsort(torch.rand(E, n_tr, generator=gen), dim=1))
            idx_dev = idx.to(self.device)
            nlls = [self.train_step(xn_tr[b], yn_tr[b])
                    for b in idx_dev.split(batch_size, dim=1)]
            result.epochs += 1
            result.train_history.append(torch.stack(nlls).mean().item())
            if best is None:
                continue
            mse = self._holdout_losses(xn_ho, yn_ho)[0]
            result.holdout_history.append(mse.mean().item())
            significant = mse < (1 - _MIN_REL_IMPROVEMENT) * best
            better = mse < best
            best = torch.where(better, mse, best)
            with torch.no_grad():
                for kept, p in zip(best_params, params, strict=True):
                    kept[better] = p[better]  # every parameter has the member axis first
            stale = 0 if significant.any() else stale + 1
            if stale >= patience:
                break

        with torch.no_grad():
            if best is not None:
                for kept, p in zip(best_params, params, strict=True):
                    p.copy_(kept)
            self.fitted.fill_(True)
        result.train_loss = result.train_history[-1] if result.train_history else math.nan
        if n_hold:
            mse, nll = self._holdout_losses(xn_ho, yn_ho)
            result.holdout_loss, result.holdout_nll = mse.mean().item(), nll.mean().item()
            result.holdout_mse = self._ensemble_mse(x[hold], y[hold])
        return result

    # --------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict(self, obs: ArrayLike, act: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member Gaussian over y = (s' - s, r, c) (or the ``out_dim`` targets) in
        original units.

        obs (B, obs_dim), act (B, act_dim) -> (mean, var), each (E, B, out_dim); the
        predicted next state of member e is ``obs + mean[e, :, :obs_dim]``.
        """
        if not self.fitted:
            raise RuntimeError("DynamicsEnsemble is not fitted: cannot predict before fit(); "
                               "call fit(obs, act, rew, cost, next_obs) first")
        mean, logvar = self((self._inputs(obs, act) - self.in_mean) / self.in_std)
        return mean * self.out_std + self.out_mean, torch.exp(logvar) * self.out_std ** 2

    @torch.no_grad()
    def one_step_loss(self, obs: ArrayLike, act: ArrayLike, rew: ArrayLike, cost: ArrayLike,
                      next_obs: ArrayLike) -> float:
        """MSE of the ensemble-mean prediction, original units:

            mean over the B samples and D = obs_dim + 2 entries of (mean_e mu_e(s, a) - y)^2,
            y = (s' - s, r, c).

        The predict-no-change baseline (s' = s, r = c = 0) scores ``mean(y ** 2)`` on the
        same scale.
        """
        return self._ensemble_mse(self._inputs(obs, act), self._targets(obs, rew, cost, next_obs))

    @torch.no_grad()
    def open_loop_errors(self, obs: ArrayLike, act: ArrayLike, rew: ArrayLike, cost: ArrayLike,
                         next_obs: ArrayLike, done: ArrayLike, horizon: int,
                         max_starts: int | None = None,
                         predict_no_change: bool = False) -> OpenLoopErrors:
        """:class:`OpenLoopErrors` at h = 1..``horizon`` on T steps of N parallel trajectories.

        obs/next_obs (T, N, obs_dim), act (T, N, act_dim), rew/cost/done (T, N), time first (a
        rollout's layout). ``next_obs[t]`` is the true successor of ``obs[t]`` (at an episode end,
        the final observation); ``done[t]`` marks that an episode ended with step t, so a window
        from t may use step t + j only if no episode ended at t..t+j-1, and never steps past T.
        ``max_starts``: windows longer than one step continue from at most this many evenly
        spaced starts (h = 1 still scores every transition): the cost drops from T N h to
        T N + max_starts (h - 1) predictions. ``predict_no_change``: score the baseline
        s^ = s, r^ = c^ = 0 instead of the model, on the same windows and in the same units (the
        fitted model's ``out_std``).
        """
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if self.out_dim != self.obs_dim + 2:
            raise ValueError("open_loop_errors runs an ensemble of (s' - s, r, c); this one "
                             f"predicts {self.out_dim} other targets")
        obs, act, next_obs = self._tensor(obs), self._tensor(act), self._tensor(next_obs)
        rew, cost = self._tensor(rew), self._tensor(cost)
        done = torch.as_tensor(done, device=self.device).bool()
        T, N = rew.shape
        d = self.obs_dim
        # Flat starts (t, n); a window that ends is dropped, so each step works on the live ones.
        t0 = torch.arange(T, device=self.device).repeat_interleave(N)
        n = torch.arange(N, device=self.device).repeat(T)
        s = obs[t0, n]
        zero = torch.zeros(T * N, device=self.device)
        pred_r, pred_c, real_r, real_c = zero, zero, zero, zero
        ended = torch.zeros(T * N, dtype=torch.bool, device=self.device)
        out = {key: np.full(horizon, np.nan) for key in ("obs", "rew", "cost")}
        count = np.zeros(horizon, dtype=np.int64)
        for j in range(horizon):
            # Past the data, or past an episode that ended at step t0 + j - 1: not this episode.
            keep = (t0 + j < T) & ~ended
            t0, n, s, pred_r, pred_c, real_r, real_c = (
                x[keep] for x in (t0, n, s, pred_r, pred_c, real_r, real_c))
            if len(t0) == 0:
                break
            t = t0 + j
            mean = (torch.zeros(len(t0), d + 2, device=self.device) if predict_no_change
                    else self.predict(s, act[t, n])[0].mean(0))
            s = s + mean[:, :d]
            pred_r, pred_c = pred_r + mean[:, d], pred_c + mean[:, d + 1]
            real_r, real_c = real_r + rew[t, n], real_c + cost[t, n]
            count[j] = len(t0)
            out["obs"][j] = (((s - next_obs[t, n]) / self.out_std[:d]) ** 2).mean().sqrt().item()
            out["rew"][j] = (pred_r - real_r).pow(2).mean().sqrt().item()
            out["cost"][j] = (pred_c - real_c).pow(2).mean().sqrt().item()
            ended = done[t, n]
            if j == 0 and max_starts is not None and len(t0) > max_starts:
                thin = torch.ones_like(ended)
                thin[torch.linspace(0, len(t0) - 1, max_starts, device=self.device).long()] = False
                ended = ended | thin
        return OpenLoopErrors(obs=out["obs"], rew=out["rew"], cost=out["cost"], count=count)

    def _ensemble_mse(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """``one_step_loss`` on raw x (B, in) and y (B, D)."""
        mean, _ = self.predict(x[:, :self.obs_dim], x[:, self.obs_dim:])
        return ((mean.mean(0) - y) ** 2).mean().item()


class ModelEnv:
    """A batched environment that steps with a fitted ``DynamicsEnsemble``.

    ``step`` returns the real envs' 6-tuple (next_obs, reward, cost, terminated, truncated,
    info) as tensors on the ensemble's device: (B, obs_dim) float32, (B,) float32, (B,) float32,
    (B,) bool, (B,) bool. With per-member predicted means mu_e and variances var_e of y:

    - next state and reward (MBPO's TS1): each sample picks a member e uniformly at random and
      draws y ~ N(mu_e, var_e) (``deterministic=True``: y = mu_e); s' = s + y[:obs_dim].
    - cost, pessimistic: c = max(0, mean_e mu_e^c + kappa * std_e mu_e^c) (population std over
      members), so kappa = 0 gives the ensemble-mean cost.
    - disagreement (info, (B,)): max over state dims of std_e(mu_e^{s'}) / out_std, i.e. the
      members' spread in units of the typical state change in the training data; a value of 1
      means the members disagree by a whole typical step.
    - truncated where disagreement > ``disagreement_threshold`` (the branch is cut; the caller
      bootstraps from V(next_obs)); terminated is all False unless ``terminal_fn(obs, act,
      next_obs) -> (B,) bool`` is given.
    - non-finite predictions: such samples are truncated, counted in info["n_nonfinite"], get
      next_obs = obs, reward = cost = cost_mean = cost_std = 0 and disagreement = +inf.

    The env does not auto-reset: all B samples keep stepping, and the caller ignores a branch
    after its first truncation or termination.
    """

    def __init__(self, ensemble: DynamicsEnsemble, *, kappa: float = 1.0,
                 disagreement_threshold: float = 1.0, deterministic: bool = False,
                 terminal_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                       torch.Tensor] | None = None,
                 generator: torch.Generator | None = None) -> None:
        if kappa < 0:
            raise ValueError(f"kappa must be >= 0 (a pessimistic cost), got {kappa}")
        if ensemble.out_dim != ensemble.obs_dim + 2:
            raise ValueError("ModelEnv steps an ensemble of (s' - s, r, c); this one predicts "
                             f"{ensemble.out_dim} other targets")
        self.ensemble, self.kappa = ensemble, kappa
        self.disagreement_threshold = disagreement_threshold
        self.deterministic, self.terminal_fn = deterministic, terminal_fn
        self.generator = generator  # on the ensemble's device; None: torch's global RNG
        self._obs: torch.Tensor | None = None

    def reset(self, start_obs: ArrayLike) -> tuple[torch.Tensor, dict]:
        """Start B branches at ``start_obs`` (B, obs_dim); returns (obs, {}) like gymnasium."""
        self._obs = _as_tensor(start_obs, self.ensemble.device).clone()
        return self._obs.clone(), {}

    @torch.no_grad()
    def step(self, actions: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor, torch.Tensor, dict]:
        """Advance every branch by one imagined step; ``actions`` is (B, act_dim)."""
        if self._obs is None:
            raise RuntimeError("ModelEnv: call reset(start_obs) before step(actions)")
        obs, d = self._obs, self.ensemble.obs_dim
        act = _as_tensor(actions, obs.device)
        mean, var = self.ensemble.predict(obs, act)  # (E, B, d + 2)
        n_members, batch = mean.shape[:2]
        rows = torch.arange(batch, device=obs.device)
        member = torch.randint(n_members, (batch,), generator=self.generator, device=obs.device)
        y = mean[member, rows]
        if not self.deterministic:
            noise = torch.randn(y.shape, generator=self.generator, device=obs.device)
            y = y + var[member, rows].sqrt() * noise
        next_obs, reward = obs + y[:, :d], y[:, d]

        member_cost = mean[..., d + 1]  # (E, B): epistemic spread only
        cost_mean, cost_std = member_cost.mean(0), member_cost.std(0, correction=0)
        cost = (cost_mean + self.kappa * cost_std).clamp(min=0.0)
        disagreement = (mean[..., :d].std(0, correction=0) / self.ensemble.out_std[:d]).amax(-1)

        finite = (torch.isfinite(next_obs).all(-1) & torch.isfinite(reward)
                  & torch.isfinite(cost) & torch.isfinite(disagreement))
        next_obs = torch.where(finite[:, None], next_obs, obs)
        reward, cost, cost_mean, cost_std = (torch.where(finite, t, 0.0)
                                             for t in (reward, cost, cost_mean, cost_std))
        disagreement = torch.where(finite, disagreement, math.inf)

        truncated = ~finite | (disagreement > self.disagreement_threshold)
        if self.terminal_fn is None:
            terminated = torch.zeros(batch, dtype=torch.bool, device=obs.device)
        else:
            terminated = self.terminal_fn(obs, act, next_obs).bool() & finite
        self._obs = next_obs
        info = {"disagreement": disagreement, "cost_mean": cost_mean, "cost_std": cost_std,
                "n_nonfinite": int((~finite).sum())}
        return next_obs.clone(), reward, cost, terminated, truncated, info

    def replay(self, obs: ArrayLike, act: ArrayLike, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Branches of ``horizon`` steps from every start t of one recorded trajectory, fed its
        recorded actions a_t..a_{t+horizon-1}: obs (T, obs_dim), act (T, act_dim). Returns the
        ``disagreement`` and the ``truncated`` flag of each step, each (horizon, B) with
        B = T - horizon + 1 starts (step j of the branch from t at [j, t]). Episode ends in the
        recording are not checked (the branches only measure the model)."""
        starts = np.arange(len(obs) - horizon + 1)
        act = np.asarray(act)
        self.reset(np.asarray(obs)[starts])
        disagreement, truncated = [], []
        for j in range(horizon):
            *_, cut, info = self.step(act[starts + j])
            disagreement.append(info["disagreement"])
            truncated.append(cut)
        return torch.stack(disagreement), torch.stack(truncated)
