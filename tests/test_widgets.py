"""The explorers of notebook 6, driven from code: set a widget's value, check what was recomputed;
and the live training view of notebook 5, driven headless through its callback path."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import pytest

from dynacppo_lite.config import Config
from dynacppo_lite.estep import solve_estep
from dynacppo_lite.plots import smooth, synthetic_advantages
from dynacppo_lite.runlog import load_checkpoint, read_progress
from dynacppo_lite.widgets import EStepExplorer, MStepExplorer, RunBrowser, TrainingMonitor, find_runs

PNG = b"\x89PNG"


def test_estep_explorer_recomputes_on_every_control() -> None:
    # The paper's KL (0.02): the margins below cross the three cases at that trust region.
    ex = EStepExplorer(n=256, correlation=0.6, cost_margin=0.0, kl_budget=Config(estep_kl=0.02).kl_budget)
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


def test_mstep_explorer_fits_as_torch_adam_and_refits_only_what_a_move_changes(monkeypatch) -> None:
    import torch

    from dynacppo_lite import widgets
    from dynacppo_lite.mstep import mstep_loss

    # Adam written out (the app's kernels then never import torch._dynamo) is torch's Adam.
    v = np.exp(np.random.default_rng(0).normal(0.0, 0.6, 64))
    ratios, _ = widgets._fit_ratios(v, 0.4, 30)
    v_t = torch.as_tensor(v, dtype=torch.float32)
    logp = torch.zeros_like(v_t, requires_grad=True)
    opt = torch.optim.Adam([logp], lr=widgets.ADAM_LR)
    for _ in range(30):
        opt.zero_grad()
        (mstep_loss(logp, torch.zeros_like(v_t), v_t, lower_clip=0.4) * len(v)).backward()
        opt.step()
    np.testing.assert_allclose(ratios, torch.exp(logp.detach()).numpy(), rtol=1e-6)

    fit, clips = widgets._fit_ratios, []
    monkeypatch.setattr(widgets, "_fit_ratios", lambda v, b, steps: clips.append(b) or fit(v, b, steps))
    ex = MStepExplorer(steps=20, lower_clip=0.6)
    assert clips == [0.6, 0.0]
    ex.controls["target_v"].value = 1.5  # the curve only: no fit
    ex.controls["lower_clip"].value = 0.3  # the clipped batch only
    assert clips == [0.6, 0.0, 0.3] and ex.updates == 3
    ex.controls["lower_clip"].value = 0.6  # fitted before
    assert clips == [0.6, 0.0, 0.3] and ex.result["lower_clip"] == 0.6


def test_the_explorers_never_import_torchs_compiler() -> None:
    """``torch.optim`` imports ``torch._dynamo`` (and sympy): a CPU-second in each kernel of the
    web app, which the explorers do not need."""
    import subprocess
    import sys

    code = ("import sys; from dynacppo_lite.widgets import EStepExplorer, MStepExplorer; "
            "EStepExplorer(); MStepExplorer(steps=10); "
            "print([m for m in ('torch._dynamo', 'sympy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_explorers_reuse_the_constrained_layout_while_the_panels_keep_their_shape(tmp_path) -> None:
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    def positions(figure):
        return [ax.get_position(original=True).bounds for ax in figure.axes]

    def laid_out_afresh(figure):
        ConstrainedLayoutEngine().execute(figure)
        return positions(figure)

    ex = EStepExplorer()
    assert ex.figure.get_layout_engine() is None and len(ex.layouts) == 1  # the draw lays out nothing
    first = positions(ex.figure)
    for corr in (0.5, 0.4, 0.7):  # the same panels, tick labels of the same length
        ex.controls["correlation"].value = corr
        assert len(ex.layouts) == 1 and positions(ex.figure) == first
        np.testing.assert_allclose(first, laid_out_afresh(ex.figure), atol=1e-9)
    ex.controls["cost_margin"].value = 0.01  # the histogram's ticks "0".."30" become "0.0".."22.5"
    assert len(ex.layouts) == 2 and positions(ex.figure) != first
    np.testing.assert_allclose(positions(ex.figure), laid_out_afresh(ex.figure), atol=1e-9)

    fake_run(tmp_path, "a")
    br = RunBrowser(tmp_path)
    br.controls["extra"].value = "kl"  # a third panel
    assert len(br.figure.axes) == 3
    np.testing.assert_allclose(positions(br.figure), laid_out_afresh(br.figure), atol=1e-9)


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


def _toy(tmp_path, algo: str = "cppo", iters: int = 4, name: str | None = None) -> Config:
    return Config(algo=algo, env_id="ToySpeedLimit-v0", total_steps=iters * 200, steps_per_iter=200,
                  num_envs=1, pi_lr=3e-3, device="cpu", checkpoint_every=100, log_dir=str(tmp_path),
                  run_name=name or algo)


def test_monitor_draws_every_row_and_lays_a_second_run_over_the_first(tmp_path) -> None:
    mon = TrainingMonitor(redraw_every_s=0.0)  # every iteration redraws
    first = mon.image.value
    run = mon.train(_toy(tmp_path, "cppo"))
    assert mon.redraws == 1 + 4 + 1  # the empty figure, one per iteration, the final one
    assert mon.image.value != first and bytes(mon.image.value).startswith(PNG)
    csv = read_progress(run)
    assert [r["step"] for r in mon.rows["cppo"]] == csv["step"].tolist()
    assert "finished" in mon.status.value and mon.stop_button.disabled and not mon.stopped

    mon.train(_toy(tmp_path, "ppo-lag"))
    assert list(mon.rows) == ["cppo", "ppo-lag"]
    ax_ret, ax_cost, ax_est, ax_ctl, ax_kl, ax_reach = mon.figure.axes
    assert [line.get_label() for line in ax_ret.lines] == ["cppo", "ppo-lag"]
    assert "cost limit 10" in [line.get_label() for line in ax_cost.lines]
    assert {line.get_label() for line in ax_ctl.lines} == {"cppo: u", "ppo-lag: lambda"}
    assert "KL early stop 0.02" in [line.get_label() for line in ax_kl.lines]
    assert len(ax_est.collections) == 2  # the standard-error band of each run
    assert [line.get_label() for line in ax_reach.lines] == ["cppo"]  # PPO-Lag has no M-step reach

    mon.add(run, label="cppo again")
    assert len(mon.rows["cppo again"]) == 4 and len(mon.figure.axes[0].lines) == 3


def test_monitor_trains_in_the_background_stops_with_a_checkpoint_and_resumes(tmp_path) -> None:
    mon = TrainingMonitor()
    cfg = _toy(tmp_path, iters=2000)  # minutes if never stopped
    run = mon.train(cfg, background=True)
    assert mon.running  # the call returned while the run trains: the kernel is free
    deadline = time.monotonic() + 120
    while len(mon.rows["cppo"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    mon.stop_button.click()  # what a click in the browser runs
    mon.wait(timeout=120)
    assert not mon.running and mon.stopped and mon.error is None
    assert "checkpoint saved" in mon.status.value
    stopped = len(mon.rows["cppo"])
    assert 3 <= stopped < 2000
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == stopped - 1  # no row lost
    assert len(read_progress(run)) == stopped

    mon.train(resume=run, changes={"total_steps": (stopped + 2) * 200})
    steps = read_progress(run)["step"].tolist()
    assert steps == [200 * (i + 1) for i in range(stopped + 2)]  # one CSV, nothing lost or repeated
    assert [r["step"] for r in mon.rows["cppo"]] == steps


def test_monitor_reports_a_failed_background_run(tmp_path) -> None:
    def broken_estep(adv_r, adv_c, **kw):
        raise ValueError("student bug")

    mon = TrainingMonitor()
    mon.train(_toy(tmp_path), estep=broken_estep, background=True)
    with pytest.raises(ValueError, match="student bug"):
        mon.wait(timeout=120)
    assert "failed" in mon.status.value and mon.stop_button.disabled


def test_monitor_train_all_trains_in_turn_then_reuses_finished_runs(tmp_path) -> None:
    configs = [_toy(tmp_path, "cppo", iters=3), _toy(tmp_path, "ppo-lag", iters=3)]
    mon = TrainingMonitor()
    runs = mon.train_all(configs)
    assert runs == {"cppo": tmp_path / "cppo", "ppo-lag": tmp_path / "ppo-lag"}
    assert [len(mon.rows[algo]) for algo in runs] == [3, 3]
    mtime = (tmp_path / "cppo" / "progress.csv").stat().st_mtime_ns

    again = TrainingMonitor()
    assert again.train_all(configs) == runs and not again.running
    assert [len(again.rows[algo]) for algo in runs] == [3, 3]  # drawn from disk, not retrained
    assert (tmp_path / "cppo" / "progress.csv").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="run_name"):
        again.train_all([dataclasses.replace(configs[0], run_name=None)])


def test_displayed_widgets_carry_their_figure_for_pages_without_a_kernel() -> None:
    import base64

    from dynacppo_lite.widgets import _bundle

    ex = MStepExplorer(steps=10, n=32)
    bundle = _bundle(ex.widget, ex.image.value)
    assert "application/vnd.jupyter.widget-view+json" in bundle  # Lab and Voila: the live widget
    assert base64.b64decode(bundle["image/png"]) == bytes(ex.image.value)  # JSON-safe, as nbformat wants
    mon = TrainingMonitor()
    mon._ipython_display_()  # displayed with an id, so the end of a run can update the picture
    assert len(mon._handles) == 1


def test_monitor_train_all_continues_a_stopped_run_from_its_checkpoint(tmp_path) -> None:
    cfg = _toy(tmp_path, iters=2000)
    mon = TrainingMonitor()
    mon.train_all([cfg], background=True)
    deadline = time.monotonic() + 120
    while len(mon.rows.get("cppo", [])) < 2 and time.monotonic() < deadline:  # built in the thread
        time.sleep(0.05)
    mon.stop()
    mon.wait(timeout=120)
    stopped = len(mon.rows["cppo"])

    again = TrainingMonitor()
    again.train_all([dataclasses.replace(cfg, total_steps=(stopped + 1) * 200)])  # the cell, rerun
    assert read_progress(tmp_path / "cppo")["step"].tolist() == [200 * (i + 1) for i in range(stopped + 1)]
    assert len(again.rows["cppo"]) == stopped + 1  # the stopped run's rows, then the new one


def test_run_browser_reads_only_inside_its_runs_directory(tmp_path) -> None:
    root, outside = tmp_path / "runs", tmp_path / "private"
    fake_run(root, "a", seed=1)
    fake_run(outside, "secret", seed=2)
    (root / "link").symlink_to(outside / "secret")  # a link inside that points out
    br = RunBrowser(root, smoothing=1)
    assert list(br.controls["runs"].options) == ["a"]

    for path in (outside, root / ".." / "private", tmp_path, "/"):
        br.controls["log_dir"].value = str(path)
        assert br.result["runs"] == [] and list(br.controls["runs"].options) == []
        assert br.summary.value == "refused: only folders inside the runs directory can be browsed"
    br.controls["log_dir"].value = str(root)  # back inside: browsed again
    assert br.result["names"] == ["a"] and br.summary.value.startswith("final")
