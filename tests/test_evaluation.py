"""Evaluating a trained run, the recorded cost limit, runs side by side, the final score."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import dynacppo_lite
from dynacppo_lite import Config, evaluate
from dynacppo_lite.cli import main
from dynacppo_lite.envs import TOY_COST_LIMIT, TOY_ENV_ID
from dynacppo_lite.runlog import final_score


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    log = tmp_path_factory.mktemp("runs")
    return dynacppo_lite.train(Config(env_id=TOY_ENV_ID, total_steps=2_000, num_envs=1,
                                      steps_per_iter=1_000, log_dir=str(log), run_name="toy"))


def test_config_json_records_the_cost_limit_used(toy_run) -> None:
    assert json.loads((toy_run / "config.json").read_text())["cost_limit"] == TOY_COST_LIMIT


def test_evaluate_gives_episodes_with_a_frozen_normaliser(toy_run) -> None:
    from dynacppo_lite.evaluation import load_trained

    _, envs, _ = load_trained(toy_run)
    before = envs.state_dict()["count"]
    envs.reset()
    for _ in range(50):
        envs.step(np.zeros((1, *envs.single_action_space.shape), dtype=np.float32))
    assert envs.state_dict()["count"] == before  # frozen
    envs.close()

    ev = evaluate(toy_run, episodes=3, seed=1)
    assert ev.returns.shape == ev.costs.shape == ev.lengths.shape == (3,)
    assert ev.mean_return == pytest.approx(ev.returns.mean()) and ev.cost_limit == TOY_COST_LIMIT
    again = evaluate(toy_run, episodes=3, seed=1)
    np.testing.assert_array_equal(ev.returns, again.returns)  # deterministic policy, same seed
    sampled = evaluate(toy_run, episodes=2, deterministic=False, seed=1)
    assert len(sampled.returns) == 2
    assert "| mean |" in ev.table()


def test_evaluate_command_writes_a_table(toy_run, tmp_path, capsys) -> None:
    out = tmp_path / "eval.md"
    assert main(["evaluate", str(toy_run), "--episodes", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| episode | return | cost | length |" in text and "cost limit 10" in text
    assert "| mean |" in out.read_text()
    assert main(["evaluate", str(tmp_path / "nope")]) == 2


def test_final_score_is_the_last_ten_percent_of_steps() -> None:
    step = np.arange(1, 21) * 500
    values = np.arange(20.0)
    assert final_score(step, values) == pytest.approx(np.mean([18.0, 19.0]))
    assert final_score(pd.Series(step), pd.Series(values), until=5_000) == pytest.approx(9.0)
    assert np.isnan(final_score([], []))
    from dynacppo_lite.bench import learning

    assert learning.final_score is final_score


def test_compare_runs_sets_runs_side_by_side_with_their_own_limits(toy_run, tmp_path) -> None:
    import shutil

    from dynacppo_lite.plots import compare_runs

    other = tmp_path / "strict"
    shutil.copytree(toy_run, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(cfg | {"cost_limit": 2.5}))
    fig = compare_runs([toy_run, other], labels=["d=10", "d=2.5"])
    axes = fig.axes
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert any("limit 10" in t for t in titles) and any("limit 2.5" in t for t in titles)
    assert titles[0].startswith("d=10: final")
