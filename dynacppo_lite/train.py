"""The training loop shared by ``cppo``, ``ppo-lag`` and ``dyna-cppo``, and the updates it composes.

One iteration (:meth:`Trainer.iteration`; DESIGN.md, "One iteration", walks through it)::

    schedule   the policy learning rate and the M-step clip for this point of the run
    collect    real steps from the vector envs, one batched inference per step
    cost       the episodes that ended join the window (CostEstimate): J_c, its s.e., count
    decide     the run's CostControl turns J_c into a Decision: the mode, and a margin or lambda
    dual GAE   reward and cost advantages of the real rollout (plug-in ``advantages``)
    [dyna]     fit the dynamics ensemble; imagined branches join the batch
    policy     E-step on the margin, then M-step epochs (cppo, dyna-cppo: ``uses_estep``),
               or PPO's clipped loss on A - lambda A_c (ppo-lag); then CostControl.observe
    [rounds]   dyna-cppo's imagined-only rounds, each kept only where the real batch agrees
    critics    epochs of minibatches of 0.5 (V - return)^2 for V_r and V_c
    log        one CSV row (:meth:`Trainer.run`); a checkpoint every ``checkpoint_every``

``cost_margin`` is the paper's margin as a per-step rate, ``(d - J_c) / L`` with ``J_c`` the
windowed mean undiscounted episode cost and ``L`` the mean episode length; what the E-step is
given (``estep_margin``) is the cost control's (``cost_control.py``).

What this module does not hold: the plug-in contracts and their checks (``plugins.py``), the
checkpoint contents and the resume policy (``runlog.py``), the imagined rounds and their
acceptance rule (``imagine.py``), loading a trained run (``evaluation.load_trained``).
``dynacppo_lite.train`` is the function :func:`train`; this module is
``importlib.import_module("dynacppo_lite.train")``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.batch import Batch, first_order_change
from dynacppo_lite.config import Config
from dynacppo_lite.cost_control import Decision, make_cost_control
from dynacppo_lite.cost_estimate import CostEstimate
from dynacppo_lite.cost_pool import CostPool
from dynacppo_lite.envs import check_env_id, default_cost_limit, make_env
from dynacppo_lite.estep import EStepResult, solve_estep
from dynacppo_lite.gae import DualGAE, dual_gae
from dynacppo_lite.imagine import DynaModel, records_coordinates, records_physics
from dynacppo_lite.lagrangian import lagrangian_advantage, ppo_clip_loss
from dynacppo_lite.mstep import (
    choose_target,
    clip_range,
    linear_mstep_loss,
    linear_recovery_mstep_loss,
    mstep_diagnostics,
    mstep_loss,
    realised_fraction,
    recovery_mstep_loss,
)
from dynacppo_lite.nets import ActorCritic
from dynacppo_lite.plugins import PluginError, check_advantages, check_estep, check_loss, check_plugins
from dynacppo_lite.rollout import Collector, Rollout
from dynacppo_lite.runlog import (
    RunLog,
    is_finished,
    iterations,
    restore_trainer,
    resume_point,
    say_finished,
    trainer_state,
)
from dynacppo_lite.schedules import linear
from dynacppo_lite.seeding import seed_everything

__all__ = ["PluginError", "Trainer", "resolve_device", "train", "update_critics", "update_policy"]


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
                  clip_range: tuple[float, float], gen: torch.Generator,
                  v_target: torch.Tensor | Callable[[], torch.Tensor] | None = None,
                  after_epoch: Callable[[torch.Tensor], None] | None = None) -> dict[str, float]:
    """Epochs of minibatches on ``loss_fn(logp_new, idx)``, each epoch stopping the update once
    the realised KL passes ``cfg.target_kl``; returns the update's CSV fields.

    ``kl`` is the realised approximate KL of the updated policy on the batch, ``clip_frac`` the
    share of ratios outside the loss's ``clip_range`` (lo, hi), ``mstep_{reward,cost}_change``
    the first-order changes bought (``batch.first_order_change``). ``after_epoch(ratio)`` sees
    r (N,) over the whole batch after each epoch (multiple targets switch there). With the
    E-step's ``v_target`` (N,) (or a function returning the target in use), also ``reach`` and
    ``reach_corr``: the slope and correlation of r - 1 on v - 1 in this batch
    (``mstep.realised_fraction``)."""
    lo, hi = clip_range
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
                    logp_all, batch.logp, lower_clip=lo)["approx_kl"] > cfg.target_kl:
                break
    with torch.no_grad():
        logp_all = agent.pi.log_prob(agent.pi(batch.obs), batch.act)
    diag = mstep_diagnostics(logp_all, batch.logp, lower_clip=lo, upper_clip=hi)
    ratio = (logp_all - batch.logp).exp()
    out = {"loss_pi": float(loss.detach()), "kl": diag["approx_kl"], "clip_frac": diag["clip_frac"],
           "ratio_mean": diag["ratio_mean"], "epochs_run": epochs_run,
           **dict(zip(("mstep_reward_change", "mstep_cost_change"),
                      first_order_change(ratio, batch), strict=True))}
    if v_target is not None:
        target = v_target() if callable(v_target) else v_target
        out["reach"], out["reach_corr"] = realised_fraction(ratio, target)
    return out


class Trainer:
    """Owns the envs, networks, optimisers, cost control and run directory of one run.

    ``Trainer(cfg).run()`` trains; ``train(cfg)`` is the one-call form. ``estep``,
    ``policy_loss`` and ``advantages`` replace the library's function behind the method of that
    name (contracts: ``plugins.py``); they are plain functions, not saved with the run, so pass
    them again when resuming. ``ppo-lag`` has no E-step: giving it ``estep`` or ``policy_loss``
    is an error. ``Trainer(resume=run_dir, changes={...})`` continues a run with its own saved
    settings; see :func:`train` for what ``config`` and ``changes`` mean then.

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
        check_plugins(plugins)
        if resume is not None:
            config, ckpt, notes, _ = resume_point(resume, config, changes)
        elif config is None:
            raise TypeError("Trainer needs a config, or resume= the directory of a run to continue")
        elif changes:
            raise ValueError("changes= applies to a resumed run only: set the fields in the config")
        config = config.validate()
        check_env_id(config.env_id)  # an unknown id says so before any cost-limit question
        if config.cost_limit is None:  # config.json and checkpoints record the limit used
            config = dataclasses.replace(config, cost_limit=default_cost_limit(config.env_id))
        self.cfg = cfg = config
        self.cost_limit = float(cfg.cost_limit)
        self.cost_control = make_cost_control(cfg, self.cost_limit)
        check_plugins(plugins, self.cost_control.uses_estep)
        # None: the library's function, looked up when called (so a patched module is seen too).
        self._estep_fn, self._policy_loss_fn, self._advantages_fn = estep, policy_loss, advantages
        self.device = resolve_device(cfg.device)
        torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.envs = make_env(cfg.env_id, cfg.num_envs, cfg.seed, fast=cfg.fast_env,
                             max_episode_steps=cfg.max_episode_steps,
                             coordinates=records_coordinates(cfg), physics=records_physics(cfg))
        obs_dim = self.envs.single_observation_space.shape[0]
        act_dim = self.envs.single_action_space.shape[0]
        self.agent = ActorCritic(obs_dim, act_dim, cfg.hidden, cfg.init_log_std).to(self.device)
        self.pi_opt = torch.optim.Adam(self.agent.pi.parameters(), lr=cfg.pi_lr, eps=1e-5)
        self.vf_opt = torch.optim.Adam([*self.agent.v_r.parameters(), *self.agent.v_c.parameters()],
                                       lr=cfg.vf_lr, eps=1e-5)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.steps_per_env = cfg.steps_per_iter // cfg.num_envs
        self.batch_size, self.num_iters = iterations(cfg)
        self.dyna = (DynaModel(cfg, obs_dim, act_dim, self.device, self.envs.state_spec)
                     if cfg.algo == "dyna-cppo" else None)
        self.last_ep = (0.0, 0.0, 1.0)  # (return, cost, length) before any episode ended
        self.cost = CostEstimate(cfg.cost_window)
        self.cost_pool = CostPool(cfg.cost_pool - 1, cfg.cost_pool_cap)
        self.start_iter, self.elapsed = 0, 0.0
        if resume is not None:
            self.run_dir = Path(resume)
            self.log = RunLog(self.run_dir, cfg, resume=True)
            self.start_iter = restore_trainer(self, ckpt)
            self.log.resume(cfg, ckpt, self.start_iter, notes, self.finished)
        else:
            self.run_dir = Path(cfg.log_dir) / (cfg.run_name or f"{cfg.algo}_{cfg.env_id}_s{cfg.seed}")
            self.log = RunLog(self.run_dir, cfg)
        # A resumed run cannot restore the simulators' internal state: it reseeds them per iteration.
        self.collector = Collector(self.envs, self.agent, self.device,
                                   seed=cfg.seed + 7919 * self.start_iter)

    @property
    def finished(self) -> bool:
        """True for a resumed run that had already reached ``total_steps`` and written its
        final policy (``runlog.is_finished``): :meth:`run` then trains nothing."""
        return is_finished(self.run_dir, self.start_iter, self.cfg)

    # --- plug-in points (contracts: plugins.Advantages, plugins.EStep, plugins.PolicyLoss) ----
    def advantages(self, rewards: torch.Tensor, costs: torch.Tensor, values_r: torch.Tensor,
                   values_c: torch.Tensor, next_values_r: torch.Tensor, next_values_c: torch.Tensor,
                   terminated: torch.Tensor, truncated: torch.Tensor, *, gamma: float, lam: float,
                   cost_gamma: float, cost_lam: float) -> DualGAE:
        """Dual GAE of the real rollout, (T, num_envs) each; contract: ``plugins.Advantages``."""
        fn = self._advantages_fn or dual_gae
        return fn(rewards, costs, values_r, values_c, next_values_r, next_values_c, terminated,
                  truncated, gamma=gamma, lam=lam, cost_gamma=cost_gamma, cost_lam=cost_lam)

    def estep(self, adv_r: np.ndarray, adv_c: np.ndarray, *, cost_margin: float, kl_budget: float,
              lower_bound: float, method: str, recovery: bool) -> EStepResult | np.ndarray:
        """The E-step's target ratios v* (N,); contract: ``plugins.EStep``."""
        return (self._estep_fn or solve_estep)(adv_r, adv_c, cost_margin=cost_margin, kl_budget=kl_budget,
                              lower_bound=lower_bound, method=method, recovery=recovery)

    def policy_loss(self, logp_new: torch.Tensor, logp_old: torch.Tensor, v_target: torch.Tensor, *,
                    lower_clip: float) -> torch.Tensor:
        """The normal-mode M-step loss, a scalar; contract: ``plugins.PolicyLoss``."""
        default = linear_mstep_loss if self.cfg.mstep == "linear" else mstep_loss
        return (self._policy_loss_fn or default)(logp_new, logp_old, v_target, lower_clip=lower_clip)

    # --- the pieces of one iteration ---------------------------------------------------------
    def _schedule(self, it: int) -> tuple[float, float]:
        """The policy learning rate (set in the optimiser) and the M-step's lower clip b at
        iteration ``it``, both annealed linearly over the run."""
        progress = it / self.num_iters
        pi_lr = linear(self.cfg.pi_lr, self.cfg.pi_lr_final, progress)
        for group in self.pi_opt.param_groups:
            group["lr"] = pi_lr
        return pi_lr, linear(self.cfg.lower_clip, self.cfg.lower_clip_final, progress)

    def _real_batch(self, ro: Rollout) -> tuple[DualGAE, Batch]:
        """Dual GAE of the rollout (checked when a plug-in computed it) and the flat batch."""
        cfg, n = self.cfg, self.batch_size
        adv = self.advantages(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r,
                              ro.next_values_c, ro.terminated, ro.truncated, gamma=cfg.gamma,
                              lam=cfg.lam, cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
        if self._advantages_fn is not None or type(self).advantages is not Trainer.advantages:
            adv = check_advantages(adv, ro.rew)
        return adv, Batch(obs=ro.obs.reshape(n, -1), act=ro.act.reshape(n, -1),
                          logp=ro.logp.reshape(n), adv_r=adv.adv_r.reshape(n),
                          adv_c=adv.adv_c.reshape(n), ret_r=adv.ret_r.reshape(n),
                          ret_c=adv.ret_c.reshape(n),
                          critic_mask=torch.ones(n, dtype=torch.bool, device=self.device))

    def _estep_at(self, adv_r: np.ndarray, adv_c: np.ndarray, kl_budget: float,
                  decision: Decision, mode: str) -> tuple[EStepResult, float]:
        """The E-step at one trust-region budget, with the cost margin the cost control gives for
        it; returns the checked result and that margin."""
        cfg = self.cfg
        estep_margin = self.cost_control.estep_margin(decision, adv_c, kl_budget)
        recovery = mode == "recovery"
        est = check_estep(
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
                return check_loss(self.policy_loss(logp_new, batch.logp[mb], target()[mb],
                                                   lower_clip=lower_clip))

        pi_stats = update_policy(self.agent, self.pi_opt, batch, loss_fn, cfg,
                                 clip_range(cfg.mstep, lower_clip), self.gen, target, after_epoch)
        pi_stats["target_used"] = chosen[0] + 1
        return t_e1, row, pi_stats, est.mode

    def _lagrangian_update(self, batch: Batch, decision: Decision, mode: str,
                           lower_clip: float) -> tuple[float, dict[str, Any], dict[str, float], str]:
        """PPO's clipped loss on the advantages mixed by the decision's multiplier lambda; the
        same returns as :meth:`_cppo_update` (no E-step fields; the mode unchanged)."""
        adv_pi = lagrangian_advantage(batch.adv_r, batch.adv_c, decision.lagrange)
        t_e1 = time.perf_counter()
        eps = self.cfg.clip_ratio

        def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
            return ppo_clip_loss(logp_new, batch.logp[mb], adv_pi[mb], eps)

        return t_e1, {}, update_policy(self.agent, self.pi_opt, batch, loss_fn, self.cfg,
                                       (1.0 - eps, 1.0 + eps), self.gen), mode

    # --- one iteration -----------------------------------------------------------------------
    def iteration(self, it: int) -> dict[str, Any]:
        """Train one iteration (the module docstring's steps, in order); returns its CSV row."""
        cfg, agent = self.cfg, self.agent
        t0 = time.perf_counter()
        pi_lr, lower_clip = self._schedule(it)

        ro = self.collector.collect(self.steps_per_env)
        t_collect = time.perf_counter()
        fresh = self.cost.update(ro.episodes)
        if ro.episodes:
            self.last_ep = tuple(float(np.mean(x)) for x in zip(*ro.episodes, strict=True))
        ep_ret, ep_cost, ep_len = self.last_ep
        # Control steers by the windowed estimate, never by this iteration's few episodes.
        cost_est = self.cost.cost
        cost_margin = (self.cost_limit - cost_est) / max(self.cost.length, 1.0)
        decision = self.cost_control.decide(cost_est, fresh, cost_margin, self.cost.cost_se)

        adv, batch = self._real_batch(ro)
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
        pooled = self.cost_pool.cost_batch(lambda o, a: agent.pi.log_prob(agent.pi(o), a))
        if pooled is not None:
            batch = batch.cat(pooled)
        t_e0 = time.perf_counter()

        update = self._cppo_update if self.cost_control.uses_estep else self._lagrangian_update
        t_e1, update_row, pi_stats, mode = update(batch, decision, decision.mode, lower_clip)
        row.update(update_row)
        self.cost_control.observe(row.get("estep_cost_change"), pi_stats["mstep_cost_change"])
        if imagined is not None and cfg.model_rounds:
            row.update(self.dyna.rounds(
                agent, self.pi_opt, self.envs, real, cfg.imagined_frac * self.batch_size,
                lambda more: self._cppo_update(more, decision, mode, lower_clip)[2],
                mode, row["estep_margin"]))
        self.cost_pool.push(real)
        t_m = time.perf_counter()
        loss_vr, loss_vc = update_critics(agent, self.vf_opt, critic_batch, cfg, self.gen)
        t_end = time.perf_counter()
        self.elapsed += t_end - t0
        row.update(
            step=(it + 1) * self.batch_size, iteration=it, ep_return=ep_ret, ep_cost=ep_cost,
            ep_len=ep_len, episodes=len(ro.episodes), mode=mode, cost_est=cost_est,
            cost_est_se=self.cost.cost_se, cost_est_n=self.cost.count, cost_margin=cost_margin,
            loss_vr=loss_vr, loss_vc=loss_vc, pi_lr=pi_lr, lower_clip=lower_clip,
            sps=self.batch_size / (t_end - t0), time_s=self.elapsed, t_estep=t_e1 - t_e0,
            t_mstep=t_m - t_e1, t_critics=t_end - t_m, t_env=self.collector.time_env,
            t_infer=self.collector.time_infer, **times, **pi_stats,
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
                    self.log.save_checkpoint(trainer_state(self, it))
        except KeyboardInterrupt:
            if it >= self.start_iter:
                self.log.save_checkpoint(trainer_state(self, it))
            raise
        finally:
            if bar is not None:
                bar.close()
            self.envs.close()
        self.log.save_checkpoint(trainer_state(self, self.num_iters - 1))
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
    ``runlog.RESUME_CHANGES`` (``total_steps``, ``device``, ``checkpoint_every``,
    ``torch_threads``) may change, since the others shape the results; any other field given
    with a value other than its saved one is a one-line ValueError naming it. Each change is
    printed in one line and written to the run's ``log.txt`` and ``config.json``. The policy
    learning rate and the M-step clip anneal over ``total_steps``, so a larger budget stretches
    their schedules from the resume point on. A run already finished (``runlog.is_finished``)
    is left as it is (it says so) unless ``changes`` gives a larger ``total_steps``. ``config``
    may still be given with ``resume``: it must then be the run's own config (after
    ``changes``; ``log_dir`` and ``run_name`` are not compared), or a one-line ValueError names
    the fields that differ; it is never a source of values.

    ``plugins``: ``estep=``, ``policy_loss=``, ``advantages=`` (see :class:`Trainer`)."""
    check_plugins(plugins)
    if resume is not None:
        # A finished run is answered before the envs (worker processes, simulators) are built.
        cfg, _, _, done = resume_point(resume, config, changes)
        if is_finished(resume, done, cfg):
            say_finished(resume, cfg)
            return Path(resume)
    return Trainer(config, resume=resume, changes=changes, **plugins).run(progress=progress,
                                                                          callback=callback)
