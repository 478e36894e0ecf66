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

``bench model --r2``: what a model can learn on a navigation task (issue 27). A trained policy
(``--run``, default: cppo without a constraint, 3e5 steps on SafetyPointGoal1-v0, shipped in
``bench/reference``) collects ``--steps`` real steps, recording the coordinate state beside the
observation. Two ensembles of the trainer's size are fitted on the first ``1 - --holdout`` of
them (to convergence: up to ``--epochs`` epochs, early stopping on their own held-out split):
today's flat ensemble on the observation (``DynamicsEnsemble``) and the coordinate model's
motion ensemble (``envs.coordinate_model``). Reported, the one-step R^2 on the last steps
(later episodes, other layouts), per group: the sensors' and
the lidar's change, the reward and the cost, and for the coordinate model also its pose and
the objects' robot-frame positions (``coordinate_model.one_step_r2``). The lidar leaves out
the steps in which the env drew a new goal (no model predicts where).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.bench.common import command_line, markdown_table, write_results
from dynacppo_lite.dynamics import DynamicsEnsemble
from dynacppo_lite.envs.coordinate_model import (
    fit_motion,
    flat_one_step_r2,
    motion_ensemble,
    one_step_r2,
    redrawn,
)
from dynacppo_lite.envs.coordinates import CoordinateSpec
from dynacppo_lite.envs.simulator import SimulatorEnv
from dynacppo_lite.evaluation import load_trained
from dynacppo_lite.imagine import advantage_agreement, observation_normalizer
from dynacppo_lite.nets import sample_action
from dynacppo_lite.rollout import Collector

#: The policy that records ``--r2``'s data: cppo without a constraint after 3e5 steps on
#: SafetyPointGoal1-v0 (it reaches goals and crosses hazards, so both are in the data).
R2_POLICY = Path(__file__).parent / "reference" / "cppo_free_SafetyPointGoal1-v0_3e5"
#: ``--r2``'s groups, in the table's order.
R2_GROUPS = ("sensors", "lidar", "reward", "cost", "pose", "objects")


def compare(run_dir: Path, probes: int, draws: int, seed: int, *, deterministic: bool = False,
            horizon: int | None = None, refit_epochs: int = 0) -> list[dict[str, Any]]:
    """The table's rows (see the module docstring). Variants of the learned side:
    ``deterministic`` steps take a random member's mean prediction, without sampled noise;
    ``horizon`` replaces the run's ``model_horizon``; ``refit_epochs`` > 0 replaces the run's
    ensemble by a fresh one fitted that many epochs on the run's whole buffer (what more
    fitting would buy)."""
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


@dataclass(frozen=True)
class RecordedSteps:
    """T real steps of one env with the coordinate state beside the observation (``--r2``'s
    data, and notebook 01's): raw observations and true successors (T, obs_dim), the actions
    the env received (T, act_dim), rewards, costs and episode ends (T,), and the state rows
    before and after each step (T, D; ``envs.coordinates.state_vector``) of the task ``spec``."""

    env_id: str
    spec: CoordinateSpec
    obs: np.ndarray
    next_obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    cost: np.ndarray
    done: np.ndarray
    rows: np.ndarray
    next_rows: np.ndarray


def record_steps(run_dir: Path, steps: int, seed: int) -> RecordedSteps:
    """``steps`` steps of a trained run's policy (``evaluation.load_trained``, one env, sampled
    actions) on its navigation task, recording the coordinate state."""
    cfg, envs, agent = load_trained(run_dir, num_envs=1, seed=seed, coordinates=True)
    try:
        spec = envs.state_spec
        ro = Collector(envs, agent, torch.device("cpu"), seed=seed).collect(steps)
    finally:
        envs.close()
    return RecordedSteps(env_id=cfg.env_id, spec=spec, obs=ro.raw_obs[:, 0],
                         next_obs=ro.raw_next_obs[:, 0], act=ro.env_act[:, 0],
                         rew=ro.rew[:, 0].numpy(), cost=ro.cost[:, 0].numpy(),
                         done=(ro.terminated | ro.truncated)[:, 0].numpy(),
                         rows=ro.states[:, 0], next_rows=ro.next_states[:, 0])


def fit_both(data: RecordedSteps, train: np.ndarray, epochs: int, seed: int,
             ensemble_size: int = 5, hidden: tuple[int, ...] = (200, 200)
             ) -> tuple[DynamicsEnsemble, DynamicsEnsemble, dict[str, Any]]:
    """The flat ensemble and the coordinate model's motion ensemble, each fitted on the steps
    ``train`` (indices) to convergence (up to ``epochs``, patience 5): (flat, coordinate, their
    epochs and seconds)."""
    options = dict(max_epochs=epochs, patience=5)
    models = dict(ensemble_size=ensemble_size, hidden=hidden, seed=seed)
    fits: dict[str, Any] = {}
    flat = DynamicsEnsemble(data.obs.shape[1], data.act.shape[1], **models)
    started = time.perf_counter()
    fits["flat_epochs"] = flat.fit(data.obs[train], data.act[train], data.rew[train],
                                   data.cost[train], data.next_obs[train], **options).epochs
    fits["flat_s"] = time.perf_counter() - started
    coordinates = motion_ensemble(data.spec, data.act.shape[1], **models)
    started = time.perf_counter()
    fits["coordinate_epochs"] = fit_motion(coordinates, data.spec, data.rows[train],
                                           data.act[train], data.next_rows[train],
                                           **options).epochs
    fits["coordinate_s"] = time.perf_counter() - started
    return flat, coordinates, fits


def r2_rows(flat: DynamicsEnsemble, coordinates: DynamicsEnsemble, data: RecordedSteps,
            test: np.ndarray) -> list[dict[str, Any]]:
    """One row per group of :data:`R2_GROUPS`: the held-out one-step R^2 of each model on the
    steps ``test`` (``coordinate_model.flat_one_step_r2`` and ``one_step_r2``; the lidar of
    both without the steps in which the env drew a new goal)."""
    spec = data.spec
    kept = ~redrawn(spec, data.rows[test], data.next_rows[test])  # no model predicts a new goal
    flat_r2 = flat_one_step_r2(flat, spec, data.obs[test], data.act[test], data.rew[test],
                               data.cost[test], data.next_obs[test], lidar_steps=kept)
    coordinate_r2 = one_step_r2(coordinates, spec, data.rows[test], data.act[test],
                                data.next_rows[test])
    return [{"group": g, "flat ensemble": flat_r2.get(g, float("nan")),
             "coordinate model": coordinate_r2[g]} for g in R2_GROUPS]


def lidar_r2(run_dir: Path, steps: int, holdout: float, epochs: int, seed: int,
             ensemble_size: int = 5, hidden: tuple[int, ...] = (200, 200)
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``--r2``'s rows (one per group: the held-out one-step R^2 of each model) and what the
    fits did (epochs, seconds, samples), as the module docstring says."""
    data = record_steps(run_dir, steps, seed)
    split = int(steps * (1 - holdout))
    train, test = np.arange(split), np.arange(split, steps)
    flat, coordinates, fits = fit_both(data, train, epochs, seed, ensemble_size, hidden)
    new_goals = int(redrawn(data.spec, data.rows[test], data.next_rows[test]).sum())
    fits = {"steps": steps, "train": split, "test": len(test), "new_goals": new_goals,
            "env_id": data.env_id, **fits}
    return r2_rows(flat, coordinates, data, test), fits


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m dynacppo_lite bench model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path,
                        help="a dyna-cppo run directory with checkpoint.pt (--r2: any run of a "
                             "navigation task, default the shipped cppo policy)")
    parser.add_argument("--r2", action="store_true",
                        help="the one-step R^2 per group of the flat and the coordinate model")
    parser.add_argument("--steps", type=int, default=20_000, help="--r2: real steps recorded")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="--r2: the share of the steps, the last ones, held out")
    parser.add_argument("--epochs", type=int, default=100, help="--r2: most epochs per fit")
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
    started = time.time()
    if args.r2:
        if not 0 < args.holdout < 1 or args.steps * args.holdout < 2:
            parser.error("--holdout must be in (0, 1) and leave steps on both sides")
        run = args.run or R2_POLICY
        rows, fits = lidar_r2(run, args.steps, args.holdout, args.epochs, args.seed)
        note = (f"\n\nHeld-out one-step R^2 (1 - SSE / SST per live column, averaged over the "
                f"group's columns; 0 = no better than the mean change) on {fits['env_id']}: "
                f"{fits['steps']:,} steps of {run.name}'s policy, the models fitted on the first "
                f"{fits['train']:,} (flat: {fits['flat_epochs']} epochs, {fits['flat_s']:.0f} s; "
                f"coordinate: {fits['coordinate_epochs']} epochs, {fits['coordinate_s']:.0f} s), "
                f"scored on the last {fits['test']:,} (the lidar without the "
                f"{fits['new_goals']} with a new goal). "
                "sensors, lidar: the change of the observation's sensor and lidar entries (the "
                "coordinate model's lidar computed from its predicted coordinates); reward, "
                "cost: the step's; pose: the body-frame translation and rotation; objects: their "
                "robot-frame x-y.")
        write_results(args.out, "model_r2", "What a model can learn: the flat observation "
                      "against coordinates", markdown_table(rows, ["group", "flat ensemble",
                                                                    "coordinate model"]) + note,
                      {"rows": rows, "fits": fits}, command_line("model", argv), started)
        return 0
    if args.run is None:
        parser.error("--run is required (a dyna-cppo run directory), except with --r2")
    if args.probes < 2 or args.draws < 2:
        parser.error("--probes and --draws must be >= 2")
    if args.horizon is not None and args.horizon < 1:
        parser.error("--horizon must be >= 1")
    rows = compare(args.run, args.probes, args.draws, args.seed, deterministic=args.deterministic,
                   horizon=args.horizon, refit_epochs=args.refit_epochs)
    write_results(args.out, "model", f"Learned model against the simulator: {args.run.name}",
                  markdown_table(rows, ["compared", "corr", "std_ratio"]), rows,
                  command_line("model", argv), started)
    return 0
