"""``python -m dynacppo_lite bench env``: raw env throughput, stock vs fast Safety-Gymnasium.

Random actions (the same for both implementations), steps/s *including* resets: the clock runs
from the first ``reset`` through ``--steps`` env steps, resetting every episode as it ends.

* 1 worker: one env stepped in this process.
* 2 workers: ``gymnasium.vector.AsyncVectorEnv`` of two envs in two subprocesses, each wrapped
  so its cost goes to ``info['cost']`` (gymnasium 0.28.1 vector envs take 5-tuple steps) and
  reset automatically by the vector env; steps/s counts the steps of both envs.
* physics: ``mj_step`` alone (10 substeps, the frameskip of these tasks) on the states the
  1-worker run visits, and its share of a stock and of a fast step without resets.

Writes a markdown table to stdout and to ``--out/env.md``, the numbers to ``--out/env.json``,
both with the exact command line. The machine is shared: keep ``--steps`` modest.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium
import mujoco
import numpy as np

from dynacppo_lite.envs.compat import import_safety_gymnasium
from dynacppo_lite.envs.fast import make_safety_env

DEFAULT_ENVS = ("SafetyPointGoal1-v0", "SafetyPointCircle1-v0", "SafetyCarButton1-v0")
SUBSTEPS = 10  # frameskip_binom_n of the navigation tasks (frameskip_binom_p = 1)
#: What ``mj_step`` reads besides ``time``: the state, its inputs and the solver warm start.
_STATE = ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "qfrc_applied", "xfrc_applied",
          "mocap_pos", "mocap_quat")


@dataclass
class Row:
    """One measured configuration."""

    env_id: str
    impl: str  # "stock" or "fast"
    workers: int
    steps: int
    seconds: float
    resets: int
    reset_seconds: float | None  # time inside reset(); None where resets run in the workers

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def step_us(self) -> float | None:
        """Mean step time without resets, where resets were timed apart."""
        if self.reset_seconds is None:
            return None
        return (self.seconds - self.reset_seconds) / self.steps * 1e6


class CostInInfo(gymnasium.Wrapper):
    """6-tuple Safety-Gymnasium step -> 5-tuple with ``info['cost']``, for gymnasium vector envs."""

    def step(self, action: Any) -> tuple:
        obs, reward, cost, terminated, truncated, info = self.env.step(action)
        info["cost"] = cost
        return obs, reward, terminated, truncated, info


def _vector_member(env_id: str, fast: bool) -> gymnasium.Env:
    return CostInInfo(make_safety_env(env_id, fast=fast))


def _actions(space: gymnasium.spaces.Box, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(space.low, space.high, (count, *space.shape))


def time_single(env_id: str, fast: bool, steps: int, seed: int) -> Row:
    """One env, ``steps`` random steps, resetting at every episode end (timed separately too)."""
    env = make_safety_env(env_id, fast=fast)
    actions = _actions(env.action_space, steps, seed)
    resets, reset_seconds = 1, 0.0
    start = time.perf_counter()
    env.reset(seed=seed)
    reset_seconds += time.perf_counter() - start
    for action in actions:
        _, _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            t0 = time.perf_counter()
            env.reset()
            reset_seconds += time.perf_counter() - t0
            resets += 1
    seconds = time.perf_counter() - start
    env.close()
    return Row(env_id, "fast" if fast else "stock", 1, steps, seconds, resets, reset_seconds)


def time_vector(env_id: str, fast: bool, steps: int, seed: int, workers: int = 2) -> Row:
    """``AsyncVectorEnv`` of ``workers`` envs; ``steps`` env steps in all (autoreset inside)."""
    member = functools.partial(_vector_member, env_id, fast)
    env = gymnasium.vector.AsyncVectorEnv([member] * workers)
    actions = _actions(env.single_action_space, steps // workers, seed)
    resets = workers
    start = time.perf_counter()
    env.reset(seed=seed)
    for action in actions:
        _, _, terminated, truncated, _ = env.step(np.stack([action] * workers))
        resets += int(np.sum(terminated | truncated))
    seconds = time.perf_counter() - start
    env.close()
    return Row(env_id, "fast" if fast else "stock", workers, len(actions) * workers, seconds,
               resets, None)


def time_physics(env_id: str, steps: int, seed: int) -> float:
    """Seconds of ``SUBSTEPS`` x ``mj_step`` alone on the states of the 1-worker fast run.

    The physics cost depends on the state (contacts), so this replays the benchmark's actions
    from the same seed and, before each env step, times that step's physics on a scratch
    ``MjData`` loaded with the simulation state (one per model: fresh memory per step would
    add page faults to the timing; mocap bodies stay put over the scratch substeps).
    """
    env = make_safety_env(env_id)
    actions = _actions(env.action_space, steps, seed)
    env.reset(seed=seed)
    seconds, model, scratch = 0.0, None, None
    for action in actions:
        task = env.unwrapped.task
        if task.model is not model:
            model, scratch = task.model, mujoco.MjData(task.model)
        for name in _STATE:
            getattr(scratch, name)[:] = getattr(task.data, name)
        scratch.time = task.data.time
        scratch.ctrl[:] = np.clip(action, *model.actuator_ctrlrange.T)
        start = time.perf_counter()
        mujoco.mj_step(model, scratch, SUBSTEPS)
        seconds += time.perf_counter() - start
        _, _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    env.close()
    return seconds


def _markdown(rows: list[Row], physics: dict[str, float], meta: dict[str, Any]) -> str:
    lines = [
        "# Env throughput: stock vs fast Safety-Gymnasium",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"{meta['when']}, {meta['machine']}, {meta['steps']} random-action env steps per row "
        "(2 workers: AsyncVectorEnv, cost in info, both envs' steps counted).",
        "",
        "| env | impl | workers | steps/s incl. resets | x stock | resets | mean reset s "
        "| step µs (no resets) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    stock = {(r.env_id, r.workers): r.steps_per_s for r in rows if r.impl == "stock"}
    for r in rows:
        speedup = r.steps_per_s / stock[r.env_id, r.workers]
        reset = "-" if r.reset_seconds is None else f"{r.reset_seconds / r.resets:.3f}"
        step = "-" if r.step_us is None else f"{r.step_us:,.0f}"
        lines.append(f"| {r.env_id} | {r.impl} | {r.workers} | {r.steps_per_s:,.0f} "
                     f"| {speedup:.1f} | {r.resets} | {reset} | {step} |")
    lines += [
        "",
        f"Physics alone ({SUBSTEPS} x `mj_step` per env step on the states of the 1-worker run, "
        "1 core) and its share of a step without resets:",
        "",
        "| env | physics steps/s | physics µs/step | share of stock step | share of fast step |",
        "|---|---:|---:|---:|---:|",
    ]
    for env_id, seconds in physics.items():
        us = seconds / meta["steps"] * 1e6
        step = {r.impl: r.step_us for r in rows if r.env_id == env_id and r.workers == 1}
        lines.append(f"| {env_id} | {meta['steps'] / seconds:,.0f} | {us:.0f} "
                     f"| {us / step['stock']:.0%} | {us / step['fast']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m dynacppo_lite bench env",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="env steps per row (default 3000)")
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), metavar="ENV_ID")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_results/env"))
    args = parser.parse_args(args_list)
    sg = import_safety_gymnasium()

    rows: list[Row] = []
    physics: dict[str, float] = {}
    for env_id in args.envs:
        for workers in args.workers:
            for fast in (False, True):
                if workers == 1:
                    row = time_single(env_id, fast, args.steps, args.seed)
                else:
                    row = time_vector(env_id, fast, args.steps, args.seed, workers)
                print(f"{env_id} {row.impl} x{workers}: {row.steps_per_s:,.0f} steps/s",
                      file=sys.stderr, flush=True)
                rows.append(row)
        physics[env_id] = time_physics(env_id, args.steps, args.seed)
    meta = {
        "command": shlex.join(["python", "-m", "dynacppo_lite", "bench", "env", *args_list]),
        "argv": sys.argv,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        "python": platform.python_version(),
        "versions": {"numpy": np.__version__, "mujoco": mujoco.__version__,
                     "gymnasium": gymnasium.__version__, "safety_gymnasium": sg.__version__},
        "steps": args.steps,
    }
    text = _markdown(rows, physics, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "env.md").write_text(text)
    results = {
        **meta,
        "rows": [{**asdict(r), "steps_per_s": r.steps_per_s, "step_us": r.step_us}
                 for r in rows],
        "physics_seconds": physics,
    }
    (args.out / "env.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
