"""Interactive explorers for the notebooks (ipywidgets + matplotlib).

Three explorers, each an object whose logic runs without a browser, so tests can drive it:

* :class:`EStepExplorer`: KL budget, cost margin, lower bound and the correlation of the
  advantages -> ``estep.solve_estep`` (exact and heuristic) -> the A-A_c plane and v*.
* :class:`MStepExplorer`: lower clip b and a target v -> the gradient of ``mstep.mstep_loss``
  with and without the clip, and a batch of ratios fitted to targets with both.
* :class:`RunBrowser`: a log directory -> pick runs, smoothing, cost-limit line -> curves.

And one live view, :class:`TrainingMonitor`: it trains (``cppo``, ``ppo-lag``, ``dyna-cppo``,
any task) and redraws return, cost, the cost estimate, the controller, the KL and the M-step's
reach every iteration, with a stop button that ends the run with a checkpoint.

Every explorer has ``controls`` (a dict of widgets), ``update()`` (recompute, store the
numbers in ``result`` and redraw ``figure``), ``widget`` (the layout to display) and
``image`` (an ``ipywidgets.Image`` holding the PNG of ``figure``). Changing any control's
``value`` calls ``update()``, in a notebook or in a test alike. Figures are plain
``matplotlib.figure.Figure`` objects (not pyplot's), so explorers never leak pyplot windows.

Displayed, each of them also carries the PNG of its figure next to the widget: a page without
a kernel (the website, a notebook viewer) shows that picture instead of a dead widget.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.transforms import Bbox

from dynacppo_lite.config import Config
from dynacppo_lite.estep import EStepResult, solve_estep
from dynacppo_lite.plots import (
    EStepPlane,
    estep_plane,
    plot_diagnostic_frames,
    plot_estep_plane,
    plot_mstep_tracking,
    plot_runs,
    plot_v_histogram,
    run_cost_limit,
    smooth,
    synthetic_advantages,
)
from dynacppo_lite.runlog import final_score, read_progress, run_status
from dynacppo_lite.train import Trainer

__all__ = ["EStepExplorer", "MStepExplorer", "RunBrowser", "StopTraining", "TrainingMonitor",
           "demo_runs", "find_runs"]

#: A lower clip of 0 never binds (every ratio is positive): the unclipped tracking loss.
NO_CLIP = 0.0

_STYLE = {"description_width": "120px"}
SLIDER_WIDTH = "360px"
#: The controls column never shrinks below this (a slider and its value readout, plus margins).
CONTROLS_WIDTH = "380px"
#: Below this width the figure wraps under the controls.
FIGURE_MIN_WIDTH = "420px"


#: The explorers' figures are drawn at this resolution (dots per inch of ``figsize``).
PNG_DPI = 80


def _figure(figsize: tuple[float, float], layout: str | None = "constrained") -> Figure:
    """A figure on an Agg canvas at ``PNG_DPI``: drawn as it is sent, no change of dpi."""
    figure = Figure(figsize=figsize, dpi=PNG_DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    """The figure as PNG, printed by its canvas directly: ``savefig`` draws a figure with a
    layout engine twice (once only to lay it out), and that first pass is a third of an
    explorer's redraw; the figure's own draw runs its layout engine as well (the same pixels)."""
    buf = io.BytesIO()
    figure.canvas.print_png(buf)
    return buf.getvalue()


def _layout_shape(figure: Figure) -> tuple[tuple[int, int], ...]:
    """What the panels' constrained layout depends on that a redraw changes: the number of
    panels and the longest tick label of each axis (titles and axis labels keep their height)."""
    return tuple((max((len(t.get_text()) for t in ax.get_xticklabels()), default=0),
                  max((len(t.get_text()) for t in ax.get_yticklabels()), default=0))
                 for ax in figure.axes)


def _bundle(widget: widgets.Widget, png: bytes) -> dict[str, Any]:
    """The widget's display data plus the PNG of its figure: Lab and Voila render the widget,
    a page without a kernel (the website built by ``make site``) falls back to the picture
    (base64, as notebooks store images)."""
    return {**widget._repr_mimebundle_(), "image/png": base64.b64encode(bytes(png)).decode("ascii")}


def _slider() -> dict[str, Any]:
    """Keyword arguments shared by the sliders (a fresh Layout each: widgets own their layout)."""
    return {"continuous_update": False, "style": _STYLE, "layout": widgets.Layout(width=SLIDER_WIDTH)}


class _Explorer:
    """Shared plumbing: controls -> update() -> figure -> PNG in an Image widget."""

    figsize: tuple[float, float] = (10.0, 4.2)

    def __init__(self, controls: dict[str, widgets.Widget]) -> None:
        self.controls = controls
        self.figure = _figure(self.figsize, layout=None)  # laid out by update(): _lay_out
        self.layouts: dict[tuple[tuple[int, int], ...], list[Bbox]] = {}
        """The panels' positions found by constrained layout, by ``_layout_shape``."""
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
        self._lay_out()
        self.image.value = _png(self.figure)
        self.updates += 1

    def _lay_out(self) -> None:
        """Place the panels as constrained layout does. Laying out is half the CPU of a redraw
        (the web app: every visitor's slider moves share two cores), and a slider move seldom
        changes what it depends on: the positions are found once per ``_layout_shape`` and
        reused."""
        shape = _layout_shape(self.figure)
        if shape not in self.layouts:
            ConstrainedLayoutEngine().execute(self.figure)
            self.layouts[shape] = [ax.get_position(original=True) for ax in self.figure.axes]
        for ax, position in zip(self.figure.axes, self.layouts[shape], strict=True):
            ax.set_position(position)

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
        self.image.layout = widgets.Layout(width="100%", max_width=f"{int(self.figsize[0] * PNG_DPI)}px",
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

        display(_bundle(self.widget, self.image.value), raw=True)


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
        self._fits: dict[tuple[float, float, int], tuple[np.ndarray, dict]] = {}
        super().__init__(controls)
        self.update()

    #: Fits kept (oldest dropped first): moving the curve's target v refits nothing, moving b
    #: refits only the clipped batch (the unclipped one does not depend on b).
    KEEP_FITS = 64

    def _fit(self, spread: float, lower_clip: float, steps: int) -> tuple[np.ndarray, dict]:
        """The batch for ``spread`` fitted with clip ``lower_clip``: (ratios, diagnostics)."""
        key = (spread, lower_clip, steps)
        if key not in self._fits:
            if len(self._fits) >= self.KEEP_FITS:
                del self._fits[next(iter(self._fits))]
            self._fits[key] = _fit_ratios(self._targets(spread), lower_clip, steps)
        return self._fits[key]

    def _targets(self, spread: float) -> np.ndarray:
        return np.exp(np.random.default_rng(self.seed).normal(0.0, spread, self.n))

    def compute(self) -> None:
        p = self.values()
        v = self._targets(p["spread"])
        r_clip, d_clip = self._fit(p["spread"], p["lower_clip"], p["steps"])
        r_free, d_free = self._fit(p["spread"], NO_CLIP, p["steps"])
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


#: Adam's settings for the explorer's batch fit (torch.optim.Adam's defaults, lr 0.05).
ADAM_LR, ADAM_BETAS, ADAM_EPS = 0.05, (0.9, 0.999), 1e-8


def _fit_ratios(v: np.ndarray, lower_clip: float, steps: int) -> tuple[np.ndarray, dict]:
    """Free log-ratios, all starting at r = 1, fitted by Adam to targets ``v`` with
    ``mstep.mstep_loss``: (ratios, ``mstep.mstep_diagnostics``).

    Adam's update is written out (torch.optim.Adam's, step for step): the first
    ``torch.optim`` optimizer of a process imports ``torch._dynamo``, about a CPU-second in
    every kernel of the web app, for a fit that needs none of it."""
    import torch

    from dynacppo_lite.mstep import mstep_diagnostics, mstep_loss

    v_t = torch.as_tensor(v, dtype=torch.float32)
    logp_old = torch.zeros_like(v_t)
    logp = torch.zeros_like(v_t, requires_grad=True)
    mean, mean_sq = torch.zeros_like(v_t), torch.zeros_like(v_t)
    (beta1, beta2) = ADAM_BETAS
    for step in range(1, steps + 1):
        loss = mstep_loss(logp, logp_old, v_t, lower_clip=lower_clip)
        (grad,) = torch.autograd.grad(loss * len(v), logp)  # per-sample gradients of order 1
        with torch.no_grad():
            mean.lerp_(grad, 1 - beta1)
            mean_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (mean_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(ADAM_EPS)
            logp.addcdiv_(mean, denom, value=-ADAM_LR / (1 - beta1**step))
    with torch.no_grad():
        diag = mstep_diagnostics(logp, logp_old, lower_clip=lower_clip)
    return torch.exp(logp.detach()).numpy(), diag


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

    def __init__(self, log_dir: str | Path = "runs", *, smoothing: int = 3,
                 root: str | Path | None = None) -> None:
        self.run_paths: dict[str, Path] = {}
        # The one folder it may read (default: ``log_dir``): the web app's visitors type into the
        # log dir box, and a path outside it (``/``, ``..``, a link out) must not be scanned.
        self.root = Path(root if root is not None else log_dir).resolve()
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
        """Rescan the log directory; select every run found; redraw. A folder outside ``root``
        is refused: no runs, and the summary says so in one line."""
        root = Path(self.controls["log_dir"].value).expanduser()
        refused = not self.inside_root(root)
        self.run_paths = {} if refused else {str(p.relative_to(root)): p for p in find_runs(root)
                                            if self.inside_root(p)}  # not a link out of root
        self._holding = True
        try:
            self.controls["runs"].options = list(self.run_paths)
            self.controls["runs"].value = tuple(self.run_paths)
        finally:
            self._holding = False
        self.update()
        if refused:
            self.summary.value = "refused: only folders inside the runs directory can be browsed"

    def inside_root(self, path: str | Path) -> bool:
        """Whether ``path`` (relative paths from the working directory, links followed) lies in
        ``root``."""
        return Path(path).expanduser().resolve().is_relative_to(self.root)

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


def demo_runs(log_dir: str | Path, *, seed: int = 0, algos: tuple[str, ...] = ("cppo", "ppo-lag"),
              steps: int = 5_000) -> Path:
    """Short runs on the toy task (a few seconds each) for a run browser that has nothing to
    show yet: notebook 6 in smoke mode and the web app (``make app``) on a fresh clone.

    Made once, then shared read-only: many processes call this on one directory at once (every
    visitor's kernel of the app). A complete set with the same settings (``DEMO_MARKER``) is
    returned as it is; otherwise one process, holding a lock file beside ``log_dir``, trains them
    into a fresh directory and renames it into place when complete, while the others wait for it.
    Nobody writes into a directory another may be reading; a set made with other settings is
    renamed away whole before its replacement is renamed in."""
    import fcntl
    import shutil
    import tempfile

    from dynacppo_lite.train import train

    log_dir = Path(log_dir)
    settings = {"seed": seed, "algos": list(algos), "steps": steps}
    if _demo_settings(log_dir) == settings:
        return log_dir
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log_dir.parent / f".{log_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on an exception
        if _demo_settings(log_dir) == settings:  # made by the process we waited for
            return log_dir
        fresh = Path(tempfile.mkdtemp(prefix=f".{log_dir.name}.new-", dir=log_dir.parent))
        try:
            for algo in algos:
                print(f"training a short {algo} run on the toy task for the browser ({steps} steps, "
                      "a few seconds)...", flush=True)
                train(Config(algo=algo, env_id="ToySpeedLimit-v0", total_steps=steps,
                             steps_per_iter=500, num_envs=1, pi_lr=3e-3, seed=seed,
                             log_dir=str(fresh), run_name=algo, device="cpu"))
            (fresh / DEMO_MARKER).write_text(json.dumps(settings))
            old = None
            if log_dir.exists():  # another set (other settings, or a half-made one of old)
                old = Path(tempfile.mkdtemp(prefix=f".{log_dir.name}.old-", dir=log_dir.parent))
                log_dir.rename(old / log_dir.name)
            fresh.rename(log_dir)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return log_dir


#: Written into a set of demo runs once it is complete: the settings it was made with.
DEMO_MARKER = "demo_runs.json"


def _demo_settings(log_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((log_dir / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return None


class StopTraining(KeyboardInterrupt):
    """Raised in the training callback once the monitor's stop button was pressed.

    A ``KeyboardInterrupt`` on purpose: ``Trainer.run`` already turns Ctrl-C into "checkpoint
    the last finished iteration, then re-raise", so a stop is a Ctrl-C that only this run sees,
    and the trainer needs no second way to stop."""


#: The monitor's panels after return and cost: ``plots.DIAGNOSTIC_PANELS`` (cost estimate,
#: controller, KL, reach), so a live run and a finished benchmark read the same way.
MONITOR_GRID = (2, 3)


class TrainingMonitor:
    """Train inside a notebook and watch it learn.

    ``monitor.train(cfg)`` trains ``cfg`` (any algorithm, any task) and, after every iteration,
    redraws six panels from the iteration's ``progress.csv`` row: episode return; episode cost
    with the limit; the windowed cost estimate with its standard-error band; the controller's
    output (CPPO's u, PPO-Lag's lambda); the realised KL with the early stop; the M-step's reach.
    Each ``train`` call adds a curve, so a second run (another algorithm, a resumed run, a
    finished run added with :meth:`add`) is laid over the first.

    ``background=True`` trains in a thread and returns at once: the kernel stays free to run
    other cells and to receive the **stop** button's click, which ends the run after the
    current iteration with a checkpoint (:class:`StopTraining`). ``monitor.train(resume=run_dir)``
    continues that run's CSV, its earlier rows drawn first. ``background=False``
    (notebook 5's smoke mode, nbval, the website's execution) blocks until the run ends, so the
    cell's output is complete when the cell is.

    State for tests and code: ``rows`` ({label: [row dicts]}), ``run_dirs``, ``redraws``,
    ``stopped`` (the last run ended by :meth:`stop`), ``error`` (what ended a background run).
    """

    figsize = (13.0, 6.4)

    def __init__(self, *, redraw_every_s: float = 0.25) -> None:
        self.redraw_every_s = redraw_every_s
        """Redraw at most this often (a PNG of six panels costs ~0.1 s, more than a toy-task
        iteration); the last row of a run is always drawn."""
        self.figure = _figure(self.figsize)
        self.image = widgets.Image(format="png")
        self.status = widgets.HTML()
        self.stop_button = widgets.Button(description="stop", icon="stop", button_style="danger",
                                          disabled=True, tooltip="end the run with a checkpoint")
        self.stop_button.on_click(lambda _: self.stop())
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.run_dirs: dict[str, Path] = {}
        self.limits: dict[str, float] = {}
        self.target_kl: float | None = None
        self.redraws = 0
        self.stopped = False
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the training thread and the kernel both redraw
        self._last_draw = 0.0
        self._handles: list[Any] = []
        self.widget = widgets.VBox([widgets.HBox([self.stop_button, self.status]), self.image])
        """The stop button and the status line above the figure."""
        self.image.layout = widgets.Layout(width="100%", max_width=f"{int(self.figsize[0] * PNG_DPI)}px",
                                           height="auto")
        self.draw()

    @property
    def running(self) -> bool:
        """A background run is training."""
        return self._thread is not None and self._thread.is_alive()

    def add(self, run_dir: str | Path, label: str | None = None) -> None:
        """Lay a run that is on disk (finished or not) over the others."""
        run_dir = Path(run_dir)
        label = label or run_dir.name
        self.rows[label] = read_progress(run_dir).to_dict("records")
        self.run_dirs[label] = run_dir
        self.limits[label] = run_cost_limit(run_dir)
        self.draw()

    def train(self, config: Config | None = None, *, resume: str | Path | None = None,
              changes: Mapping[str, Any] | None = None, label: str | None = None,
              background: bool = False, **plugins: Callable[..., Any]) -> Path:
        """Train ``config``, or continue the run in ``resume`` (on its own settings, ``changes``
        as for ``train``: e.g. ``{"total_steps": ...}``); returns the run directory.

        ``plugins`` as for ``train`` (``estep=``, ``policy_loss=``, ``advantages=``). The trainer
        is built here, so a wrong config fails in the calling cell, not in the thread."""
        self._check_idle()
        trainer = Trainer(config, resume=resume, changes=changes, **plugins)
        self._launch([lambda: (trainer, resume is not None)], [label or trainer.run_dir.name], background)
        return trainer.run_dir

    def train_all(self, configs: Sequence[Config], *, background: bool = False) -> dict[str, Path]:
        """Train ``configs`` one after another, each labelled by its ``algo``: {algo: run dir}.

        Every config needs a ``run_name`` (its run directory is known before it trains). What
        each directory needs is ``runlog.run_status`` for the config's budget and device: a
        finished run is drawn from disk, an interrupted one continues from its checkpoint (its
        own settings), so running the cell again picks up where a stop left off. A stop ends
        the current run and skips the ones after it."""
        self._check_idle()
        runs, jobs, labels = {}, [], []
        for cfg in configs:
            if cfg.run_name is None:
                raise ValueError(f"train_all needs a run_name for each config ({cfg.algo} has none)")
            run_dir = runs[cfg.algo] = Path(cfg.log_dir) / cfg.run_name
            changes = {"total_steps": cfg.total_steps, "device": cfg.device}
            status = run_status(run_dir, changes)
            if status == "finished":
                self.add(run_dir, label=cfg.algo)
                continue
            if status == "resume":
                jobs.append(lambda d=run_dir, c=changes: (Trainer(resume=d, changes=c), True))
            else:
                jobs.append(lambda cfg=cfg: (Trainer(cfg), False))
            labels.append(cfg.algo)
        if jobs:
            self._launch(jobs, labels, background)
        return runs

    def _check_idle(self) -> None:
        if self.running:
            raise RuntimeError("a run is still training: press stop or call wait() first")

    def _launch(self, jobs: list[Callable[[], tuple[Trainer, bool]]], labels: list[str],
                background: bool) -> None:
        """Run the jobs (each builds a trainer and says whether it resumes) in turn, in a
        thread or here."""
        self.stopped, self.error = False, None
        self._stop.clear()
        self.stop_button.disabled = False
        if background:
            self._thread = threading.Thread(target=self._run, args=(jobs, labels), daemon=True,
                                            name=f"TrainingMonitor {', '.join(labels)}")
            self._thread.start()
        else:
            self._run(jobs, labels)
            if self.error is not None:
                raise self.error

    def _run(self, jobs: list[Callable[[], tuple[Trainer, bool]]], labels: list[str]) -> None:
        end = "finished"
        for job, label in zip(jobs, labels, strict=True):
            try:
                trainer, resumed = job()
                self._register(trainer, label, resumed)
                trainer.run(callback=lambda row, label=label: self._on_row(label, row))
            except StopTraining:
                self.stopped = True
                end = (f"stopped; checkpoint saved: continue with "
                       f"<code>monitor.train(resume=\"{trainer.run_dir}\")</code>")
            except BaseException as exc:  # a background run has no one else to report to
                self.error = exc
                end = f"failed: {type(exc).__name__}: {exc}"
            if self.stopped or self.error is not None:
                break
        self.stop_button.disabled = True
        self.draw()
        self.status.value = f"<b>{label}</b>: {end}"
        for handle in self._handles:  # a page without a kernel keeps the final picture
            handle.update(_bundle(self.widget, self.image.value), raw=True)

    def _register(self, trainer: Trainer, label: str, resumed: bool) -> None:
        # A resumed trainer has cut its CSV back to its checkpoint: those rows are the run so far.
        self.rows[label] = read_progress(trainer.run_dir).to_dict("records") if resumed else []
        self.run_dirs[label] = trainer.run_dir
        self.limits[label] = trainer.cost_limit
        self.target_kl = trainer.cfg.target_kl
        self.status.value = f"<b>{label}</b>: training {trainer.cfg.algo} on {trainer.cfg.env_id}..."

    def _on_row(self, label: str, row: dict[str, Any]) -> None:
        """The trainer's callback: keep the row, redraw, honour a pressed stop button."""
        self.rows[label].append(row)
        if time.monotonic() - self._last_draw >= self.redraw_every_s:
            self.draw()
        if self._stop.is_set():
            raise StopTraining

    def stop(self) -> None:
        """End the running run after its current iteration, with a checkpoint."""
        if self.running or not self.stop_button.disabled:
            self._stop.set()
            self.status.value += " stopping after this iteration..."

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background run ends; raise what ended it if it failed.

        A cell that blocks here keeps the stop button's click from reaching the kernel, so the
        kernel's interrupt (Ctrl-C, the stop square in Lab) stops the run cleanly instead, then
        interrupts the cell as usual."""
        if self._thread is None:
            return
        try:
            self._thread.join(timeout)
        except KeyboardInterrupt:
            self._stop.set()
            self._thread.join()
            raise
        if self.error is not None:
            raise self.error

    def draw(self) -> None:
        """Redraw every panel from the rows so far and refresh the image."""
        with self._lock:
            self._last_draw = time.monotonic()
            self.figure.clear()
            axes = self.figure.subplots(*MONITOR_GRID).ravel()
            ax_ret, ax_cost = axes[:2]
            frames = {label: [pd.DataFrame(rows)] for label, rows in self.rows.items() if rows}
            for label, (df,) in frames.items():
                ax_ret.plot(df["step"], df["ep_return"], label=label)
                ax_cost.plot(df["step"], df["ep_cost"], label=label)
            limits = sorted({self.limits[label] for label in frames})
            for d in limits:
                ax_cost.axhline(d, color="k", ls="--", lw=1, label=f"cost limit {d:g}")
            ax_ret.set(title="episode return", xlabel="environment steps", ylabel="return")
            ax_cost.set(title="episode cost", xlabel="environment steps", ylabel="cost")
            for ax in (ax_ret, ax_cost):
                ax.grid(alpha=0.3)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7)
            plot_diagnostic_frames(frames, list(axes[2:]),
                                   cost_limit=limits[0] if len(limits) == 1 else None,
                                   target_kl=self.target_kl)
            self.image.value = _png(self.figure)
            self.redraws += 1
            last = [(label, rows[-1]) for label, rows in self.rows.items() if rows]
            if last and not self.stop_button.disabled:
                label, row = last[-1]
                self.status.value = (f"<b>{label}</b>: step {int(row['step'])}, return "
                                     f"{row['ep_return']:.2f}, cost {row['ep_cost']:.2f}, "
                                     f"mode {row['mode']}")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self._handles.append(display(_bundle(self.widget, self.image.value), raw=True,
                                     display_id=True))
