"""``python -m dynacppo_lite {train,evaluate,check,assignments,grade,bench,sweep,figures} ...``:
the command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

from dynacppo_lite.config import ALGOS, DEVICES, RENAMED_FIELDS, TRAIN_PRESETS, Config

BENCH_SUITES = ("env", "throughput", "estep", "mstep", "learning", "model", "recovery", "app",
                "same_numbers")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train cppo, ppo-lag or dyna-cppo")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), help="a named set-up (flags override it)")
    p.add_argument("--algo", choices=ALGOS)
    p.add_argument("--env", dest="env_id", help="task id, e.g. SafetyPointGoal1-v0")
    p.add_argument("--total-steps", type=int)
    p.add_argument("--steps-per-iter", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-envs", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--log-dir")
    p.add_argument("--run-name")
    p.add_argument("--cost-limit", type=float)
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with its saved settings; only --total-steps, "
                   "--device and --set checkpoint_every/torch_threads given here change them")
    p.add_argument("--figure", metavar="PNG", help="write the learning curve to this file at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="any Config field, e.g. --set pi_lr=3e-4 --set cost_control=bang-bang")


def _given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields the command line gives: the preset's, then the flags, then ``--set``."""
    values = dict(TRAIN_PRESETS[args.preset]) if args.preset else {}
    for key in ("algo", "env_id", "total_steps", "steps_per_iter", "seed", "num_envs", "device",
                "log_dir", "run_name", "cost_limit"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values.update(parse_overrides(args.overrides))
    return values


def _config_from_args(args: argparse.Namespace) -> Config:
    return Config(**_given_values(args)).validate()


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["pi_lr=3e-4", "hidden=64,64"]`` -> typed Config values (one-line errors on bad input)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = RENAMED_FIELDS.get(key, key)  # a field's old name still works (saved commands)
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD a Config field "
                             f"(e.g. pi_lr=3e-4)")
        kind = str(fields[key].type)  # the annotation, e.g. "float | None"
        try:
            if text.lower() == "none" and "None" in kind:
                out[key] = None
            elif kind.startswith("bool"):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                out[key] = text.lower() in ("true", "1")
            elif kind.startswith("tuple"):
                out[key] = tuple(int(x) for x in text.split(","))
            elif kind.startswith("float"):
                out[key] = float(text)
            elif kind.startswith("int"):
                out[key] = int(text)
            else:
                out[key] = text
        except ValueError:
            raise ValueError(f"--set {item!r}: {text!r} is not a valid value for {key} "
                             f"({kind})") from None
    return out


def _run_train(args: argparse.Namespace) -> int:
    from dynacppo_lite.runlog import check_run_dir, check_writable_dir
    from dynacppo_lite.train import train

    try:
        if args.resume is not None:
            # The run's saved settings, changed only where this command line says so: a fresh
            # Config here would carry its defaults (1,000,000 steps, device auto) into the run.
            check_run_dir(args.resume, resume=True)  # before the envs: a one-line error
            run_dir = train(resume=args.resume, changes=_given_values(args),
                            progress=not args.no_progress)
        else:
            config = _config_from_args(args)
            check_writable_dir(config.log_dir)
            run_dir = train(config, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("\ninterrupted: the last finished iteration is checkpointed; continue with "
              "--resume <run dir>", file=sys.stderr)
        return 130
    print(f"run directory: {run_dir}")
    if args.figure:
        from dynacppo_lite.plots import save_learning_curves

        print(f"figure: {save_learning_curves([run_dir], args.figure)}")
    return 0


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="episodes of a trained run's policy: return, cost, length",
                       description="Run episodes of a run's policy with the observation normaliser "
                       "frozen and print one row per episode and the means.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: the mean)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--out", metavar="FILE", help="also write the table (.md) or the results (.json)")


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dynacppo_lite.evaluation import evaluate
    from dynacppo_lite.runlog import check_run_dir

    check_run_dir(args.run_dir, resume=True)
    ev = evaluate(args.run_dir, episodes=args.episodes, deterministic=not args.stochastic,
                  seed=args.seed)
    policy = "stochastic" if args.stochastic else "deterministic"
    text = (f"{ev.env_id}, {len(ev.returns)} episodes, {policy} policy, seed {ev.seed}\n\n{ev.table()}\n\n"
            f"mean cost {ev.mean_cost:.3f} {'<=' if ev.satisfied else '>'} cost limit {ev.cost_limit:g}: "
            f"{'meets' if ev.satisfied else 'violates'} the limit")
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            import json

            out.write_text(json.dumps(ev.to_dict(), indent=2))
        else:
            out.write_text(text + "\n")
        print(f"written: {out}")
    return 0


def _check_parser(sub: argparse._SubParsersAction) -> None:
    from dynacppo_lite.exercises import EXERCISES

    p = sub.add_parser("check", help="grade one exercise from a .py file (exit 0 pass, 1 fail)",
                       description="Import the learner's function from FILE.py, run the "
                       "exercise's checker, print the verdict and the hint; exit 0 if every "
                       "case passed, 1 otherwise.")
    p.add_argument("exercise", choices=sorted(EXERCISES), metavar="EXERCISE",
                   help=f"one of {', '.join(sorted(EXERCISES))}")
    p.add_argument("file", metavar="FILE.py", help="a Python file that defines the function")
    p.add_argument("--function", help="the function's name (default: the notebook's, e.g. my_gae "
                   "for gae; or the file's only function)")


def run_check(exercise: str, file: str, function: str | None = None) -> int:
    """``python -m dynacppo_lite check``: 0 when the function in ``file`` passes, else 1."""
    import importlib.util
    import inspect
    from pathlib import Path

    from dynacppo_lite.exercises import EXERCISES

    check, default_name, notebook = EXERCISES[exercise]
    path = Path(file)
    if not path.is_file():
        print(f"{exercise}: FAIL: no such file {file}")
        return 1
    spec = importlib.util.spec_from_file_location(f"_submission_{exercise}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the learner's file: anything can happen
        print(f"{exercise}: FAIL: importing {file} raised {type(exc).__name__}: {exc}")
        return 1
    own = {n: f for n, f in vars(module).items()
           if inspect.isfunction(f) and f.__module__ == module.__name__ and not n.startswith("_")}
    name = function or (default_name if default_name in own or len(own) != 1 else next(iter(own)))
    fn = getattr(module, name, None)
    if not callable(fn):
        print(f"{exercise}: FAIL: {file} defines no function {name!r} (notebook {notebook} asks "
              f"for {default_name}; choose another with --function)")
        return 1
    result = check(fn, quiet=True, strict=False)
    print(("PASS: " if result.passed else "FAIL: ") + result.message)
    return 0 if result.passed else 1


def _course_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assignments", help="nbgrader: the students' release of the notebooks",
                       description="Copy the notebooks into an nbgrader course (source/) and run "
                       "nbgrader generate_assignment: release/ holds the students' copies.")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="e.g. 02 or 02_dual_advantages "
                   "(default: all six)")
    p.add_argument("--course", default="course", help="the course directory (default: course)")
    g = sub.add_parser("grade", help="nbgrader: autograde the submissions of one assignment",
                       description="nbgrader autograde + generate_feedback for every submission in "
                       "COURSE/submitted/<student>/ASSIGNMENT/, then print the grade table.")
    g.add_argument("assignment", metavar="ASSIGNMENT")
    g.add_argument("--course", default="course")
    g.add_argument("--full", action="store_true", help="execute in full mode (default: smoke)")


def _run_course(args: argparse.Namespace) -> int:
    from dynacppo_lite import course

    if args.command == "assignments":
        root = course.build_course(args.course, args.notebooks or None)
        for path in course.release(root, args.notebooks or None):
            print(f"released: {path}")
        print(f"withhold {root / 'source'} and {root / 'gradebook.db'} (solutions, hidden tests)")
        return 0
    name = course.resolve_assignments([args.assignment])[0]
    rows = course.grade(args.course, name, smoke=not args.full)
    print(course.format_table(rows))
    print(f"feedback: {Path(args.course) / 'feedback'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m dynacppo_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _check_parser(sub)
    _course_parsers(sub)
    bench = sub.add_parser("bench", help=f"benchmarks: {', '.join(BENCH_SUITES)}", add_help=False)
    bench.add_argument("suite", choices=BENCH_SUITES)
    sub.add_parser("sweep", help="a grid of algorithms x tasks x seeds as Ray tasks (see sweep --help)",
                   add_help=False)
    sub.add_parser("figures", help="regenerate the figures in figures/ from the library")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "bench":
            return importlib.import_module(f"dynacppo_lite.bench.{args.suite}").main(rest)
        if args.command == "sweep":
            from dynacppo_lite.bench.sweep import main as sweep_main

            return sweep_main(rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "evaluate":
            return _run_evaluate(args)
        if args.command in ("assignments", "grade"):
            return _run_course(args)
        if args.command == "check":
            return run_check(args.exercise, args.file, args.function)
        if args.command == "figures":
            from dynacppo_lite.figures import regenerate

            regenerate()
            return 0
        return _run_train(args)
    except (ValueError, FileExistsError, RuntimeError) as exc:  # CheckpointError, RunDirError, CourseError
        print(f"error: {exc}", file=sys.stderr)
        return 2
