"""``bench learning``: cppo, ppo-lag and dyna-cppo with the same budget and seeds on a task list.

Every (task, algorithm, seed) is a separate training process; up to ``--jobs`` run at once.
Reported per task and algorithm: final return and cost (mean over the last 10% of steps, then
mean and spread over seeds), and the steps needed to first reach ``--target-return`` with the
(smoothed) episode cost under the limit. Curves (mean and min-max band over seeds) go to
``figures/benchmarks/learning_<task>.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from dynacppo_lite.bench.common import command_line, markdown_table, write_results
from dynacppo_lite.envs.presets import default_cost_limit

DEFAULT_TASKS = ["SafetyPointGoal1-v0", "SafetyPointCircle1-v0", "SafetyHalfCheetahVelocity-v1"]


def run_one(task: str, algo: str, seed: int, steps: int, log_dir: Path, device: str,
            steps_per_iter: int) -> Path:
    """Train one (task, algo, seed) in its own process; returns its run directory."""
    name = f"{task}_{algo}_s{seed}"
    run_dir = log_dir / name
    cmd = [sys.executable, "-m", "dynacppo_lite", "train", "--algo", algo, "--env", task,
           "--total-steps", str(steps), "--steps-per-iter", str(steps_per_iter), "--seed",
           str(seed), "--num-envs", "1", "--device", device, "--log-dir", str(log_dir),
           "--run-name", name, "--no-progress"]
    if (run_dir / "checkpoint.pt").is_file():
        cmd += ["--resume", str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed: {out.stderr.strip().splitlines()[-1:]}")
    return run_dir


def summarise(df: pd.DataFrame, cost_limit: float, target: float | None) -> dict[str, float]:
    """Final return/cost (last 10% of steps) and steps to the target return under the limit."""
    tail = df[df["step"] >= df["step"].max() * 0.9]
    out = {"return": float(tail["ep_return"].mean()), "cost": float(tail["ep_cost"].mean())}
    if target is not None:
        ret = df["ep_return"].rolling(3, min_periods=1).mean()
        cost = df["ep_cost"].rolling(3, min_periods=1).mean()
        hit = df["step"][(ret >= target) & (cost <= cost_limit)]
        out["steps_to_target"] = float(hit.iloc[0]) if len(hit) else float("nan")
    return out


def plot_task(task: str, runs: dict[str, list[Path]], cost_limit: float, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for algo, dirs in runs.items():
        dfs = [pd.read_csv(d / "progress.csv") for d in dirs]
        n = min(len(d) for d in dfs)
        steps = dfs[0]["step"].to_numpy()[:n]
        for ax, key in zip(axes, ("ep_return", "ep_cost"), strict=True):
            y = np.stack([d[key].to_numpy()[:n] for d in dfs])
            line, = ax.plot(steps, y.mean(0), label=f"{algo} ({len(dfs)} seeds)")
            ax.fill_between(steps, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
    axes[1].axhline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit {cost_limit:g}")
    axes[0].set(title=f"{task}: return", xlabel="environment steps", ylabel="episode return")
    axes[1].set(title=f"{task}: cost", xlabel="environment steps", ylabel="episode cost")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m dynacppo_lite bench learning", description=__doc__)
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    p.add_argument("--algos", nargs="+", default=["cppo", "ppo-lag", "dyna-cppo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=200_000, help="environment steps per run")
    p.add_argument("--steps-per-iter", type=int, default=4_000)
    p.add_argument("--target-return", type=float, nargs="*", default=None,
                   help="one per task: report steps to reach it under the cost limit")
    p.add_argument("--jobs", type=int, default=2, help="training processes at once")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-dir", type=Path, default=Path("bench_results/learning/runs"))
    p.add_argument("--figures", type=Path, default=Path("figures/benchmarks"))
    p.add_argument("--out", type=Path, default=Path("bench_results/learning"))
    args = p.parse_args(argv)
    if args.target_return and len(args.target_return) != len(args.tasks):
        p.error("--target-return needs one value per task")
    started = time.time()
    jobs = [(t, a, s) for t in args.tasks for a in args.algos for s in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        dirs = list(pool.map(lambda j: run_one(*j, args.steps, args.log_dir, args.device,
                                               args.steps_per_iter), jobs))
    done = dict(zip(jobs, dirs, strict=True))
    rows = []
    for k, task in enumerate(args.tasks):
        limit = default_cost_limit(task)
        target = args.target_return[k] if args.target_return else None
        runs = {a: [done[(task, a, s)] for s in args.seeds] for a in args.algos}
        fig = plot_task(task, runs, limit, args.figures / f"learning_{task}.png")
        for algo, algo_dirs in runs.items():
            per_seed = [summarise(pd.read_csv(d / "progress.csv"), limit, target) for d in algo_dirs]
            row = {"task": task, "algo": algo, "steps": args.steps, "seeds": len(per_seed),
                   "cost_limit": limit, "figure": str(fig)}
            for key in per_seed[0]:
                vals = np.array([s[key] for s in per_seed])
                row[f"{key}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
                row[f"{key}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else np.nan
            rows.append(row)
    cols = ["task", "algo", "steps", "seeds", "return_mean", "return_std", "cost_mean", "cost_std",
            "cost_limit"] + (["steps_to_target_mean"] if args.target_return else [])
    table = markdown_table(rows, cols) + (
        "\n\nreturn/cost: mean episode return and cost over the last 10% of steps, mean and "
        "std over seeds.")
    write_results(args.out, "learning", "Learning: same budget and seeds", table, rows,
                  command_line("learning", argv), started)
    (args.out / "runs.json").write_text(json.dumps({f"{t}|{a}|{s}": str(d) for (t, a, s), d in done.items()}))
    return 0
