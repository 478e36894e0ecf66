"""Dyna: fit the dynamics ensemble on real data and add imagined branches to the batch.

A *branch* starts at a real state from the replay buffer and runs ``k = model_horizon`` steps in
the :class:`~dynacppo_lite.dynamics.ModelEnv`, the current policy choosing the actions (MBPO's
branched rollouts). All B branches advance together: one (B, obs_dim) tensor per step.

Each branch is one column of a (k, B) array, and dual GAE runs down the columns, so the
recursion never crosses from one branch into another. A branch ends

* after k steps: it is marked truncated and bootstraps from V(s_k);
* where the ensemble disagrees beyond the threshold (ModelEnv truncates it): the steps up to and
  including that one are kept and bootstrap from V of the predicted next state; later steps of
  the column are dropped from the batch.

The imagined cost is the ModelEnv's pessimistic ``mean + kappa * std`` over members.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dynacppo_lite.batch import Batch
from dynacppo_lite.buffer import ReplayBuffer
from dynacppo_lite.config import Config
from dynacppo_lite.dynamics import DynamicsEnsemble, ModelEnv
from dynacppo_lite.gae import dual_gae
from dynacppo_lite.nets import ActorCritic

if TYPE_CHECKING:
    from dynacppo_lite.rollout import Rollout


@dataclass
class Branches:
    """k imagined steps of B branches. Tensors (k, B, ...); ``valid`` marks kept steps."""

    obs: torch.Tensor
    act: torch.Tensor
    logp: torch.Tensor
    rew: torch.Tensor
    cost: torch.Tensor
    adv_r: torch.Tensor
    adv_c: torch.Tensor
    ret_r: torch.Tensor
    ret_c: torch.Tensor
    valid: torch.Tensor
    """(k, B) bool: True up to and including each branch's last step."""
    length: torch.Tensor
    """(B,) steps kept per branch."""


def imagine_branches(model_env: ModelEnv, agent: ActorCritic, start_obs: torch.Tensor,
                     horizon: int, normalize: Any, *, gamma: float, lam: float, cost_gamma: float,
                     cost_lam: float, low: np.ndarray, high: np.ndarray) -> Branches:
    """Roll ``horizon`` imagined steps from ``start_obs`` (B, obs_dim, raw units) and run dual
    GAE per branch.

    ``normalize(raw (B, obs_dim) tensor) -> (B, obs_dim)`` maps raw model states to what the
    policy and critics see. Actions are sampled from the policy (their log-probs are
    ``logp_old`` of the M-step) and clipped to [low, high] before the model sees them, as the
    real envs do.
    """
    obs_raw, _ = model_env.reset(start_obs)
    dev = obs_raw.device
    k = horizon
    lo, hi = (torch.as_tensor(x, dtype=torch.float32, device=dev) for x in (low, high))
    obs_n, acts, logps, rews, costs, v_r, v_c, nv_r, nv_c = ([] for _ in range(9))
    terms, truncs = [], []
    for _ in range(k):
        o = normalize(obs_raw)
        a, logp, vr, vc = agent.step(o)
        next_raw, r, c, term, trunc, _ = model_env.step(torch.clamp(a, lo, hi))
        nvr, nvc = agent.values(normalize(next_raw))
        for store, x in zip((obs_n, acts, logps, rews, costs, v_r, v_c, nv_r, nv_c, terms, truncs),
                            (o, a, logp, r, c, vr, vc, nvr, nvc, term, trunc), strict=True):
            store.append(x)
        obs_raw = next_raw
    obs_t, act_t = torch.stack(obs_n), torch.stack(acts)
    term_t, trunc_t = torch.stack(terms), torch.stack(truncs)
    trunc_t[-1] = True  # every branch bootstraps at its horizon
    ended = term_t | trunc_t
    # Keep steps up to and including the first end of each branch.
    valid = torch.cumsum(ended.int(), 0) - ended.int() == 0
    gae = dual_gae(torch.stack(rews), torch.stack(costs), torch.stack(v_r), torch.stack(v_c),
                   torch.stack(nv_r), torch.stack(nv_c), term_t, trunc_t, gamma=gamma, lam=lam,
                   cost_gamma=cost_gamma, cost_lam=cost_lam)
    return Branches(obs=obs_t, act=act_t, logp=torch.stack(logps), rew=torch.stack(rews),
                    cost=torch.stack(costs), adv_r=gae.adv_r, adv_c=gae.adv_c, ret_r=gae.ret_r,
                    ret_c=gae.ret_c, valid=valid, length=valid.sum(0))


class DynaModel:
    """The model-based half of Dyna-CPPO: replay buffer, ensemble, and imagined batches."""

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.buffer = ReplayBuffer(obs_dim, act_dim, cfg.buffer_capacity)
        self.ensemble = DynamicsEnsemble(obs_dim, act_dim, ensemble_size=cfg.ensemble_size,
                                         hidden=cfg.model_hidden, lr=cfg.model_lr, device=device,
                                         seed=cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.model_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
        self.rng = np.random.default_rng(cfg.seed + 3)

    def add_real(self, ro: Rollout) -> None:
        """Store the rollout's real transitions (raw units) in the FIFO buffer."""
        n = ro.raw_obs.shape[0] * ro.raw_obs.shape[1]
        self.buffer.add(ro.raw_obs.reshape(n, -1), ro.env_act.reshape(n, -1),
                        ro.rew.reshape(n).cpu().numpy(), ro.cost.reshape(n).cpu().numpy(),
                        ro.raw_next_obs.reshape(n, -1), ro.terminated.reshape(n).cpu().numpy())

    def imagine(self, agent: ActorCritic, envs: Any, n_real: int,
                gen: torch.Generator) -> tuple[Batch | None, dict[str, float], float, float]:
        """Fit the model, roll branches; returns (imagined batch, CSV fields, t_fit, t_rollout)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        data = (self.buffer.all() if len(self.buffer) <= cfg.model_fit_samples
                else self.buffer.sample(cfg.model_fit_samples, self.rng))
        fit = self.ensemble.fit(*data[:5], holdout_frac=cfg.model_holdout,
                                max_epochs=cfg.model_fit_epochs, patience=2, generator=self.gen)
        t1 = time.perf_counter()
        row: dict[str, float] = {"loss_dyn_train": fit.train_loss, "loss_dyn_holdout": fit.holdout_loss}
        n_branches = max(1, int(cfg.imagined_frac * n_real) // cfg.model_horizon)
        start = torch.as_tensor(self.buffer.sample(n_branches, self.rng).obs, device=self.device)
        mean = torch.as_tensor(envs.obs_rms.mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(np.sqrt(envs.obs_rms.var + envs.eps), dtype=torch.float32,
                              device=self.device)

        def normalize(x: torch.Tensor) -> torch.Tensor:
            return torch.clamp((x - mean) / std, -envs.clip, envs.clip)

        model_env = ModelEnv(self.ensemble, kappa=cfg.kappa,
                             disagreement_threshold=cfg.disagreement_threshold,
                             generator=self.model_gen)
        br = imagine_branches(model_env, agent, start, cfg.model_horizon, normalize,
                              gamma=cfg.gamma, lam=cfg.lam, cost_gamma=cfg.cost_gamma,
                              cost_lam=cfg.cost_lam, low=envs.single_action_space.low,
                              high=envs.single_action_space.high)
        t2 = time.perf_counter()
        m = br.valid
        n_imag = int(m.sum())
        row.update(imagined_frac=n_imag / (n_real + n_imag),
                   imagined_cost_rate=float(br.cost[m].mean()) if n_imag else 0.0,
                   branch_len_mean=float(br.length.float().mean()))
        if n_imag == 0:
            return None, row, t1 - t0, t2 - t1
        batch = Batch(obs=br.obs[m], act=br.act[m], logp=br.logp[m], adv_r=br.adv_r[m],
                      adv_c=br.adv_c[m], ret_r=br.ret_r[m], ret_c=br.ret_c[m],
                      critic_mask=torch.full((n_imag,), cfg.imagined_critics, device=self.device))
        return batch, row, t1 - t0, t2 - t1

    def state_dict(self) -> dict[str, Any]:
        data = self.buffer.all()
        return {"ensemble": self.ensemble.state_dict(),
                "ensemble_opt": self.ensemble.optimizer.state_dict(),
                "buffer": {k: torch.as_tensor(v) for k, v in data._asdict().items()},
                "gen": self.gen.get_state(), "model_gen": self.model_gen.get_state(),
                "rng": self.rng.bit_generator.state["state"]["state"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.load_state_dict(state["ensemble"])
        self.ensemble.optimizer.load_state_dict(state["ensemble_opt"])
        buf = {k: v.numpy() for k, v in state["buffer"].items()}
        if len(buf["obs"]):
            self.buffer.add(buf["obs"], buf["act"], buf["rew"], buf["cost"], buf["next_obs"],
                            buf["terminated"])
        self.gen.set_state(state["gen"])
        self.model_gen.set_state(state["model_gen"])
        bg = self.rng.bit_generator.state
        bg["state"]["state"] = int(state["rng"])
        self.rng.bit_generator.state = bg
