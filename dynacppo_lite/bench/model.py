"""``bench model``: are the learned model's advantages the simulator's?

A dyna-cppo run's checkpoint (``--run``: its policy, critics, observation normaliser, ensemble
and buffer) collects one fresh real batch. From ``--probes`` of its real (s_t, a_t) the same
branches are rolled twice over (``DynaModel.branches``: the real first action, then the policy
for ``model_horizon`` steps, GAE bootstrapped from V at the end): in the learned ensemble, and
in the simulator itself, reset to s_t (``envs.simulator.SimulatorEnv``: a perfect model). Each
is drawn ``--draws`` times. Reported, the correlation and std ratio
(``imagine.advantage_agreement``) of the first step's reward advantage:

- ``sim`` vs ``real``: what a perfect model's branch advantages share with the real GAE
  advantages (the ceiling of the trainer's ``imag_adv_r_corr`` probe);
- ``model`` vs ``real``: the same for the learned model (what the trainer logs);
- ``model`` vs ``sim``: the model's advantages against the perfect model's, same branches;
- ``draw vs draw``: two single draws of the same branches, for each (the noise of one draw);
- one step from the same s with two policy actions a1, a2, the ensemble's mean prediction
  (over members) against the simulator: the difference Q(s, a1) - Q(s, a2) with Q = r + gamma V(s'), its
  reward part, and the next-state difference (mean correlation over dimensions, and the worst
  dimension): how well the model knows what an action changes.

Only for MuJoCo tasks whose observation is the simulator state without the x position
(``qpos[1:]``, ``qvel``: the Safety velocity tasks), where a state can be set from an
observation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.bench.common import command_line, markdown_table, write_results
from dynacppo_lite.envs.simulator import SimulatorEnv
from dynacppo_lite.imagine import advantage_agreement, observation_normalizer
from dynacppo_lite.nets import sample_action


def compare(run_dir: Path, probes: int, draws: int, seed: int, *, deterministic: bool = False,
            horizon: int | None = None, refit_epochs: int = 0) -> list[dict[str, Any]]:
    """The table's rows (see the module docstring). Variants of the learned side:
    ``deterministic`` steps take a random member's mean prediction, without sampled noise;
    ``horizon`` replaces the run's ``model_horizon``; ``refit_epochs`` > 0 replaces the run's
    ensemble by a fresh one fitted that many epochs on the run's whole buffer (what more
    fitting would buy)."""
    from dynacppo_lite.dynamics import DynamicsEnsemble
    from dynacppo_lite.train import Trainer

    torch.manual_seed(seed)
    trainer = Trainer(resume=run_dir)
    cfg, dyna = trainer.cfg, trainer.dyna
    if dyna is None:
        raise ValueError(f"{run_dir} is a {cfg.algo} run: bench model needs a dyna-cppo run")
    if cfg.dyna_model != "ensemble":
        raise ValueError(f"{run_dir} branched in the {cfg.dyna_model}: bench model needs a run "
                         "with a learned ensemble")
    if horizon is not None:
        cfg.model_horizon = horizon
    if refit_epochs:
        data = dyna.buffer.all()
        dyna.ensemble = DynamicsEnsemble(data.obs.shape[1], data.act.shape[1],
                                         ensemble_size=cfg.ensemble_size, hidden=cfg.model_hidden,
                                         lr=cfg.model_lr, seed=seed)
        dyna.ensemble.fit(data.obs, data.act, data.rew, data.cost, data.next_obs,
                          max_epochs=refit_epochs, patience=5)
    learned = dyna.model_env(deterministic)
    sim = SimulatorEnv(cfg.env_id, seed=seed)
    try:
        ro = trainer.collector.collect(trainer.steps_per_env)
        adv = trainer.advantages(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r,
                                 ro.next_values_c, ro.terminated, ro.truncated, gamma=cfg.gamma,
                                 lam=cfg.lam, cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
        n = ro.rew.numel()
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:probes]
        start = torch.as_tensor(ro.raw_obs.reshape(n, -1), dtype=torch.float32)[rows]
        first = ro.act.reshape(n, -1)[rows]
        real = adv.adv_r.reshape(n)[rows]

        def advantages(model_env: Any) -> torch.Tensor:
            return torch.stack([dyna.branches(trainer.agent, trainer.envs, start, first,
                                              model_env=model_env).adv_r[0]
                                for _ in range(draws)])

        model, simulated = advantages(learned), advantages(sim)
        action_rows = action_effects(trainer, dyna, sim, start)
    finally:
        sim.close()
        trainer.envs.close()
    out = []
    for name, x, y in (("sim vs real", simulated.mean(0), real),
                       ("model vs real", model.mean(0), real),
                       ("model vs sim", model.mean(0), simulated.mean(0)),
                       ("sim: draw vs draw", simulated[0], simulated[1]),
                       ("model: draw vs draw", model[0], model[1])):
        scale, corr = advantage_agreement(x, y)
        out.append({"compared": name, "corr": corr, "std_ratio": scale})
    return out + action_rows


def action_effects(trainer: Any, dyna: Any, sim: SimulatorEnv,
                   start: torch.Tensor) -> list[dict[str, Any]]:
    """The one-step rows: the ensemble's mean prediction (over members) against the simulator,
    differences between two policy actions a1, a2 at the same start states (B, obs_dim)."""
    envs, agent, gamma = trainer.envs, trainer.agent, trainer.cfg.gamma
    normalize = observation_normalizer(envs)
    low, high = (torch.as_tensor(b, dtype=torch.float32)
                 for b in (envs.single_action_space.low, envs.single_action_space.high))
    with torch.no_grad():
        dist = agent.pi(normalize(start))
        acts = [torch.clamp(sample_action(dist.mean, dist.stddev), low, high) for _ in range(2)]
    d = start.shape[1]

    def model_step(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = dyna.ensemble.predict(start, a)[0].mean(0)
        return start + y[:, :d], y[:, d]

    def sim_step(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sim.reset(start)
        nxt, r, *_ = sim.step(a)
        return nxt, r

    def one_step(step: Any) -> tuple[torch.Tensor, ...]:
        """(Q, r, s') differences between a1 and a2."""
        outs = []
        for a in acts:
            nxt, r = step(a)
            with torch.no_grad():
                outs.append((r + gamma * agent.values(normalize(nxt))[0], r, nxt))
        return tuple(x - y for x, y in zip(*outs, strict=True))

    (qm, rm, sm), (qs, rs, ss) = one_step(model_step), one_step(sim_step)
    dims = [advantage_agreement(sm[:, k], ss[:, k])[1] for k in range(ss.shape[1])]
    rows = [{"compared": f"one step, a1 - a2: {name}", "corr": corr, "std_ratio": scale}
            for name, (scale, corr) in (("Q", advantage_agreement(qm, qs)),
                                        ("reward", advantage_agreement(rm, rs)))]
    return rows + [{"compared": "one step, a1 - a2: next state, mean over dims",
                    "corr": float(np.nanmean(dims)), "std_ratio": float("nan")},
                   {"compared": f"one step, a1 - a2: next state, worst dim ({int(np.nanargmin(dims))})",
                    "corr": float(np.nanmin(dims)), "std_ratio": float("nan")}]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m dynacppo_lite bench model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True,
                        help="a dyna-cppo run directory with checkpoint.pt")
    parser.add_argument("--probes", type=int, default=256)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deterministic", action="store_true",
                        help="no sampled noise: each imagined step is a random member's mean")
    parser.add_argument("--horizon", type=int, help="branch length (default: the run's)")
    parser.add_argument("--refit-epochs", type=int, default=0,
                        help="compare a fresh ensemble fitted this many epochs on the run's buffer")
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    args = parser.parse_args(argv)
    if args.probes < 2 or args.draws < 2:
        parser.error("--probes and --draws must be >= 2")
    started = time.time()
    if args.horizon is not None and args.horizon < 1:
        parser.error("--horizon must be >= 1")
    rows = compare(args.run, args.probes, args.draws, args.seed, deterministic=args.deterministic,
                   horizon=args.horizon, refit_epochs=args.refit_epochs)
    write_results(args.out, "model", f"Learned model against the simulator: {args.run.name}",
                  markdown_table(rows, ["compared", "corr", "std_ratio"]), rows,
                  command_line("model", argv), started)
    return 0
