"""``sweep``: a grid of algorithms x tasks x seeds (x config overrides) as Ray tasks.

``python -m dynacppo_lite sweep [--preset learning] [--address ray://HOST:10001] ...`` runs
every (task, variant, seed) of the grid as one Ray task that trains it in its own process
(``bench learning``'s :func:`~dynacppo_lite.bench.learning.run_one`): on a local Ray instance
by default, on an existing cluster with ``--address``. Each run writes its usual run directory
under ``--log-dir``; a failed run is reported and the others go on; a re-run skips finished
runs and resumes interrupted ones from their checkpoints. The sweep ends with the table and
figures of ``bench learning`` (:func:`~dynacppo_lite.bench.learning.report`).

Presets name a grid; flags override it. ``learning`` (the default) is ``bench learning``'s
grid; ``smoke`` is a tiny one on the toy task (what the tests run).

On a cluster, ``--log-dir``, ``--figures`` and ``--out`` must be on storage that every node
sees at the same path: the runs write there and the driver reads them at the end. Ray is an
optional extra: ``pip install .[sweep]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from dynacppo_lite.bench.learning import Variant, add_grid_arguments, report, run_one
from dynacppo_lite.envs import TOY_ENV_ID

#: Named grids: defaults that the command line overrides.
SWEEP_PRESETS: dict[str, dict[str, Any]] = {
    "learning": {},  # bench learning's own defaults
    "smoke": {"tasks": [TOY_ENV_ID], "algos": ["cppo", "ppo-lag"], "seeds": [0, 1],
              "steps": 2_000, "steps_per_iter": 1_000, "log_dir": Path("bench_results/sweep/runs"),
              "figures": Path("bench_results/sweep/figures"), "out": Path("bench_results/sweep")},
}


def train_job(task: str, variant: Variant, seed: int, steps: int, log_dir: str, device: str,
              steps_per_iter: int, overrides: list[str]) -> tuple[str, str]:
    """One grid point (the body of a Ray task): ``("ok", run_dir)`` or ``("failed", why)``."""
    try:
        return "ok", str(run_one(task, variant, seed, steps, Path(log_dir), device,
                                 steps_per_iter, overrides))
    except RuntimeError as exc:
        return "failed", str(exc)


def _init_ray(address: str | None, num_cpus: int | None) -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError("sweep needs Ray: pip install '.[sweep]' (or pip install ray)") from None
    if address is not None:
        ray.init(address=address)
        return ray
    # A local instance: its workers import this very copy of the package (a checkout may differ
    # from what site-packages points to).
    here = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    return ray


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m dynacppo_lite sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(SWEEP_PRESETS), default="learning",
                   help="a named grid (flags override it)")
    add_grid_arguments(p)
    p.add_argument("--address", help="an existing Ray cluster (default: start a local instance)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray CPUs each run reserves")
    preset, _ = p.parse_known_args(argv)
    p.set_defaults(**SWEEP_PRESETS[preset.preset])
    args = p.parse_args(argv)
    if args.target_return and len(args.target_return) != len(args.tasks):
        p.error("--target-return needs one value per task")
    variants = [Variant.parse(a) for a in args.algos]
    jobs = [(t, v, s) for t in args.tasks for v in variants for s in args.seeds]
    started = time.time()
    ray = _init_ray(args.address, args.num_cpus)
    try:
        remote = ray.remote(num_cpus=args.cpus_per_run, max_retries=0)(train_job)
        # Ray workers run elsewhere (another cwd, maybe another node): absolute paths.
        log_dir = str(args.log_dir.resolve())
        pending = {remote.remote(t, v, s, args.steps, log_dir, args.device, args.steps_per_iter,
                                 args.overrides): (t, v, s) for t, v, s in jobs}
        done: dict[tuple[str, str, int], Path] = {}
        failed = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            t, v, s = pending.pop(ready[0])
            try:
                status, what = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the task itself died (node lost, OOM kill)
                status, what = "failed", f"{t}_{v.label}_s{s}: {type(exc).__name__}: {exc}"
            if status == "ok":
                done[(t, v.label, s)] = Path(what)
            else:
                failed += 1
                print(f"sweep: {what}", file=sys.stderr)
            print(f"sweep: {len(done) + failed}/{len(jobs)} runs over ({failed} failed)", flush=True)
    finally:
        ray.shutdown()
    report(args, variants, done, shlex.join(["python", "-m", "dynacppo_lite", "sweep", *argv]),
           started)
    if failed:
        print(f"sweep: {failed} of {len(jobs)} runs failed (see above)", file=sys.stderr)
    return 1 if failed else 0
