"""The trainer on the toy task: learning under the limit, determinism, resume, outputs, CLI."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynacppo_lite.cli import main as cli_main
from dynacppo_lite.config import TOY_CONTROL, Config
from dynacppo_lite.envs import TOY_COST_LIMIT, TOY_ENV_ID
from dynacppo_lite.runlog import CSV_COLUMNS, CheckpointError, RunDirError, load_checkpoint
from dynacppo_lite.schedules import ModeSwitch, linear
from dynacppo_lite.train import Trainer, train


def toy_config(tmp_path, **kw):
    base = dict(env_id=TOY_ENV_ID, total_steps=30_000, num_envs=1, steps_per_iter=1_000,
                log_dir=str(tmp_path), pi_lr=3e-3, checkpoint_every=2, **TOY_CONTROL)
    base.update(kw)
    return Config(**base)


def rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def tail_mean(table, key, frac=0.2):
    vals = [float(r[key]) for r in table]
    return float(np.mean(vals[-max(1, int(len(vals) * frac)):]))


@pytest.mark.parametrize("algo", ["cppo", "ppo-lag"])
def test_learns_toy_task_under_the_cost_limit(tmp_path, algo):
    run = train(toy_config(tmp_path, algo=algo, run_name=algo))
    table = rows(run)
    first_ret = float(table[0]["ep_return"])
    assert tail_mean(table, "ep_return") > first_ret + 5.0  # learned to drive
    assert tail_mean(table, "ep_cost") <= TOY_COST_LIMIT * 1.1  # and under the limit
    assert set(CSV_COLUMNS) == set(table[0])
    for name in ("log.txt", "config.json", "checkpoint.pt", "policy_final.pt"):
        assert (run / name).is_file()


def test_cppo_switches_to_recovery_when_over_the_limit(tmp_path):
    run = train(toy_config(tmp_path, total_steps=12_000, cost_limit=0.5, run_name="strict"))
    modes = [r["mode"] for r in rows(run)]
    assert "recovery" in modes


def test_ppo_lag_is_never_in_recovery_far_over_the_limit(tmp_path):
    """Regression: CPPO's saturated controller (u = -1 -> recovery) also ran for ppo-lag and
    logged its rows as "recovery" (its update was the Lagrangian one all along)."""
    run = train(toy_config(tmp_path, algo="ppo-lag", total_steps=12_000, cost_limit=0.5,
                           run_name="strict-lag"))
    table = rows(run)
    assert {r["mode"] for r in table} == {"lagrange"}
    assert float(table[-1]["lagrange"]) > 0.5  # the multiplier did the work


def test_same_seed_same_csv(tmp_path):
    cfg = dict(total_steps=4_000, seed=5)
    a = rows(train(toy_config(tmp_path, run_name="a", **cfg)))
    b = rows(train(toy_config(tmp_path, run_name="b", **cfg)))
    timing = {c for c in CSV_COLUMNS if c.startswith("t_") or c in ("time_s", "sps")}
    strip = [{k: v for k, v in r.items() if k not in timing} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in b]


def test_kill_and_resume_gives_no_lost_or_duplicate_rows(tmp_path):
    cfg = toy_config(tmp_path, total_steps=6_000, run_name="r", checkpoint_every=2)
    trainer = Trainer(cfg)
    calls = {"n": 0}

    def kill_after_three(row):
        calls["n"] += 1
        if calls["n"] == 3:  # after iteration 2's row, before its checkpoint (every 2 its)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(callback=kill_after_three)
    run = tmp_path / "r"
    assert len(rows(run)) == 3
    train(cfg, resume=run)
    its = [int(r["iteration"]) for r in rows(run)]
    assert its == list(range(6))


def test_corrupt_or_foreign_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value)
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not a dynacppo_lite checkpoint"):
        load_checkpoint(bad)


def test_config_rejects_bad_values():
    for kw, msg in [({"cost_limit": -1.0}, "cost_limit"), ({"algo": "trpo"}, "algo"),
                    ({"kl": 0.0}, "kl"), ({"v_lower_bound": 1.0}, "v_lower_bound"),
                    ({"lower_clip": 1.0}, "lower_clip")]:
        with pytest.raises(ValueError, match=msg):
            Config(**kw).validate()
    assert Config(kl=0.02).kl_budget == pytest.approx(0.02 / (2 * np.log(2) - 1))
    cfg = Config(hidden=(32, 16))
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_mode_switch_hysteresis_and_linear_schedule():
    sw = ModeSwitch(cost_limit=10.0, switch_ratio=0.8)
    assert [sw.update(c) for c in (5, 11, 9, 8.5, 7.9, 9.5, 10.5)] == [
        "normal", "recovery", "recovery", "recovery", "normal", "normal", "recovery"]
    assert linear(1.0, 0.0, 0.25) == 0.75 and linear(1.0, 0.0, 2.0) == 0.0


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["train", "--env", "SafetyPointGoal7-v0", "--log-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown env id") and "\n" not in err
    assert cli_main(["train", "--env", TOY_ENV_ID, "--cost-limit", "-3"]) == 2
    assert "cost_limit" in capsys.readouterr().err
    assert cli_main(["train", "--resume", str(tmp_path / "nowhere")]) == 2


TINY_RUN = ["--env", TOY_ENV_ID, "--total-steps", "1000", "--steps-per-iter", "1000", "--num-envs", "1",
            "--device", "cpu", "--no-progress"]


def test_cli_rejects_a_bad_log_dir_or_resume_dir_in_one_line(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a run")
    not_ours = tmp_path / "not_ours"
    not_ours.mkdir()
    torch.save({"weights": torch.zeros(2)}, not_ours / "checkpoint.pt")
    (not_ours / "progress.csv").write_text("step\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access  # root may write anywhere, so the unwritable folder is simulated
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and access(path, mode))
    for args, says in [
        (["--log-dir", str(a_file)], f"{a_file} is a file, not a directory (choose another --log-dir)"),
        (["--log-dir", str(a_file / "runs")], f"{a_file} is a file, not a directory"),
        (["--log-dir", str(locked / "runs")], f"{locked} is not writable for this user"),
        (["--resume", str(a_file)], "no such run directory"),
        (["--resume", str(foreign)], "not a run directory (no checkpoint.pt or progress.csv)"),
        (["--resume", str(not_ours)], "is not a dynacppo_lite checkpoint"),
    ]:
        assert cli_main(["train", *TINY_RUN, *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and says in err and "\n" not in err, err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # nothing written there


def test_log_dir_that_is_a_file_exits_2_without_traceback(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cmd = [sys.executable, "-m", "dynacppo_lite", "train", *TINY_RUN, "--log-dir", str(a_file)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: cannot create the directory")


def test_trainer_rejects_a_run_dir_it_cannot_create(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        Trainer(toy_config(a_file, total_steps=1_000))


def test_cli_trains_and_prints_run_dir(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dynacppo_lite", "train", "--algo", "cppo", "--env", TOY_ENV_ID,
         "--total-steps", "2000", "--steps-per-iter", "1000", "--num-envs", "1", "--seed", "1",
         "--device", "cpu", "--log-dir", str(tmp_path), "--no-progress",
         "--figure", str(tmp_path / "curve.png")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "run directory:" in out.stdout and (tmp_path / "curve.png").is_file()


def test_load_trained_restores_agent_and_normaliser(tmp_path):
    from dynacppo_lite.train import load_trained

    trainer = Trainer(toy_config(tmp_path, total_steps=2_000, run_name="lt"))
    run = trainer.run()
    cfg, envs, agent = load_trained(run, seed=3)
    assert cfg.env_id == TOY_ENV_ID
    for name, tensor in trainer.agent.state_dict().items():
        assert torch.equal(agent.state_dict()[name], tensor)
    np.testing.assert_array_equal(envs.obs_rms.mean, trainer.envs.obs_rms.mean)
    envs.close()
