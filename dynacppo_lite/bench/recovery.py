"""``bench recovery``: does pure cost descent cut a goal-reaching policy's cost on fresh episodes?

Every candidate cost signal starts from the same saved policy (by default the shipped
goal-reaching one: cppo without the constraint, SafetyPointGoal1-v0, 3e5 steps) and runs
``--iters`` iterations of the trainer's own recovery update (``Trainer.iteration`` with the
controller held at u = -1: the E-step's pure cost descent, the recovery M-step, the critics),
each on its own batch. After every iteration the policy is measured on ``--episodes`` fresh
episodes (sampled actions, the normaliser frozen, envs seeded apart from training's). Reported:

- ``cost_k`` / ``return_k``: mean episode cost and return on fresh episodes after k iterations,
  with their standard error; k = 0 is the saved policy, the same for every candidate;
- ``cut_last3``: 1 - (mean fresh cost over the last three iterations) / (cost at k = 0), with its
  standard error; ``cut_best``: the same for the best single iteration (biased upwards by noise);
- ``insample_cut``: what the M-step's own first-order estimate said it cut per episode
  (-``mstep_cost_change`` x episode length, mean over iterations), beside the fresh ``cut``;
- ``kl``: the realised KL of each update (mean over iterations): how far the policy moved.

A candidate is a label and Config overrides (``--candidate 16k=steps_per_iter=16000``); the
learning rate and clip are held at their starting values (no annealing over a 10-iteration
"run"). The figure (``plots.plot_recovery``: fresh cost per iteration, in-sample against fresh
cut) goes to ``figures/benchmarks/recovery_<task>.png``.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.bench.common import (
    command_line,
    markdown_table,
    save_figure,
    suite_parser,
    write_results,
)
from dynacppo_lite.cli import parse_overrides
from dynacppo_lite.config import Config
from dynacppo_lite.envs import make_env
from dynacppo_lite.evaluation import run_episodes
from dynacppo_lite.runlog import load_checkpoint, saved_obs_norm
from dynacppo_lite.train import Trainer

REFERENCE_POLICY = Path(__file__).parent / "reference" / "cppo_free_SafetyPointGoal1-v0_3e5"

#: The controller held saturated: u = -1 every iteration, so every update is pure cost descent.
PURE_RECOVERY = dict(pid_integral_init=-1.0, pid_integral_min=-1.0, pid_kp=0.0)

DEFAULT_CANDIDATES = ["4k batch (today)=", "16k batch=steps_per_iter=16000",
                      "32k batch=steps_per_iter=32000", "cost lambda 0.8=cost_lam=0.8"]

EVAL_SEED = 1_000_003  # fresh episodes: env seeds apart from every training seed


def parse_candidate(text: str) -> tuple[str, dict[str, Any]]:
    """``"16k=steps_per_iter=16000,cost_lam=0.9"`` -> ("16k", typed overrides)."""
    label, sep, spec = text.partition("=")
    if not sep or not label:
        raise ValueError(f"--candidate {text!r}: expected LABEL=FIELD=VALUE[,FIELD=VALUE] "
                         "(or LABEL= for the defaults)")
    return label, parse_overrides([s for s in spec.split(",") if s])


def fresh_episodes(trainer: Trainer, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(returns, costs) of ``episodes`` fresh episodes of the trainer's policy, sampled actions,
    with a frozen copy of its observation normaliser."""
    envs = make_env(trainer.cfg.env_id, num_envs=1, seed=seed,
                    max_episode_steps=trainer.cfg.max_episode_steps)
    envs.load_state_dict(trainer.envs.state_dict())
    envs.frozen = True
    try:
        r, c, _ = run_episodes(trainer.agent, envs, episodes, deterministic=False, seed=seed)
    finally:
        envs.close()
    return r, c


def recovery_trainer(run_dir: Path, overrides: dict[str, Any], log_dir: Path, label: str,
                     seed: int) -> Trainer:
    """A trainer with the saved run's agent, optimisers' state and normaliser, today's defaults
    for its task plus ``overrides``, held in pure recovery at a constant learning rate."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    saved = Config.from_dict(ckpt["config"])
    cfg = Config(env_id=saved.env_id, hidden=saved.hidden, init_log_std=saved.init_log_std,
                 seed=seed, log_dir=str(log_dir), run_name=label.replace(" ", "_"),
                 checkpoint_every=10**9, **PURE_RECOVERY)
    cfg = dataclasses.replace(cfg, **overrides)
    cfg = dataclasses.replace(cfg, pi_lr_final=cfg.pi_lr, lower_clip_final=cfg.lower_clip)
    trainer = Trainer(cfg)
    trainer.agent.load_state_dict(ckpt["agent"])
    trainer.pi_opt.load_state_dict(ckpt["pi_opt"])
    trainer.vf_opt.load_state_dict(ckpt["vf_opt"])
    trainer.envs.load_state_dict(saved_obs_norm(ckpt))
    return trainer


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def run_candidate(run_dir: Path, label: str, overrides: dict[str, Any], iters: int, episodes: int,
                  seed: int, log_dir: Path, start: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """One candidate's ``iters`` recovery iterations, each followed by fresh episodes."""
    trainer = recovery_trainer(run_dir, overrides, log_dir, label, seed)
    r0, c0 = start
    trace = [dict(k=0, step=0, cost=_mean_se(c0), ret=_mean_se(r0), insample_cut=0.0, kl=0.0, mode="")]
    try:
        for it in range(iters):
            row = trainer.iteration(it)
            r, c = fresh_episodes(trainer, episodes, EVAL_SEED + it + 1)
            trace.append(dict(k=it + 1, step=row["step"], cost=_mean_se(c), ret=_mean_se(r),
                              insample_cut=-row["mstep_cost_change"] * row["ep_len"],
                              kl=row["kl"], mode=row["mode"]))
            print(f"{label}: iteration {it + 1}/{iters}: fresh cost {trace[-1]['cost'][0]:.1f} "
                  f"return {trace[-1]['ret'][0]:.2f} (in-sample cut {trace[-1]['insample_cut']:.1f})",
                  flush=True)
    finally:
        trainer.envs.close()
    return summarise(label, overrides, trace)


def recovery_suite(run_dir: Path, candidates: Sequence[tuple[str, dict[str, Any]]], iters: int,
                   episodes: int, seed: int, log_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """(task, one row per candidate): the saved policy of ``run_dir`` measured once on
    ``episodes`` fresh episodes (k = 0, shared by every candidate), then each candidate's
    ``iters`` recovery iterations (:func:`run_candidate`); the trainers write under ``log_dir``."""
    first = recovery_trainer(run_dir, {}, log_dir, "start", seed)
    try:
        start = fresh_episodes(first, episodes, EVAL_SEED)
    finally:
        first.envs.close()
    rows = [run_candidate(run_dir, label, overrides, iters, episodes, seed, log_dir, start)
            for label, overrides in candidates]
    return first.cfg.env_id, rows


def summarise(label: str, overrides: dict[str, Any], trace: list[dict[str, Any]]) -> dict[str, Any]:
    """The table row of one candidate from its trace (k = 0 first)."""
    cost0 = trace[0]["cost"][0]
    last = trace[-3:] if len(trace) > 3 else trace[1:]
    mean_last = float(np.mean([t["cost"][0] for t in last]))
    se_last = float(np.sqrt(np.sum([t["cost"][1] ** 2 for t in last])) / len(last))
    best = min(t["cost"][0] for t in trace[1:])
    return {"candidate": label, "overrides": {k: str(v) for k, v in overrides.items()},
            "steps": trace[-1]["step"], "cost_0": cost0, "cost_last3": mean_last,
            "cost_last3_se": se_last, "return_0": trace[0]["ret"][0],
            "return_last3": float(np.mean([t["ret"][0] for t in last])),
            "cut_last3": 1.0 - mean_last / max(cost0, 1e-9), "cut_last3_se": se_last / max(cost0, 1e-9),
            "cut_best": 1.0 - best / max(cost0, 1e-9),
            "insample_cut": float(np.mean([t["insample_cut"] for t in trace[1:]])),
            "recovery_share": float(np.mean([t["mode"] == "recovery" for t in trace[1:]])),
            "kl": float(np.mean([t["kl"] for t in trace[1:]])),
            "trace": trace}


COLUMNS = ["candidate", "steps", "cost_0", "cost_last3", "cost_last3_se", "cut_last3", "cut_best",
           "insample_cut", "kl", "return_0", "return_last3", "recovery_share"]


def main(argv: list[str] | None = None) -> int:
    from dynacppo_lite.plots import plot_recovery

    argv = sys.argv[1:] if argv is None else argv
    p = suite_parser("recovery", __doc__)
    p.add_argument("--run", type=Path, default=REFERENCE_POLICY,
                   help="a run directory whose checkpoint is the starting policy")
    p.add_argument("--candidate", action="append", default=None,
                   help="LABEL=FIELD=VALUE[,FIELD=VALUE] (repeatable; default: "
                        + "; ".join(DEFAULT_CANDIDATES) + ")")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--episodes", type=int, default=20, help="fresh episodes after each iteration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench_results/recovery"))
    p.add_argument("--figure", type=Path, default=None,
                   help="default: figures/benchmarks/recovery_<task>.png")
    args = p.parse_args(argv)
    if not (args.run / "checkpoint.pt").is_file():
        p.error(f"--run {args.run}: no checkpoint.pt there (give a run directory train wrote)")
    if args.iters < 1 or args.episodes < 2:
        p.error("--iters must be >= 1 and --episodes >= 2 (a standard error needs two episodes)")
    try:
        candidates = [parse_candidate(c) for c in (args.candidate or DEFAULT_CANDIDATES)]
    except ValueError as exc:
        p.error(str(exc))
    started = time.time()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        task, rows = recovery_suite(args.run, candidates, args.iters, args.episodes, args.seed,
                                    Path(tmp))
    figure = args.figure or Path("figures/benchmarks") / f"recovery_{task}.png"
    axes = plot_recovery(rows, f"pure cost descent from {args.run.name}")
    save_figure(axes[0].figure, figure, dpi=110)
    write_results(args.out, "recovery",
                  f"Recovery from {args.run.name} on {task}: {args.iters} iterations, "
                  f"{args.episodes} fresh episodes after each", markdown_table(rows, COLUMNS),
                  rows, command_line("recovery", argv), started)
    return 0
