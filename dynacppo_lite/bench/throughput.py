"""``bench throughput``: training steps/s of each algorithm over the raw env's steps/s.

For each worker count, the random-action throughput (resets included) of the raw single env
(one 6-tuple env, no vector layer), of ``make_env`` (the lean vector env) and of
``make_env(lean=False)`` (gymnasium's vector env stack, for comparison) is measured side by
side: in alternating chunks of steps, so a load change on the machine hits all three alike.
Then each algorithm's training throughput is measured, each training run in a fresh process
(so its peak memory is its own). ``--algos`` takes ``bench learning``'s labelled variants too,
e.g. ``coords=dyna-cppo,dyna_model=coordinates``. The per-phase split comes from the ``t_*`` columns of the
run's ``progress.csv``; the first iteration (start-up) is left out.
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
from dynacppo_lite.bench.learning import Variant
from dynacppo_lite.cli import parse_overrides

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


def env_rates(env_id: str, num_envs: int, steps: int, chunk: int = 100, seed: int = 0
              ) -> dict[str, float]:
    """Random-action steps/s, resets included, of the raw single env (``single``), of
    ``make_env(env_id, num_envs)`` (``lean``) and of ``make_env(..., lean=False)``
    (``gymnasium``), each stepping ``steps`` env-steps in alternating chunks."""
    from dynacppo_lite.envs import make_env
    from dynacppo_lite.envs.make import single_env_factory

    single = single_env_factory(env_id)()
    single.reset(seed=seed)
    single.action_space.seed(seed)
    vecs = {"lean": make_env(env_id, num_envs=num_envs, seed=seed),
            "gymnasium": make_env(env_id, num_envs=num_envs, seed=seed, lean=False)}
    for env in vecs.values():
        env.reset()
    elapsed = dict.fromkeys(["single", *vecs], 0.0)
    done = dict.fromkeys(elapsed, 0)
    while min(done.values()) < steps:
        acts = [single.action_space.sample() for _ in range(chunk)]
        t0 = time.perf_counter()
        for act in acts:
            *_, term, trunc, _ = single.step(act)
            if term or trunc:
                single.reset()
        elapsed["single"] += time.perf_counter() - t0
        done["single"] += chunk
        for name, env in vecs.items():
            n = max(1, chunk // num_envs)
            acts = [env.action_space.sample() for _ in range(n)]
            t0 = time.perf_counter()
            for act in acts:
                env.step(act)
            elapsed[name] += time.perf_counter() - t0
            done[name] += n * num_envs
    single.close()
    for env in vecs.values():
        env.close()
    return {name: done[name] / elapsed[name] for name in elapsed}


def train_sps(algo: str, env_id: str, num_envs: int, steps: int, steps_per_iter: int,
              device: str, log_dir: str, extra: dict, label: str | None = None) -> dict:
    """Train ``algo`` (with the Config fields ``extra``) in a child process; steps/s after the
    first iteration, phases, memory. ``label`` names the run (default: ``algo``)."""
    cfg = dict(algo=algo, env_id=env_id, num_envs=num_envs, total_steps=steps,
               steps_per_iter=steps_per_iter, device=device, log_dir=log_dir,
               run_name=f"{label or algo}_w{num_envs}", checkpoint_every=10_000, **extra)
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
    p.add_argument("--algos", nargs="*", default=["cppo", "ppo-lag", "dyna-cppo"],
                   help="algorithms, or variants LABEL=ALGO[,FIELD=VALUE...]; none: only the "
                        "env rates (e.g. a scaling table over --workers)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=24_000, help="training steps per measurement")
    p.add_argument("--steps-per-iter", type=int, default=4_000)
    p.add_argument("--raw-steps", type=int, default=4_000,
                   help="random-action steps for each raw rate (single env, make_env before/after)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-start-iter", type=int, default=1, help="dyna-cppo: imagine from this iteration")
    p.add_argument("--out", type=Path, default=Path("bench_results/throughput"))
    args = p.parse_args(argv)
    variants = [Variant.parse(a) for a in args.algos]
    try:
        overrides = {v.label: parse_overrides(list(v.overrides)) for v in variants}
    except ValueError as exc:
        p.error(str(exc))
    started = time.time()
    env_rows, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            rates = env_rates(args.env, w, args.raw_steps)
            raw, single = rates["lean"], rates["single"]
            env_rows.append({"workers": w, "single_env_sps": single, "make_env_sps": raw,
                             "make_env_gymnasium_sps": rates["gymnasium"],
                             "make_env/single": raw / single,
                             "gymnasium/single": rates["gymnasium"] / single})
            print(f"x{w}: single env {single:.0f}, make_env {raw:.0f} ({raw / single:.2f}), "
                  f"gymnasium stack {rates['gymnasium']:.0f} ({rates['gymnasium'] / single:.2f})",
                  flush=True)
            for variant in variants:
                algo = variant.label
                extra = ({"model_start_iter": args.model_start_iter}
                         if variant.algo == "dyna-cppo" else {})
                r = train_sps(variant.algo, args.env, w, args.steps, args.steps_per_iter,
                              args.device, tmp, {**extra, **overrides[algo]}, label=algo)
                row = {"algo": algo, "workers": w, "single_env_sps": single, "raw_sps": raw,
                       "train_sps": r["sps"], "ratio": r["sps"] / raw,
                       "ratio_single": r["sps"] / single, "peak_rss_MiB": r["peak_rss_mib"],
                       "rss_iter2_MiB": r["rss_second_iter_mib"],
                       "rss_last_MiB": r["rss_last_iter_mib"], "gpu_MiB": r["gpu_mib"]}
                row.update({k: v for k, v in r["split"].items()})
                rows.append(row)
                print(f"{algo} x{w}: {r['sps']:.0f} steps/s = {r['sps'] / raw:.2f} of make_env "
                      f"{raw:.0f}, {r['sps'] / single:.2f} of the single env {single:.0f}", flush=True)
    table = markdown_table(env_rows, ["workers", "single_env_sps", "make_env_sps",
                                      "make_env_gymnasium_sps", "make_env/single",
                                      "gymnasium/single"])
    table += ("\n\nRandom actions, resets included, measured in alternating chunks: single env = "
              "one raw 6-tuple env in this process (no vector layer, no normalisation); make_env = "
              "the lean vector env with observation normalisation (what training uses); "
              "gymnasium = make_env(lean=False), gymnasium's vector env stack.")
    if rows:
        cols = ["algo", "workers", "single_env_sps", "raw_sps", "train_sps", "ratio",
                "ratio_single", *PHASES, "t_other", "peak_rss_MiB", "rss_iter2_MiB",
                "rss_last_MiB", "gpu_MiB"]
        table += "\n\n" + markdown_table(rows, cols)
        table += ("\n\nratio = training env-steps/s over raw random-action env-steps/s of the same "
                  "vector env (make_env), ratio_single = over the single env's, both measured in "
                  "this run. t_* = share of a training iteration's time "
                  "(env stepping, policy inference, E-step, M-step, critics, model fit, imagined "
                  "rollouts; other = GAE and batch bookkeeping). Memory: peak RSS of the training "
                  "process and its env workers; RSS "
                  "after the 2nd and the last iteration (flat = no per-step growth).")
    write_results(args.out, "throughput", f"Training throughput on {args.env}", table,
                  {"envs": env_rows, "training": rows}, command_line("throughput", argv), started)
    return 0
