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
  leaves the previous checkpoint intact);
* ``policy_final.pt``: the policy and observation normaliser at the end.

Checkpoints hold only tensors, numbers, strings and containers of them, so they load with
``torch.load(weights_only=True)``: no pickled code runs when a file is opened.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.config import Config
from dynacppo_lite.seeding import numeric_environment

CSV_COLUMNS = [
    "step", "iteration", "ep_return", "ep_cost", "ep_len", "episodes", "mode", "cost_est",
    "cost_est_se", "cost_est_n", "cost_margin", "margin_u", "estep_margin", "estep_cost_change",
    "mstep_cost_change", "mstep_reward_change", "kl",
    "reach", "reach_corr", "reach_est", "clip_frac", "ratio_mean", "estep_angle",
    "estep_feasible", "estep_at_bound", "target_used", "lagrange", "loss_pi",
    "loss_vr", "loss_vc", "pi_lr", "lower_clip", "epochs_run", "loss_dyn_train",
    "loss_dyn_holdout", "dyn_fit_epochs", "dyn_err_obs_1", "dyn_err_obs_k", "dyn_err_rew_1", "dyn_err_rew_k",
    "dyn_err_cost_1", "dyn_err_cost_k", "imagined_frac", "imagined_cost_rate", "real_cost_rate",
    "imag_adv_r_scale", "imag_adv_r_corr", "imag_adv_c_scale", "imag_adv_c_corr",
    "branch_len_mean", "rounds_kept", "rounds_kl", "sps",
    "time_s", "t_env", "t_infer", "t_collect", "t_model", "t_imagine", "t_estep", "t_mstep",
    "t_critics",
]


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
        """Drop rows newer than ``iteration`` (written after the last checkpoint of a killed run)."""
        with open(self.csv_path, newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        it = header.index("iteration")
        keep = [r for r in body if len(r) == len(header) and int(r[it]) <= iteration]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([header, *keep])
        os.replace(tmp, self.csv_path)

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
    """``progress.csv`` of a run as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(Path(run_dir) / "progress.csv")
