"""Everything a run writes: ``progress.csv``, ``log.txt``, ``config.json``, checkpoints.

A run directory ``<log_dir>/<run_name>/`` holds

* ``config.json``: the :class:`~dynacppo_lite.config.Config` of the run;
* ``progress.csv``: one row per iteration (flushed as it is written). ``ep_*`` are means over
  the real episodes that ended in the iteration (the last value is carried when none ended);
  ``kl`` is the approximate KL of the updated policy on the batch; ``imagined_frac`` is imagined
  samples over all samples of the batch; ``t_*`` are seconds per phase. The dyna-cppo columns
  (empty for cppo and ppo-lag): ``loss_dyn_*`` the model fit's losses, ``dyn_fit_epochs`` its
  epochs; ``dyn_err_{obs,rew,cost}_{1,k}`` the model's one-step and ``model_horizon``-step
  open-loop errors on the iteration's real rollout before it is fitted on it (state in units of
  the typical one-step change, reward and cost RMSE of the summed h steps in env units:
  ``dynamics.OpenLoopErrors``);
  ``imagined_cost_rate`` (pessimistic) beside ``real_cost_rate``, mean cost per step;
  ``imag_adv_{r,c}_{scale,corr}`` imagined against real GAE advantages of the same (s, a)
  (``imagine.DynaModel.imagine``); ``rounds_kept`` how many of the
  ``model_rounds`` imagined-only updates the real batch accepted, ``rounds_kl`` their summed
  approximate KL;
* ``log.txt``: the same numbers as human-readable lines, after a line naming the numeric
  environment (versions, BLAS kernels) at the start and at each resume;
* ``checkpoint.pt``: everything needed to continue (written atomically: a kill mid-write
  leaves the previous checkpoint intact; :func:`trainer_state` says what it holds);
* ``policy_final.pt``: the policy and observation normaliser at the end.

Checkpoints hold only tensors, numbers, strings and containers of them, so they load with
``torch.load(weights_only=True)``: no pickled code runs when a file is opened.

The resume policy lives here too, one rule for every caller (the command line, ``train``, the
notebooks' ``TrainingMonitor``, ``make figures``, ``bench learning``): :func:`run_status` says
whether a run directory is ``finished``, to ``resume`` or to ``train``; a resumed run keeps its
saved settings except :data:`RESUME_CHANGES` (:func:`resume_config`).

Saved runs from before a rename load as they are: :data:`CSV_RENAMED` maps old
``progress.csv`` columns to their names today (``read_progress`` and a resume apply it), and
``Config.from_dict`` maps old ``config.json`` fields (``config.RENAMED_FIELDS``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.config import Config, renamed_fields
from dynacppo_lite.envs import default_cost_limit
from dynacppo_lite.seeding import numeric_environment

CSV_COLUMNS = [
    "step", "iteration", "ep_return", "ep_cost", "ep_len", "episodes", "mode", "cost_est",
    "cost_est_se", "cost_est_n", "cost_margin", "margin_u", "estep_margin", "estep_cost_change",
    "mstep_cost_change", "mstep_reward_change", "kl",
    "reach", "reach_corr", "rho", "clip_frac", "ratio_mean", "estep_angle",
    "estep_feasible", "estep_at_bound", "target_used", "lagrange", "loss_pi",
    "loss_vr", "loss_vc", "pi_lr", "lower_clip", "epochs_run", "loss_dyn_train",
    "loss_dyn_holdout", "dyn_fit_epochs", "dyn_err_obs_1", "dyn_err_obs_k", "dyn_err_rew_1", "dyn_err_rew_k",
    "dyn_err_cost_1", "dyn_err_cost_k", "dyn_err_sensors_1", "dyn_err_sensors_k", "dyn_err_pose_1",
    "dyn_err_pose_k", "dyn_err_objects_1", "dyn_err_objects_k", "imagined_frac",
    "imagined_cost_rate", "real_cost_rate",
    "imag_adv_r_scale", "imag_adv_r_corr", "imag_adv_c_scale", "imag_adv_c_corr",
    "branch_len_mean", "rounds_kept", "rounds_kl", "sps",
    "time_s", "t_env", "t_infer", "t_collect", "t_model", "t_imagine", "t_estep", "t_mstep",
    "t_critics",
]

#: ``progress.csv`` columns renamed since runs were first saved: old name -> name today.
#: ``reach_est`` was the realised share rho (``cost_control.RealisedShare``).
CSV_RENAMED = {"reach_est": "rho"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, missing keys, or for another setting)."""


class RunDirError(ValueError):
    """A run directory that cannot be written, or (to resume) is not a run."""


def check_writable_dir(path: str | Path) -> None:
    """Raise :class:`RunDirError` unless ``path`` is, or can be created as, a writable directory.

    Checks only, creates nothing: the nearest existing ancestor decides (a file there, or a
    folder this user may not write, would fail later with a traceback after the envs are built).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"cannot create the directory {path}: {existing} is a file, not a "
                          "directory (choose another --log-dir)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to {path}: {existing} is not writable for this user "
                          "(choose another --log-dir)")


def check_run_dir(run_dir: str | Path, resume: bool = False) -> None:
    """Raise a one-line error saying what to fix unless ``run_dir`` can take this run: a new run
    needs a writable place that does not already hold a run; a resumed one needs a run there
    (``checkpoint.pt`` and ``progress.csv``, as :class:`RunLog` writes them)."""
    run_dir = Path(run_dir)
    if resume:
        if not run_dir.is_dir():
            raise RunDirError(f"--resume {run_dir}: no such run directory")
        missing = [name for name in ("checkpoint.pt", "progress.csv") if not (run_dir / name).is_file()]
        if missing:
            raise RunDirError(f"--resume {run_dir}: not a run directory (no {' or '.join(missing)}); "
                              "pass the run directory that train printed")
    elif (run_dir / "progress.csv").exists() and (run_dir / "checkpoint.pt").exists():
        # Rows without a checkpoint cannot be continued: only then is a fresh start safe.
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, "
            "or choose another --run-name/--log-dir")
    check_writable_dir(run_dir)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights_only-loadable objects."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def saved_obs_norm(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """The observation normaliser's statistics from a checkpoint or final policy file, as the
    vector env's ``load_state_dict`` takes them (tensors saved, numpy arrays loaded)."""
    return {k: v.numpy() for k, v in state["obs_norm"].items()}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; any failure becomes a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({reason})") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt or ckpt.get("format") != 1:
        raise CheckpointError(f"{path} is not a dynacppo_lite checkpoint")
    return ckpt


class RunLog:
    """The run directory: CSV rows, text log, config and checkpoints."""

    def __init__(self, run_dir: str | Path, config: Config, resume: bool = False) -> None:
        self.dir = Path(run_dir)
        self.csv_path = self.dir / "progress.csv"
        self.txt_path = self.dir / "log.txt"
        self.ckpt_path = self.dir / "checkpoint.pt"
        check_run_dir(self.dir, resume)
        if not resume:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                (self.dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
                with open(self.csv_path, "w", newline="") as f:
                    csv.writer(f).writerow(CSV_COLUMNS)
            except OSError as exc:  # what the checks cannot foresee (a full or read-only disk)
                raise RunDirError(f"cannot write the run directory {self.dir} ({exc.strerror}): "
                                  "choose another --log-dir") from None
            self.note_environment()

    def note_environment(self) -> None:
        """Record in ``log.txt`` what the run's last bits depend on besides its seed (versions
        and BLAS kernels, ``seeding.numeric_environment``); at the start and at each resume."""
        env = numeric_environment()
        self.note("numeric environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))

    def truncate_after(self, iteration: int) -> None:
        """Drop rows newer than ``iteration`` (written after the last checkpoint of a killed run).

        A file written under older column names or another column order is rewritten in
        today's :data:`CSV_COLUMNS` (old names by :data:`CSV_RENAMED`; a column it lacks stays
        empty), so the rows a resume appends line up with it."""
        with open(self.csv_path, newline="") as f:
            rows = list(csv.reader(f))
        header, body = [CSV_RENAMED.get(c, c) for c in rows[0]], rows[1:]
        it = header.index("iteration")
        keep = [dict(zip(header, r, strict=True)) for r in body
                if len(r) == len(header) and int(r[it]) <= iteration]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([CSV_COLUMNS, *([r.get(c, "") for c in CSV_COLUMNS] for r in keep)])
        os.replace(tmp, self.csv_path)

    def resume(self, cfg: Config, ckpt: Mapping[str, Any], done: int, notes: list[str],
               finished: bool) -> None:
        """Take over a run that stopped after ``done`` iterations: drop the rows written after
        its checkpoint and, unless it stays finished, note the numeric environment and each
        setting ``notes`` says was changed (printed, in ``log.txt`` and ``config.json``, and in
        the checkpoint at once: a kill before the next one must not undo the change)."""
        self.truncate_after(done - 1)
        if finished:
            return
        self.note_environment()
        for note in notes:
            print(f"resume {self.dir}: {note}")
            self.note(f"resume: {note}")
        if notes:
            self.write_config(cfg)
            self.save_checkpoint({**{k: v for k, v in ckpt.items() if k != "format"},
                                  "config": cfg.to_dict()})

    def note(self, line: str) -> None:
        """Append ``line`` to ``log.txt``: an event between iterations (a setting changed on
        resume), kept beside the iterations it explains."""
        with open(self.txt_path, "a") as f:
            f.write(line + "\n")

    def write_config(self, config: Config) -> None:
        """Rewrite ``config.json`` (atomically) after a resume changed a setting."""
        path = self.dir / "config.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config.to_dict(), indent=2))
        os.replace(tmp, path)

    def write_row(self, row: dict[str, Any]) -> None:
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in CSV_COLUMNS])
        line = (f"iter {row['iteration']:5d} | step {row['step']:9d} | return {row['ep_return']:9.3f}"
                f" | cost {row['ep_cost']:8.3f} | est {row['cost_est']:6.1f} +- {row['cost_est_se']:5.1f}"
                f" | mode {row['mode']:8s} | kl {row['kl']:.4f}"
                f" | loss_pi {row['loss_pi']:.4f} | loss_vr {row['loss_vr']:.4f}"
                f" | loss_vc {row['loss_vc']:.4f} | {row['sps']:.0f} steps/s")
        if "reach" in row:
            line += f" | reach {row['reach']:.2f}"
        if row.get("loss_dyn_holdout", "") != "":
            line += (f" | dyn {row['loss_dyn_train']:.4f}/{row['loss_dyn_holdout']:.4f}"
                     f" | imagined {row.get('imagined_frac', 0.0):.2f}")
        with open(self.txt_path, "a") as f:
            f.write(line + "\n")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save({"format": 1, **state}, self.ckpt_path)

    def save_final_policy(self, state: dict[str, Any]) -> None:
        atomic_torch_save({"format": 1, **state}, self.dir / "policy_final.pt")


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


#: The final-score convention, used by the benchmarks, plots, evaluation tables, exercises and
#: notebooks: the mean over the last ``FINAL_FRACTION`` of the run's environment steps.
FINAL_FRACTION = 0.1


def final_score(step: Any, values: Any, until: float | None = None) -> float:
    """The package's final-score convention: the mean of ``values`` over the last 10% of steps
    (of the run, or of the steps up to ``until``): the rows with ``0.9 end < step <= end``.

    ``step`` and ``values`` are equal-length sequences (numpy arrays or pandas columns, e.g.
    ``progress.csv``'s ``step`` and ``ep_cost``); NaN values are skipped; NaN if no row is kept.

    >>> final_score([1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000], range(10))
    9.0
    """
    step = np.asarray(step, dtype=np.float64)
    vals = np.asarray(values, dtype=np.float64)
    if step.shape != vals.shape:
        raise ValueError(f"step and values must have the same length, got {step.shape} and {vals.shape}")
    if step.size == 0:
        return float("nan")
    end = float(step.max()) if until is None else float(until)
    keep = (step > (1.0 - FINAL_FRACTION) * end) & (step <= end) & ~np.isnan(vals)
    return float(vals[keep].mean()) if keep.any() else float("nan")


def read_progress(run_dir: str | Path):
    """``progress.csv`` of a run as a pandas DataFrame, columns under today's names
    (:data:`CSV_RENAMED`), so runs saved before a rename read as new ones do."""
    import pandas as pd

    return pd.read_csv(Path(run_dir) / "progress.csv").rename(columns=CSV_RENAMED)


# --- checkpoints of a trainer ------------------------------------------------------------------
def trainer_state(trainer: Any, iteration: int) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds after ``iteration`` of a ``train.Trainer``: its config, the
    networks and optimisers, the cost control and cost window, the last episode means, every
    random generator, the observation normaliser, (dyna-cppo) the model and replay buffer and
    (``cost_pool`` > 1) the pooled batches."""
    t = trainer
    state = {
        "config": t.cfg.to_dict(), "iteration": iteration, "elapsed": t.elapsed,
        "agent": t.agent.state_dict(), "pi_opt": t.pi_opt.state_dict(),
        "vf_opt": t.vf_opt.state_dict(), "cost_control": t.cost_control.state_dict(),
        "last_ep": list(t.last_ep), "rng": rng_state(),
        "cost_estimate": t.cost.state_dict(), "gen": t.gen.get_state(),
        "obs_norm": {k: torch.as_tensor(v) for k, v in t.envs.state_dict().items()},
    }
    if t.dyna is not None:
        state["dyna"] = t.dyna.state_dict()
    if t.cfg.cost_pool > 1:
        state["cost_pool"] = t.cost_pool.state_dict()
    return state


def restore_trainer(trainer: Any, ckpt: Mapping[str, Any]) -> int:
    """Load :func:`trainer_state`'s ``ckpt`` into a freshly built trainer of the same setting;
    returns the iterations done. A mismatch is a one-line :class:`CheckpointError`."""
    t = trainer
    try:
        t.agent.load_state_dict(ckpt["agent"])
        t.pi_opt.load_state_dict(ckpt["pi_opt"])
        t.vf_opt.load_state_dict(ckpt["vf_opt"])
        # Checkpoints written before the cost controls had a state_dict keep theirs in
        # top-level keys (lagrange, mode, reach, controller): legacy_state reads those.
        t.cost_control.load_state_dict(ckpt["cost_control"] if "cost_control" in ckpt
                                       else t.cost_control.legacy_state(ckpt))
        t.envs.load_state_dict(saved_obs_norm(ckpt))
        t.last_ep = tuple(ckpt["last_ep"])
        t.cost.load_state_dict(ckpt["cost_estimate"])
        set_rng_state(ckpt["rng"])
        t.gen.set_state(ckpt["gen"])
        if t.dyna is not None:
            t.dyna.load_state_dict(ckpt["dyna"])
        if t.cfg.cost_pool > 1:
            t.cost_pool.load_state_dict(ckpt["cost_pool"])
        t.elapsed = float(ckpt["elapsed"])
        return int(ckpt["iteration"]) + 1
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0][:120]
        raise CheckpointError(f"checkpoint does not match this run's setting ({reason})") from None


# --- the resume policy -------------------------------------------------------------------------
#: What a resume may change: where the run computes and how long it goes. Every other field
#: shapes the results, so it stays as the run was started (see ``train.train``).
RESUME_CHANGES = ("total_steps", "device", "checkpoint_every", "torch_threads")


def iterations(cfg: Config) -> tuple[int, int]:
    """``(batch_size, num_iters)``: real steps per iteration (``steps_per_iter`` rounded down to
    a multiple of ``num_envs``) and the iterations that make up ``total_steps``."""
    batch_size = cfg.steps_per_iter // cfg.num_envs * cfg.num_envs
    return batch_size, max(1, cfg.total_steps // batch_size)


def _same(key: str, given: Any, cfg: Config) -> bool:
    """Whether ``given`` for field ``key`` is what ``cfg`` (a run's config) already holds."""
    saved = getattr(cfg, key)
    if key == "cost_limit" and given is None:  # None: the task's limit, which the run recorded
        return saved == default_cost_limit(cfg.env_id)
    if key == "log_dir":
        return os.path.normpath(str(given)) == os.path.normpath(str(saved))
    if key == "run_name":  # None names the directory <algo>_<env_id>_s<seed>
        return given == (saved or f"{cfg.algo}_{cfg.env_id}_s{cfg.seed}") or given == saved
    if isinstance(given, list):
        given = tuple(given)
    return given == saved


def resume_config(saved: Config, changes: Mapping[str, Any] | None = None,
                  config: Config | None = None) -> tuple[Config, list[str]]:
    """The config a resumed run continues with, and one line per setting that changes.

    ``saved`` is the run's own config; ``changes`` asks for new values (old field names are
    read as today's, ``config.RENAMED_FIELDS``). A field of :data:`RESUME_CHANGES` takes the
    value given; any other field may be given only with its saved value (so a command line
    that repeats the run's settings is accepted), else a one-line ValueError names it.
    ``config``, when given, is checked against the result and never read for values, since a
    Config's defaults cannot be told from values its caller chose.

    >>> cfg, notes = resume_config(Config(total_steps=8_000, device="cpu"), {"total_steps": 16_000})
    >>> (cfg.total_steps, cfg.device, notes)
    (16000, 'cpu', ['total_steps 8000 -> 16000'])
    """
    names = [f.name for f in dataclasses.fields(Config)]
    changes = renamed_fields(changes or {})
    unknown = [key for key in changes if key not in names]
    if unknown:
        raise ValueError(f"resume: {unknown[0]!r} is not a Config field")
    fixed = [key for key, value in changes.items()
             if key not in RESUME_CHANGES and not _same(key, value, saved)]
    if fixed:
        what = ", ".join(f"{key} (saved {getattr(saved, key)!r}, given {changes[key]!r})" for key in fixed)
        raise ValueError(f"resume cannot change {what}: a resumed run keeps its saved settings; "
                         f"only {', '.join(RESUME_CHANGES)} may change (start a new run for others)")
    moved = {key: value for key, value in changes.items()
             if key in RESUME_CHANGES and not _same(key, value, saved)}
    cfg = dataclasses.replace(saved, **moved).validate()
    if config is not None:
        differ = [key for key in names if key not in ("log_dir", "run_name")
                  and not _same(key, getattr(config, key), cfg)]
        if differ:
            what = ", ".join(f"{key} (saved {getattr(cfg, key)!r}, given {getattr(config, key)!r})"
                             for key in differ)
            raise ValueError(f"resume: the config given differs from the run's own in {what}; "
                             "pass config=None (the run's settings) and changes={...} for "
                             f"{', '.join(RESUME_CHANGES)}")
    return cfg, [f"{key} {getattr(saved, key)} -> {value}" for key, value in moved.items()]


def resume_point(run_dir: str | Path, config: Config | None = None,
                 changes: Mapping[str, Any] | None = None
                 ) -> tuple[Config, dict[str, Any], list[str], int]:
    """``(config, checkpoint, notes, iterations done)`` of the run in ``run_dir`` resumed with
    ``changes`` (:func:`resume_config`); a budget below the steps already done is an error."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    try:
        saved = Config.from_dict(ckpt["config"])
        done = int(ckpt["iteration"]) + 1
    except (KeyError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {run_dir / 'checkpoint.pt'} has no usable config "
                              f"or iteration ({reason})") from None
    cfg, notes = resume_config(saved, changes, config)
    batch_size, num_iters = iterations(cfg)
    if done > num_iters:
        raise ValueError(f"total_steps {cfg.total_steps} is below the {done * batch_size} steps "
                         f"{run_dir} has already done")
    return cfg, ckpt, notes, done


def is_finished(run_dir: str | Path, done: int, cfg: Config) -> bool:
    """A run that has done ``done`` iterations is finished for ``cfg`` when that is all of
    ``cfg.total_steps`` and its final policy is written (a run resumed for more steps keeps
    the earlier ``policy_final.pt`` until it ends again: the count decides)."""
    return done >= iterations(cfg)[1] and (Path(run_dir) / "policy_final.pt").is_file()


def run_status(run_dir: str | Path, changes: Mapping[str, Any] | None = None) -> str:
    """What to do with ``run_dir`` for a run of its own settings with ``changes`` (e.g.
    ``{"total_steps": ...}``): ``"finished"`` (:func:`is_finished`: nothing to train),
    ``"resume"`` (a checkpoint to continue) or ``"train"`` (no checkpoint: start afresh).

    The one rule the command line (``train``), ``widgets.TrainingMonitor.train_all``, ``make
    figures`` and ``bench learning`` follow. Errors as :func:`resume_point` (a budget below the
    steps done, a setting a resume may not change)."""
    if not (Path(run_dir) / "checkpoint.pt").is_file():
        return "train"
    cfg, _, _, done = resume_point(run_dir, None, changes)
    return "finished" if is_finished(run_dir, done, cfg) else "resume"


def say_finished(run_dir: str | Path, cfg: Config) -> None:
    """The one line a resume of a finished run prints."""
    batch_size, num_iters = iterations(cfg)
    print(f"{run_dir} is already finished ({num_iters * batch_size} steps, its total_steps "
          f"{cfg.total_steps}); give a larger total_steps (--total-steps) to train it on")
