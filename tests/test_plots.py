"""The pictures draw the numbers they are given: the model errors of notebook 01 (and its
R^2 bars and arena), the return/cost plane of ``bench learning``, the recovery picture of
``bench recovery``."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.patches import Circle

from dynacppo_lite.dynamics import OpenLoopErrors
from dynacppo_lite.plots import (
    OPEN_LOOP_PANELS,
    plot_arena_branch,
    plot_branch_disagreement,
    plot_open_loop_errors,
    plot_r2_groups,
    plot_recovery,
    plot_return_cost_plane,
)


def errors(scale: float, k: int = 5) -> OpenLoopErrors:
    h = np.arange(1, k + 1, dtype=float)
    return OpenLoopErrors(obs=scale * h, rew=2 * scale * h, cost=3 * scale * np.sqrt(h),
                          count=np.full(k, 10))


def test_open_loop_errors_one_panel_per_field_model_and_baseline_lines() -> None:
    model, base = errors(0.1), errors(1.0)
    axes = plot_open_loop_errors(model, base, model_horizon=3)
    assert len(axes) == len(OPEN_LOOP_PANELS) == 3
    for ax, (key, name, _) in zip(axes, OPEN_LOOP_PANELS, strict=True):
        model_line, base_line, k_line = ax.get_lines()
        np.testing.assert_array_equal(model_line.get_xdata(), np.arange(1, 6))
        np.testing.assert_array_equal(model_line.get_ydata(), getattr(model, key))
        np.testing.assert_array_equal(base_line.get_ydata(), getattr(base, key))
        assert list(k_line.get_xdata()) == [3, 3]
        assert ax.get_title() == name
    plt.close("all")
    alone = plot_open_loop_errors(model)  # no baseline, no h = k mark: one line per panel
    assert [len(ax.get_lines()) for ax in alone] == [1, 1, 1]
    plt.close("all")


def test_branch_disagreement_histogram_quantiles_and_threshold() -> None:
    rng = np.random.default_rng(0)
    k, n = 4, 200
    dis = np.exp(rng.standard_normal((k, n)) + np.arange(k)[:, None] * 0.5 - 1.0)  # (k, B)
    ax_hist, ax_step = plot_branch_disagreement(dis, threshold=1.0)
    assert sum(p.get_height() for p in ax_hist.patches) == k * n  # every step in the histogram
    assert f"{np.mean(dis > 1.0):.1%} above the threshold" in ax_hist.get_title()
    median, q90, threshold = ax_step.get_lines()
    np.testing.assert_allclose(median.get_ydata(), np.median(dis, axis=1))
    np.testing.assert_allclose(q90.get_ydata(), np.percentile(dis, 90, axis=1))
    assert list(threshold.get_ydata()) == [1.0, 1.0]
    assert [line.get_xdata()[0] for line in ax_hist.get_lines()] == [1.0]
    plt.close("all")


@pytest.mark.parametrize("threshold", [1e-3, 1e3])
def test_branch_disagreement_bins_reach_a_threshold_outside_the_data(threshold: float) -> None:
    dis = np.full((2, 3), 0.5)
    ax_hist, _ = plot_branch_disagreement(dis, threshold=threshold)
    lo, hi = ax_hist.patches[0].get_x(), ax_hist.patches[-1].get_x() + ax_hist.patches[-1].get_width()
    assert lo < threshold < hi
    plt.close("all")


def test_return_cost_plane_draws_each_seed_their_mean_and_std_and_the_limit() -> None:
    points = {"cppo": [(20.0, 10.0), (30.0, 14.0), (40.0, 12.0)],
              "ppo-lag": [(50.0, 5.0), (float("nan"), float("nan")), (70.0, 9.0)]}
    ax = plot_return_cost_plane(points, cost_limit=25.0, anchors={"PPO-Lag (paper)": (24.1, 4.2)})
    finite = {"cppo": np.array(points["cppo"]), "ppo-lag": np.array([(50.0, 5.0), (70.0, 9.0)])}
    seeds_a, seeds_b, anchor = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(seeds_a.get_offsets(), finite["cppo"])
    np.testing.assert_array_equal(seeds_b.get_offsets(), finite["ppo-lag"])  # the NaN seed left out
    for container, xy in zip(ax.containers, finite.values(), strict=True):
        marker, _, (xbar, ybar) = container
        mean, std = xy.mean(axis=0), xy.std(axis=0)
        np.testing.assert_allclose(marker.get_xydata(), [mean])
        np.testing.assert_allclose(xbar.get_segments()[0], [[mean[0] - std[0], mean[1]],
                                                            [mean[0] + std[0], mean[1]]])
        np.testing.assert_allclose(ybar.get_segments()[0], [[mean[0], mean[1] - std[1]],
                                                            [mean[0], mean[1] + std[1]]])
    np.testing.assert_array_equal(anchor.get_offsets(), [(24.1, 4.2)])
    assert [t.get_text() for t in ax.texts] == ["PPO-Lag (paper)"]
    (limit,) = [line for line in ax.get_lines() if line.get_label() == "cost limit 25"]
    assert list(limit.get_xdata()) == [25.0, 25.0] and limit.get_linestyle() == "--"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("episode cost", "episode return")
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        "cost limit 25", "cppo (3 seeds)", "ppo-lag (2 seeds)"]
    plt.close("all")


def test_recovery_plot_draws_fresh_cost_its_band_and_the_cuts_against_y_equals_x() -> None:
    def row(name: str, costs: list[float], cuts: list[float]) -> dict:
        trace = [{"k": k, "cost": (c, 2.0), "insample_cut": cut}
                 for k, (c, cut) in enumerate(zip(costs, [0.0, *cuts], strict=True))]
        return {"candidate": name, "cost_0": costs[0], "trace": trace}

    rows = [row("4k", [50.0, 55.0, 48.0], [60.0, 80.0]), row("16k", [50.0, 40.0, 45.0], [30.0, 20.0])]
    ax_cost, ax_cut = plot_recovery(rows, "from a goal-reaching policy")
    lines = [line for line in ax_cost.get_lines() if line.get_label() in ("4k", "16k")]
    for line, r in zip(lines, rows, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2])
        np.testing.assert_array_equal(line.get_ydata(), [t["cost"][0] for t in r["trace"]])
    band = ax_cost.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(48.0 - 2.0) and band[:, 1].max() == pytest.approx(55.0 + 2.0)
    (thirty,) = [line for line in ax_cost.get_lines() if line.get_label() == "30% cut"]
    assert list(thirty.get_ydata()) == [35.0, 35.0]
    cuts_4k, cuts_16k = ax_cut.collections
    np.testing.assert_array_equal(cuts_4k.get_offsets(), [(60.0, -5.0), (80.0, 2.0)])
    np.testing.assert_array_equal(cuts_16k.get_offsets(), [(30.0, 10.0), (20.0, 5.0)])
    (diagonal,) = [line for line in ax_cut.get_lines() if line.get_label() == "fresh = in-sample"]
    np.testing.assert_array_equal(diagonal.get_xydata(), [(0.0, 0.0), (80.0, 80.0)])
    assert ax_cost.get_title() == "from a goal-reaching policy"
    plt.close("all")


def test_r2_bars_draw_each_models_values_and_skip_missing_groups() -> None:
    r2 = {"flat": {"sensors": 0.3, "lidar": 0.05, "pose": float("nan")},
          "coordinates": {"sensors": 0.8, "lidar": 0.99, "pose": 0.97}}
    ax = plot_r2_groups(r2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sensors", "lidar", "pose"]
    flat, coordinates = ax.containers
    assert [b.get_height() for b in flat] == [0.3, 0.05]  # no bar for the NaN
    assert [b.get_height() for b in coordinates] == [0.8, 0.99, 0.97]
    assert all(b.get_x() + b.get_width() <= c.get_x() + 1e-12  # side by side, flat left
               for b, c in zip(flat, coordinates, strict=False))
    plt.close("all")


def test_arena_branch_draws_the_given_paths_and_the_tasks_objects_at_their_size() -> None:
    from dynacppo_lite import make_env
    from dynacppo_lite.envs.coordinates import state_from_vector

    envs = make_env("SafetyPointGoal1-v0", num_envs=1, seed=0, coordinates=True)
    _, info = envs.reset()
    start = state_from_vector(envs.state_spec, info["state"])
    envs.close()
    rng = np.random.default_rng(0)
    real = start.position[0] + np.cumsum(rng.normal(0, 0.02, (11, 3)), axis=0)
    imagined = real[:, None, :2] + rng.normal(0, 0.01, (11, 3, 2))  # three branches
    ax = plot_arena_branch(start, real, imagined)
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["real"].get_xydata(), real[:, :2])
    branches = [line for line in ax.get_lines() if line.get_label() != "real"]
    assert len(branches) == 3
    for m, line in enumerate(branches):
        np.testing.assert_array_equal(line.get_xydata(), imagined[:, m])
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    hazards = [c for c in circles if c.get_radius() == start.spec.hazard_size]
    goals = [c for c in circles if c.get_radius() == start.spec.goal_size]
    assert start.spec.hazard_size != start.spec.goal_size and len(circles) == 9
    np.testing.assert_array_equal([c.center for c in hazards], start.objects["hazards"][0])
    np.testing.assert_array_equal([c.center for c in goals], start.objects["goal"][0])
    vases = [c for c in ax.collections if c.get_label() == "vases"]
    np.testing.assert_array_equal(vases[0].get_offsets(), start.objects["vases"][0])
    plt.close("all")
    one = plot_arena_branch(start, real, imagined[:, 0])  # one branch: (H + 1, 2)
    assert len(one.get_lines()) == 2
    plt.close("all")
