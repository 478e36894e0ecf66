"""``bench throughput``: training steps/s of each algorithm over the raw env's steps/s.

For each worker count, the raw random-action throughput of the vector env (resets included)
and each algorithm's training throughput are measured in the same run, one after the other, each
training run in a fresh process (so its peak memory is its own). The per-phase split comes from
the ``t_*`` columns of the run's ``progress.csv``; the first iteration (start-up) is left out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dynacppo_lite.bench.common import command_line, markdown_table, write_results

PHASES = ["t_env", "t_infer", "t_estep", "t_mstep", "t_critics", "t_model", "t_imagine"]

_CHILD = r"""
import json, sys, time
from dynacppo_lite.bench.common import current_rss_mib, peak_rss_mib
from dynacppo_lite.config import Config
from dynacppo_lite.train import Trainer
cfg = Config(**json.loads(sys.argv[1]))
rss = []
t0 = time.perf_counter()
Trainer(cfg).run(callback=lambda row: rss.append(current_rss_mib()))
gpu = 0.0
import torch
if torch.cuda.is_available():
    gpu = torch.cuda.max_memory_allocated() / 2**20
print(json.dumps({"rss": rss, "peak_rss_mib": peak_rss_mib(), "gpu_mib": gpu,
                  "wall": time.perf_counter() - t0}))
"""


def raw_env_sps(env_id: str, num_envs: int, steps: int, seed: int = 0) -> float:
    """Random-action steps/s of ``make_env(env_id, num_envs)`` including resets."""
    from dynacppo_lite.envs import make_env

    env = make_env(env_id, num_envs=num_envs, seed=seed)
    env.reset()
    n = max(1, steps // num_envs)
    t0 = time.perf_counter()
    for _ in range(n):
        env.step(env.action_space.sample())
    sps = n * num_envs / (time.perf_counter() - t0)
    env.close()
    return sps


def train_sps(algo: str, env_id: str, num_envs: int, steps: int, steps_per_iter: int,
              device: str, log_dir: str, extra: dict) -> dict:
    """Train ``algo`` in a child process; steps/s after the first iteration, phases, memory."""
    cfg = dict(algo=algo, env_id=env_id, num_envs=num_envs, total_steps=steps,
               steps_per_iter=steps_per_iter, device=device, log_dir=log_dir,
               run_name=f"{algo}_w{num_envs}", checkpoint_every=10_000, **extra)
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"training {algo} failed: {out.stderr.strip().splitlines()[-1]}")
    child = json.loads(out.stdout.strip().splitlines()[-1])
    import pandas as pd

    df = pd.read_csv(Path(log_dir) / cfg["run_name"] / "progress.csv")
    if len(df) < 2:
        raise ValueError("throughput needs at least 2 iterations: raise --steps")
    wall = float(df["time_s"].iloc[-1] - df["time_s"].iloc[0])  # all but the start-up iteration
    timed = df.iloc[1:]
    steps_done = steps_per_iter * len(timed)
    split = {p: float(timed[p].sum() / wall) for p in PHASES}
    split["t_other"] = 1.0 - sum(split.values())
    rss = child["rss"]
    return {"sps": steps_done / wall, "split": split, "peak_rss_mib": child["peak_rss_mib"],
            "rss_second_iter_mib": rss[1] if len(rss) > 1 else np.nan,
            "rss_last_iter_mib": rss[-1] if rss else np.nan, "gpu_mib": child["gpu_mib"],
            "iterations_timed": len(timed), "total_s": wall}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m dynacppo_lite bench throughput", description=__doc__)
    p.add_argument("--env", default="SafetyPointGoal1-v0")
    p.add_argument("--algos", nargs="+", default=["cppo", "ppo-lag", "dyna-cppo"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=24_000, help="training steps per measurement")
    p.add_argument("--steps-per-iter", type=int, default=4_000)
    p.add_argument("--raw-steps", type=int, default=4_000, help="random-action steps for the raw rate")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-start-iter", type=int, default=1, help="dyna-cppo: imagine from this iteration")
    p.add_argument("--out", type=Path, default=Path("bench_results/throughput"))
    args = p.parse_args(argv)
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            raw = raw_env_sps(args.env, w, args.raw_steps)
            for algo in args.algos:
                extra = {"model_start_iter": args.model_start_iter} if algo == "dyna-cppo" else {}
                r = train_sps(algo, args.env, w, args.steps, args.steps_per_iter, args.device, tmp,
                              extra)
                row = {"algo": algo, "workers": w, "raw_sps": raw, "train_sps": r["sps"],
                       "ratio": r["sps"] / raw, "peak_rss_MiB": r["peak_rss_mib"],
                       "rss_iter2_MiB": r["rss_second_iter_mib"],
                       "rss_last_MiB": r["rss_last_iter_mib"], "gpu_MiB": r["gpu_mib"]}
                row.update({k: v for k, v in r["split"].items()})
                rows.append(row)
                print(f"{algo} x{w}: {r['sps']:.0f} steps/s = {r['sps'] / raw:.2f} of raw {raw:.0f}",
                      flush=True)
    cols = ["algo", "workers", "raw_sps", "train_sps", "ratio", *PHASES, "t_other", "peak_rss_MiB",
            "rss_iter2_MiB", "rss_last_MiB", "gpu_MiB"]
    table = markdown_table(rows, cols)
    table += ("\n\nratio = training env-steps/s over raw random-action env-steps/s of the same "
              "vector env, measured in this run. t_* = share of a training iteration's time "
              "(env stepping, policy inference, E-step, M-step, critics, model fit, imagined "
              "rollouts; other = GAE and batch bookkeeping). Memory: peak RSS of the training "
              "process and its env workers; RSS "
              "after the 2nd and the last iteration (flat = no per-step growth).")
    write_results(args.out, "throughput", f"Training throughput on {args.env}", table, rows,
                  command_line("throughput", argv), started)
    return 0
