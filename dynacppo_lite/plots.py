"""Figures: learning curves with the cost limit drawn, and the E-step plane.

Only matplotlib and pandas here; the training loop never imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from dynacppo_lite.envs.presets import default_cost_limit
from dynacppo_lite.runlog import read_progress


def run_cost_limit(run_dir: str | Path) -> float:
    """The cost limit a run used (its config, or the task's default)."""
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    return cfg["cost_limit"] if cfg.get("cost_limit") is not None else default_cost_limit(cfg["env_id"])


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average what exists)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_learning_curves(run_dirs: Sequence[str | Path], smoothing: int = 1,
                         labels: Sequence[str] | None = None,
                         axes: Sequence[plt.Axes] | None = None) -> plt.Figure:
    """Episode return and cost against environment steps for each run, cost limit dashed."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    else:
        fig = axes[0].figure
    limits = set()
    for k, run in enumerate(run_dirs):
        df = read_progress(run)
        label = labels[k] if labels is not None else Path(run).name
        axes[0].plot(df["step"], smooth(df["ep_return"], smoothing), label=label)
        axes[1].plot(df["step"], smooth(df["ep_cost"], smoothing), label=label)
        limits.add(run_cost_limit(run))
    for d in sorted(limits):
        axes[1].axhline(d, color="k", ls="--", lw=1, label=f"cost limit {d:g}")
    axes[0].set(xlabel="environment steps", ylabel="episode return", title="Return")
    axes[1].set(xlabel="environment steps", ylabel="episode cost", title="Cost")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_learning_curves(run_dirs: Sequence[str | Path], out: str | Path, smoothing: int = 3) -> Path:
    """:func:`plot_learning_curves` written to ``out`` (PNG); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_learning_curves(run_dirs, smoothing=smoothing)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
