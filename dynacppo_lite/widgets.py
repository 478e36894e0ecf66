"""Interactive explorers for the notebooks (ipywidgets + matplotlib).

Three explorers, each an object whose logic runs without a browser, so tests can drive it:

* :class:`EStepExplorer`: KL budget, cost margin, lower bound and the correlation of the
  advantages -> ``estep.solve_estep`` (exact and heuristic) -> the A-A_c plane and v*.
* :class:`MStepExplorer`: lower clip b and a target v -> the gradient of ``mstep.mstep_loss``
  with and without the clip, and a batch of ratios fitted to targets with both.
* :class:`RunBrowser`: a log directory -> pick runs, smoothing, cost-limit line -> curves.

Every explorer has ``controls`` (a dict of widgets), ``update()`` (recompute, store the
numbers in ``result`` and redraw ``figure``), ``widget`` (the layout to display) and
``image`` (an ``ipywidgets.Image`` holding the PNG of ``figure``). Changing any control's
``value`` calls ``update()``, in a notebook or in a test alike. Figures are plain
``matplotlib.figure.Figure`` objects (not pyplot's), so explorers never leak pyplot windows.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from dynacppo_lite.config import Config
from dynacppo_lite.estep import EStepResult, solve_estep
from dynacppo_lite.plots import (
    EStepPlane,
    estep_plane,
    plot_estep_plane,
    plot_mstep_tracking,
    plot_runs,
    plot_v_histogram,
    run_cost_limit,
    smooth,
    synthetic_advantages,
)
from dynacppo_lite.runlog import final_score, read_progress

__all__ = ["EStepExplorer", "MStepExplorer", "RunBrowser", "find_runs"]

#: A lower clip of 0 never binds (every ratio is positive): the unclipped tracking loss.
NO_CLIP = 0.0

_STYLE = {"description_width": "120px"}
SLIDER_WIDTH = "360px"
#: The controls column never shrinks below this (a slider and its value readout, plus margins).
CONTROLS_WIDTH = "380px"
#: Below this width the figure wraps under the controls.
FIGURE_MIN_WIDTH = "420px"


def _slider() -> dict[str, Any]:
    """Keyword arguments shared by the sliders (a fresh Layout each: widgets own their layout)."""
    return {"continuous_update": False, "style": _STYLE, "layout": widgets.Layout(width=SLIDER_WIDTH)}


class _Explorer:
    """Shared plumbing: controls -> update() -> figure -> PNG in an Image widget."""

    figsize: tuple[float, float] = (10.0, 4.2)

    def __init__(self, controls: dict[str, widgets.Widget]) -> None:
        self.controls = controls
        self.figure = Figure(figsize=self.figsize, layout="constrained")
        self.image = widgets.Image(format="png")
        self.summary = widgets.HTML()
        self.result: Any = None
        self.updates = 0
        """How many times ``update()`` has run (tests use it to see a callback fire)."""
        self._holding = False
        for control in controls.values():
            control.observe(self._on_change, names="value")

    def _on_change(self, change: dict) -> None:
        if not self._holding:
            self.update()

    def values(self) -> dict[str, Any]:
        """The current value of every control."""
        return {name: w.value for name, w in self.controls.items()}

    def set(self, **values: Any) -> None:
        """Set several controls at once with a single ``update()`` at the end."""
        self._holding = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._holding = False
        self.update()

    def update(self) -> None:
        """Recompute from the controls, redraw the figure, refresh the image."""
        self.figure.clear()
        self.compute()
        self.draw()
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=80)
        self.image.value = buf.getvalue()
        self.updates += 1

    def compute(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def widget(self) -> widgets.Widget:
        """Controls on the left, the figure and a summary line on the right.

        The controls keep their full width (every slider's value stays visible); the figure
        scales down to the room left, and below ``CONTROLS_WIDTH`` + ``FIGURE_MIN_WIDTH`` it
        wraps under the controls instead of squeezing them (a 1400 px window with Lab's file
        browser open)."""
        self.image.layout = widgets.Layout(width="100%", max_width=f"{int(self.figsize[0] * 80)}px",
                                           height="auto")
        controls = widgets.VBox(list(self.controls.values()),
                                layout=widgets.Layout(flex="0 0 auto", min_width=CONTROLS_WIDTH))
        figure = widgets.VBox([self.image, self.summary],
                              layout=widgets.Layout(flex="1 1 0%", min_width=FIGURE_MIN_WIDTH))
        return widgets.HBox([controls, figure],
                            layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start",
                                                  width="100%"))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class EStepExplorer(_Explorer):
    """The E-step on a synthetic batch: move the budgets, watch v* and the plane.

    ``result`` is the :class:`~dynacppo_lite.estep.EStepResult` of the selected method,
    ``other`` the other method's, ``plane`` the :class:`~dynacppo_lite.plots.EStepPlane`.
    """

    def __init__(self, *, kl_budget: float | None = None, cost_margin: float = 0.0,
                 lower_bound: float | None = None, correlation: float = 0.6, n: int = 256,
                 method: str = "exact", seed: int = 0) -> None:
        defaults = Config()  # the trainer's E-step settings unless given
        kl_budget = defaults.kl_budget if kl_budget is None else kl_budget
        lower_bound = defaults.v_lower_bound if lower_bound is None else lower_bound
        controls = {
            "kl_budget": widgets.FloatLogSlider(value=kl_budget, base=10, min=-3, max=0, step=0.05,
                                                description="KL budget δ'", readout_format=".3f",
                                                **_slider()),
            "cost_margin": widgets.FloatSlider(value=cost_margin, min=-0.4, max=0.4, step=0.005,
                                               description="cost margin d'", readout_format=".3f",
                                               **_slider()),
            "lower_bound": widgets.FloatSlider(value=lower_bound, min=0.0, max=0.95, step=0.05,
                                               description="lower bound", **_slider()),
            "correlation": widgets.FloatSlider(value=correlation, min=-0.95, max=0.95, step=0.05,
                                               description="corr(A, A_c)", **_slider()),
            "n": widgets.Dropdown(options=[16, 64, 256, 1024, 4096], value=n, description="batch N",
                                  style=_STYLE),
            "method": widgets.ToggleButtons(options=["exact", "heuristic"], value=method,
                                            description="method", style=_STYLE),
            "recovery": widgets.Checkbox(value=False, description="force recovery update"),
            "seed": widgets.IntText(value=seed, description="seed", style=_STYLE),
        }
        self.adv_r = self.adv_c = np.zeros(0)
        self.other: EStepResult | None = None
        self.plane: EStepPlane | None = None
        super().__init__(controls)
        self.update()

    def compute(self) -> None:
        p = self.values()
        self.adv_r, self.adv_c = synthetic_advantages(p["n"], p["correlation"], p["seed"])
        kwargs = dict(cost_margin=p["cost_margin"], kl_budget=p["kl_budget"],
                      lower_bound=p["lower_bound"], recovery=p["recovery"])
        other = "heuristic" if p["method"] == "exact" else "exact"
        self.result = solve_estep(self.adv_r, self.adv_c, method=p["method"], **kwargs)
        self.other = solve_estep(self.adv_r, self.adv_c, method=other, **kwargs)
        self.plane = estep_plane(self.adv_r, self.adv_c, cost_margin=p["cost_margin"],
                                 kl_budget=p["kl_budget"])

    def draw(self) -> None:
        p, res = self.values(), self.result
        ax_plane, ax_hist = self.figure.subplots(1, 2)
        other = "heuristic" if p["method"] == "exact" else "exact"
        plot_estep_plane(self.adv_r, self.adv_c, cost_margin=p["cost_margin"],
                         kl_budget=p["kl_budget"], ax=ax_plane,
                         results={f"v* ({p['method']})": res, f"v* ({other})": self.other})
        plot_v_histogram(res.v, p["lower_bound"], ax=ax_hist, label=p["method"])
        self.summary.value = (
            f"case without bound: <b>{self.plane.case}</b> | mode: <b>{res.mode}</b> | "
            f"feasible: {res.feasible} | angle {np.degrees(res.angle):.1f}° | clip passes "
            f"{res.clip_passes} | objective mean(vA) {res.objective:.4f} "
            f"({other}: {self.other.objective:.4f}) | cost change {res.cost_change:.4f}")


class MStepExplorer(_Explorer):
    """The M-step's lower clip: the per-sample gradient, and a batch fitted with and without it.

    The batch: N = ``n`` free log-ratios, all starting at r = 1 (theta = theta_old), fitted by
    Adam to targets v = exp(N(0, spread^2)) with ``mstep.mstep_loss``, once with the clip b and
    once without. ``result`` holds the arrays and the measured forward KL of both fits
    (``mstep.mstep_diagnostics``' approx_kl) and their smallest ratios.
    """

    figsize = (12.0, 3.8)

    def __init__(self, *, lower_clip: float | None = None, target_v: float = 0.3,
                 spread: float = 0.6, steps: int = 150, n: int = 512, seed: int = 0) -> None:
        lower_clip = Config().lower_clip if lower_clip is None else lower_clip
        controls = {
            "lower_clip": widgets.FloatSlider(value=lower_clip, min=0.05, max=0.95, step=0.05,
                                              description="lower clip b", **_slider()),
            "target_v": widgets.FloatSlider(value=target_v, min=0.05, max=2.0, step=0.05,
                                            description="target v (curve)", **_slider()),
            "spread": widgets.FloatSlider(value=spread, min=0.05, max=1.5, step=0.05,
                                          description="spread of log v", **_slider()),
            "steps": widgets.IntSlider(value=steps, min=10, max=500, step=10,
                                       description="fit steps", **_slider()),
        }
        self.n, self.seed = n, seed
        super().__init__(controls)
        self.update()

    def _fit(self, v: np.ndarray, lower_clip: float, steps: int) -> tuple[np.ndarray, dict]:
        import torch

        from dynacppo_lite.mstep import mstep_diagnostics, mstep_loss

        v_t = torch.as_tensor(v, dtype=torch.float32)
        logp_old = torch.zeros_like(v_t)
        logp = torch.zeros_like(v_t, requires_grad=True)
        opt = torch.optim.Adam([logp], lr=0.05)
        for _ in range(steps):
            loss = mstep_loss(logp, logp_old, v_t, lower_clip=lower_clip)
            opt.zero_grad()
            (loss * len(v)).backward()  # per-sample gradients of order 1 for Adam
            opt.step()
        with torch.no_grad():
            diag = mstep_diagnostics(logp, logp_old, lower_clip=lower_clip)
        return torch.exp(logp.detach()).numpy(), diag

    def compute(self) -> None:
        p = self.values()
        rng = np.random.default_rng(self.seed)
        v = np.exp(rng.normal(0.0, p["spread"], self.n))
        r_clip, d_clip = self._fit(v, p["lower_clip"], p["steps"])
        r_free, d_free = self._fit(v, NO_CLIP, p["steps"])
        self.result = {
            "v": v, "ratio_clip": r_clip, "ratio_noclip": r_free,
            "kl_clip": float(d_clip["approx_kl"]), "kl_noclip": float(d_free["approx_kl"]),
            "min_ratio_clip": float(r_clip.min()), "min_ratio_noclip": float(r_free.min()),
            "lower_clip": p["lower_clip"],
        }

    def draw(self) -> None:
        p, res = self.values(), self.result
        ax_obj, ax_grad, ax_fit = self.figure.subplots(1, 3)
        plot_mstep_tracking(p["target_v"], p["lower_clip"], axes=[ax_obj, ax_grad])
        ax_fit.scatter(res["v"], res["ratio_noclip"], s=4, alpha=0.5, label="no clip")
        ax_fit.scatter(res["v"], res["ratio_clip"], s=4, alpha=0.5, label=f"clip b = {p['lower_clip']:g}")
        top = float(max(res["v"].max(), res["ratio_noclip"].max()))
        ax_fit.plot([0, top], [0, top], color="0.6", lw=1)
        ax_fit.axhline(p["lower_clip"], color="k", ls=":", lw=1)
        ax_fit.set(xscale="log", yscale="log", xlabel="target v", ylabel="fitted ratio r",
                   title="batch fit after the M-step")
        ax_fit.legend(fontsize=8)
        self.summary.value = (
            f"forward KL (approx_kl): clip {res['kl_clip']:.4f} vs no clip {res['kl_noclip']:.4f}"
            f" | smallest ratio: clip {res['min_ratio_clip']:.3f} vs no clip "
            f"{res['min_ratio_noclip']:.3f}")


def find_runs(log_dir: str | Path, max_depth: int = 3) -> list[Path]:
    """Run directories (those holding a ``progress.csv`` with at least one row) under
    ``log_dir``, sorted, at most ``max_depth`` levels down."""
    root = Path(log_dir)
    if not root.is_dir():
        return []
    found = []
    for depth in range(1, max_depth + 1):
        for csv_path in root.glob("/".join(["*"] * depth) + "/progress.csv"):
            with open(csv_path) as f:
                if sum(1 for _ in f) > 1:
                    found.append(csv_path.parent)
    return sorted(found)


class RunBrowser(_Explorer):
    """Browse the runs under a log directory: which runs, how much smoothing, which limit.

    ``result``: {"runs": selected run dirs, "smoothing": window, "cost_limit": the limit drawn
    (None: none), "final": {run name: (final return, final cost)}, the package's final score
    (``runlog.final_score``: means over the last 10% of steps, unsmoothed), "last": {run name:
    (smoothed last return, smoothed last cost)}}.
    """

    figsize = (12.0, 3.8)
    METRICS = ("none", "kl", "clip_frac", "lagrange", "estep_angle", "cost_margin",
               "imagined_frac", "loss_dyn_holdout", "sps")

    def __init__(self, log_dir: str | Path = "runs", *, smoothing: int = 3) -> None:
        self.run_paths: dict[str, Path] = {}
        controls = {
            "log_dir": widgets.Text(value=str(log_dir), description="log dir",
                                    continuous_update=False, style=_STYLE),
            "runs": widgets.SelectMultiple(options=[], description="runs", rows=6,
                                           style=_STYLE, layout=widgets.Layout(width=SLIDER_WIDTH)),
            "smoothing": widgets.IntSlider(value=smoothing, min=1, max=50, description="smoothing",
                                           **_slider()),
            "limit": widgets.ToggleButtons(options=["auto", "custom", "off"], value="auto",
                                           description="cost limit", style=_STYLE),
            "cost_limit": widgets.FloatText(value=25.0, description="custom limit",
                                            style=_STYLE),
            "extra": widgets.Dropdown(options=self.METRICS, value="none", description="3rd panel",
                                      style=_STYLE),
        }
        super().__init__(controls)
        self.refresh()

    def refresh(self) -> None:
        """Rescan the log directory; select every run found; redraw."""
        root = Path(self.controls["log_dir"].value)
        self.run_paths = {str(p.relative_to(root)): p for p in find_runs(root)}
        self._holding = True
        try:
            self.controls["runs"].options = list(self.run_paths)
            self.controls["runs"].value = tuple(self.run_paths)
        finally:
            self._holding = False
        self.update()

    def _on_change(self, change: dict) -> None:
        if self._holding:
            return
        if change["owner"] is self.controls["log_dir"]:
            self.refresh()
        else:
            self.update()

    def compute(self) -> None:
        p = self.values()
        names = [name for name in p["runs"] if name in self.run_paths]
        runs = [self.run_paths[name] for name in names]
        if p["limit"] == "auto":
            limits = sorted({run_cost_limit(r) for r in runs})
            limit: float | None = limits[0] if len(limits) == 1 else None
            limit_arg: Any = "auto"
        elif p["limit"] == "custom":
            limit = limit_arg = float(p["cost_limit"])
        else:
            limit = limit_arg = None
        final, last = {}, {}
        for name, run in zip(names, runs, strict=True):
            df = read_progress(run)
            final[name] = (final_score(df["step"], df["ep_return"]), final_score(df["step"], df["ep_cost"]))
            last[name] = (float(smooth(df["ep_return"], p["smoothing"])[-1]),
                          float(smooth(df["ep_cost"], p["smoothing"])[-1]))
        self.result = {"runs": runs, "names": names, "smoothing": p["smoothing"], "cost_limit": limit,
                       "limit_arg": limit_arg, "final": final, "last": last}

    def draw(self) -> None:
        p, res = self.values(), self.result
        if not res["runs"]:
            ax = self.figure.subplots()
            ax.text(0.5, 0.5, "no runs selected", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            self.summary.value = "no runs selected"
            return
        metrics = ["ep_return", "ep_cost"] + ([p["extra"]] if p["extra"] != "none" else [])
        axes = self.figure.subplots(1, len(metrics))
        plot_runs(res["runs"], smoothing=p["smoothing"], metrics=metrics,
                  cost_limit=res["limit_arg"], labels=res["names"], axes=list(axes))
        self.summary.value = "final (last 10% of steps): " + " | ".join(
            f"{name}: return {r:.2f}, cost {c:.2f}" for name, (r, c) in res["final"].items())
