"""The benchmark suites' code paths on tiny budgets (the numbers come from real runs, not here)."""

import json

import numpy as np
import pandas as pd
import pytest

from dynacppo_lite.cli import main as cli_main
from dynacppo_lite.envs import TOY_COST_LIMIT, TOY_ENV_ID


def test_bench_estep_tiny(tmp_path):
    assert cli_main(["bench", "estep", "--sizes", "200", "--repeats", "2", "--solver-max-n", "200",
                     "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "estep.json").read_text())
    row = data["results"][0]
    assert row["N"] == 200 and abs(row["gap_exact"]) < 1e-6
    assert "bench estep" in data["command"]


def test_bench_throughput_tiny(tmp_path):
    assert cli_main(["bench", "throughput", "--env", TOY_ENV_ID, "--algos", "cppo",
                     "dyna=dyna-cppo,ensemble_size=2", "--workers", "1", "--steps", "3000",
                     "--steps-per-iter", "1000", "--raw-steps", "500", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "throughput.json").read_text())["results"]
    (env_row,) = results["envs"]
    assert env_row["single_env_sps"] > 0 and env_row["make_env_sps"] > 0
    assert env_row["make_env_gymnasium_sps"] > 0
    rows = results["training"]
    assert [r["algo"] for r in rows] == ["cppo", "dyna"]
    for r in rows:
        assert r["train_sps"] > 0 and 0 < r["ratio"] and r["peak_rss_MiB"] > 0
        assert np.isclose(r["ratio_single"], r["train_sps"] / env_row["single_env_sps"])
        assert abs(sum(r[k] for k in r if k.startswith("t_")) - 1.0) < 0.05  # phases cover it all
    assert rows[1]["t_model"] > 0


def test_bench_learning_tiny(tmp_path, monkeypatch):
    from dynacppo_lite import plots
    from dynacppo_lite.bench.learning import summarise

    drawn = []  # what the plane was given, and the axes it drew on

    def spy(points, cost_limit, ax=None, anchors=None):
        ax = draw(points, cost_limit, ax, anchors)
        drawn.append((points, cost_limit, ax))
        return ax

    draw = plots.plot_return_cost_plane
    monkeypatch.setattr(plots, "plot_return_cost_plane", spy)
    assert cli_main(["bench", "learning", "--tasks", TOY_ENV_ID, "--algos", "cppo", "ppo-lag",
                     "--seeds", "0", "1", "--steps", "2000", "--steps-per-iter", "1000",
                     "--target-return", "-100", "--log-dir", str(tmp_path / "runs"),
                     "--figures", str(tmp_path / "fig"), "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "learning.json").read_text())["results"]
    assert {r["algo"] for r in rows} == {"cppo", "ppo-lag"}
    runs = json.loads((tmp_path / "runs.json").read_text())

    def key(algo, seed):
        return f"{TOY_ENV_ID}|{algo}|{seed}"

    for r in rows:
        assert r["seeds"] == 2
        # Recompute from the runs' CSVs: the first step with (smoothed) return >= -100 and
        # (smoothed) cost <= the toy limit, averaged over the seeds that got there.
        hits = []
        for seed in (0, 1):
            df = pd.read_csv(f"{runs[key(r['algo'], seed)]}/progress.csv")
            ret = df["ep_return"].rolling(3, min_periods=1).mean()
            cost = df["ep_cost"].rolling(3, min_periods=1).mean()
            ok = df["step"][(ret >= -100) & (cost <= TOY_COST_LIMIT)]
            if len(ok):
                hits.append(ok.iloc[0])
        expected = np.mean(hits) if hits else np.nan
        assert np.isclose(r["steps_to_target_mean"], expected, equal_nan=True)
        tail = [pd.read_csv(f"{runs[key(r['algo'], s)]}/progress.csv") for s in (0, 1)]
        final = [t[t["step"] >= 0.9 * t["step"].max()]["ep_return"].mean() for t in tail]
        assert np.isclose(r["return_mean"], np.mean(final))
        assert np.isclose(r["cum_cost_mean"], np.mean([(t["ep_cost"] * t["episodes"]).sum()
                                                       for t in tail]))
    assert "cum_cost_mean" in (tmp_path / "learning.md").read_text()
    assert (tmp_path / "fig" / f"learning_{TOY_ENV_ID}.png").is_file()
    # The return/cost plane: each seed's (cost, return) as the table scores it, the mean marker
    # at the table's means, the limit line at the task's limit; written beside the curves.
    (points, limit, ax), = drawn
    assert limit == TOY_COST_LIMIT and list(points) == ["cppo", "ppo-lag"]
    for container, r in zip(ax.containers, rows, strict=True):
        scores = [summarise(pd.read_csv(f"{runs[key(r['algo'], s)]}/progress.csv"), TOY_COST_LIMIT,
                            None) for s in (0, 1)]
        assert points[r["algo"]] == [(sc["cost"], sc["return"]) for sc in scores]
        np.testing.assert_allclose(container[0].get_xydata(), [[r["cost_mean"], r["return_mean"]]])
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == [
        TOY_COST_LIMIT]
    assert rows[0]["plane"] == str(tmp_path / "fig" / f"plane_{TOY_ENV_ID}.png")
    assert (tmp_path / "fig" / f"plane_{TOY_ENV_ID}.png").is_file()


def test_cumulative_cost_sums_the_episodes_that_ended() -> None:
    """An iteration without an ended episode repeats the last ep_cost (the trainer carries it)
    and must add nothing; a curve without episode counts (a reference) has none."""
    from dynacppo_lite.bench.learning import summarise

    df = pd.DataFrame({"step": [1000, 2000, 3000, 4000], "ep_return": [1.0, 2.0, 2.0, 3.0],
                       "ep_cost": [30.0, 10.0, 10.0, 20.0], "episodes": [2, 1, 0, 3]})
    assert summarise(df, 25.0, None)["cum_cost"] == 30 * 2 + 10 + 20 * 3
    assert np.isnan(summarise(df.drop(columns="episodes"), 25.0, None)["cum_cost"])


def test_bench_learning_scores_the_reference_curve_over_the_same_budget(tmp_path, monkeypatch):
    from dynacppo_lite.bench import learning

    ref = tmp_path / "ref.csv"
    steps = np.arange(1, 11) * 500  # a reference run of 5,000 steps, return = step / 1000
    pd.DataFrame({"TotalEnvSteps": steps, "EpRet": steps / 1000, "EpCost": 0.0}).to_csv(ref)
    monkeypatch.setitem(learning.REFERENCE_CURVES, TOY_ENV_ID, ("ref", ref))
    assert cli_main(["bench", "learning", "--tasks", TOY_ENV_ID, "--algos", "cppo", "--seeds", "0",
                     "--steps", "2000", "--steps-per-iter", "1000", "--log-dir", str(tmp_path / "runs"),
                     "--figures", str(tmp_path / "fig"), "--out", str(tmp_path)]) == 0
    rows = {r["algo"]: r for r in json.loads((tmp_path / "learning.json").read_text())["results"]}
    # Budget 2,000: the last 10% of it holds the reference's row at step 2,000 only (return 2.0),
    # not the end of the reference curve (5.0).
    assert rows["ref (reference)"]["return_mean"] == pytest.approx(2.0)


def test_bench_mstep_on_real_batches_of_the_shipped_policy(tmp_path):
    """Every candidate runs the trainer's update on the same real batches; a batch whose update
    stopped before the last epoch did so because its own KL passed target_kl (the early stop).

    Regression: the check once read the KL averaged over both batches, which a stopped batch
    beside a full one can leave under target_kl (on a CPU whose BLAS kernel rounds otherwise)."""
    from dynacppo_lite.bench.mstep import STUDY_KL
    from dynacppo_lite.config import Config

    target_kl = Config(estep_kl=STUDY_KL).target_kl
    assert cli_main(["bench", "mstep", "--batches", "2", "--steps", "600", "--margin", "free",
                     "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "mstep.json").read_text())
    rows = {r["M-step"]: r for r in data["results"]["free"]}
    assert {"tracking (paper)", "ppo clipped on A (reference)"} <= set(rows)
    assert any(label.startswith("linear") for label in rows)
    for row in rows.values():
        assert row["kl"] > 0 and 1 <= row["epochs"] <= 10
        assert np.isfinite([row["held_r"], row["held_c"], row["reach"]]).all()
        assert len(row["per_batch"]) == 2
        assert row["epochs"] == np.mean([b["epochs"] for b in row["per_batch"]])
        for batch in row["per_batch"]:
            if batch["epochs"] < 10:
                assert batch["kl"] > target_kl
    assert rows["tracking (paper)"]["estep_gain_r"] > 0  # the E-step's v improves the surrogate


def test_learning_figure_gets_the_dyna_row_only_with_a_dyna_run(tmp_path):
    import matplotlib.image

    from dynacppo_lite.bench.learning import plot_task
    from dynacppo_lite.config import Config
    from dynacppo_lite.plots import plot_dyna_diagnostics
    from dynacppo_lite.train import train

    runs = {algo: [train(Config(algo=algo, env_id=TOY_ENV_ID, total_steps=3000, num_envs=1,
                                steps_per_iter=1000, model_start_iter=1, model_hidden=(16, 16),
                                log_dir=str(tmp_path)))]
            for algo in ("cppo", "dyna-cppo")}
    axes = plot_dyna_diagnostics(runs)
    labels = [line.get_label() for line in axes[0].get_lines()]
    assert labels == ["dyna-cppo: h=1", "dyna-cppo: h=k"]  # cppo logs no model: no line
    assert axes[0].get_lines()[0].get_color() == "C1"  # dyna-cppo's colour in the other panels
    assert np.isfinite(axes[0].get_lines()[0].get_ydata()[1:]).all()
    # The task figure grows a third row (10.5 in instead of 7 in at 100 dpi) for dyna-cppo.
    for group, height in (({"cppo": runs["cppo"]}, 700), (runs, 1050)):
        out = plot_task(TOY_ENV_ID, group, TOY_COST_LIMIT, tmp_path / f"fig{height}.png")
        assert matplotlib.image.imread(out).shape[0] == height


def test_the_mstep_study_solves_the_estep_at_the_papers_kl_whatever_the_default():
    """The tracking loss's step scales with the E-step's budget: the study must not inherit the
    trainer's smaller default KL (it did once, and the paper's M-step looked worse than it is)."""
    from dynacppo_lite.bench.mstep import REFERENCE_POLICY, STUDY_KL, collect_batches

    cfg, _, batches = collect_batches(REFERENCE_POLICY, 1, seed=0, steps=200)
    assert cfg.estep_kl == STUDY_KL == 0.02
    assert len(batches) == 1 and len(batches[0].logp) == 200


def test_bench_model_compares_the_learned_model_with_the_simulator(tmp_path):
    cli_main(["train", "--algo", "dyna-cppo", "--env", "SafetyHalfCheetahVelocity-v1",
              "--total-steps", "3000", "--steps-per-iter", "1000", "--log-dir", str(tmp_path),
              "--run-name", "dyna", "--set", "model_start_iter=1", "--set", "ensemble_size=1",
              "--no-progress"])
    assert cli_main(["bench", "model", "--run", str(tmp_path / "dyna"), "--probes", "16",
                     "--draws", "2", "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "model.json").read_text())["results"]
    names = [r["compared"] for r in rows]
    assert names[:5] == ["sim vs real", "model vs real", "model vs sim", "sim: draw vs draw",
                         "model: draw vs draw"]
    assert all(-1 <= r["corr"] <= 1 for r in rows)
    # The simulator's draws share their first action, so two draws agree more than not.
    assert rows[3]["corr"] > 0
    # One step with the first action given and one member: deterministic branches are the
    # same every draw (with more members each step picks a member at random).
    assert cli_main(["bench", "model", "--run", str(tmp_path / "dyna"), "--probes", "16",
                     "--draws", "2", "--deterministic", "--horizon", "1", "--refit-epochs", "1",
                     "--out", str(tmp_path / "det")]) == 0
    rows = json.loads((tmp_path / "det" / "model.json").read_text())["results"]
    by_name = {r["compared"]: r for r in rows}
    assert by_name["sim: draw vs draw"]["corr"] == pytest.approx(1.0)
    assert by_name["model: draw vs draw"]["corr"] == pytest.approx(1.0)


def test_bench_model_r2_compares_the_flat_and_the_coordinate_model(tmp_path):
    assert cli_main(["bench", "model", "--r2", "--steps", "600", "--epochs", "2",
                     "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "model_r2.json").read_text())["results"]
    rows = {r["group"]: r for r in data["rows"]}
    assert list(rows) == ["sensors", "lidar", "reward", "cost", "pose", "objects"]
    assert data["fits"]["train"] == 480 and data["fits"]["test"] == 120
    assert all(np.isfinite(r["coordinate model"]) for g, r in rows.items()
               if g != "cost")  # 120 steps may cross no hazard: a cost column without variance
    assert np.isnan(rows["pose"]["flat ensemble"]) and np.isfinite(rows["lidar"]["flat ensemble"])
    with pytest.raises(SystemExit):
        cli_main(["bench", "model", "--probes", "4"])  # --run is needed without --r2


def test_bench_recovery_cuts_a_fast_toy_policys_cost_on_fresh_episodes(tmp_path):
    """From a toy policy trained without the constraint (it drives too fast), every candidate's
    pure cost descent starts from the same fresh-episode cost and cuts it on new episodes."""
    from dynacppo_lite.config import Config
    from dynacppo_lite.train import train

    run = train(Config(env_id=TOY_ENV_ID, total_steps=8_000, num_envs=1, steps_per_iter=1_000,
                       pi_lr=3e-3, cost_limit=1e9, log_dir=str(tmp_path), run_name="fast"))
    assert cli_main(["bench", "recovery", "--run", str(run), "--iters", "6", "--episodes", "6",
                     "--candidate", "1k=steps_per_iter=1000,pi_lr=3e-3",
                     "--candidate", "2k=steps_per_iter=2000,cost_lam=0.9,pi_lr=3e-3",
                     "--out", str(tmp_path / "out"), "--figure", str(tmp_path / "rec.png")]) == 0
    rows = json.loads((tmp_path / "out" / "recovery.json").read_text())["results"]
    assert [r["candidate"] for r in rows] == ["1k", "2k"]
    assert rows[0]["trace"][0] == rows[1]["trace"][0]  # one starting policy, one set of episodes
    assert [t["step"] for t in rows[1]["trace"]] == [2_000 * k for k in range(7)]
    for r in rows:
        # Held at u = -1: pure cost descent wherever the batch has a cost to descend.
        assert r["trace"][1]["mode"] == "recovery" and r["recovery_share"] > 0.5
        assert r["cost_0"] > TOY_COST_LIMIT and r["cut_last3"] >= 0.3
        last3 = [t["cost"][0] for t in r["trace"][-3:]]
        assert np.isclose(r["cut_last3"], 1 - np.mean(last3) / r["cost_0"])
    assert (tmp_path / "rec.png").is_file()
    with pytest.raises(SystemExit):
        cli_main(["bench", "recovery", "--run", str(tmp_path / "nothing")])


def test_bench_same_numbers_finds_identical_runs_and_a_difference(tmp_path, capsys):
    """Two trainings of the same code on one machine compare identical; an edited row is named."""
    for out in ("a", "b"):
        assert cli_main(["bench", "same_numbers", str(tmp_path / out), "--only", "toy_cppo_margin"]) == 0
    assert cli_main(["bench", "same_numbers", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "identical" in capsys.readouterr().out
    rows_path = tmp_path / "b" / "toy_cppo_margin.rows.jsonl"  # the exact rows it compares
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()]
    rows[1]["ep_cost"] = 123.5
    rows_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert cli_main(["bench", "same_numbers", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "ep_cost" in capsys.readouterr().out
