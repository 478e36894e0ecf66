"""The trainer on the toy task: learning under the limit, determinism, resume, outputs, CLI."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TOY_SEEDS, toy_outcome

from dynacppo_lite.cli import main as cli_main
from dynacppo_lite.config import TOY_CONTROL, TRAIN_PRESETS, Config
from dynacppo_lite.envs import TOY_COST_LIMIT, TOY_ENV_ID
from dynacppo_lite.runlog import (
    CSV_COLUMNS,
    CheckpointError,
    RunDirError,
    RunLog,
    load_checkpoint,
    resume_config,
)
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


def test_cppo_learns_the_toy_task_and_ends_near_its_limit(tmp_path):
    """Learns to drive (measured late gain per seed 8.6-14.9) and its late cost, averaged over
    TOY_SEEDS, ends within 10% of the limit (measured 1.04-1.06x; conftest.TOY_SEEDS)."""
    runs = [train(toy_config(tmp_path, run_name=f"cppo{s}", seed=s)) for s in TOY_SEEDS]
    gain, cost = toy_outcome([rows(run) for run in runs])
    assert gain > 5.0
    assert cost <= TOY_COST_LIMIT * 1.1
    assert set(CSV_COLUMNS) == set(rows(runs[0])[0])
    for name in ("log.txt", "config.json", "checkpoint.pt", "policy_final.pt"):
        assert (runs[0] / name).is_file()


def test_ppo_lag_learns_the_toy_task_and_its_multiplier_holds_the_cost_down(tmp_path):
    """PPO-Lag's plain multiplier oscillates on the toy task: its late cost per seed spans
    0.8-3.1x the limit (mean over TOY_SEEDS 2.0-2.3x under the four BLAS kernels), against 5x
    without a working multiplier (lagrangian_lr 0.05). What it must show: it learns to drive
    (late gain per seed 6.8-30) and the multiplier keeps the cost well under that 5x."""
    runs = [rows(train(toy_config(tmp_path, algo="ppo-lag", run_name=f"lag{s}", seed=s)))
            for s in TOY_SEEDS]
    gain, cost = toy_outcome(runs)
    assert gain > 5.0
    assert cost <= TOY_COST_LIMIT * 3.0
    assert all(float(t[-1]["lagrange"]) > 0 for t in runs)


def test_a_run_names_its_numeric_environment_at_the_start_and_at_each_resume(tmp_path):
    from threadpoolctl import threadpool_info

    run = train(toy_config(tmp_path, total_steps=2_000, run_name="env"))
    kernels = [i["architecture"] for i in threadpool_info() if i["user_api"] == "blas"]
    lines = [x for x in (run / "log.txt").read_text().splitlines() if x.startswith("numeric environment")]
    assert len(lines) == 1 and f"numpy {np.__version__}" in lines[0]
    assert kernels and all(f"({k})" in lines[0] for k in kernels) and "torch_cpu" in lines[0]
    Trainer(resume=run, changes={"total_steps": 3_000}).run()
    assert (run / "log.txt").read_text().count("numeric environment") == 2
    Trainer(resume=run).run()  # finished: nothing is written
    assert (run / "log.txt").read_text().count("numeric environment") == 2


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


# --- resume keeps the run's own settings (issue 21) ------------------------------------------
def no_row_past(monkeypatch, budget):
    """Fail at the first CSV row past ``budget``: a resume that took a default Config's
    1,000,000 steps would otherwise train on for minutes before any assertion ran."""
    write_row = RunLog.write_row

    def guarded(self, row):
        assert row["step"] <= budget, f"a row at step {row['step']}, past the budget {budget}"
        write_row(self, row)

    monkeypatch.setattr(RunLog, "write_row", guarded)


def cut_run(tmp_path, name, total_steps, after, **kw):
    """A run of ``total_steps`` stopped by Ctrl-C after ``after`` iterations (all checkpointed)."""
    cfg = toy_config(tmp_path, total_steps=total_steps, run_name=name, checkpoint_every=1, **kw)

    def stop(row):
        if row["iteration"] + 1 == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg).run(callback=stop)
    return tmp_path / name


def steps(run):
    return [int(r["step"]) for r in rows(run)]


def saved_config(run):
    return load_checkpoint(run / "checkpoint.pt")["config"], json.loads((run / "config.json").read_text())


def test_cli_resume_without_total_steps_ends_at_the_runs_budget_on_its_device(tmp_path, monkeypatch,
                                                                                capsys):
    run = cut_run(tmp_path, "cut", 4_000, after=2, device="cpu")
    no_row_past(monkeypatch, 4_000)
    assert cli_main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert steps(run) == [1_000, 2_000, 3_000, 4_000]
    assert "->" not in capsys.readouterr().out  # nothing was asked to change
    for cfg in saved_config(run):
        assert (cfg["total_steps"], cfg["device"]) == (4_000, "cpu")


def test_cli_resume_with_total_steps_and_device_changes_them_and_says_so(tmp_path, monkeypatch, capsys):
    run = train(toy_config(tmp_path, total_steps=2_000, device="cpu", run_name="ext"))
    no_row_past(monkeypatch, 4_000)
    assert cli_main(["train", "--resume", str(run), "--total-steps", "4000", "--device", "auto",
                     "--no-progress"]) == 0
    assert steps(run) == [1_000, 2_000, 3_000, 4_000]
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "->" in line] == [f"resume {run}: total_steps 2000 -> 4000",
                                                      f"resume {run}: device cpu -> auto"]
    log = (run / "log.txt").read_text()
    assert "resume: total_steps 2000 -> 4000\n" in log and "resume: device cpu -> auto\n" in log
    for cfg in saved_config(run):
        assert (cfg["total_steps"], cfg["device"]) == (4_000, "auto")
    # The new budget is the run's own now: a plain resume finds it finished.
    assert cli_main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "already finished (4000 steps" in capsys.readouterr().out


def test_cli_resume_of_a_finished_run_says_so_exits_0_and_draws_the_figure(tmp_path, monkeypatch, capsys):
    run = train(toy_config(tmp_path, total_steps=2_000, run_name="done"))
    before = {name: (run / name).read_bytes() for name in ("progress.csv", "checkpoint.pt",
                                                           "policy_final.pt", "config.json")}
    no_row_past(monkeypatch, 2_000)
    # Bare, and as `make train` and `bench learning` do it: every flag repeating the run's value.
    same = ["--env", TOY_ENV_ID, "--total-steps", "2000", "--steps-per-iter", "1000", "--num-envs", "1",
            "--device", "auto", "--log-dir", str(tmp_path), "--run-name", "done",
            "--set", f"pi_lr={3e-3}", "--set", "checkpoint_every=2"]
    for flags in ([], same):
        png = tmp_path / f"curve{len(flags)}.png"
        assert cli_main(["train", "--resume", str(run), "--no-progress", "--figure", str(png),
                         *flags]) == 0
        out = capsys.readouterr().out
        assert f"{run} is already finished (2000 steps, its total_steps 2000)" in out
        assert png.is_file()
        assert {name: (run / name).read_bytes() for name in before} == before  # nothing rewritten


def test_make_train_command_resumes_its_run_without_a_change():
    """`make train` resumes with `--preset readme --log-dir runs`: the run's own values."""
    saved = Config(**TRAIN_PRESETS["readme"], log_dir="runs", cost_limit=25.0)
    cfg, notes = resume_config(saved, {**TRAIN_PRESETS["readme"], "log_dir": "runs"})
    assert cfg == saved and notes == []


def test_resume_refuses_to_change_what_shapes_results_in_one_line(tmp_path, capsys):
    run = train(toy_config(tmp_path, total_steps=2_000, run_name="fixed"))
    for flags, says in [(["--seed", "3"], "seed (saved 0, given 3)"),
                        (["--set", "pi_lr=0.5"], "pi_lr (saved 0.003, given 0.5)"),
                        (["--algo", "ppo-lag"], "algo (saved 'cppo', given 'ppo-lag')"),
                        (["--log-dir", str(tmp_path / "elsewhere")], "log_dir"),
                        (["--total-steps", "1000"], "total_steps 1000 is below the 2000 steps")]:
        assert cli_main(["train", "--resume", str(run), "--no-progress", *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and says in err and "\n" not in err, err
    saved_kl = toy_config(tmp_path).estep_kl
    for name in ("estep_kl", "kl"):  # the field's old name is read as today's
        with pytest.raises(ValueError, match=rf"cannot change estep_kl \(saved {saved_kl}, given 0.2\)"):
            train(resume=run, changes={name: 0.2})
    with pytest.raises(ValueError, match="'klx' is not a Config field"):
        train(resume=run, changes={"klx": 0.2})
    # A default Config is never a source of values: it differs, so it is refused, by name.
    with pytest.raises(ValueError, match=r"differs from the run's own in .*total_steps \(saved 2000, "
                                         r"given 1000000\)"):
        train(Config(env_id=TOY_ENV_ID, num_envs=1, steps_per_iter=1_000), resume=run)
    with pytest.raises(ValueError, match="changes= applies to a resumed run only"):
        train(toy_config(tmp_path, run_name="new"), changes={"total_steps": 5})
    with pytest.raises(TypeError, match="needs a config, or resume="):
        train()


def test_python_resume_keeps_the_runs_settings_unless_changes_ask(tmp_path, monkeypatch, capsys):
    run = cut_run(tmp_path, "api", 3_000, after=1, device="cpu")
    no_row_past(monkeypatch, 4_000)
    assert train(resume=run) == run
    assert steps(run) == [1_000, 2_000, 3_000]
    assert Trainer(resume=run).cfg.device == "cpu"
    csv_done = (run / "progress.csv").read_text()
    assert train(resume=run) == run and (run / "progress.csv").read_text() == csv_done
    assert "already finished" in capsys.readouterr().out
    assert Trainer(resume=run).finished
    # The run's own config beside resume (older code) is accepted: it asks for nothing.
    cfg = toy_config(tmp_path, total_steps=3_000, run_name="api", checkpoint_every=1, device="cpu")
    assert train(cfg, resume=run) == run and (run / "progress.csv").read_text() == csv_done
    # A change is in the checkpoint at once: a kill before the next checkpoint keeps it.
    Trainer(resume=run, changes={"total_steps": 4_000, "device": "auto"}).envs.close()
    out = capsys.readouterr().out
    assert "total_steps 3000 -> 4000" in out and "device cpu -> auto" in out
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["iteration"], ckpt["config"]["total_steps"], ckpt["config"]["device"]) == (2, 4_000, "auto")
    train(resume=run)
    assert steps(run) == [1_000, 2_000, 3_000, 4_000]
    assert "->" not in capsys.readouterr().out
    assert Trainer(resume=run).cfg.device == "auto"


def _complete_rows(csv_path):
    if not csv_path.is_file():
        return 0
    return max(0, csv_path.read_text().count("\n") - 1)


def _kill_after(cmd, run, rows_at_least):
    """Start ``cmd``, SIGKILL it once the CSV has ``rows_at_least`` rows and a checkpoint exists;
    returns the number of rows at the kill."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    deadline = time.monotonic() + 90
    try:
        while _complete_rows(run / "progress.csv") < rows_at_least or not (run / "checkpoint.pt").is_file():
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()[-300:]}"
            assert time.monotonic() < deadline, "no progress within 90 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _complete_rows(run / "progress.csv")


def test_sigkill_twice_then_resume_ends_at_the_runs_own_budget(tmp_path):
    run = tmp_path / f"cppo_{TOY_ENV_ID}_s0"
    cli = [sys.executable, "-m", "dynacppo_lite", "train"]
    start = [*cli, "--algo", "cppo", "--env", TOY_ENV_ID, "--total-steps", "6000", "--steps-per-iter",
             "500", "--num-envs", "1", "--device", "cpu", "--log-dir", str(tmp_path), "--no-progress",
             "--set", "checkpoint_every=1"]
    resume = [*cli, "--resume", str(run), "--no-progress"]  # as the README and Ctrl-C say
    killed_at = _kill_after(start, run, rows_at_least=3)
    _kill_after(resume, run, rows_at_least=killed_at + 3)
    proc = subprocess.Popen(resume, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    deadline = time.monotonic() + 90
    try:
        while proc.poll() is None:
            assert _complete_rows(run / "progress.csv") <= 12, "the resumed run trains past its budget"
            assert time.monotonic() < deadline, "the resumed run did not end within 90 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    assert steps(run) == list(range(500, 6_001, 500))  # consecutive, ending at the run's budget
    assert [int(r["iteration"]) for r in rows(run)] == list(range(12))
    assert (run / "policy_final.pt").is_file()


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
                    ({"estep_kl": 0.0}, "estep_kl"), ({"v_lower_bound": 1.0}, "v_lower_bound"),
                    ({"lower_clip": 1.0}, "lower_clip")]:
        with pytest.raises(ValueError, match=msg):
            Config(**kw).validate()
    assert Config(estep_kl=0.02).kl_budget == pytest.approx(0.02 / (2 * np.log(2) - 1))
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
    from dynacppo_lite.evaluation import load_trained

    trainer = Trainer(toy_config(tmp_path, total_steps=2_000, run_name="lt"))
    run = trainer.run()
    cfg, envs, agent = load_trained(run, seed=3)
    assert cfg.env_id == TOY_ENV_ID
    for name, tensor in trainer.agent.state_dict().items():
        assert torch.equal(agent.state_dict()[name], tensor)
    np.testing.assert_array_equal(envs.obs_rms.mean, trainer.envs.obs_rms.mean)
    envs.close()
