"""The training loop shared by ``cppo``, ``ppo-lag`` and ``dyna-cppo``.

One iteration (see ``DESIGN.md``)::

    collect    real steps from the vector envs, one batched inference per step
    dual GAE   reward and cost advantages; truncated episodes bootstrap from V(final obs)
    cost       the episodes that ended join a window (CostEstimate): J_c, its s.e., count
    decide     the run's CostControl turns J_c into the mode and what the update gets: cppo's
               PI controller a margin (recovery where it saturates), or the paper's margin or
               bang-bang switch; ppo-lag a multiplier (by Adam, or PID)
    [dyna]     fit the dynamics ensemble on the replay buffer; imagined branches join the batch
    E-step     v* = solve_estep(A, A_c, cost margin)          (cppo, dyna-cppo)
    M-step     epochs of minibatches of mstep_loss(r -> v*)   (cppo, dyna-cppo)
               or PPO's clipped loss on A - lambda A_c        (ppo-lag)
    critics    epochs of minibatches of 0.5 (V - return)^2 for V_r and V_c
    log        one CSV row; a checkpoint every ``checkpoint_every`` iterations

The paper's cost margin is a per-step rate: ``(d - J_c) / L`` with ``J_c`` the windowed mean
undiscounted episode cost and ``L`` the mean episode length. For long episodes this equals the
paper's ``(1 - gamma)(d - J_c)`` written for discounted returns: ``mean((v - 1) A_c)``
estimates the change of the per-step cost rate. It is logged as ``cost_margin``; what the
E-step is given (``estep_margin``) depends on ``Config.cost_control`` (``cost_control.py``).

Plug-in points (for a course: replace one piece without copying library code). Three steps of
the iteration are :class:`Trainer` methods with the signature of the library function they call;
give your own function as ``Trainer(cfg, estep=..., policy_loss=..., advantages=...)`` (or
``train(cfg, estep=...)``), or subclass ``Trainer`` and override the method:

    advantages   dual GAE of the real rollout      (default ``gae.dual_gae``)
    estep        the E-step's target ratios v*     (default ``estep.solve_estep``)
    policy_loss  the normal-mode M-step loss       (default: ``Config.mstep``'s loss)

Each method's docstring gives the contract (inputs, shapes, units, what to return, an example);
a plug-in that returns the wrong thing stops the run with a one-line ``PluginError``.

``dynacppo_lite.train`` is this module; calling it (``dynacppo_lite.train(cfg)``) calls
:func:`train`, so ``from dynacppo_lite import train; train(cfg)`` works as it always did.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.batch import Batch
from dynacppo_lite.config import Config
from dynacppo_lite.cost_control import Decision, make_cost_control
from dynacppo_lite.cost_estimate import CostEstimate
from dynacppo_lite.envs import check_env_id, default_cost_limit, make_env
from dynacppo_lite.estep import EStepResult, estep_result, solve_estep
from dynacppo_lite.gae import DualGAE, dual_gae
from dynacppo_lite.imagine import DynaModel
from dynacppo_lite.lagrangian import lagrangian_advantage, ppo_clip_loss
from dynacppo_lite.mstep import (
    choose_target,
    linear_mstep_loss,
    linear_recovery_mstep_loss,
    mstep_diagnostics,
    mstep_loss,
    realised_fraction,
    recovery_mstep_loss,
)
from dynacppo_lite.nets import ActorCritic
from dynacppo_lite.rollout import Collector
from dynacppo_lite.runlog import CheckpointError, RunLog, load_checkpoint, rng_state, set_rng_state
from dynacppo_lite.schedules import linear
from dynacppo_lite.seeding import seed_everything


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available: use --device cpu")
    return torch.device(name)


def _minibatches(n: int, num: int, gen: torch.Generator, device: torch.device):
    perm = torch.randperm(n, generator=gen).to(device)
    size = max(1, n // num)
    for start in range(0, n, size):
        yield perm[start:start + size]


def update_critics(agent: ActorCritic, opt: torch.optim.Optimizer, batch: Batch, cfg: Config,
                   gen: torch.Generator) -> tuple[float, float]:
    """Epochs of minibatch regression of V_r on ret_r and V_c on ret_c; returns final losses."""
    idx_all = torch.nonzero(batch.critic_mask).squeeze(-1)
    loss_r = loss_c = torch.zeros(())
    for _ in range(cfg.update_epochs):
        for mb in _minibatches(len(idx_all), cfg.num_minibatches, gen, batch.obs.device):
            i = idx_all[mb]
            loss_r = 0.5 * (agent.v_r(batch.obs[i]) - batch.ret_r[i]).pow(2).mean()
            loss_c = 0.5 * (agent.v_c(batch.obs[i]) - batch.ret_c[i]).pow(2).mean()
            opt.zero_grad()
            (loss_r + loss_c).backward()
            # Clipped one critic at a time: the cost critic's much larger loss would otherwise
            # set the clip for both and starve the reward critic (OmniSafe clips them apart).
            torch.nn.utils.clip_grad_norm_(agent.v_r.parameters(), cfg.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(agent.v_c.parameters(), cfg.max_grad_norm)
            opt.step()
    return float(loss_r.detach()), float(loss_c.detach())


def update_policy(agent: ActorCritic, opt: torch.optim.Optimizer, batch: Batch,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], cfg: Config,
                  lower_clip: float, gen: torch.Generator,
                  v_target: torch.Tensor | Callable[[], torch.Tensor] | None = None,
                  after_epoch: Callable[[torch.Tensor], None] | None = None) -> dict[str, float]:
    """Epochs of minibatches on ``loss_fn(logp_new, idx)``; early stop on approx KL.

    ``after_epoch(ratio)`` sees r (N,) over the whole batch after each epoch (multiple targets
    switch there). With the E-step's ``v_target`` (N,) (or a function returning the target in
    use), also reports how far the policy followed it: ``reach`` and ``reach_corr``, the slope
    and correlation of r - 1 on v - 1 (``realised_fraction``)."""
    n = len(batch.logp)
    loss = torch.zeros(())
    epochs_run = 0
    for _ in range(cfg.update_epochs):
        epochs_run += 1
        for mb in _minibatches(n, cfg.num_minibatches, gen, batch.obs.device):
            dist = agent.pi(batch.obs[mb])
            logp_new = agent.pi.log_prob(dist, batch.act[mb])
            loss = loss_fn(logp_new, mb)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.pi.parameters(), cfg.max_grad_norm)
            opt.step()
        if cfg.target_kl is not None or after_epoch is not None:
            with torch.no_grad():
                logp_all = agent.pi.log_prob(agent.pi(batch.obs), batch.act)
            if after_epoch is not None:
                after_epoch((logp_all - batch.logp).exp())
            if cfg.target_kl is not None and mstep_diagnostics(
                    logp_all, batch.logp, lower_clip=lower_clip)["approx_kl"] > cfg.target_kl:
                break
    with torch.no_grad():
        logp_all = agent.pi.log_prob(agent.pi(batch.obs), batch.act)
    diag = mstep_diagnostics(logp_all, batch.logp, lower_clip=lower_clip)
    ratio = (logp_all - batch.logp).exp()
    # The first-order changes the update bought, in the units of the E-step's estep_cost_change
    # (mean((v - 1) A_c)): their ratio is the share of the E-step's step the M-step realised.
    out = {"loss_pi": float(loss.detach()), "kl": diag["approx_kl"], "clip_frac": diag["clip_frac"],
           "ratio_mean": diag["ratio_mean"], "epochs_run": epochs_run,
           **dict(zip(("mstep_reward_change", "mstep_cost_change"),
                      first_order_change(ratio, batch), strict=True))}
    if v_target is not None:
        target = v_target() if callable(v_target) else v_target
        out["reach"], out["reach_corr"] = realised_fraction(ratio, target)
    return out


def first_order_change(ratio: torch.Tensor, batch: Batch) -> tuple[float, float]:
    """``(mean((r - 1) A), mean((r - 1) A_c))`` for ratios r (N,) on the batch's samples: the
    first-order change of reward and cost per step, in the units of ``estep_cost_change``."""
    return float(((ratio - 1) * batch.adv_r).mean()), float(((ratio - 1) * batch.adv_c).mean())


@torch.no_grad()
def real_surrogate(agent: ActorCritic, batch: Batch) -> tuple[float, float]:
    """:func:`first_order_change` of the current policy over the batch's behaviour policy,
    ``r = pi / pi_old``."""
    return first_order_change(
        (agent.pi.log_prob(agent.pi(batch.obs), batch.act) - batch.logp).exp(), batch)


def round_kept(before: tuple[float, float], after: tuple[float, float], mode: str,
               cost_margin: float) -> bool:
    """Whether an imagined round's update stays: by :func:`real_surrogate` before and after it,
    in recovery the real cost change must fall; otherwise the real reward change must rise and
    the cost change rise by no more than the E-step's margin (nothing when it is negative)."""
    if mode == "recovery":
        return after[1] < before[1]
    return after[0] > before[0] and after[1] - before[1] <= max(cost_margin, 0.0)


class PluginError(TypeError):
    """A plug-in (``estep``, ``policy_loss``, ``advantages``) returned something the trainer
    cannot use; the message says what was expected."""


PLUGINS = ("advantages", "estep", "policy_loss")


def _check_advantages(out: Any, like: torch.Tensor) -> DualGAE:
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


def _check_estep(out: Any, adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float,
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


def _check_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) \
            else type(loss).__name__
        raise PluginError(f"policy_loss plug-in returned {what}: expected a scalar torch tensor "
                          "(take the mean over the minibatch)")
    if not loss.requires_grad:
        raise PluginError("policy_loss plug-in returned a tensor without gradient: build it from "
                          "logp_new with torch operations (no .item(), .detach() or numpy)")
    return loss


class Trainer:
    """Owns the envs, networks, optimisers and run directory of one run.

    ``Trainer(cfg).run()`` trains; ``train(cfg)`` is the one-call form. ``estep``,
    ``policy_loss`` and ``advantages`` replace the library's function behind the method of that
    name (see each method for the contract); they are plain functions, not saved with the run,
    so pass them again when resuming. ``ppo-lag`` has no E-step: giving it ``estep`` or
    ``policy_loss`` is an error.

    ``Trainer(resume=run_dir, changes={...})`` continues a run with its own saved settings; see
    :func:`train` for what ``config`` and ``changes`` mean then.

    >>> def my_estep(adv_r, adv_c, *, cost_margin, kl_budget, lower_bound, method, recovery):
    ...     return np.ones_like(adv_r)                # v = 1: the E-step asks for no change
    >>> Trainer(Config(env_id="ToySpeedLimit-v0"), estep=my_estep)  # doctest: +SKIP
    """

    def __init__(self, config: Config | None = None, resume: str | Path | None = None, *,
                 changes: Mapping[str, Any] | None = None,
                 estep: Callable[..., Any] | None = None,
                 policy_loss: Callable[..., torch.Tensor] | None = None,
                 advantages: Callable[..., Any] | None = None) -> None:
        plugins = {"estep": estep, "policy_loss": policy_loss, "advantages": advantages}
        for name, fn in plugins.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
        notes: list[str] = []
        if resume is not None:
            resume = Path(resume)
            config, ckpt, notes, _ = resume_point(resume, config, changes)
        elif config is None:
            raise TypeError("Trainer needs a config, or resume= the directory of a run to continue")
        elif changes:
            raise ValueError("changes= applies to a resumed run only: set the fields in the config")
        if config.algo == "ppo-lag":
            unused = [name for name in ("estep", "policy_loss") if plugins[name] is not None]
            if unused:
                raise ValueError(f"algo 'ppo-lag' has no E-step or CPPO M-step: {', '.join(unused)} "
                                 "would be ignored (use algo 'cppo' or 'dyna-cppo')")
        # None: the library's function, looked up when called (so a patched module is seen too).
        self._estep_fn, self._policy_loss_fn, self._advantages_fn = estep, policy_loss, advantages
        config = config.validate()
        check_env_id(config.env_id)  # an unknown id says so before any cost-limit question
        if config.cost_limit is None:  # config.json and checkpoints record the limit used
            config = dataclasses.replace(config, cost_limit=default_cost_limit(config.env_id))
        self.cfg = cfg = config
        self.device = resolve_device(cfg.device)
        torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.cost_limit = float(cfg.cost_limit)
        self.envs = make_env(cfg.env_id, cfg.num_envs, cfg.seed, fast=cfg.fast_env,
                             max_episode_steps=cfg.max_episode_steps)
        obs_dim = self.envs.single_observation_space.shape[0]
        act_dim = self.envs.single_action_space.shape[0]
        self.agent = ActorCritic(obs_dim, act_dim, cfg.hidden, cfg.init_log_std).to(self.device)
        self.pi_opt = torch.optim.Adam(self.agent.pi.parameters(), lr=cfg.pi_lr, eps=1e-5)
        self.vf_opt = torch.optim.Adam([*self.agent.v_r.parameters(), *self.agent.v_c.parameters()],
                                       lr=cfg.vf_lr, eps=1e-5)
        self.cost_control = make_cost_control(cfg, self.cost_limit)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.steps_per_env = cfg.steps_per_iter // cfg.num_envs
        self.batch_size, self.num_iters = iterations(cfg)
        self.dyna = None
        if cfg.algo == "dyna-cppo":
            self.dyna = DynaModel(cfg, obs_dim, act_dim, self.device)
        self.last_ep = (0.0, 0.0, 1.0)  # (return, cost, length) before any episode ended
        self.cost = CostEstimate(cfg.cost_window)
        self.start_iter = 0
        self.elapsed = 0.0
        if resume is not None:
            self.run_dir = resume
            self.log = RunLog(resume, cfg, resume=True)
            self._restore(ckpt)
            self.log.truncate_after(self.start_iter - 1)
            if not self.finished:  # a finished run that stays finished changes nothing
                self.log.note_environment()
            if notes and not self.finished:
                for note in notes:
                    print(f"resume {resume}: {note}")
                    self.log.note(f"resume: {note}")
                self.log.write_config(cfg)
                # Into the checkpoint at once: a kill before the next one must not undo the change.
                self.log.save_checkpoint({**{k: v for k, v in ckpt.items() if k != "format"},
                                          "config": cfg.to_dict()})
        else:
            self.run_dir = Path(cfg.log_dir) / (cfg.run_name or f"{cfg.algo}_{cfg.env_id}_s{cfg.seed}")
            self.log = RunLog(self.run_dir, cfg)
        # A resumed run cannot restore the simulators' internal state: it reseeds them per iteration.
        self.collector = Collector(self.envs, self.agent, self.device,
                                   seed=cfg.seed + 7919 * self.start_iter)

    @property
    def finished(self) -> bool:
        """True for a resumed run that had already reached ``total_steps`` and written its
        final policy: :meth:`run` then trains nothing."""
        return self.start_iter >= self.num_iters and (self.run_dir / "policy_final.pt").is_file()

    # --- checkpoints -------------------------------------------------------------------------
    def _state(self, iteration: int) -> dict[str, Any]:
        state = {
            "config": self.cfg.to_dict(), "iteration": iteration, "elapsed": self.elapsed,
            "agent": self.agent.state_dict(), "pi_opt": self.pi_opt.state_dict(),
            "vf_opt": self.vf_opt.state_dict(), "cost_control": self.cost_control.state_dict(),
            "last_ep": list(self.last_ep), "rng": rng_state(),
            "cost_estimate": self.cost.state_dict(), "gen": self.gen.get_state(),
            "obs_norm": {k: torch.as_tensor(v) for k, v in self.envs.state_dict().items()},
        }
        if self.dyna is not None:
            state["dyna"] = self.dyna.state_dict()
        return state

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            self.agent.load_state_dict(ckpt["agent"])
            self.pi_opt.load_state_dict(ckpt["pi_opt"])
            self.vf_opt.load_state_dict(ckpt["vf_opt"])
            # Checkpoints written before the cost controls had a state_dict keep theirs in
            # top-level keys (lagrange, mode, reach, controller): legacy_state reads those.
            self.cost_control.load_state_dict(ckpt["cost_control"] if "cost_control" in ckpt
                                              else self.cost_control.legacy_state(ckpt))
            self.envs.load_state_dict({k: v.numpy() for k, v in ckpt["obs_norm"].items()})
            self.last_ep = tuple(ckpt["last_ep"])
            self.cost.load_state_dict(ckpt["cost_estimate"])
            set_rng_state(ckpt["rng"])
            self.gen.set_state(ckpt["gen"])
            if self.dyna is not None:
                self.dyna.load_state_dict(ckpt["dyna"])
            self.start_iter = int(ckpt["iteration"]) + 1
            self.elapsed = float(ckpt["elapsed"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0][:120]
            raise CheckpointError(f"checkpoint does not match this run's setting ({reason})") from None

    # --- plug-in points ----------------------------------------------------------------------
    def advantages(self, rewards: torch.Tensor, costs: torch.Tensor, values_r: torch.Tensor,
                   values_c: torch.Tensor, next_values_r: torch.Tensor, next_values_c: torch.Tensor,
                   terminated: torch.Tensor, truncated: torch.Tensor, *, gamma: float, lam: float,
                   cost_gamma: float, cost_lam: float) -> DualGAE:
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
        fn = self._advantages_fn or dual_gae
        return fn(rewards, costs, values_r, values_c, next_values_r, next_values_c, terminated,
                  truncated, gamma=gamma, lam=lam, cost_gamma=cost_gamma, cost_lam=cost_lam)

    def estep(self, adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float, kl_budget: float,
              lower_bound: float, method: str, recovery: bool) -> EStepResult | np.ndarray:
        """The E-step (plug-in ``estep``; default ``estep.solve_estep``, whose docstring states
        the problem).

        Inputs: ``adv_r``, ``adv_c``: float64 numpy arrays (N,), the *raw* (unnormalised) reward
        and cost advantages of the whole batch (real samples, then imagined ones for dyna-cppo).
        ``cost_margin``: d' of eq. 4 as a per-step cost rate (negative when the policy is over the
        limit). ``kl_budget``: delta' of eq. 5 (mean((v - 1)^2) <= 2 kl_budget).
        ``lower_bound``: Algorithm 1's clip b (v >= b). ``method``: ``Config.estep_method``
        ("exact" or "heuristic"; ignore it if you have one method). ``recovery``: True when the
        cost control asks for the recovery rule (section 3.2.2).

        Returns an ``estep.EStepResult`` or just the target ratios ``v`` (N,), float, mean 1,
        every entry >= lower_bound; a bare ``v`` is wrapped by ``estep.estep_result`` (its
        mode is "recovery" when ``recovery`` was asked, else "normal").

        Example (a student's E-step that keeps only the trust region, ignoring the cost)::

            def my_estep(adv_r, adv_c, *, cost_margin, kl_budget, lower_bound, method, recovery):
                a = adv_r - adv_r.mean()
                x = a * np.sqrt(2 * kl_budget) / (np.sqrt(np.mean(a**2)) + 1e-12)
                return np.maximum(1 + x, lower_bound)
        """
        return (self._estep_fn or solve_estep)(adv_r, adv_c, cost_margin=cost_margin, kl_budget=kl_budget,
                              lower_bound=lower_bound, method=method, recovery=recovery)

    def policy_loss(self, logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor, *,
                    lower_clip: float) -> torch.Tensor:
        """The normal-mode M-step loss (plug-in ``policy_loss``; default: ``mstep.linear_mstep_loss``, or
        ``mstep.mstep_loss`` with ``Config.mstep = "tracking"``).

        Inputs, all (B,) float32 tensors over one minibatch: ``logp_new`` = log pi_theta(a|s)
        (carries the gradient), ``logp_old`` = log pi_old(a|s) of the rollout's policy,
        ``v_target`` = the E-step's target ratios v*; ``lower_clip`` is the ratio clip b of the
        M-step (scheduled, see ``Config.lower_clip``).

        Returns a scalar tensor to *minimise*, differentiable in ``logp_new``. Recovery mode keeps
        ``mstep.recovery_mstep_loss``.

        Example (plain L2 tracking, no clip)::

            def my_loss(logp_new, logp_old, v_target, *, lower_clip):
                ratio = (logp_new - logp_old).exp()
                return 0.5 * ((v_target - ratio) ** 2).mean()
        """
        default = linear_mstep_loss if self.cfg.mstep == "linear" else mstep_loss
        return (self._policy_loss_fn or default)(logp_new, logp_old, v_target, lower_clip=lower_clip)

    def _estep_at(self, adv_r: np.ndarray, adv_c: np.ndarray, kl_budget: float,
                  decision: Decision, mode: str) -> tuple[EStepResult, float]:
        """The E-step at one trust-region budget, with the cost margin the cost control gives for
        it; returns the checked result and that margin."""
        cfg = self.cfg
        estep_margin = self.cost_control.estep_margin(decision, adv_c, kl_budget)
        recovery = mode == "recovery"
        est = _check_estep(
            self.estep(adv_r, adv_c, cost_margin=estep_margin, kl_budget=kl_budget,
                       lower_bound=cfg.v_lower_bound, method=cfg.estep_method, recovery=recovery),
            adv_r, adv_c, cost_margin=estep_margin, lower_bound=cfg.v_lower_bound, recovery=recovery)
        return est, estep_margin

    def _cppo_update(self, batch: Batch, decision: Decision, mode: str,
                     lower_clip: float) -> tuple[float, dict[str, Any], dict[str, float], str]:
        """E-step on the batch's advantages in ``mode`` (``normal`` or ``recovery``), then the
        M-step's epochs towards v*.

        Returns (time the E-step ended, its CSV fields, the M-step's, the mode it chose)."""
        cfg = self.cfg
        adv_r, adv_c = (x.double().cpu().numpy() for x in (batch.adv_r, batch.adv_c))
        # Section 3.4's multiple targets: the E-step at K increasing budgets; the M-step fits
        # the smallest one its ratio has not yet moved past (K = 1: the single target).
        budgets = [cfg.kl_budget * (k + 1) / cfg.estep_targets for k in range(cfg.estep_targets)]
        solved = [self._estep_at(adv_r, adv_c, budget, decision, mode) for budget in budgets]
        est, estep_margin = solved[-1]
        t_e1 = time.perf_counter()
        targets = [torch.as_tensor(e.v, dtype=torch.float32, device=self.device) for e, _ in solved]
        chosen = [0]

        def target() -> torch.Tensor:
            return targets[chosen[0]]

        after_epoch = None
        if len(targets) > 1:
            def after_epoch(ratio: torch.Tensor) -> None:
                chosen[0] = choose_target(ratio, budgets)
        row = dict(estep_angle=float(est.angle), estep_feasible=int(est.feasible),
                   estep_at_bound=float(np.mean(est.v <= cfg.v_lower_bound + 1e-9)),
                   estep_margin=estep_margin, estep_cost_change=est.cost_change)
        if est.mode == "recovery":
            recovery_loss = (linear_recovery_mstep_loss if cfg.mstep == "linear"
                             else recovery_mstep_loss)

            def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
                return recovery_loss(logp_new, batch.logp[mb], target()[mb], batch.adv_c[mb],
                                     lower_clip=lower_clip, beta=cfg.beta)
        else:
            def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
                return _check_loss(self.policy_loss(logp_new, batch.logp[mb], target()[mb],
                                                    lower_clip=lower_clip))

        pi_stats = update_policy(self.agent, self.pi_opt, batch, loss_fn, cfg, lower_clip,
                                 self.gen, target, after_epoch)
        pi_stats["target_used"] = chosen[0] + 1
        return t_e1, row, pi_stats, est.mode

    def _model_rounds(self, real: Batch, decision: Decision, mode: str, estep_margin: float,
                      lower_clip: float) -> dict[str, Any]:
        """ME-TRPO's rounds: ``model_rounds`` further E-step/M-step updates in ``mode`` (the
        main update's), each on a fresh imagined batch, kept only where the real batch's
        first-order gains agree (ME-TRPO validates its rounds too). Off by default: on
        HalfCheetah they hurt (docs/results.md). Returns ``rounds_kept`` and ``rounds_kl``."""
        cfg, agent = self.cfg, self.agent
        out = {"rounds_kept": 0, "rounds_kl": 0.0}
        before = real_surrogate(agent, real)
        for _ in range(cfg.model_rounds):
            more, _ = self.dyna.imagined_batch(agent, self.envs, cfg.imagined_frac * self.batch_size)
            saved = copy.deepcopy((agent.pi.state_dict(), self.pi_opt.state_dict()))
            _, _, more_stats, _ = self._cppo_update(more, decision, mode, lower_clip)
            after = real_surrogate(agent, real)
            kept = round_kept(before, after, mode, estep_margin)
            if kept:
                before = after
            else:
                agent.pi.load_state_dict(saved[0])
                self.pi_opt.load_state_dict(saved[1])
            out["rounds_kept"] += int(kept)
            out["rounds_kl"] += more_stats["kl"] * kept
        return out

    # --- one iteration -----------------------------------------------------------------------
    def iteration(self, it: int) -> dict[str, Any]:
        cfg, agent = self.cfg, self.agent
        t0 = time.perf_counter()
        progress = it / self.num_iters
        pi_lr = linear(cfg.pi_lr, cfg.pi_lr_final, progress)
        lower_clip = linear(cfg.lower_clip, cfg.lower_clip_final, progress)
        for group in self.pi_opt.param_groups:
            group["lr"] = pi_lr

        ro = self.collector.collect(self.steps_per_env)
        t_collect = time.perf_counter()
        fresh = self.cost.update(ro.episodes)
        if ro.episodes:
            self.last_ep = tuple(float(np.mean(x)) for x in zip(*ro.episodes, strict=True))
        ep_ret, ep_cost, ep_len = self.last_ep
        # Control steers by the windowed estimate, never by this iteration's few episodes.
        cost_est = self.cost.cost
        cost_margin = (self.cost_limit - cost_est) / max(self.cost.length, 1.0)
        # The run's cost control: the mode and what the update gets (margin or multiplier).
        decision = self.cost_control.decide(cost_est, fresh, cost_margin)
        mode = decision.mode

        adv = self.advantages(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r,
                              ro.next_values_c, ro.terminated, ro.truncated, gamma=cfg.gamma,
                              lam=cfg.lam, cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
        if self._advantages_fn is not None or type(self).advantages is not Trainer.advantages:
            adv = _check_advantages(adv, ro.rew)
        n_real = self.batch_size
        batch = Batch(obs=ro.obs.reshape(n_real, -1), act=ro.act.reshape(n_real, -1),
                      logp=ro.logp.reshape(n_real), adv_r=adv.adv_r.reshape(n_real),
                      adv_c=adv.adv_c.reshape(n_real), ret_r=adv.ret_r.reshape(n_real),
                      ret_c=adv.ret_c.reshape(n_real),
                      critic_mask=torch.ones(n_real, dtype=torch.bool, device=self.device))
        critic_batch = real = batch
        imagined = None
        row: dict[str, Any] = self.cost_control.fields(decision)
        times = {"t_collect": t_collect - t0, "t_model": 0.0, "t_imagine": 0.0}
        if self.dyna is not None:
            # The model is fitted from the first iteration on (its cost spreads over the warm-up
            # and its errors are logged early); imagined samples join from model_start_iter.
            imagined, dyna_row, t_model, t_imagine = self.dyna.update(
                ro, adv, agent, self.envs, imagine=it >= cfg.model_start_iter)
            row.update(dyna_row)
            times.update(t_model=t_model, t_imagine=t_imagine)
            if imagined is not None:
                critic_batch = batch.cat(imagined)
                if cfg.imagined_policy:
                    batch = critic_batch
        t_e0 = time.perf_counter()

        if self.cost_control.uses_estep:  # cppo, dyna-cppo: E-step on the margin, then M-step
            t_e1, estep_row, pi_stats, mode = self._cppo_update(batch, decision, mode, lower_clip)
            row.update(estep_row)
        else:  # ppo-lag: PPO's clipped loss on the advantages mixed by lambda
            adv_pi = lagrangian_advantage(batch.adv_r, batch.adv_c, decision.lagrange)
            t_e1 = time.perf_counter()

            def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
                return ppo_clip_loss(logp_new, batch.logp[mb], adv_pi[mb], cfg.clip_ratio)

            pi_stats = update_policy(agent, self.pi_opt, batch, loss_fn, cfg, lower_clip, self.gen)
        self.cost_control.observe(row.get("estep_cost_change"), pi_stats["mstep_cost_change"])
        if imagined is not None and cfg.model_rounds:
            row.update(self._model_rounds(real, decision, mode, row["estep_margin"], lower_clip))
        t_m = time.perf_counter()
        loss_vr, loss_vc = update_critics(agent, self.vf_opt, critic_batch, cfg, self.gen)
        t_end = time.perf_counter()
        self.elapsed += t_end - t0
        row.update(
            step=(it + 1) * n_real, iteration=it, ep_return=ep_ret, ep_cost=ep_cost, ep_len=ep_len,
            episodes=len(ro.episodes), mode=mode, cost_est=cost_est, cost_est_se=self.cost.cost_se,
            cost_est_n=self.cost.count, cost_margin=cost_margin, loss_vr=loss_vr,
            loss_vc=loss_vc, pi_lr=pi_lr, lower_clip=lower_clip, sps=n_real / (t_end - t0),
            time_s=self.elapsed, t_estep=t_e1 - t_e0, t_mstep=t_m - t_e1, t_critics=t_end - t_m,
            t_env=self.collector.time_env, t_infer=self.collector.time_infer, **times, **pi_stats,
        )
        return row

    def run(self, progress: bool = False,
            callback: Callable[[dict[str, Any]], None] | None = None) -> Path:
        """Train to ``total_steps``; returns the run directory. Ctrl-C saves a checkpoint first.

        A resumed run that is already finished is left as it is (it says so)."""
        if self.finished:
            self.envs.close()
            say_finished(self.run_dir, self.cfg)
            return self.run_dir
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.num_iters * self.batch_size, initial=self.start_iter * self.batch_size,
                       unit="step", dynamic_ncols=True)
        it = self.start_iter - 1
        try:
            for it in range(self.start_iter, self.num_iters):
                row = self.iteration(it)
                self.log.write_row(row)
                if callback is not None:
                    callback(row)
                if bar is not None:
                    bar.update(self.batch_size)
                    bar.set_postfix(ret=f"{row['ep_return']:.2f}", cost=f"{row['ep_cost']:.1f}",
                                    mode=row["mode"])
                if (it + 1) % self.cfg.checkpoint_every == 0:
                    self.log.save_checkpoint(self._state(it))
        except KeyboardInterrupt:
            if it >= self.start_iter:
                self.log.save_checkpoint(self._state(it))
            raise
        finally:
            if bar is not None:
                bar.close()
            self.envs.close()
        self.log.save_checkpoint(self._state(self.num_iters - 1))
        self.log.save_final_policy({
            "config": self.cfg.to_dict(), "policy": self.agent.pi.state_dict(),
            "obs_norm": {k: torch.as_tensor(v) for k, v in self.envs.state_dict().items()},
        })
        return self.run_dir


def train(config: Config | None = None, resume: str | Path | None = None, progress: bool = False,
          callback: Callable[[dict[str, Any]], None] | None = None, *,
          changes: Mapping[str, Any] | None = None, **plugins: Callable[..., Any]) -> Path:
    """Train with ``config`` (or continue the run in ``resume``); returns the run directory.

    A resumed run continues as it was started: every setting comes from its saved config, so
    ``train(resume=run_dir)`` ends at the run's own ``total_steps`` on its own ``device``. Ask
    for a change with ``changes``, e.g. ``changes={"total_steps": 200_000}``; only
    :data:`RESUME_CHANGES` (``total_steps``, ``device``, ``checkpoint_every``,
    ``torch_threads``) may change, since the others shape the results; any other field given
    with a value other than its saved one is a one-line ValueError naming it. Each change is
    printed in one line and written to the run's ``log.txt`` and ``config.json``. The policy
    learning rate and the M-step clip anneal over ``total_steps``, so a larger budget stretches
    their schedules from the resume point on. A run already finished is left as it is (it says
    so) unless ``changes`` gives a larger ``total_steps``. ``config`` may still be given with
    ``resume`` (older code did): it must then be the run's own config (after ``changes``;
    ``log_dir`` and ``run_name`` are not compared), or a one-line ValueError names the fields
    that differ; it is never a source of values, since a Config's defaults cannot be told from
    values its caller chose.

    ``plugins``: ``estep=``, ``policy_loss=``, ``advantages=`` (see :class:`Trainer`)."""
    unknown = set(plugins) - set(PLUGINS)
    if unknown:
        raise TypeError(f"unknown plug-in {sorted(unknown)[0]!r}: the plug-ins are {', '.join(PLUGINS)}")
    if resume is not None:
        # A finished run is answered before the envs (worker processes, simulators) are built.
        cfg, _, _, done = resume_point(Path(resume), config, changes)
        if done >= iterations(cfg)[1] and (Path(resume) / "policy_final.pt").is_file():
            say_finished(Path(resume), cfg)
            return Path(resume)
    return Trainer(config, resume=resume, changes=changes, **plugins).run(progress=progress,
                                                                          callback=callback)


#: What a resume may change: where the run computes and how long it goes. Every other field
#: shapes the results, so it stays as the run was started (see :func:`train`).
RESUME_CHANGES = ("total_steps", "device", "checkpoint_every", "torch_threads")


def iterations(cfg: Config) -> tuple[int, int]:
    """``(batch_size, num_iters)``: real steps per iteration (``steps_per_iter`` rounded down to
    a multiple of ``num_envs``) and the iterations that make up ``total_steps``."""
    batch_size = cfg.steps_per_iter // cfg.num_envs * cfg.num_envs
    return batch_size, max(1, cfg.total_steps // batch_size)


def _same(key: str, given: Any, cfg: Config) -> bool:
    """Whether ``given`` for field ``key`` is what ``cfg`` (a run's config) already holds."""
    saved = getattr(cfg, key)
    if key == "cost_limit" and given is None:  # None: the task's limit, which the run recorded
        return saved == default_cost_limit(cfg.env_id)
    if key == "log_dir":
        return os.path.normpath(str(given)) == os.path.normpath(str(saved))
    if key == "run_name":  # None names the directory <algo>_<env_id>_s<seed>
        return given == (saved or f"{cfg.algo}_{cfg.env_id}_s{cfg.seed}") or given == saved
    if isinstance(given, list):
        given = tuple(given)
    return given == saved


def resume_config(saved: Config, changes: Mapping[str, Any] | None = None,
                  config: Config | None = None) -> tuple[Config, list[str]]:
    """The config a resumed run continues with, and one line per setting that changes.

    ``saved`` is the run's own config; ``changes`` asks for new values. A field of
    :data:`RESUME_CHANGES` takes the value given; any other field may be given only with its
    saved value (so a command line that repeats the run's settings is accepted), else a
    one-line ValueError names it. ``config``, when given, is checked against the result and
    never read for values (see :func:`train`).

    >>> cfg, notes = resume_config(Config(total_steps=8_000, device="cpu"), {"total_steps": 16_000})
    >>> (cfg.total_steps, cfg.device, notes)
    (16000, 'cpu', ['total_steps 8000 -> 16000'])
    """
    names = [f.name for f in dataclasses.fields(Config)]
    changes = dict(changes or {})
    unknown = [key for key in changes if key not in names]
    if unknown:
        raise ValueError(f"resume: {unknown[0]!r} is not a Config field")
    fixed = [key for key, value in changes.items()
             if key not in RESUME_CHANGES and not _same(key, value, saved)]
    if fixed:
        what = ", ".join(f"{key} (saved {getattr(saved, key)!r}, given {changes[key]!r})" for key in fixed)
        raise ValueError(f"resume cannot change {what}: a resumed run keeps its saved settings; "
                         f"only {', '.join(RESUME_CHANGES)} may change (start a new run for others)")
    moved = {key: value for key, value in changes.items()
             if key in RESUME_CHANGES and not _same(key, value, saved)}
    cfg = dataclasses.replace(saved, **moved).validate()
    if config is not None:
        differ = [key for key in names if key not in ("log_dir", "run_name")
                  and not _same(key, getattr(config, key), cfg)]
        if differ:
            what = ", ".join(f"{key} (saved {getattr(cfg, key)!r}, given {getattr(config, key)!r})"
                             for key in differ)
            raise ValueError(f"resume: the config given differs from the run's own in {what}; "
                             "pass config=None (the run's settings) and changes={...} for "
                             f"{', '.join(RESUME_CHANGES)}")
    return cfg, [f"{key} {getattr(saved, key)} -> {value}" for key, value in moved.items()]


def resume_point(run_dir: Path, config: Config | None,
                 changes: Mapping[str, Any] | None) -> tuple[Config, dict[str, Any], list[str], int]:
    """``(config, checkpoint, notes, iterations done)`` of the run in ``run_dir`` resumed with
    ``changes`` (:func:`resume_config`); a budget below the steps already done is an error."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    try:
        saved = Config.from_dict(ckpt["config"])
        done = int(ckpt["iteration"]) + 1
    except (KeyError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {run_dir / 'checkpoint.pt'} has no usable config "
                              f"or iteration ({reason})") from None
    cfg, notes = resume_config(saved, changes, config)
    batch_size, num_iters = iterations(cfg)
    if done > num_iters:
        raise ValueError(f"total_steps {cfg.total_steps} is below the {done * batch_size} steps "
                         f"{run_dir} has already done")
    return cfg, ckpt, notes, done


def say_finished(run_dir: Path, cfg: Config) -> None:
    """The one line a resume of a finished run prints."""
    batch_size, num_iters = iterations(cfg)
    print(f"{run_dir} is already finished ({num_iters * batch_size} steps, its total_steps "
          f"{cfg.total_steps}); give a larger total_steps (--total-steps) to train it on")


def load_trained(run_dir: str | Path, *, num_envs: int = 1, seed: int = 0,
                 render_mode: str | None = None,
                 freeze_obs_norm: bool = True) -> tuple[Config, Any, ActorCritic]:
    """A run's agent and a fresh env to run it in: ``(config, envs, agent)``.

    ``agent`` (an ``nets.ActorCritic``: ``agent.pi`` the policy, ``agent.v_r``/``agent.v_c`` the
    critics) is loaded from the run's ``checkpoint.pt``. ``envs`` is ``make_env(config.env_id,
    num_envs, seed)`` scaling observations with the run's normaliser statistics, *frozen*
    (``freeze_obs_norm``): stepping it does not change them. The caller closes ``envs``. For
    episode returns and costs, use ``dynacppo_lite.evaluate``."""
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    cfg = Config.from_dict(ckpt["config"])
    envs = make_env(cfg.env_id, num_envs=num_envs, seed=seed, render_mode=render_mode,
                    max_episode_steps=cfg.max_episode_steps)
    envs.load_state_dict({k: v.numpy() for k, v in ckpt["obs_norm"].items()})
    envs.frozen = freeze_obs_norm
    agent = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space.shape[0],
                        cfg.hidden, cfg.init_log_std)
    agent.load_state_dict(ckpt["agent"])
    return cfg, envs, agent


class _CallableModule(types.ModuleType):
    """``dynacppo_lite.train`` stays this module (so its names can be read and patched) and
    calling it trains: ``dynacppo_lite.train(cfg)`` is ``dynacppo_lite.train.train(cfg)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
