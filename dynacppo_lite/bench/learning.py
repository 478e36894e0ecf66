"""``bench learning``: cppo, ppo-lag and dyna-cppo with the same budget and seeds on a task list.

Every (task, algorithm, seed) is a separate training process; up to ``--jobs`` run at once.
``--algos`` also takes labelled variants with their own Config overrides:
``ppo=ppo-lag,cost_limit=1e9`` is PPO without a constraint. A finished run is not run again and
an interrupted one resumes, so a suite can be stopped and continued.
Reported per task and algorithm: final return and cost (mean over the last 10% of steps, then
mean and spread over seeds), the cumulative episode cost over the run (every finished
episode's cost, summed: the total violations), and the steps needed to first reach
``--target-return`` with the (smoothed) episode cost under the limit. Curves (mean and
min-max band over seeds) go to ``figures/benchmarks/learning_<task>.png``, and the return/cost
plane (each seed's final cost and return, the same numbers as the table, and their mean +- std
over seeds, the cost limit dashed) to ``figures/benchmarks/plane_<task>.png`` (both in
``--figures``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dynacppo_lite.bench.common import command_line, markdown_table, save_figure, write_results
from dynacppo_lite.envs.presets import default_cost_limit
from dynacppo_lite.runlog import final_score, read_progress, run_status

DEFAULT_TASKS = ["SafetyPointGoal1-v0", "SafetyPointCircle1-v0", "SafetyHalfCheetahVelocity-v1"]

#: Published learning curves run on the development machine, kept beside the package (file:
#: steps, episode return, episode cost). Source: OmniSafe 0.5.0 PPOLag, default configuration,
#: 1 env, 1 torch thread, CPU, seed 0, 2 cores (see README, Results).
REFERENCE_CURVES = {
    "SafetyPointGoal1-v0": ("omnisafe-ppolag", Path(__file__).parent / "reference"
                            / "omnisafe_ppolag_SafetyPointGoal1-v0.csv"),
}


@dataclass(frozen=True)
class Variant:
    """A labelled algorithm with its own Config overrides, e.g. ``ppo=ppo-lag,cost_limit=1e9``."""

    label: str
    algo: str
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Variant:
        label, sep, spec = text.partition("=")
        if not sep:
            return cls(text, text)
        algo, *overrides = spec.split(",")
        return cls(label, algo, tuple(overrides))


def run_one(task: str, variant: Variant, seed: int, steps: int, log_dir: Path, device: str,
            steps_per_iter: int, overrides: list[str]) -> Path:
    """Train one (task, variant, seed) in its own process; returns its run directory.

    What a run directory needs is ``runlog.run_status`` for ``steps``: an interrupted run
    resumes from its checkpoint; a finished one is not run again."""
    name = f"{task}_{variant.label}_s{seed}"
    run_dir = log_dir / name
    status = run_status(run_dir, {"total_steps": steps})
    if status == "finished":
        return run_dir
    cmd = [sys.executable, "-m", "dynacppo_lite", "train", "--algo", variant.algo, "--env", task,
           "--total-steps", str(steps), "--steps-per-iter", str(steps_per_iter), "--seed",
           str(seed), "--num-envs", "1", "--device", device, "--log-dir", str(log_dir),
           "--run-name", name, "--no-progress"]
    for item in [*overrides, *variant.overrides]:
        cmd += ["--set", item]
    if status == "resume":
        cmd += ["--resume", str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed: {out.stderr.strip().splitlines()[-1:]}")
    return run_dir


def summarise(df: pd.DataFrame, cost_limit: float, target: float | None,
              marks: list[int] = ()) -> dict[str, float]:
    """Final return/cost, the same at each mark, the cumulative episode cost (``cum_cost``: the
    sum over iterations of ``ep_cost * episodes``, the costs of all episodes that ended in the
    run; an iteration in which none ended repeats the last ``ep_cost`` and adds nothing; NaN
    for a curve without episode counts, such as a reference), and steps to the target return
    under the limit."""
    out = {"return": final_score(df["step"], df["ep_return"]),
           "cost": final_score(df["step"], df["ep_cost"]),
           "cum_cost": (float((df["ep_cost"] * df["episodes"]).sum()) if "episodes" in df
                        else float("nan"))}
    for mark in marks:
        out[f"return@{mark:g}"] = final_score(df["step"], df["ep_return"], mark)
        out[f"cost@{mark:g}"] = final_score(df["step"], df["ep_cost"], mark)
    if target is not None:
        ret = df["ep_return"].rolling(3, min_periods=1).mean()
        cost = df["ep_cost"].rolling(3, min_periods=1).mean()
        hit = df["step"][(ret >= target) & (cost <= cost_limit)]
        out["steps_to_target"] = float(hit.iloc[0]) if len(hit) else float("nan")
    return out


def reference_curve(task: str) -> tuple[str, pd.DataFrame] | None:
    """(label, frame with step/ep_return/ep_cost) of the task's reference curve, if one is kept."""
    if task not in REFERENCE_CURVES:
        return None
    label, path = REFERENCE_CURVES[task]
    ref = pd.read_csv(path)
    return label, pd.DataFrame({"step": ref["TotalEnvSteps"], "ep_return": ref["EpRet"],
                                "ep_cost": ref["EpCost"]})


def plot_task(task: str, runs: dict[str, list[Path]], cost_limit: float, out: Path,
              target_kl: float | None = None) -> Path:
    """Return and cost (mean and min-max over seeds, the reference curve dotted) and, under
    them, ``plots.plot_diagnostics``: the cost estimate with its standard error, the
    controller's output, the realised KL and the M-step's reach. When a dyna-cppo run is
    among them, a third row: ``plots.plot_dyna_diagnostics`` (the model's errors on fresh
    data, imagined vs real cost rate and advantages)."""
    import matplotlib.pyplot as plt

    from dynacppo_lite.plots import plot_diagnostics, plot_dyna_diagnostics

    dyna = any(json.loads((d / "config.json").read_text())["algo"] == "dyna-cppo"
               for dirs in runs.values() for d in dirs)
    fig = plt.figure(figsize=(15, 10.5 if dyna else 7))
    grid = fig.add_gridspec(3 if dyna else 2, 12)
    axes = np.array([[fig.add_subplot(grid[row, 4 * col:4 * col + 4]) for col in range(3)]
                     for row in range(2)])
    ax_ret, ax_cost = axes[0, 0], axes[0, 1]
    for label, dirs in runs.items():
        dfs = [read_progress(d) for d in dirs]
        n = min(len(d) for d in dfs)
        steps = dfs[0]["step"].to_numpy()[:n]
        color = None
        for ax, key in ((ax_ret, "ep_return"), (ax_cost, "ep_cost")):
            y = np.stack([d[key].to_numpy()[:n] for d in dfs])
            line, = ax.plot(steps, y.mean(0), label=f"{label} ({len(dfs)} seeds)", color=color)
            color = line.get_color()
            ax.fill_between(steps, y.min(0), y.max(0), color=color, alpha=0.2)
    ref = reference_curve(task)
    if ref is not None:
        for ax, key in ((ax_ret, "ep_return"), (ax_cost, "ep_cost")):
            ax.plot(ref[1]["step"], ref[1][key], "k:", label=f"{ref[0]} (reference, 1 seed)")
    ax_cost.axhline(cost_limit, color="k", ls="--", lw=1, label=f"cost limit {cost_limit:g}")
    for ax, what in ((ax_ret, "return"), (ax_cost, "cost")):
        ax.set(title=f"{task}: episode {what}", xlabel="environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    plot_diagnostics(runs, axes=[axes[0, 2], *axes[1]], cost_limit=cost_limit, target_kl=target_kl)
    if dyna:
        plot_dyna_diagnostics(runs, axes=[fig.add_subplot(grid[2, 3 * col:3 * col + 3])
                                          for col in range(4)])
    return save_figure(fig, out)


def plot_plane(task: str, scored: dict[str, list[dict[str, float]]], cost_limit: float, out: Path,
               anchors: dict[str, dict[str, float]] | None = None, steps: int | None = None) -> Path:
    """``plots.plot_return_cost_plane`` of the table's numbers: ``scored[label]`` holds each
    seed's :func:`summarise` (its final ``cost`` and ``return``), ``anchors[label]`` one
    summary drawn as a grey cross (the reference curve, scored over the same budget)."""
    from dynacppo_lite.plots import plot_return_cost_plane

    ax = plot_return_cost_plane(
        {label: [(s["cost"], s["return"]) for s in per_seed] for label, per_seed in scored.items()},
        cost_limit,
        anchors={label: (s["cost"], s["return"]) for label, s in (anchors or {}).items()})
    budget = f", {steps:,} steps" if steps else ""
    ax.set_title(f"{task}: final return and cost (last 10% of steps{budget})", fontsize=9)
    return save_figure(ax.figure, out)


def report(args: argparse.Namespace, variants: list[Variant],
           done: dict[tuple[str, str, int], Path], command: str, started: float) -> list[dict]:
    """The suite's table (markdown and JSON in ``args.out``, with the run directories in
    ``runs.json``) and two figures per task (:func:`plot_task`'s curves, :func:`plot_plane`'s
    return/cost plane of the same final scores as the table) from the finished runs
    ``done[(task, label, seed)] = run_dir``; ``args`` carries the grid and output options of
    :func:`main` (tasks, seeds, steps, marks, target_return, figures, out). Also what ``sweep`` ends with."""
    rows = []
    for k, task in enumerate(args.tasks):
        limit = default_cost_limit(task)
        target = args.target_return[k] if args.target_return else None
        runs = {v.label: [done[(task, v.label, s)] for s in args.seeds if (task, v.label, s) in done]
                for v in variants}
        runs = {label: ds for label, ds in runs.items() if ds}
        if not runs:
            continue
        target_kl = json.loads((next(iter(runs.values()))[0] / "config.json").read_text())["target_kl"]
        fig = plot_task(task, runs, limit, args.figures / f"learning_{task}.png", target_kl)
        scored = {label: [summarise(read_progress(d), limit, target, args.marks)
                          for d in ds] for label, ds in runs.items()}
        ref = reference_curve(task)
        anchors = {}
        if ref is not None:
            # Scored over the same budget as the runs, not over the whole reference curve.
            within = ref[1][ref[1]["step"] <= args.steps]
            anchors[f"{ref[0]} (reference)"] = summarise(within, limit, None, args.marks)
        plane = plot_plane(task, scored, limit, args.figures / f"plane_{task}.png", anchors,
                           args.steps)
        scored |= {label: [s] for label, s in anchors.items()}
        for label, per_seed in scored.items():
            row = {"task": task, "algo": label, "steps": args.steps, "seeds": len(per_seed),
                   "cost_limit": limit, "figure": str(fig), "plane": str(plane)}
            for key in per_seed[0]:
                vals = np.array([s[key] for s in per_seed])
                row[f"{key}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
                row[f"{key}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else np.nan
            rows.append(row)
    marks = [f"{q}@{m:g}_mean" for m in args.marks for q in ("return", "cost")]
    cols = ["task", "algo", "steps", "seeds", "return_mean", "return_std", "cost_mean", "cost_std",
            *marks, "cum_cost_mean", "cum_cost_std", "cost_limit"] + (
        ["steps_to_target_mean"] if args.target_return else [])
    table = markdown_table(rows, cols) + (
        "\n\nreturn/cost: mean episode return and cost over the last 10% of steps (of the run, or "
        "before each mark @), mean and std over seeds. cum_cost: the cumulative episode cost over "
        "the run (the costs of all episodes that ended in it, summed: the total violations), mean "
        "and std over seeds.")
    write_results(args.out, "learning", "Learning: same budget and seeds", table, rows, command,
                  started)
    (args.out / "runs.json").write_text(json.dumps({f"{t}|{a}|{s}": str(d) for (t, a, s), d in done.items()}))
    return rows


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a learning grid and its report (shared with ``sweep``)."""
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    p.add_argument("--algos", nargs="+", default=["cppo", "ppo-lag", "dyna-cppo"],
                   help="algorithms, or variants LABEL=ALGO[,FIELD=VALUE...]")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1_000_000, help="environment steps per run")
    p.add_argument("--steps-per-iter", type=int, default=4_000)
    p.add_argument("--marks", type=int, nargs="*", default=[],
                   help="also report return/cost over the last 10%% of steps before each mark")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="a Config override for every run")
    p.add_argument("--target-return", type=float, nargs="*", default=None,
                   help="one per task: report steps to reach it under the cost limit")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-dir", type=Path, default=Path("bench_results/learning/runs"))
    p.add_argument("--figures", type=Path, default=Path("figures/benchmarks"))
    p.add_argument("--out", type=Path, default=Path("bench_results/learning"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m dynacppo_lite bench learning", description=__doc__)
    add_grid_arguments(p)
    p.add_argument("--jobs", type=int, default=2, help="training processes at once")
    args = p.parse_args(argv)
    if args.target_return and len(args.target_return) != len(args.tasks):
        p.error("--target-return needs one value per task")
    variants = [Variant.parse(a) for a in args.algos]
    started = time.time()
    jobs = [(t, v, s) for t in args.tasks for v in variants for s in args.seeds]

    def attempt(job: tuple[str, Variant, int]) -> Path | None:
        try:
            return run_one(*job, args.steps, args.log_dir, args.device, args.steps_per_iter,
                           args.overrides)
        except RuntimeError as exc:  # one failed run is reported; the others go on
            print(f"bench learning: {exc}", file=sys.stderr)
            return None

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        dirs = list(pool.map(attempt, jobs))
    done = {(t, v.label, s): d for (t, v, s), d in zip(jobs, dirs, strict=True) if d is not None}
    report(args, variants, done, command_line("learning", argv), started)
    failed = len(jobs) - len(done)
    if failed:
        print(f"bench learning: {failed} of {len(jobs)} runs failed (see above)", file=sys.stderr)
    return 1 if failed else 0
