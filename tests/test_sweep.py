"""``sweep`` on Ray: a tiny grid on the toy task, a failing run, a re-run that skips and resumes."""

import json
import shutil

import pandas as pd
import pytest

from dynacppo_lite.cli import main as cli_main
from dynacppo_lite.envs import TOY_ENV_ID

pytest.importorskip("ray")  # the optional extra `sweep`; `make setup` installs it


def test_sweep_grid_failures_skip_and_resume(tmp_path):
    runs = tmp_path / "runs"
    common = ["--preset", "smoke", "--seeds", "0", "1", "--log-dir", str(runs),
              "--figures", str(tmp_path / "fig"), "--out", str(tmp_path), "--num-cpus", "2"]
    # 2 algorithms x 2 seeds, plus a variant whose config is invalid: its runs fail, the rest go on.
    assert cli_main(["sweep", *common, "--algos", "cppo", "ppo-lag", "bad=cppo,kl=0"]) == 1
    rows = json.loads((tmp_path / "learning.json").read_text())["results"]
    assert {r["algo"]: r["seeds"] for r in rows} == {"cppo": 2, "ppo-lag": 2}
    assert "sweep --preset smoke" in json.loads((tmp_path / "learning.json").read_text())["command"]
    assert (tmp_path / "fig" / f"learning_{TOY_ENV_ID}.png").is_file()
    finished = {d.name: (d / "policy_final.pt").stat().st_mtime_ns
                for d in runs.iterdir() if (d / "policy_final.pt").is_file()}
    assert len(finished) == 4 and not any("bad" in name for name in finished)
    # An interrupted run: stopped after the first of its two iterations (checkpoint, no final policy).
    cut = runs / f"{TOY_ENV_ID}_cppo_s1"
    shutil.rmtree(cut)
    assert cli_main(["train", "--algo", "cppo", "--env", TOY_ENV_ID, "--total-steps", "1000",
                     "--steps-per-iter", "1000", "--seed", "1", "--num-envs", "1", "--log-dir", str(runs),
                     "--run-name", cut.name, "--no-progress"]) == 0
    (cut / "policy_final.pt").unlink()
    assert cli_main(["sweep", *common, "--algos", "cppo", "ppo-lag"]) == 0
    for name, mtime in finished.items():  # finished runs are skipped, the cut one is resumed
        if name != cut.name:
            assert (runs / name / "policy_final.pt").stat().st_mtime_ns == mtime
    assert (cut / "policy_final.pt").is_file()
    assert pd.read_csv(cut / "progress.csv")["iteration"].tolist() == [0, 1]
