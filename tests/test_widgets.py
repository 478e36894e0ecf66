"""The explorers of notebook 6, driven from code: set a widget's value, check what was recomputed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dynacppo_lite.config import Config
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.plots import smooth, synthetic_advantages
from dynacppo_lite.widgets import EStepExplorer, MStepExplorer, RunBrowser, find_runs

PNG = b"\x89PNG"


def test_estep_explorer_recomputes_on_every_control() -> None:
    # The paper's KL (0.02): the margins below cross the three cases at that trust region.
    ex = EStepExplorer(n=256, correlation=0.6, cost_margin=0.0, kl_budget=Config(kl=0.02).kl_budget)
    assert ex.updates == 1 and bytes(ex.image.value).startswith(PNG)
    first_png = ex.image.value

    ex.controls["cost_margin"].value = -0.1  # a widget callback, as a slider move would fire
    assert ex.updates == 2 and ex.image.value != first_png
    a, c = synthetic_advantages(256, 0.6, 0)
    want = solve_estep(a, c, cost_margin=-0.1, kl_budget=ex.controls["kl_budget"].value,
                       lower_bound=0.4, method="exact")
    np.testing.assert_allclose(ex.result.v, want.v)
    assert "mode" in ex.summary.value

    cases = {}
    for margin in (0.4, 0.0, -0.4):
        ex.controls["cost_margin"].value = margin
        cases[margin] = (ex.plane.case, ex.result.mode)
    assert cases == {0.4: ("unconstrained", "normal"), 0.0: ("constrained", "normal"),
                     -0.4: ("infeasible", "recovery")}


def test_estep_explorer_method_bound_correlation_and_set() -> None:
    ex = EStepExplorer()
    ex.set(kl_budget=0.5, lower_bound=0.6, correlation=0.9, method="heuristic")
    assert ex.updates == 2  # one update for the four changes
    a, c = synthetic_advantages(256, 0.9, 0)
    heuristic = solve_estep(a, c, cost_margin=0.0, kl_budget=ex.controls["kl_budget"].value,
                            lower_bound=0.6, method="heuristic")
    np.testing.assert_allclose(ex.result.v, heuristic.v)
    assert ex.result.v.min() >= 0.6 - 1e-12 and ex.other is not None
    assert ex.other.objective >= ex.result.objective - 1e-9  # the exact solver is never worse
    ex.controls["recovery"].value = True
    assert ex.result.mode == "recovery"
    ex.controls["seed"].value = 3
    np.testing.assert_allclose(ex.adv_r, synthetic_advantages(256, 0.9, 3)[0])


def test_mstep_explorer_clip_bounds_the_fit() -> None:
    ex = MStepExplorer(steps=80, spread=1.0, lower_clip=0.6)
    res = ex.result
    assert res["lower_clip"] == 0.6 and res["ratio_clip"].shape == (512,)
    assert res["min_ratio_clip"] > res["min_ratio_noclip"]
    assert res["kl_clip"] < res["kl_noclip"]
    ex.controls["lower_clip"].value = 0.9
    assert ex.result["lower_clip"] == 0.9 and ex.result["min_ratio_clip"] > res["min_ratio_clip"]
    kl_noclip = ex.result["kl_noclip"]
    ex.controls["spread"].value = 0.2  # targets near 1: little to clip, little KL
    assert ex.result["kl_noclip"] < kl_noclip
    assert ex.updates == 3 and bytes(ex.image.value).startswith(PNG)


def fake_run(root, name, *, env_id="ToySpeedLimit-v0", cost_limit=None, n=12, seed=0):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env_id": env_id, "cost_limit": cost_limit}))
    rng = np.random.default_rng(seed)
    pd.DataFrame({"step": np.arange(1, n + 1) * 1000, "ep_return": rng.normal(5, 2, n),
                  "ep_cost": rng.normal(12, 3, n), "kl": rng.random(n),
                  "mode": ["normal"] * n}).to_csv(run / "progress.csv", index=False)
    return run


def test_run_browser_lists_selects_smooths_and_draws_limits(tmp_path) -> None:
    fake_run(tmp_path, "a", seed=1)
    fake_run(tmp_path, "nested/b", cost_limit=25.0, seed=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "header_only").mkdir()
    (tmp_path / "header_only" / "progress.csv").write_text("step,ep_return,ep_cost\n")
    assert [p.name for p in find_runs(tmp_path)] == ["a", "b"]

    br = RunBrowser(tmp_path, smoothing=1)
    assert list(br.controls["runs"].options) == ["a", "nested/b"]
    assert br.result["names"] == ["a", "nested/b"] and br.result["cost_limit"] is None  # 10 vs 25

    br.controls["runs"].value = ("a",)
    assert br.result["names"] == ["a"] and br.result["cost_limit"] == 10.0  # the toy task's limit
    df = pd.read_csv(tmp_path / "a" / "progress.csv")
    for window in (1, 4):
        br.controls["smoothing"].value = window
        ret, cost = br.result["last"]["a"]
        assert ret == pytest.approx(smooth(df["ep_return"], window)[-1])
        assert cost == pytest.approx(smooth(df["ep_cost"], window)[-1])
        keep = df["step"] > 0.9 * df["step"].max()
        assert br.result["final"]["a"] == pytest.approx((df["ep_return"][keep].mean(),
                                                         df["ep_cost"][keep].mean()))

    br.set(limit="custom", cost_limit=7.5)
    assert br.result["cost_limit"] == 7.5
    br.controls["limit"].value = "off"
    assert br.result["cost_limit"] is None
    br.controls["extra"].value = "kl"
    assert len(br.figure.axes) == 3 and bytes(br.image.value).startswith(PNG)

    br.controls["log_dir"].value = str(tmp_path / "empty")  # a new folder: rescanned
    assert br.result["runs"] == [] and br.summary.value == "no runs selected"
