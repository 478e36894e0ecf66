"""Runs saved before a rename still load, and one rule says whether a run directory is finished,
to resume or to train (``runlog.run_status``), for every caller."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from dynacppo_lite.cli import parse_overrides
from dynacppo_lite.config import RENAMED_FIELDS, TOY_CONTROL, Config
from dynacppo_lite.envs import TOY_ENV_ID
from dynacppo_lite.figures import _finished, train_or_reuse
from dynacppo_lite.plots import plot_diagnostics
from dynacppo_lite.runlog import CSV_COLUMNS, CSV_RENAMED, read_progress, run_status
from dynacppo_lite.train import Trainer, train


def toy(tmp_path, **kw) -> Config:
    base = dict(env_id=TOY_ENV_ID, total_steps=2_000, num_envs=1, steps_per_iter=1_000,
                log_dir=str(tmp_path), checkpoint_every=1, pi_lr=3e-3, device="cpu", **TOY_CONTROL)
    return Config(**(base | kw))


def make_old(run) -> None:
    """Rewrite a run directory as the code before the renames wrote it: old field names in
    ``config.json`` and the checkpoint, old column names in ``progress.csv``."""
    old_field = {new: old for old, new in RENAMED_FIELDS.items()}
    old_column = {new: old for old, new in CSV_RENAMED.items()}
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({old_field.get(k, k): v for k, v in cfg.items()}))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["config"] = {old_field.get(k, k): v for k, v in ckpt["config"].items()}
    torch.save(ckpt, run / "checkpoint.pt")
    with open(run / "progress.csv", newline="") as f:
        table = list(csv.reader(f))
    table[0] = [old_column.get(c, c) for c in table[0]]
    with open(run / "progress.csv", "w", newline="") as f:
        csv.writer(f).writerows(table)


def test_old_field_names_load_everywhere() -> None:
    old = {"kl": 0.02, "reach_init": 0.3, "reach_smoothing": 0.5, "reach_min": 0.1}
    saved = {k: v for k, v in Config().to_dict().items() if k not in RENAMED_FIELDS.values()}
    cfg = Config.from_dict(saved | old)
    assert (cfg.estep_kl, cfg.rho_init, cfg.rho_smoothing, cfg.rho_min) == (0.02, 0.3, 0.5, 0.1)
    assert parse_overrides(["kl=0.01", "reach_min=0.2"]) == {"estep_kl": 0.01, "rho_min": 0.2}


def test_an_old_run_resumes_reads_and_plots_under_todays_names(tmp_path) -> None:
    run = train(toy(tmp_path, run_name="old"))
    make_old(run)
    assert "reach_est" in (run / "progress.csv").read_text().splitlines()[0].split(",")
    df = read_progress(run)
    assert "rho" in df.columns and "reach_est" not in df.columns and df["rho"].notna().all()
    plot_diagnostics({"old": [run]})  # the plots read old runs through read_progress
    assert run_status(run) == "finished"
    assert run_status(run, {"total_steps": 3_000}) == "resume"
    train(resume=run, changes={"total_steps": 3_000})
    with open(run / "progress.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == CSV_COLUMNS and len(table) == 3  # the header rewritten once
    assert all(r["rho"] != "" for r in table)
    assert json.loads((run / "config.json").read_text())["estep_kl"] == Config().estep_kl


def test_run_status_is_one_rule_for_every_caller(tmp_path) -> None:
    run = tmp_path / "a"
    assert run_status(run) == "train" and not _finished(run, 2_000)
    cut = Trainer(toy(tmp_path, run_name="a"))

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cut.run(callback=stop)
    assert run_status(run) == "resume" and not _finished(run, 2_000)
    assert train_or_reuse([toy(tmp_path, run_name="a")]) == [run]  # resumed to the end
    assert run_status(run) == "finished" and _finished(run, 2_000)
    # Resumed for more steps and stopped again: the earlier final policy is stale, the count decides.
    more = Trainer(resume=run, changes={"total_steps": 4_000})
    with pytest.raises(KeyboardInterrupt):
        more.run(callback=stop)
    assert (run / "policy_final.pt").is_file()
    assert run_status(run) == "resume" and not _finished(run, 4_000)
    with pytest.raises(ValueError, match="below the 3000 steps"):
        run_status(run, {"total_steps": 2_000})
