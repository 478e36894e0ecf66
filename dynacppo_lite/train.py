"""The training loop shared by ``cppo``, ``ppo-lag`` and ``dyna-cppo``.

One iteration (see ``DESIGN.md``)::

    collect    real steps from the vector envs, one batched inference per step
    dual GAE   reward and cost advantages; truncated episodes bootstrap from V(final obs)
    cost       the episodes that ended join a window (CostEstimate): J_c, its s.e., count
    mode       cppo: the PI controller sets the E-step's cost margin (recovery where it
               saturates); or the paper's bang-bang switch; ppo-lag: the multiplier
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
E-step is given (``estep_margin``) depends on ``Config.cost_control`` (see DESIGN.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.batch import Batch
from dynacppo_lite.config import Config
from dynacppo_lite.cost_control import MarginController, margin_from_fraction
from dynacppo_lite.cost_estimate import CostEstimate
from dynacppo_lite.envs import default_cost_limit, make_env
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.gae import dual_gae
from dynacppo_lite.imagine import DynaModel
from dynacppo_lite.lagrangian import LagrangeMultiplier, lagrangian_advantage, ppo_clip_loss
from dynacppo_lite.mstep import mstep_diagnostics, mstep_loss, realised_fraction, recovery_mstep_loss
from dynacppo_lite.nets import ActorCritic
from dynacppo_lite.rollout import Collector
from dynacppo_lite.runlog import CheckpointError, RunLog, load_checkpoint, rng_state, set_rng_state
from dynacppo_lite.schedules import ModeSwitch, linear
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
                  v_target: torch.Tensor | None = None) -> dict[str, float]:
    """Epochs of minibatches on ``loss_fn(logp_new, idx)``; early stop on approx KL.

    With the E-step's ``v_target`` (N,), also reports how far the policy followed it: ``reach``
    and ``reach_corr``, the slope and correlation of r - 1 on v - 1 (``realised_fraction``)."""
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
        if cfg.target_kl is not None:
            with torch.no_grad():
                logp_all = agent.pi.log_prob(agent.pi(batch.obs), batch.act)
            if mstep_diagnostics(logp_all, batch.logp, lower_clip=lower_clip)["approx_kl"] > cfg.target_kl:
                break
    with torch.no_grad():
        logp_all = agent.pi.log_prob(agent.pi(batch.obs), batch.act)
    diag = mstep_diagnostics(logp_all, batch.logp, lower_clip=lower_clip)
    out = {"loss_pi": float(loss.detach()), "kl": diag["approx_kl"], "clip_frac": diag["clip_frac"],
           "ratio_mean": diag["ratio_mean"], "epochs_run": epochs_run}
    if v_target is not None:
        out["reach"], out["reach_corr"] = realised_fraction((logp_all - batch.logp).exp(), v_target)
    return out


class Trainer:
    """Owns the envs, networks, optimisers and run directory of one run.

    ``Trainer(cfg).run()`` trains; ``train(cfg)`` is the one-call form.
    """

    def __init__(self, config: Config, resume: str | Path | None = None) -> None:
        if resume is not None:
            resume = Path(resume)
            ckpt = load_checkpoint(resume / "checkpoint.pt")
            saved = Config.from_dict(ckpt["config"])
            # What may change on resume: where it runs and how long; nothing that shapes results.
            for key in ("total_steps", "device", "checkpoint_every"):
                setattr(saved, key, getattr(config, key))
            config = saved
        self.cfg = cfg = config.validate()
        self.device = resolve_device(cfg.device)
        torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.cost_limit = cfg.cost_limit if cfg.cost_limit is not None else default_cost_limit(cfg.env_id)
        self.envs = make_env(cfg.env_id, cfg.num_envs, cfg.seed, fast=cfg.fast_env,
                             max_episode_steps=cfg.max_episode_steps)
        obs_dim = self.envs.single_observation_space.shape[0]
        act_dim = self.envs.single_action_space.shape[0]
        self.agent = ActorCritic(obs_dim, act_dim, cfg.hidden, cfg.init_log_std).to(self.device)
        self.pi_opt = torch.optim.Adam(self.agent.pi.parameters(), lr=cfg.pi_lr, eps=1e-5)
        self.vf_opt = torch.optim.Adam([*self.agent.v_r.parameters(), *self.agent.v_c.parameters()],
                                       lr=cfg.vf_lr, eps=1e-5)
        self.lagrange = LagrangeMultiplier(cfg.lagrangian_init, cfg.lagrangian_lr, self.cost_limit)
        self.switch = ModeSwitch(self.cost_limit, cfg.switch_ratio)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.steps_per_env = cfg.steps_per_iter // cfg.num_envs
        self.batch_size = self.steps_per_env * cfg.num_envs
        self.num_iters = max(1, cfg.total_steps // self.batch_size)
        self.dyna = None
        if cfg.algo == "dyna-cppo":
            self.dyna = DynaModel(cfg, obs_dim, act_dim, self.device)
        self.last_ep = (0.0, 0.0, 1.0)  # (return, cost, length) before any episode ended
        self.cost = CostEstimate(cfg.cost_window)
        self.reach = cfg.reach_init
        self.controller = MarginController(cfg.pid_ki, cfg.pid_kp, cfg.pid_integral_min)
        self.start_iter = 0
        self.elapsed = 0.0
        if resume is not None:
            self.run_dir = resume
            self.log = RunLog(resume, cfg, resume=True)
            self._restore(ckpt)
            self.log.truncate_after(self.start_iter - 1)
        else:
            self.run_dir = Path(cfg.log_dir) / (cfg.run_name or f"{cfg.algo}_{cfg.env_id}_s{cfg.seed}")
            self.log = RunLog(self.run_dir, cfg)
        # A resumed run cannot restore the simulators' internal state: it reseeds them per iteration.
        self.collector = Collector(self.envs, self.agent, self.device,
                                   seed=cfg.seed + 7919 * self.start_iter)

    # --- checkpoints -------------------------------------------------------------------------
    def _state(self, iteration: int) -> dict[str, Any]:
        state = {
            "config": self.cfg.to_dict(), "iteration": iteration, "elapsed": self.elapsed,
            "agent": self.agent.state_dict(), "pi_opt": self.pi_opt.state_dict(),
            "vf_opt": self.vf_opt.state_dict(), "lagrange": self.lagrange.state_dict(),
            "mode": self.switch.mode, "last_ep": list(self.last_ep), "rng": rng_state(),
            "cost_estimate": self.cost.state_dict(), "reach": self.reach,
            "controller": self.controller.integral,
            "gen": self.gen.get_state(),
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
            self.lagrange.load_state_dict(ckpt["lagrange"])
            self.envs.load_state_dict({k: v.numpy() for k, v in ckpt["obs_norm"].items()})
            self.switch.mode = ckpt["mode"]
            self.last_ep = tuple(ckpt["last_ep"])
            self.cost.load_state_dict(ckpt["cost_estimate"])
            self.reach = float(ckpt["reach"])
            self.controller.integral = float(ckpt["controller"])
            set_rng_state(ckpt["rng"])
            self.gen.set_state(ckpt["gen"])
            if self.dyna is not None:
                self.dyna.load_state_dict(ckpt["dyna"])
            self.start_iter = int(ckpt["iteration"]) + 1
            self.elapsed = float(ckpt["elapsed"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0][:120]
            raise CheckpointError(f"checkpoint does not match this run's setting ({reason})") from None

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
        if cfg.algo == "ppo-lag":
            mode = "lagrange"
        elif cfg.cost_control == "bang-bang":
            mode = self.switch.update(cost_est)
        else:
            mode = "normal"  # the E-step turns to recovery where the margin cannot be met
        # pid: the E-step stays in normal mode; at u = -1 only pure cost descent meets the
        # margin, and where nothing does the E-step itself turns to recovery (its case 3).
        # The recovery rule's first choice, the largest cost cut that keeps A.x >= 0, was not
        # used: on the Goal tasks cost and reward advantages are correlated, and 200k steps at
        # that reward-neutral angle (about -pi/2) did not bring the cost down.
        u = self.controller.update(cost_est, self.cost_limit, fresh) if cfg.cost_control == "pid" else None

        adv = dual_gae(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r,
                       ro.next_values_c, ro.terminated, ro.truncated, gamma=cfg.gamma, lam=cfg.lam,
                       cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
        n_real = self.batch_size
        batch = Batch(obs=ro.obs.reshape(n_real, -1), act=ro.act.reshape(n_real, -1),
                      logp=ro.logp.reshape(n_real), adv_r=adv.adv_r.reshape(n_real),
                      adv_c=adv.adv_c.reshape(n_real), ret_r=adv.ret_r.reshape(n_real),
                      ret_c=adv.ret_c.reshape(n_real),
                      critic_mask=torch.ones(n_real, dtype=torch.bool, device=self.device))
        row: dict[str, Any] = {}
        times = {"t_collect": t_collect - t0, "t_model": 0.0, "t_imagine": 0.0}
        if self.dyna is not None:
            self.dyna.add_real(ro)
            if it >= cfg.model_start_iter:
                imagined, dyna_row, t_model, t_imagine = self.dyna.imagine(
                    agent, self.envs, n_real, self.gen)
                row.update(dyna_row)
                times.update(t_model=t_model, t_imagine=t_imagine)
                if imagined is not None:
                    batch = batch.cat(imagined)
        t_e0 = time.perf_counter()

        v = None
        if cfg.algo == "ppo-lag":
            # An iteration with no finished episode brings no new evidence: lambda stays.
            lagrange = self.lagrange.update(cost_est) if fresh else self.lagrange.value
            adv_pi = lagrangian_advantage(batch.adv_r, batch.adv_c, lagrange)
            t_e1 = time.perf_counter()

            def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
                return ppo_clip_loss(logp_new, batch.logp[mb], adv_pi[mb], cfg.clip_ratio)

            row.update(lagrange=lagrange)
        else:
            # The M-step realises only a fraction (reach) of the E-step's step, and the cost
            # change scales with it: ask for margin / reach at the full radius.
            adv_r, adv_c = (x.double().cpu().numpy() for x in (batch.adv_r, batch.adv_c))
            if u is not None:
                estep_margin = margin_from_fraction(u, adv_c, cfg.kl_budget)
            else:
                estep_margin = cost_margin / self.reach if cfg.realised_radius else cost_margin
            est = solve_estep(adv_r, adv_c, cost_margin=estep_margin, kl_budget=cfg.kl_budget,
                              lower_bound=cfg.v_lower_bound, method=cfg.estep_method,
                              recovery=mode == "recovery")
            t_e1 = time.perf_counter()
            mode = est.mode
            v = torch.as_tensor(est.v, dtype=torch.float32, device=self.device)
            row.update(estep_angle=float(est.angle), estep_feasible=int(est.feasible),
                       estep_margin=estep_margin, estep_cost_change=est.cost_change,
                       reach_est=self.reach, margin_u=u)
            if mode == "recovery":
                def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
                    return recovery_mstep_loss(logp_new, batch.logp[mb], v[mb], batch.adv_c[mb],
                                               lower_clip=lower_clip, beta=cfg.beta)
            else:
                def loss_fn(logp_new: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
                    return mstep_loss(logp_new, batch.logp[mb], v[mb], lower_clip=lower_clip)

        pi_stats = update_policy(agent, self.pi_opt, batch, loss_fn, cfg, lower_clip, self.gen, v)
        t_m = time.perf_counter()
        if "reach" in pi_stats:
            measured = min(max(pi_stats["reach"], cfg.reach_min), 1.0)
            self.reach = cfg.reach_smoothing * self.reach + (1.0 - cfg.reach_smoothing) * measured
        loss_vr, loss_vc = update_critics(agent, self.vf_opt, batch, cfg, self.gen)
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
        """Train to ``total_steps``; returns the run directory. Ctrl-C saves a checkpoint first."""
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


def train(config: Config, resume: str | Path | None = None, progress: bool = False,
          callback: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train with ``config`` (or continue the run in ``resume``); returns the run directory."""
    return Trainer(config, resume=resume).run(progress=progress, callback=callback)


def load_trained(run_dir: str | Path, *, num_envs: int = 1, seed: int = 0,
                 render_mode: str | None = None) -> tuple[Config, Any, ActorCritic]:
    """A run's agent from its ``checkpoint.pt``, and a fresh env that scales observations with
    the run's normaliser statistics: ``(config, envs, agent)``; the caller closes ``envs``."""
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    cfg = Config.from_dict(ckpt["config"])
    envs = make_env(cfg.env_id, num_envs=num_envs, seed=seed, render_mode=render_mode,
                    max_episode_steps=cfg.max_episode_steps)
    envs.load_state_dict({k: v.numpy() for k, v in ckpt["obs_norm"].items()})
    agent = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space.shape[0],
                        cfg.hidden, cfg.init_log_std)
    agent.load_state_dict(ckpt["agent"])
    return cfg, envs, agent
