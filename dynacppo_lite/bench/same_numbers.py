"""Check that a change to the training loop changes no number: train short fixed-seed runs, then
compare two such sets bit for bit.

    python -m dynacppo_lite bench same_numbers OUT                 # every run into OUT/<name>/
    python -m dynacppo_lite bench same_numbers OUT --only toy      # the toy task's runs (seconds)
    python -m dynacppo_lite bench same_numbers OUT --cut-from REF  # resume REF's cut runs
    python -m dynacppo_lite bench same_numbers --compare A B       # per run: identical, or what differs

Run it from the root of each checkout to compare: ``python -m`` imports the package of the
current directory first.

Each run writes its ``progress.csv`` and ``rows.jsonl``: every CSV row as the trainer returned it,
floats written with ``repr`` (exact, where the CSV rounds to 6 digits). ``--compare`` reports,
per run, whether every column of both is identical (timing columns, ``time_s``, ``sps`` and
``t_*``, excepted) and whether the final policy's weights are equal, and lists what differs.
Columns renamed between the two checkouts are compared under today's name (:data:`RENAMED`,
old -> new); a column whose definition changed on purpose (:data:`REDEFINED`) is reported
apart and does not make a run differ.

The runs: cppo (the PI controller), ppo-lag, dyna-cppo (imagined data from iteration 1), cppo
with ``cost_control`` margin and bang-bang, on the toy task (at its own limit and at a limit it
violates, so that recovery and a positive multiplier occur; dyna-cppo also with imagined rounds
and several E-step targets) and on SafetyPointGoal1-v0 (3 iterations of 4,000 steps). The
``resume_*`` runs stop after 3 iterations and continue from their checkpoint; their directory as
cut is kept in ``<name>_cut/``, and ``--cut-from REF`` resumes REF's copy instead, so code after a
change must continue checkpoints written before it with the same numbers.

This is a tool for a refactor, not a test: the numbers differ between machines and versions.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.config import TOY_CONTROL, Config
from dynacppo_lite.envs import TOY_ENV_ID
from dynacppo_lite.train import Trainer, train

TIMING = ("time_s", "sps")
#: progress.csv / row columns renamed since earlier checkouts: old name -> name today.
RENAMED = {"reach_est": "rho"}
#: Columns whose meaning changed on purpose, with why (compared, reported, never a difference).
REDEFINED = {"clip_frac": "each loss's own clip range (issue 30): the linear M-step's [b, 2 - b], "
                          "PPO's [1 - eps, 1 + eps]; before, r < b for every loss"}
GOAL = "SafetyPointGoal1-v0"


def _toy(**kw: Any) -> dict[str, Any]:
    return dict(env_id=TOY_ENV_ID, total_steps=6_000, num_envs=1, steps_per_iter=1_000,
                pi_lr=3e-3, **TOY_CONTROL, **kw)


def _goal(**kw: Any) -> dict[str, Any]:
    return dict(env_id=GOAL, total_steps=12_000, num_envs=1, steps_per_iter=4_000, **kw)


#: name -> Config fields (device, log_dir, run_name and checkpoint_every are added).
RUNS: dict[str, dict[str, Any]] = {
    "toy_cppo": _toy(),
    "toy_ppo-lag": _toy(algo="ppo-lag"),
    "toy_dyna-cppo": _toy(algo="dyna-cppo", model_start_iter=1),
    "toy_cppo_margin": _toy(cost_control="margin"),
    "toy_cppo_bang-bang": _toy(cost_control="bang-bang"),
    "toy_strict_cppo": _toy(cost_limit=0.5),
    "toy_strict_ppo-lag": _toy(algo="ppo-lag", cost_limit=0.5),
    "toy_strict_cppo_margin": _toy(cost_limit=0.5, cost_control="margin"),
    "toy_strict_cppo_bang-bang": _toy(cost_limit=0.5, cost_control="bang-bang"),
    "toy_strict_dyna-cppo_rounds": _toy(algo="dyna-cppo", model_start_iter=1, cost_limit=0.5,
                                        model_rounds=2, estep_targets=2),
    "toy_strict_dyna-cppo_margin_rounds": _toy(algo="dyna-cppo", model_start_iter=1, cost_limit=0.5,
                                               cost_control="margin", model_rounds=2),
    "resume_toy_cppo": _toy(cost_limit=2.0),
    "resume_toy_ppo-lag": _toy(algo="ppo-lag", cost_limit=2.0),
    "resume_toy_cppo_margin": _toy(cost_limit=2.0, cost_control="margin"),
    "resume_toy_cppo_bang-bang": _toy(cost_limit=2.0, cost_control="bang-bang"),
    "goal_cppo": _goal(),
    "goal_ppo-lag": _goal(algo="ppo-lag"),
    "goal_dyna-cppo": _goal(algo="dyna-cppo", model_start_iter=1),
    "goal_cppo_margin": _goal(cost_control="margin"),
    "goal_cppo_bang-bang": _goal(cost_control="bang-bang"),
}
CUT_AFTER = 3  # iterations before a resume_* run is stopped


def _exact(value: Any) -> Any:
    """A CSV value as an exactly comparable JSON value (floats by repr)."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return repr(value)


def _recorder(path: Path):
    def record(row: dict[str, Any]) -> None:
        with open(path, "a") as f:
            f.write(json.dumps({k: _exact(v) for k, v in sorted(row.items())}) + "\n")
    return record


def run_one(name: str, fields: dict[str, Any], out: Path, cut_from: Path | None) -> float:
    t0 = time.perf_counter()
    cfg = Config(**fields, device="cpu", log_dir=str(out), run_name=name,
                 checkpoint_every=1 if name.startswith("resume_") else 5)
    run_dir = out / name
    rows_path = out / f"{name}.rows.jsonl"
    rows_path.unlink(missing_ok=True)
    if name.startswith("resume_"):
        cut = out / f"{name}_cut"
        if cut_from is not None:
            shutil.copytree(cut_from / f"{name}_cut", cut)
        else:
            def stop(row: dict[str, Any]) -> None:
                _recorder(rows_path)(row)
                if row["iteration"] + 1 == CUT_AFTER:
                    raise KeyboardInterrupt

            try:
                Trainer(cfg).run(callback=stop)
            except KeyboardInterrupt:
                pass
            shutil.copytree(run_dir, cut)
            shutil.copy(rows_path, out / f"{name}_cut.rows.jsonl")
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(cut, run_dir)
        shutil.copy(out / f"{name}_cut.rows.jsonl" if cut_from is None
                    else cut_from / f"{name}_cut.rows.jsonl", rows_path)
        train(resume=run_dir, callback=_recorder(rows_path))
    else:
        train(cfg, callback=_recorder(rows_path))
    return time.perf_counter() - t0


def _table(path: Path) -> list[dict[str, Any]]:
    """A progress.csv or rows.jsonl as a list of rows, old column names read as today's."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{RENAMED.get(k, k): v for k, v in row.items()} for row in rows]


def _timing(column: str) -> bool:
    return column in TIMING or column.startswith("t_")


def compare_tables(a: list[dict[str, Any]], b: list[dict[str, Any]],
                   redefined: set[str] | None = None) -> list[str]:
    """The columns (timing excepted) whose values differ anywhere, or why the tables differ.
    Columns of :data:`REDEFINED` that differ go to ``redefined`` instead."""
    if len(a) != len(b):
        return [f"<rows: {len(a)} against {len(b)}>"]
    differ: set[str] = set()
    for ra, rb in zip(a, b, strict=True):
        for key in set(ra) | set(rb):
            if _timing(key):
                continue
            if key in REDEFINED:
                if redefined is not None and ra.get(key) != rb.get(key):
                    redefined.add(key)
                continue
            if key not in ra or key not in rb:
                differ.add(f"{key} (only in {'A' if key in ra else 'B'})")
            elif ra[key] != rb[key]:
                differ.add(key)
    return sorted(differ)


def compare_policies(a: Path, b: Path) -> list[str]:
    if not a.is_file() or not b.is_file():
        return [f"<policy_final.pt missing in {'A' if not a.is_file() else 'B'}>"]
    pa = torch.load(a, weights_only=True)["policy"]
    pb = torch.load(b, weights_only=True)["policy"]
    return [f"policy.{k}" for k in sorted(set(pa) | set(pb))
            if k not in pa or k not in pb or not torch.equal(pa[k], pb[k])]


def compare(a: Path, b: Path) -> int:
    names = sorted(p.name for p in a.iterdir() if (p / "progress.csv").is_file()
                   and not p.name.endswith("_cut"))
    missing = sorted(p.name for p in b.iterdir() if (p / "progress.csv").is_file()
                     and not p.name.endswith("_cut") and p.name not in names)
    bad = 0
    for name in names + missing:
        if not (b / name / "progress.csv").is_file() or not (a / name / "progress.csv").is_file():
            print(f"{name:36s} MISSING in {'B' if (a / name).is_dir() else 'A'}")
            bad += 1
            continue
        redefined: set[str] = set()
        differ = compare_tables(_table(a / name / "progress.csv"), _table(b / name / "progress.csv"),
                                redefined)
        differ += [f"{c} (exact)" for c in compare_tables(_table(a / f"{name}.rows.jsonl"),
                                                          _table(b / f"{name}.rows.jsonl"), redefined)]
        differ += compare_policies(a / name / "policy_final.pt", b / name / "policy_final.pt")
        n_rows = len(_table(a / name / "progress.csv"))
        n_cols = len(_table(a / name / "progress.csv")[0]) if n_rows else 0
        if differ:
            bad += 1
            print(f"{name:36s} DIFFER  {', '.join(differ)}")
        else:
            note = f"; redefined, differs: {', '.join(sorted(redefined))}" if redefined else ""
            print(f"{name:36s} identical ({n_rows} rows x {n_cols} columns, exact rows, policy{note})")
    print(f"{len(names + missing) - bad} of {len(names + missing)} runs identical")
    for column, why in REDEFINED.items():
        print(f"redefined on purpose, not compared: {column}: {why}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dynacppo_lite bench same_numbers",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", help="directory to train the runs into")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two such directories")
    ap.add_argument("--only", default="", help="train only the runs whose name contains this")
    ap.add_argument("--cut-from", help="resume the resume_* runs from this directory's cut copies")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    if not args.out:
        ap.error("give OUT, or --compare A B")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, fields in RUNS.items():
        if args.only not in name:
            continue
        if (out / name).exists():
            shutil.rmtree(out / name)
        if (out / f"{name}_cut").exists():
            shutil.rmtree(out / f"{name}_cut")
        seconds = run_one(name, fields, out, Path(args.cut_from) if args.cut_from else None)
        print(f"{name:36s} {seconds:6.1f} s", flush=True)
    return 0
