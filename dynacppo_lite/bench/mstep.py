"""``bench mstep``: each candidate M-step on the same real batches, run to the KL early stop.

A partly trained policy (the run given by ``--run``, by default the ppo-lag policy shipped in
``bench/reference``: 2e5 steps on SafetyPointGoal1-v0) collects ``--batches`` real batches.
On each, the E-step gives v for a controller output u (``--margin``, see ``MARGINS``) and every
candidate starts from the same policy with a fresh Adam at the run's first learning rate and
takes the trainer's own policy update (``train.update_policy``: epochs of minibatches, early
stop at ``target_kl``). Reported, mean over batches:

- ``reach`` / ``corr``: slope and correlation of r - 1 on v - 1 (how far it followed v);
- ``kl``: realised KL(pi_old || pi_new); ``epochs``: epochs before the early stop;
- ``gain_r`` / ``gain_c``: the surrogate gains mean((r - 1) A) / std(A) for the reward and
  the cost advantages: the first-order change of the return and of the cost that the update
  bought, in units of the advantages' spread;
- ``estep_gain_r`` / ``estep_gain_c``: the same for v itself (what the E-step asked for);
- ``held_r`` / ``held_c``: the gains on the *other* batches (their samples, their advantages):
  what the update buys beyond fitting the noise of its own batch.

PPO's clipped loss on ppo-lag's mixed advantage (``lagrangian_advantage`` at the multiplier of
``MARGINS``) runs beside them as the reference.
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dynacppo_lite.batch import Batch
from dynacppo_lite.bench.common import command_line, markdown_table, suite_parser, write_results
from dynacppo_lite.config import Config
from dynacppo_lite.cost_control import margin_from_fraction
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.evaluation import load_trained
from dynacppo_lite.gae import dual_gae
from dynacppo_lite.lagrangian import lagrangian_advantage, ppo_clip_loss
from dynacppo_lite.mstep import (
    clip_range,
    decoupled_likelihood_loss,
    linear_mstep_loss,
    mstep_diagnostics,
    mstep_loss,
    realised_fraction,
)
from dynacppo_lite.nets import ActorCritic
from dynacppo_lite.rollout import Collector
from dynacppo_lite.train import update_policy

#: MPO's bounds for the decoupled likelihood M-step (Abdolmaleki et al. 2018 use a mean bound
#: about 100x the covariance bound); the mean's takes the trainer's whole KL target.
MPO_EPS_MEAN, MPO_EPS_STD = 0.02, 2e-4


#: A partly trained policy shipped with the package (ppo-lag on SafetyPointGoal1-v0, 2e5 steps,
#: seed 0; only the networks, the observation normaliser and the config): the default source of
#: real batches for this study and for notebook 04.
REFERENCE_POLICY = Path(__file__).parent / "reference" / "ppolag_SafetyPointGoal1-v0_2e5"


#: The E-step's KL in the study: the paper's, for every candidate. The tracking loss's step
#: shrinks with the E-step's budget (it fits v), the linear M-step's does not (only v - 1's
#: direction enters), so the trainer's smaller default would handicap the paper's M-step.
STUDY_KL = 0.02


def collect_batches(run_dir: Path, n: int, seed: int,
                    steps: int | None = None) -> tuple[Config, ActorCritic, list[Batch]]:
    """``n`` real batches of ``steps`` steps (default: the run's ``steps_per_iter``) from the
    policy of the run in ``run_dir``. The returned config is today's defaults for that task
    (the E-step and M-step settings the study compares) with the E-step's KL at
    :data:`STUDY_KL`, not the run's own."""
    run_cfg, envs, agent = load_trained(run_dir, num_envs=1, seed=seed)
    cfg = Config(env_id=run_cfg.env_id, steps_per_iter=run_cfg.steps_per_iter, estep_kl=STUDY_KL)
    device = torch.device("cpu")
    collector = Collector(envs, agent, device, seed=seed)
    batches = []
    try:
        for _ in range(n):
            ro = collector.collect(steps or cfg.steps_per_iter)
            adv = dual_gae(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r,
                           ro.next_values_c, ro.terminated, ro.truncated, gamma=cfg.gamma,
                           lam=cfg.lam, cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
            m = ro.rew.numel()
            batches.append(Batch(obs=ro.obs.reshape(m, -1), act=ro.act.reshape(m, -1),
                                 logp=ro.logp.reshape(m), adv_r=adv.adv_r.reshape(m),
                                 adv_c=adv.adv_c.reshape(m), ret_r=adv.ret_r.reshape(m),
                                 ret_c=adv.ret_c.reshape(m),
                                 critic_mask=torch.ones(m, dtype=torch.bool)))
    finally:
        envs.close()
    return cfg, agent, batches


def _mpo_update(agent: ActorCritic, batch: Batch, v: torch.Tensor, cfg: Config,
                gen: torch.Generator, after_epoch: Callable[[torch.Tensor], None]) -> int:
    """The decoupled likelihood M-step with MPO's dual ascent on its two multipliers; the same
    epochs, minibatches, learning rate and KL early stop as the trainer. Returns epochs run."""
    opt = torch.optim.Adam(agent.pi.parameters(), lr=cfg.pi_lr, eps=1e-5)
    log_eta = torch.zeros(2)  # multipliers of the mean and std KLs, in log space as MPO keeps them
    n, size = len(batch.logp), max(1, len(batch.logp) // cfg.num_minibatches)
    with torch.no_grad():
        old = agent.pi(batch.obs)
    epochs = 0
    for _ in range(cfg.update_epochs):
        epochs += 1
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, size):
            mb = perm[start:start + size]
            old_mb = torch.distributions.Normal(old.mean[mb], old.stddev[mb])
            loss, kl_mean, kl_std = decoupled_likelihood_loss(agent.pi(batch.obs[mb]), old_mb,
                                                              batch.act[mb], v[mb])
            eta = log_eta.exp()
            opt.zero_grad()
            (loss + eta[0] * kl_mean + eta[1] * kl_std).backward()
            torch.nn.utils.clip_grad_norm_(agent.pi.parameters(), cfg.max_grad_norm)
            opt.step()
            excess = torch.tensor([kl_mean.item() / MPO_EPS_MEAN, kl_std.item() / MPO_EPS_STD]) - 1
            log_eta = (log_eta + 0.5 * excess.clamp(-1, 1)).clamp(-5, 8)
        with torch.no_grad():
            logp = agent.pi.log_prob(agent.pi(batch.obs), batch.act)
        after_epoch((logp - batch.logp).exp())
        if cfg.target_kl is not None and mstep_diagnostics(
                logp, batch.logp, lower_clip=cfg.lower_clip)["approx_kl"] > cfg.target_kl:
            break
    return epochs


def _scaled_gain(ratio: torch.Tensor, adv: torch.Tensor) -> float:
    return float(((ratio - 1) * (adv - adv.mean())).mean() / (adv.std() + 1e-12))


def measure(agent: ActorCritic, ratio: torch.Tensor, batch: Batch, v: torch.Tensor,
            others: list[Batch]) -> dict[str, float]:
    """The metrics of the module docstring for the policy ``agent`` whose ratio on ``batch`` is
    ``ratio`` (N,); ``others`` are the held-out batches."""
    reach, corr = realised_fraction(ratio, v)
    with torch.no_grad():
        held = [((agent.pi.log_prob(agent.pi(o.obs), o.act) - o.logp).exp(), o) for o in others]
    log_r = ratio.log()
    return {"reach": reach, "corr": corr, "kl": float(((ratio - 1) - log_r).mean()),
            "gain_r": _scaled_gain(ratio, batch.adv_r), "gain_c": _scaled_gain(ratio, batch.adv_c),
            "held_r": float(np.mean([_scaled_gain(r, o.adv_r) for r, o in held])) if held else 0.0,
            "held_c": float(np.mean([_scaled_gain(r, o.adv_c) for r, o in held])) if held else 0.0}


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFactory = Callable[[Batch, torch.Tensor, torch.Tensor], LossFn]
MPO = "likelihood, mean/std trust regions (MPO)"
TRACKING = "tracking (paper)"


def candidates(cfg: Config) -> dict[str, LossFactory | None]:
    """label -> factory(batch, v, adv_ppo) of the ``loss_fn(logp_new, idx)`` the trainer uses
    (None: the MPO-style M-step, which needs the distributions and has its own loop)."""
    b = cfg.lower_clip

    def tracking(batch, v, adv_ppo):
        return lambda lp, i: mstep_loss(lp, batch.logp[i], v[i], lower_clip=b)

    def linear(clip):
        return lambda batch, v, adv_ppo: (
            lambda lp, i: linear_mstep_loss(lp, batch.logp[i], v[i], lower_clip=clip))

    def ppo(batch, v, adv_ppo):
        return lambda lp, i: ppo_clip_loss(lp, batch.logp[i], adv_ppo[i], cfg.clip_ratio)

    return {TRACKING: tracking, linear_label(cfg): linear(b),
            "linear, clip 0.2": linear(0.8), "ppo clipped on A (reference)": ppo, MPO: None}


def linear_label(cfg: Config) -> str:
    """The study's label of the linear M-step with ``cfg``'s clip (the trainer's)."""
    return f"linear, clip {1 - cfg.lower_clip:.1f}"


def tracking_vs_linear(n: int, seed: int = 0, steps: int | None = None
                       ) -> tuple[Config, list[dict[str, float | str]], dict[str, list]]:
    """Notebook 04's comparison: the paper's tracking loss and the default linear M-step on
    ``n`` real batches of the shipped policy, no cost constraint; ``study``'s rows and traces."""
    cfg, agent, batches = collect_batches(REFERENCE_POLICY, n, seed + 1, steps)
    rows, traces = study(cfg, agent, batches, "free", seed, labels=[TRACKING, linear_label(cfg)])
    return cfg, rows, traces


#: --margin: the controller output u the E-step is given, and the multiplier of PPO-Lag's
#: reference update: no constraint (u = 1, lambda = 0), no predicted cost increase (u = 0,
#: lambda = 1), pure cost descent (u = -1: the E-step's recovery; lambda = 1e3).
MARGINS = {"free": (1.0, 0.0), "neutral": (0.0, 1.0), "descent": (-1.0, 1e3)}
TITLES = {"free": "no cost constraint (PPO at lambda 0)",
          "neutral": "cost-neutral E-step, u = 0 (PPO-Lag at lambda 1)",
          "descent": "pure cost descent, u = -1 (PPO-Lag at lambda 1000)"}


def _record(trace: list[dict[str, float]], agent: ActorCritic, ratio: torch.Tensor, *,
            batch: Batch, v: torch.Tensor, others: list[Batch]) -> None:
    trace.append(measure(agent, ratio, batch, v, others))


def study(cfg: Config, agent: ActorCritic, batches: list[Batch], margin: str, seed: int,
          labels: list[str] | None = None) -> tuple[list[dict[str, float | str]], dict[str, list]]:
    """Each candidate on each batch from the same policy. Returns one row per candidate (the
    metrics of the module docstring, mean over ``batches``) and, per candidate, the per-epoch
    traces (a list per batch of ``measure`` dicts after each epoch)."""
    results: dict[str, list[dict[str, float]]] = {}
    traces: dict[str, list[list[dict[str, float]]]] = {}
    chosen = {k: f for k, f in candidates(cfg).items() if labels is None or k in labels}
    for k, batch in enumerate(batches):
        others = [o for j, o in enumerate(batches) if j != k]
        adv_r, adv_c = batch.adv_r.double().numpy(), batch.adv_c.double().numpy()
        u, lagrange = MARGINS[margin]
        margin_value = margin_from_fraction(u, adv_c, cfg.kl_budget) if u < 1 else 1e9
        est = solve_estep(adv_r, adv_c, cost_margin=margin_value, kl_budget=cfg.kl_budget,
                          lower_bound=cfg.v_lower_bound, method=cfg.estep_method)
        v = torch.as_tensor(est.v, dtype=torch.float32)
        adv_ppo = lagrangian_advantage(batch.adv_r, batch.adv_c, lagrange)
        base = {"estep_gain_r": _scaled_gain(v, batch.adv_r), "estep_gain_c": _scaled_gain(v, batch.adv_c)}
        for label, factory in chosen.items():
            fitted = copy.deepcopy(agent)
            gen = torch.Generator().manual_seed(seed + k)
            trace: list[dict[str, float]] = []
            after_epoch = functools.partial(_record, trace, fitted, batch=batch, v=v, others=others)

            if factory is None:
                epochs = _mpo_update(fitted, batch, v, cfg, gen, after_epoch)
            else:
                opt = torch.optim.Adam(fitted.pi.parameters(), lr=cfg.pi_lr, eps=1e-5)
                epochs = update_policy(fitted, opt, batch, factory(batch, v, adv_ppo), cfg,
                                       clip_range(cfg.mstep, cfg.lower_clip), gen,
                                       after_epoch=after_epoch)["epochs_run"]
            traces.setdefault(label, []).append(trace)
            results.setdefault(label, []).append({**trace[-1], "epochs": float(epochs), **base})
    # Each batch's own KL and epochs too: an early stop is judged where it happened, not on
    # the mean over batches (a stopped batch beside a full one averages below target_kl).
    rows = [{"M-step": label, **{key: float(np.mean([r[key] for r in rows])) for key in rows[0]},
             "per_batch": [{"kl": r["kl"], "epochs": r["epochs"]} for r in rows]}
            for label, rows in results.items()]
    return rows, traces


COLUMNS = ["M-step", "reach", "corr", "kl", "epochs", "gain_r", "gain_c", "held_r", "held_c",
           "estep_gain_r", "estep_gain_c"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = suite_parser("mstep", __doc__)
    p.add_argument("--run", type=Path, default=REFERENCE_POLICY,
                   help="a run directory whose policy collects the batches")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="steps per batch (default: the run's)")
    p.add_argument("--margin", choices=list(MARGINS), nargs="+", default=list(MARGINS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench_results/mstep"))
    args = p.parse_args(argv)
    started = time.time()
    torch.set_num_threads(1)
    run_dir = args.run
    cfg, agent, batches = collect_batches(run_dir, args.batches, args.seed + 1, args.steps)
    tables, data = [], {}
    for margin in args.margin:
        rows, _ = study(cfg, agent, batches, margin, args.seed)
        data[margin] = rows
        tables.append(f"### {TITLES[margin]}\n\n{markdown_table(rows, COLUMNS)}")
    write_results(args.out, "mstep", f"M-step candidates on {args.batches} real batches of {run_dir.name}",
                  "\n\n".join(tables), data, command_line("mstep", argv), started)
    return 0
