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

The imagined cost is the ModelEnv's pessimistic ``mean + kappa * std`` over members. With
``Config.dyna_model = "simulator"`` the branches step in the simulator itself instead
(:class:`~dynacppo_lite.envs.simulator.SimulatorEnv` set from the observation where it is the
MuJoCo state, :class:`~dynacppo_lite.envs.simulator.NavigationSimulatorEnv` restored from the
recorded rows on the navigation tasks: a perfect model, reward and cost the env's), and the
ensemble is not fitted: the ceiling of what imagined branches can give. With
``"coordinates"`` (the navigation tasks) the rollout records the privileged coordinate state,
the ensemble learns the robot's motion from it, and the branches step in
:class:`~dynacppo_lite.envs.coordinate_model.CoordinateModelEnv`, which computes the lidar
observation, the reward and the cost with the task's formulas. ``Config.imagined_adv = "cost"``
gives the E-step and M-step the imagined samples' cost advantages only (A_r = 0).

Diagnostics (:meth:`DynaModel.update`, one CSV row per iteration): the model's open-loop errors
on the iteration's real rollout *before* it is refitted on it (data it has not seen; the
coordinate model's per group: sensors, pose, objects), the real cost rate beside the imagined
one, and how imagined advantages compare with the real GAE advantages of the same (s, a)
(:func:`advantage_agreement` on probe branches).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dynacppo_lite.batch import Batch, first_order_change
from dynacppo_lite.buffer import ReplayBuffer
from dynacppo_lite.config import Config
from dynacppo_lite.dynamics import DynamicsEnsemble, ModelEnv
from dynacppo_lite.envs.coordinate_model import (
    CoordinateModelEnv,
    check_covered,
    coordinate_open_loop_errors,
    fit_motion,
    motion_ensemble,
)
from dynacppo_lite.envs.coordinates import CoordinateSpec, state_size
from dynacppo_lite.envs.simulator import NavigationSimulatorEnv, SimulatorEnv, navigation_task
from dynacppo_lite.gae import DualGAE, dual_gae
from dynacppo_lite.nets import ActorCritic, sample_action

if TYPE_CHECKING:
    from dynacppo_lite.rollout import Rollout


def records_coordinates(cfg: Config) -> bool:
    """Whether the run's envs must record the coordinate state: dyna-cppo with the coordinate
    model, or with the simulator on a navigation task (``make_env(coordinates=...)``)."""
    return cfg.algo == "dyna-cppo" and (cfg.dyna_model == "coordinates" or records_physics(cfg))


def records_physics(cfg: Config) -> bool:
    """Whether the run's envs must record the MuJoCo state beside the coordinate state: dyna-cppo
    with the simulator on a navigation task (``make_env(physics=...)``)."""
    return (cfg.algo == "dyna-cppo" and cfg.dyna_model == "simulator"
            and navigation_task(cfg.env_id))


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


def kept_steps(ended: torch.Tensor) -> torch.Tensor:
    """The steps of each branch that enter the batch: ``ended`` (k, B) bool (terminated or
    truncated at that step) to (k, B) bool, True up to and including each column's first end."""
    return torch.cumsum(ended.int(), 0) - ended.int() == 0


def imagine_branches(model_env: ModelEnv | SimulatorEnv | NavigationSimulatorEnv | CoordinateModelEnv,
                     agent: ActorCritic,
                     start_obs: torch.Tensor, horizon: int, normalize: Any, *, gamma: float,
                     lam: float, cost_gamma: float, cost_lam: float, low: np.ndarray,
                     high: np.ndarray,
                     first_act: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> Branches:
    """Roll ``horizon`` imagined steps from ``start_obs`` (B, obs_dim, raw units; for the
    coordinate model (B, D) state rows: whatever the model env's ``reset`` takes) and run dual
    GAE per branch.

    ``normalize(raw (B, obs_dim) tensor) -> (B, obs_dim)`` maps raw model states to what the
    policy and critics see. Actions are sampled from the policy with ``generator`` (on the
    model's device; None: torch's global RNG), so imagining draws nothing from the streams of
    the real rollout; their log-probs are ``logp_old`` of the M-step. ``first_act`` (B, act_dim),
    if given, replaces the first step's sampled actions. Actions are clipped to [low, high]
    before the model sees them, as the real envs do.
    """
    obs_raw, _ = model_env.reset(start_obs)
    dev = obs_raw.device
    k = horizon
    lo, hi = (torch.as_tensor(x, dtype=torch.float32, device=dev) for x in (low, high))
    obs_n, acts, logps, rews, costs, v_r, v_c, nv_r, nv_c = ([] for _ in range(9))
    terms, truncs = [], []
    for j in range(k):
        o = normalize(obs_raw)
        with torch.no_grad():
            dist = agent.pi(o)
            a = (first_act if j == 0 and first_act is not None else
                 sample_action(dist.mean, dist.stddev, generator))
            logp = agent.pi.log_prob(dist, a)
        vr, vc = agent.values(o)
        next_raw, r, c, term, trunc, _ = model_env.step(torch.clamp(a, lo, hi))
        nvr, nvc = agent.values(normalize(next_raw))
        for store, x in zip((obs_n, acts, logps, rews, costs, v_r, v_c, nv_r, nv_c, terms, truncs),
                            (o, a, logp, r, c, vr, vc, nvr, nvc, term, trunc), strict=True):
            store.append(x)
        obs_raw = next_raw
    obs_t, act_t = torch.stack(obs_n), torch.stack(acts)
    term_t, trunc_t = torch.stack(terms), torch.stack(truncs)
    trunc_t[-1] = True  # every branch bootstraps at its horizon
    valid = kept_steps(term_t | trunc_t)
    gae = dual_gae(torch.stack(rews), torch.stack(costs), torch.stack(v_r), torch.stack(v_c),
                   torch.stack(nv_r), torch.stack(nv_c), term_t, trunc_t, gamma=gamma, lam=lam,
                   cost_gamma=cost_gamma, cost_lam=cost_lam)
    return Branches(obs=obs_t, act=act_t, logp=torch.stack(logps), rew=torch.stack(rews),
                    cost=torch.stack(costs), adv_r=gae.adv_r, adv_c=gae.adv_c, ret_r=gae.ret_r,
                    ret_c=gae.ret_c, valid=valid, length=valid.sum(0))


def observation_normalizer(envs: Any, device: torch.device | str = "cpu"
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the policy and critics see of raw states: ``(B, obs_dim) -> (B, obs_dim)``, the
    envs' current running mean and variance, clipped like the envs' own normaliser."""
    mean = torch.as_tensor(envs.obs_rms.mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(np.sqrt(envs.obs_rms.var + envs.eps), dtype=torch.float32, device=device)

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - mean) / std, -envs.clip, envs.clip)

    return normalize


def advantage_agreement(imagined: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """How imagined advantages compare with real ones at the same M samples, each (M,):
    ``(std(imagined) / std(real), Pearson correlation)``; NaN where a std is 0 (or M < 2).

    A scale of 1 and a correlation of 1 mean the model's advantages could stand in for the
    real ones; the scale is what the E-step weighs them by when the two kinds share a batch.
    """
    x, y = imagined.double(), real.double()
    sx, sy = x.std(correction=0), y.std(correction=0)
    if len(x) < 2 or sx == 0 or sy == 0:
        return math.nan, math.nan
    corr = ((x - x.mean()) * (y - y.mean())).mean() / (sx * sy)
    return float(sx / sy), float(corr)


#: Starts of the k-step error on the fresh rollout (the one-step error uses every transition).
OPEN_LOOP_STARTS = 512
#: Probe branches per iteration (at most the real batch size): enough for a correlation to
#: about +-0.06 (1 / sqrt(256)), a small share of the imagining cost.
PROBES = 256


@torch.no_grad()
def real_surrogate(agent: ActorCritic, batch: Batch) -> tuple[float, float]:
    """``batch.first_order_change`` of the current policy over the batch's behaviour policy,
    ``r = pi / pi_old``: the reward and cost change per step an update buys on real data."""
    return first_order_change(
        (agent.pi.log_prob(agent.pi(batch.obs), batch.act) - batch.logp).exp(), batch)


def round_kept(before: tuple[float, float], after: tuple[float, float], mode: str,
               cost_margin: float) -> bool:
    """The acceptance rule of an imagined round: by :func:`real_surrogate` before and after it,
    in recovery the real cost change must fall; otherwise the real reward change must rise and
    the cost change rise by no more than the E-step's margin (nothing when it is negative)."""
    if mode == "recovery":
        return after[1] < before[1]
    return after[0] > before[0] and after[1] - before[1] <= max(cost_margin, 0.0)


class DynaModel:
    """The model-based half of Dyna-CPPO: replay buffer, ensemble, and imagined batches.

    Its random streams are its own (``gen``: fit splits and shuffling; ``model_gen``: imagined
    actions and model samples; ``rng``: buffer and probe draws), so the real rollout, the
    E-step and the updates draw exactly what they draw for cppo: with ``imagined_frac = 0``
    dyna-cppo gives cppo's numbers and still fits and measures the model (the control run).

    With ``cfg.dyna_model = "simulator"`` the branches and probes step in ``simulator`` (a
    :class:`SimulatorEnv` of the run's task; on a navigation task, whose envs record the
    coordinate and MuJoCo state (``coordinates`` given), a :class:`NavigationSimulatorEnv`
    restoring the buffer's rows) and the ensemble is never fitted: its CSV columns
    (``loss_dyn_*``, ``dyn_fit_epochs``, ``dyn_err_*``) stay empty, and its (unfitted) weights
    still go into checkpoints.

    With ``"coordinates"`` (``coordinates``: the task's ``CoordinateSpec``, from the envs that
    record the state) the buffer holds the rollouts' state rows, the ensemble predicts the
    robot's motion from its sensors and the action (``envs.coordinate_model``), and the
    branches and probes start from state rows; its errors are logged per group
    (``dyn_err_{sensors,pose,objects,rew,cost}_{1,k}``; ``dyn_err_obs_*`` stay empty).
    """

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device,
                 coordinates: CoordinateSpec | None = None) -> None:
        self.cfg = cfg
        self.device = device
        self.coordinates = coordinates if cfg.dyna_model in ("coordinates", "simulator") else None
        if cfg.dyna_model == "coordinates":
            if coordinates is None:
                raise ValueError("dyna_model='coordinates' needs envs that record the coordinate "
                                 "state (make_env(coordinates=True))")
            try:
                check_covered(coordinates)
            except ValueError as exc:
                raise ValueError(f"dyna_model='coordinates': {exc}; use dyna_model='ensemble'") from None
        model = dict(ensemble_size=cfg.ensemble_size, hidden=cfg.model_hidden, lr=cfg.model_lr,
                     device=device, seed=cfg.seed)
        if self.coordinates is None:
            self.ensemble = DynamicsEnsemble(obs_dim, act_dim, **model)
        else:
            self.ensemble = motion_ensemble(self.coordinates, act_dim, **model)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.model_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
        self.rng = np.random.default_rng(cfg.seed + 3)
        self.simulator: SimulatorEnv | NavigationSimulatorEnv | None = None
        if cfg.dyna_model == "simulator":
            kind = SimulatorEnv if self.coordinates is None else NavigationSimulatorEnv
            self.simulator = kind(cfg.env_id, cfg.seed + 4, fast=cfg.fast_env, device=device)
        width = obs_dim
        if self.coordinates is not None:  # state rows; the simulator's carry the MuJoCo state too
            width = (state_size(self.coordinates) if self.simulator is None
                     else self.simulator.state_dim)
        self.buffer = ReplayBuffer(width, act_dim, cfg.buffer_capacity)

    def _states(self, ro: Rollout) -> tuple[np.ndarray, np.ndarray]:
        """The model's states of the rollout and their successors, (T, E, ·): the raw
        observations, or with the coordinate model the recorded state rows."""
        if self.coordinates is None:
            return ro.raw_obs, ro.raw_next_obs
        if ro.states is None:
            raise ValueError(f"dyna_model={self.cfg.dyna_model!r}: the rollout recorded no "
                             "coordinate state")
        return ro.states, ro.next_states

    def add_real(self, ro: Rollout) -> None:
        """Store the rollout's real transitions (raw units) in the FIFO buffer."""
        n = ro.rew.numel()
        obs, next_obs = self._states(ro)
        self.buffer.add(obs.reshape(n, -1), ro.env_act.reshape(n, -1),
                        ro.rew.reshape(n).cpu().numpy(), ro.cost.reshape(n).cpu().numpy(),
                        next_obs.reshape(n, -1), ro.terminated.reshape(n).cpu().numpy())

    def fresh_errors(self, ro: Rollout) -> dict[str, float]:
        """CSV fields measured on a rollout the model has not been fitted on yet: the real cost
        per step (``real_cost_rate``) and, once the model is fitted, its open-loop errors
        (:meth:`DynamicsEnsemble.open_loop_errors`) at h = 1 and h = ``model_horizon``:
        ``dyn_err_{obs,rew,cost}_{1,k}``; the coordinate model's per group
        (:func:`~dynacppo_lite.envs.coordinate_model.coordinate_open_loop_errors`):
        ``dyn_err_{sensors,pose,objects,rew,cost}_{1,k}``."""
        row = {"real_cost_rate": float(ro.cost.mean())}
        if not bool(self.ensemble.fitted):
            return row
        done = ro.terminated | ro.truncated
        if self.coordinates is None:
            err = self.ensemble.open_loop_errors(
                ro.raw_obs, ro.env_act, ro.rew, ro.cost, ro.raw_next_obs, done,
                self.cfg.model_horizon, max_starts=OPEN_LOOP_STARTS)
            keys = ("obs", "rew", "cost")
        else:
            err = coordinate_open_loop_errors(
                self.ensemble, self.coordinates, ro.states, ro.env_act, ro.rew.cpu().numpy(),
                ro.cost.cpu().numpy(), ro.next_states, done.cpu().numpy(),
                self.cfg.model_horizon, max_starts=OPEN_LOOP_STARTS)
            keys = ("sensors", "pose", "objects", "rew", "cost")
        for key in keys:
            values = getattr(err, key)
            row[f"dyn_err_{key}_1"], row[f"dyn_err_{key}_k"] = float(values[0]), float(values[-1])
        return row

    def fit(self, n_new: int) -> dict[str, float]:
        """Refit (warm start) on ``model_fit_samples`` transitions: the ``n_new`` newest (the
        rollout just added) and older ones drawn without replacement; at most
        ``model_fit_epochs`` epochs, stopped early on the held-out loss (``model_fit_patience``)."""
        cfg = self.cfg
        data = self.buffer.sample_with_newest(cfg.model_fit_samples, n_new, self.rng)
        options = dict(holdout_frac=cfg.model_holdout, max_epochs=cfg.model_fit_epochs,
                       patience=cfg.model_fit_patience, generator=self.gen)
        if self.coordinates is None:
            fit = self.ensemble.fit(*data[:5], **options)
        else:
            fit = fit_motion(self.ensemble, self.coordinates, data.obs, data.act, data.next_obs,
                             **options)
        return {"loss_dyn_train": fit.train_loss, "loss_dyn_holdout": fit.holdout_loss,
                "dyn_fit_epochs": fit.epochs}

    def update(self, ro: Rollout, adv: DualGAE, agent: ActorCritic, envs: Any,
               imagine: bool) -> tuple[Batch | None, dict[str, float], float, float]:
        """One iteration's model work: errors on the fresh rollout ``ro``, which then joins the
        buffer; a refit (none with the simulator as the model); and, if ``imagine``, the
        imagined batch and the advantage probes.

        Returns (imagined batch or None, CSV fields, t_model: errors and fit, t_imagine)."""
        t0 = time.perf_counter()
        row = self.fresh_errors(ro)
        self.add_real(ro)
        if self.simulator is None:
            row.update(self.fit(ro.rew.numel()))
        t1 = time.perf_counter()
        batch = None
        if imagine:
            batch, imagined_row = self.imagine(ro, adv, agent, envs)
            row.update(imagined_row)
        return batch, row, t1 - t0, time.perf_counter() - t1

    def model_env(self, deterministic: bool = False
                  ) -> ModelEnv | SimulatorEnv | NavigationSimulatorEnv | CoordinateModelEnv:
        """What imagined branches step in: the simulator where it is the model (deterministic
        already), else the ensemble as an env (flat, or the coordinate model) with the config's
        pessimism and disagreement cut, drawing from the model's own generator."""
        if self.simulator is not None:
            return self.simulator
        cfg = self.cfg
        options = dict(kappa=cfg.kappa, deterministic=deterministic,
                       disagreement_threshold=cfg.disagreement_threshold, generator=self.model_gen)
        if self.coordinates is not None:
            return CoordinateModelEnv(self.ensemble, self.coordinates, **options)
        return ModelEnv(self.ensemble, **options)

    def branches(self, agent: ActorCritic, envs: Any, start: torch.Tensor,
                 first_act: torch.Tensor | None = None, model_env: Any = None) -> Branches:
        """Imagined branches from raw start states (B, obs_dim) (the coordinate model: (B, D)
        state rows), seen through the envs' current observation normaliser; ``model_env``
        (default: :meth:`model_env`) is anything with ``ModelEnv``'s ``reset``/``step``, e.g.
        the simulator itself (``bench model``)."""
        cfg = self.cfg
        normalize = observation_normalizer(envs, self.device)
        if model_env is None:
            model_env = self.model_env()
        return imagine_branches(model_env, agent, start, cfg.model_horizon, normalize,
                                gamma=cfg.gamma, lam=cfg.lam, cost_gamma=cfg.cost_gamma,
                                cost_lam=cfg.cost_lam, low=envs.single_action_space.low,
                                high=envs.single_action_space.high, first_act=first_act,
                                generator=self.model_gen)

    def imagined_batch(self, agent: ActorCritic, envs: Any,
                       n_samples: float) -> tuple[Batch | None, dict[str, float]]:
        """About ``n_samples`` imagined samples: ``n_samples / model_horizon`` branches (at
        least one when ``n_samples > 0``) from buffer states, with the CSV fields
        ``imagined_cost_rate`` and ``branch_len_mean``; ``(None, {"imagined_frac": 0})`` when
        ``n_samples`` is 0. With ``imagined_adv = "cost"`` the samples' reward advantages are 0
        (their returns, for the critics, are kept)."""
        cfg = self.cfg
        n_branches = 0 if n_samples <= 0 else max(1, int(n_samples) // cfg.model_horizon)
        if not n_branches:
            return None, {"imagined_frac": 0.0}
        start = torch.as_tensor(self.buffer.sample(n_branches, self.rng).obs, device=self.device)
        br = self.branches(agent, envs, start)
        m = br.valid
        n_imag = int(m.sum())  # >= n_branches: a branch keeps at least its first step
        row = {"imagined_cost_rate": float(br.cost[m].mean()),
               "branch_len_mean": float(br.length.float().mean())}
        adv_r = br.adv_r[m] if cfg.imagined_adv == "both" else torch.zeros_like(br.adv_r[m])
        return Batch(obs=br.obs[m], act=br.act[m], logp=br.logp[m], adv_r=adv_r,
                     adv_c=br.adv_c[m], ret_r=br.ret_r[m], ret_c=br.ret_c[m],
                     critic_mask=torch.full((n_imag,), cfg.imagined_critics,
                                            device=self.device)), row

    def rounds(self, agent: ActorCritic, pi_opt: torch.optim.Optimizer, envs: Any, real: Batch,
               n_samples: float, update: Callable[[Batch], dict[str, float]], mode: str,
               estep_margin: float) -> dict[str, Any]:
        """ME-TRPO's rounds: ``model_rounds`` further policy updates (``update``, the trainer's
        E-step/M-step in ``mode`` on a batch), each on a fresh imagined batch of about
        ``n_samples``, kept only where :func:`round_kept` accepts its effect on the ``real``
        batch (else the policy and its optimiser are put back). Returns the CSV fields
        ``rounds_kept`` and ``rounds_kl`` (the summed realised KL of the kept rounds)."""
        out = {"rounds_kept": 0, "rounds_kl": 0.0}
        before = real_surrogate(agent, real)
        for _ in range(self.cfg.model_rounds):
            more, _ = self.imagined_batch(agent, envs, n_samples)
            saved = copy.deepcopy((agent.pi.state_dict(), pi_opt.state_dict()))
            stats = update(more)
            after = real_surrogate(agent, real)
            kept = round_kept(before, after, mode, estep_margin)
            if kept:
                before = after
            else:
                agent.pi.load_state_dict(saved[0])
                pi_opt.load_state_dict(saved[1])
            out["rounds_kept"] += int(kept)
            out["rounds_kl"] += stats["kl"] * kept
        return out

    def imagine(self, ro: Rollout, adv: DualGAE, agent: ActorCritic,
                envs: Any) -> tuple[Batch | None, dict[str, float]]:
        """The imagined batch (None with ``imagined_frac = 0``) and its CSV fields.

        Batch: ``imagined_frac * n_real / model_horizon`` branches (at least one when the
        fraction is > 0) from buffer states. Probes: up to :data:`PROBES` branches start at
        real (s_t, a_t) of the rollout ``ro`` (its raw state, its sampled action), and the
        first step's imagined GAE advantages are compared with the real GAE advantages ``adv``
        of the same samples: ``imag_adv_{r,c}_scale`` and ``imag_adv_{r,c}_corr``
        (:func:`advantage_agreement`). A probe's first advantage is what that sample would
        carry into the batch as an imagined one; the model has just been fitted on these
        states, so this checks the advantages, while ``dyn_err_*`` checks generalisation.
        """
        cfg = self.cfg
        n_real = ro.rew.numel()
        batch, row = self.imagined_batch(agent, envs, cfg.imagined_frac * n_real)
        if batch is not None:
            row["imagined_frac"] = len(batch.logp) / (n_real + len(batch.logp))
        rows = torch.as_tensor(self.rng.choice(n_real, min(PROBES, n_real), replace=False),
                               device=self.device)
        start = torch.as_tensor(self._states(ro)[0].reshape(n_real, -1), dtype=torch.float32,
                                device=self.device)[rows]
        probe = self.branches(agent, envs, start, first_act=ro.act.reshape(n_real, -1)[rows])
        for key in ("r", "c"):
            real = getattr(adv, f"adv_{key}").reshape(n_real)[rows]
            row[f"imag_adv_{key}_scale"], row[f"imag_adv_{key}_corr"] = advantage_agreement(
                getattr(probe, f"adv_{key}")[0], real)
        return batch, row

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
