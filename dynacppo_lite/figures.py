"""Regenerate the figures in ``figures/`` from the library (``make figures``).

Every image in ``figures/`` is produced here (or by a notebook run in full mode, which saves
the same file names): no hand-made pictures. Each ``fig_*`` function runs the library code
behind one notebook's picture and returns a matplotlib figure; :func:`regenerate` writes them
all and returns the paths.

=================================  ===========================================================
file                               what it shows (notebook)
=================================  ===========================================================
01_dynamics_errors.png             open-loop errors and disagreement of the ensemble (01)
01_coordinate_model.png            R^2 per group, flat vs coordinate model; a branch drawn (01)
02_gae_perfect_critic.png          termination vs truncation with a perfect critic (02)
02_gae_bootstrap.png               the same on a real rollout, reward and cost (02)
02_advantage_scatter.png           reward vs cost advantages of a real rollout (02)
03_estep_cases.png                 the three cases of Theorem 3.4 in the A-A_c plane (03)
03_estep_clipping.png              Algorithm 1's passes: heuristic vs exact over the bound (03)
04_mstep_clip.png                  the tracking loss and its gradient with the lower clip (04)
04_mstep_linear.png                tracking vs linear M-step on real batches, epoch by epoch (04)
05_learning_curves.png             CPPO, PPO-Lag, Dyna-CPPO with the cost limit (05)
05_dyna_diagnostics.png            what Dyna-CPPO's model contributes, iteration by iteration (05)
05_policy.gif                      the trained policy, rendered headless (05)
06_run_browser.png                 the run browser on notebook 5's runs (06)
train_learning_curve.png           ``make train``'s run, when ``runs/`` holds it (README)
=================================  ===========================================================

The notebooks save the same file names in full mode, from the same library calls with their
own (larger) budgets. ``regenerate`` keeps to budgets a CPU can afford: the rollout figures of
notebook 2 come from a short toy-task run, and the learning curves, the GIF and the run browser
use notebook 5's full-mode runs when they exist (else short toy runs, and no GIF).

Headless rendering: MuJoCo draws offscreen through EGL (``MUJOCO_GL=egl``,
``PYOPENGL_PLATFORM=egl``, Debian's libegl1/libegl-mesa0/libgl1-mesa-dri: Mesa's software EGL on
a CPU-only machine, the GPU's EGL where there is one). OSMesa is not installed on these
machines, so ``MUJOCO_GL=osmesa`` fails. Both variables must be set before ``mujoco`` is first
imported; :func:`use_egl` does that.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

SMOKE_ENV = "ToySpeedLimit-v0"
FULL_ENV = "SafetyPointGoal1-v0"


def use_egl() -> None:
    """Ask MuJoCo for offscreen EGL rendering (no display needed); a no-op for variables the user
    already set. Safest before ``mujoco`` is first imported (``import dynacppo_lite`` may import
    it); gymnasium's renderer reads ``MUJOCO_GL`` when it first renders, but PyOpenGL reads
    ``PYOPENGL_PLATFORM`` once, when ``OpenGL`` is imported."""
    if "OpenGL" in sys.modules and os.environ.get("PYOPENGL_PLATFORM", "egl") != "egl":
        import warnings

        warnings.warn("PyOpenGL was imported with another PYOPENGL_PLATFORM: EGL rendering may "
                      "fail", stacklevel=2)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def project_root() -> Path:
    """The repository root (where ``pyproject.toml`` is), else the current directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def figure_path(name: str, out_dir: str | Path | None = None) -> Path:
    """``figures/<name>`` under the project root (or ``out_dir``), folder created."""
    folder = Path(out_dir) if out_dir is not None else project_root() / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def save(fig: Any, name: str, out_dir: str | Path | None = None, dpi: int = 120) -> Path:
    """Write a matplotlib figure to :func:`figure_path` and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = figure_path(name, out_dir)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ data helpers
def random_transitions(env_id: str, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``steps`` transitions of one env under uniformly random actions, raw (unnormalised)
    units: obs, act, rew, cost, next_obs (true next state, also at episode ends), done."""
    from dynacppo_lite import make_env

    env = make_env(env_id, 1, seed, normalize_obs=False)
    obs, _ = env.reset()
    out: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "cost", "next_obs", "done")}
    for _ in range(steps):
        act = env.action_space.sample()
        nxt, rew, cost, term, trunc, info = env.step(act)
        done = bool(term[0] or trunc[0])
        true_next = info["final_observation"][0] if done else nxt[0]
        for key, val in zip(out, (obs[0], act[0], rew[0], cost[0], true_next, done), strict=True):
            out[key].append(val)
        obs = nxt
    env.close()
    return {k: np.asarray(v, dtype=bool if k == "done" else np.float32) for k, v in out.items()}


# ---------------------------------------------------------------------------------- figures
def fig_dynamics(smoke: bool = False, seed: int = 0):
    """01: fit the ensemble on random-policy transitions; its open-loop errors against
    predict-no-change, and ModelEnv's disagreement along branches and after one step."""
    import matplotlib.pyplot as plt
    import torch

    from dynacppo_lite.config import Config
    from dynacppo_lite.dynamics import DynamicsEnsemble, ModelEnv
    from dynacppo_lite.plots import plot_branch_disagreement, plot_disagreement, plot_open_loop_errors

    cfg = Config()
    env_id = SMOKE_ENV if smoke else FULL_ENV
    data = random_transitions(env_id, 2_000 if smoke else 20_000, seed)
    test = random_transitions(env_id, 500 if smoke else 3_000, seed + 1)
    obs_dim, act_dim = data["obs"].shape[1], data["act"].shape[1]
    ens = DynamicsEnsemble(obs_dim, act_dim, ensemble_size=5, hidden=(64, 64) if smoke else (200, 200),
                           seed=seed)
    ens.fit(data["obs"], data["act"], data["rew"], data["cost"], data["next_obs"],
            max_epochs=10 if smoke else 60)
    horizon, k = (10 if smoke else 25), cfg.model_horizon
    real = [test[key][:, None] for key in ("obs", "act", "rew", "cost", "next_obs", "done")]
    errors = ens.open_loop_errors(*real, horizon)
    baseline = ens.open_loop_errors(*real, horizon, predict_no_change=True)
    starts = np.arange(len(test["obs"]) - k + 1)
    model_env = ModelEnv(ens, kappa=cfg.kappa, disagreement_threshold=cfg.disagreement_threshold,
                         generator=torch.Generator().manual_seed(seed))
    branch_dis = model_env.replay(test["obs"], test["act"], k)[0].numpy()  # (k, B); row 0: one step
    mean, _ = ens.predict(test["obs"][starts], test["act"][starts])
    pred = test["obs"][starts] + mean.mean(0)[:, :obs_dim].numpy()
    err = ((pred - test["next_obs"][starts]) ** 2).mean(1)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    plot_open_loop_errors(errors, baseline, axes=axes[0], title=f"{env_id}: ", model_horizon=k)
    plot_branch_disagreement(branch_dis, cfg.disagreement_threshold, axes=axes[1, :2])
    plot_disagreement(branch_dis[0], err, threshold=cfg.disagreement_threshold, ax=axes[1, 2])
    fig.tight_layout()
    return fig


def quiet_window(data: Any, steps: np.ndarray, horizon: int) -> int:
    """The start t among ``steps`` (indices of a ``bench.model.RecordedSteps``) of the
    ``horizon`` steps t..t + horizon - 1 in which no episode ends and no new goal is drawn (so
    the arena stays as it was), the robot travelling furthest; ValueError if there is none."""
    from dynacppo_lite.envs.coordinate_model import redrawn

    stop = data.done | redrawn(data.spec, data.rows, data.next_rows)
    starts = [t for t in steps if t + horizon <= len(stop) and not stop[t:t + horizon].any()]
    if not starts:
        raise ValueError(f"no {horizon} steps without an episode end or a new goal")
    path = np.linalg.norm(np.diff(data.rows[:, :2], axis=0), axis=1)
    return max(starts, key=lambda t: path[t:t + horizon].sum())


def fig_coordinate_model(smoke: bool = False, seed: int = 0, horizon: int = 60, draws: int = 5):
    """01: the flat ensemble against the coordinate model on a trained policy's steps of
    SafetyPointGoal1-v0 (``bench.model``: held-out one-step R^2 per group), and ``draws``
    imagined branches of ``horizon`` steps beside the real trajectory in the arena."""
    import matplotlib.pyplot as plt
    import torch

    from dynacppo_lite.bench.model import R2_POLICY, fit_both, r2_rows, record_steps
    from dynacppo_lite.envs.coordinate_model import CoordinateModelEnv
    from dynacppo_lite.envs.coordinates import state_from_vector
    from dynacppo_lite.plots import plot_arena_branch, plot_r2_groups

    steps = 3_000 if smoke else 10_000
    data = record_steps(R2_POLICY, steps, seed)
    split = int(0.8 * steps)
    test = np.arange(split, steps)
    flat, coordinates, _ = fit_both(data, np.arange(split), 20 if smoke else 100, seed,
                                    hidden=(64, 64) if smoke else (200, 200))
    rows = r2_rows(flat, coordinates, data, test)
    t = quiet_window(data, test, horizon)
    model_env = CoordinateModelEnv(coordinates, data.spec,
                                   generator=torch.Generator().manual_seed(seed))
    model_env.reset(np.repeat(data.rows[t:t + 1], draws, axis=0))
    imagined = [model_env.state.position]
    for h in range(horizon):
        model_env.step(np.repeat(data.act[t + h:t + h + 1], draws, axis=0))
        imagined.append(model_env.state.position)
    real = state_from_vector(data.spec, np.concatenate([data.rows[t:t + horizon],
                                                        data.next_rows[t + horizon - 1:t + horizon]]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.4, 1]})
    plot_r2_groups({model: {r["group"]: r[model] for r in rows}
                    for model in ("flat ensemble", "coordinate model")}, ax=axes[0],
                   title=f"{data.env_id}: held-out one-step R^2 ({steps:,} steps)")
    plot_arena_branch(real, real.position, np.stack(imagined), ax=axes[1],
                      title=f"{horizon} real steps and {draws} imagined branches, same actions")
    fig.tight_layout()
    return fig


def pretrained_rollout(env_id: str = SMOKE_ENV, pretrain_steps: int = 5_000, steps: int = 200,
                       seed: int = 0) -> tuple[Any, Any, Any]:
    """A short CPPO run, then a fresh rollout of its agent (``rollout.Collector``) and its dual
    GAE: (config, rollout, gae), as notebook 2 builds them."""
    import torch

    from dynacppo_lite.config import Config
    from dynacppo_lite.evaluation import load_trained
    from dynacppo_lite.gae import dual_gae
    from dynacppo_lite.rollout import Collector
    from dynacppo_lite.train import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(algo="cppo", env_id=env_id, seed=seed, total_steps=pretrain_steps, num_envs=1,
                     steps_per_iter=1_000, pi_lr=3e-3, log_dir=tmp, run_name="pretrain", device="cpu")
        cfg, envs, agent = load_trained(train(cfg), seed=seed + 100)
    ro = Collector(envs, agent, torch.device("cpu"), seed=seed + 100).collect(steps)
    envs.close()
    adv = dual_gae(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r, ro.next_values_c,
                   ro.terminated, ro.truncated, gamma=cfg.gamma, lam=cfg.lam,
                   cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
    return cfg, ro, adv


def fig_gae_perfect_critic(gamma: float = 0.99, lam: float = 0.97):
    """02: with a perfect critic every advantage is 0, unless a time limit is passed as a
    termination (``gae.gae``)."""
    import matplotlib.pyplot as plt

    from dynacppo_lite.gae import gae
    from dynacppo_lite.plots import plot_gae_series

    T, limit = 80, 49
    flag = np.arange(T) == limit
    never = np.zeros(T, dtype=bool)
    v = np.full(T, 1 / (1 - gamma))  # reward 1 forever: V = 1 / (1 - gamma) everywhere
    ok = gae(np.ones(T), v, v, never, flag, gamma=gamma, lam=lam)
    bug = gae(np.ones(T), v, v, flag, never, gamma=gamma, lam=lam)
    t = np.arange(limit + 1)
    v_end = (1 - gamma ** (limit + 1 - t)) / (1 - gamma)  # a task that really ends at step 49
    end = t == limit
    ended = gae(np.ones(limit + 1), v_end, np.append(v_end[1:], 0.0), end, np.zeros_like(end),
                gamma=gamma, lam=lam)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
    plot_gae_series({"time limit passed as truncated": ok, "time limit passed as terminated (bug)": bug},
                    never, flag, ax=axes[0], ylabel="advantage", title="a time limit, perfect critic")
    plot_gae_series({"real end passed as terminated": ended}, end, np.zeros_like(end), ax=axes[1],
                    title="a real termination, perfect critic")
    fig.tight_layout()
    return fig


def fig_gae(rollout: Any = None, seed: int = 0):
    """02: reward and cost advantages of a real (toy-task) rollout, truncation bootstrapped vs
    treated as termination (``gae.dual_gae``)."""
    import matplotlib.pyplot as plt
    import torch

    from dynacppo_lite.gae import dual_gae
    from dynacppo_lite.plots import plot_gae_series

    cfg, ro, adv = rollout if rollout is not None else pretrained_rollout(seed=seed)
    buggy = dual_gae(ro.rew, ro.cost, ro.values_r, ro.values_c, ro.next_values_r, ro.next_values_c,
                     ro.terminated | ro.truncated, torch.zeros_like(ro.truncated), gamma=cfg.gamma,
                     lam=cfg.lam, cost_gamma=cfg.cost_gamma, cost_lam=cfg.cost_lam)
    term, trunc = ro.terminated[:, 0].numpy(), ro.truncated[:, 0].numpy()
    fig, axes = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
    plot_gae_series({"dual_gae (truncation bootstraps)": adv.adv_r[:, 0].numpy(),
                     "truncation treated as termination": buggy.adv_r[:, 0].numpy()},
                    term, trunc, ax=axes[0], ylabel="reward advantage A",
                    title=f"{cfg.env_id}: the bug bends the advantages before every time limit")
    plot_gae_series({"dual_gae": adv.adv_c[:, 0].numpy(),
                     "truncation treated as termination": buggy.adv_c[:, 0].numpy()},
                    term, trunc, ax=axes[1], ylabel="cost advantage A_c")
    fig.tight_layout()
    return fig


def fig_advantage_scatter(rollout: Any = None, seed: int = 0):
    """02: reward vs cost advantages of a real (toy-task) rollout."""
    import matplotlib.pyplot as plt

    from dynacppo_lite.plots import plot_advantage_scatter

    _, _, adv = rollout if rollout is not None else pretrained_rollout(steps=1_000, seed=seed)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    plot_advantage_scatter(adv.adv_r.numpy(), adv.adv_c.numpy(), ax=ax)
    fig.tight_layout()
    return fig


ESTEP_DEMO = {  # name -> (correlation, cost margin): one batch per case of Theorem 3.4
    "unconstrained": (0.1, 0.05),
    "constrained": (0.7, 0.0),
    "infeasible": (0.7, -0.4),
}


def fig_estep_cases(n: int = 256, kl_budget: float = 0.0518, lower_bound: float = 0.4):
    """03: the three cases in the A-A_c plane, exact and heuristic v*."""
    import matplotlib.pyplot as plt

    from dynacppo_lite.estep import solve_estep
    from dynacppo_lite.plots import plot_estep_plane, synthetic_advantages

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    for ax, (name, (rho, margin)) in zip(axes, ESTEP_DEMO.items(), strict=True):
        a, c = synthetic_advantages(n, rho, seed=1)
        res = {m: solve_estep(a, c, cost_margin=margin, kl_budget=kl_budget,
                              lower_bound=lower_bound, method=m) for m in ("exact", "heuristic")}
        plot_estep_plane(a, c, cost_margin=margin, kl_budget=kl_budget, ax=ax,
                         results={f"v* {m} ({r.mode})": r for m, r in res.items()},
                         title=f"{name}: corr {rho}, margin {margin}")
    fig.tight_layout()
    return fig


def fig_estep_clipping(n: int = 256, kl_budget: float = 0.2, seed: int = 2):
    """03: Algorithm 1's clipping passes and objective, heuristic vs exact, over the bound."""
    from dynacppo_lite.plots import plot_clipping_sweep, synthetic_advantages

    a, c = synthetic_advantages(n, 0.6, seed)
    a = np.sign(a) * np.abs(a) ** 2  # heavy tails: many entries hit the bound
    return plot_clipping_sweep(a, c, kl_budget=kl_budget, bounds=np.linspace(0.0, 0.9, 19))


def fig_mstep(lower_clip: float = 0.6, targets: tuple[float, ...] = (0.3, 1.5)):
    """04: the tracking objective and its gradient with and without the lower clip, one row per
    target v (``plots.plot_mstep_tracking``)."""
    import matplotlib.pyplot as plt

    from dynacppo_lite.plots import plot_mstep_tracking

    fig, axes = plt.subplots(len(targets), 2, figsize=(11, 3.2 * len(targets)), squeeze=False)
    for row, v in zip(axes, targets, strict=True):
        plot_mstep_tracking(v, lower_clip, axes=row)
    fig.tight_layout()
    return fig


def fig_mstep_study(smoke: bool = False, seed: int = 0):
    """04: the paper's tracking loss against the linear surrogate on real SafetyPointGoal1-v0
    batches of the shipped policy: realised KL, reach and held-out gain after each epoch
    (``bench.mstep.study``, ``plots.plot_mstep_study``)."""
    import matplotlib.pyplot as plt

    from dynacppo_lite.bench.mstep import tracking_vs_linear
    from dynacppo_lite.plots import plot_mstep_study

    cfg, _, traces = tracking_vs_linear(2 if smoke else 6, seed, steps=1_000 if smoke else None)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    plot_mstep_study(traces, target_kl=cfg.target_kl, axes=axes)
    fig.tight_layout()
    return fig


def fig_learning_curves(run_dirs: list[Path], title: str | None = None):
    """05: return and cost of runs, the cost limit dashed (``plots.plot_learning_curves``)."""
    from dynacppo_lite.plots import plot_learning_curves

    fig = plot_learning_curves(run_dirs, smoothing=3, labels=[Path(r).name for r in run_dirs])
    if title:
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
    return fig


def fig_dyna_diagnostics(runs: dict[str, Path]):
    """05: ``plots.plot_dyna_diagnostics`` for notebook 5's runs ``{algo: run_dir}`` (only the
    dyna-cppo run logs these columns; the others keep their colours)."""
    import matplotlib.pyplot as plt

    from dynacppo_lite.plots import plot_dyna_diagnostics

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.6))
    plot_dyna_diagnostics({algo: [run] for algo, run in runs.items()}, axes=axes)
    fig.tight_layout()
    return fig


def training_configs(smoke: bool, log_dir: str | Path, seed: int = 0,
                     device: str = "auto", num_envs: int = 1) -> list[Any]:
    """Notebook 05's three runs (CPPO, PPO-Lag, Dyna-CPPO): one budget, one seed.

    ``num_envs`` (full mode) > 1 steps that many envs in worker processes, e.g. 16 on a 16-core
    GPU machine; the run names then end in ``_n<num_envs>`` so they never reuse a 1-env run.
    """
    from dynacppo_lite.config import TOY_CONTROL, Config

    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    suffix = ""
    if smoke:
        common = dict(env_id=SMOKE_ENV, total_steps=8_000, steps_per_iter=1_000, num_envs=1,
                      pi_lr=3e-3, model_start_iter=2, model_hidden=(64, 64), ensemble_size=3,
                      model_fit_epochs=5, **TOY_CONTROL)
    else:  # what `bench learning` runs, under its run names, so its run directories can be reused
        common = dict(env_id=FULL_ENV, total_steps=1_000_000, steps_per_iter=4_000,
                      num_envs=num_envs)
        suffix = f"_n{num_envs}" if num_envs > 1 else ""
    return [Config(algo=algo, seed=seed, device=device, log_dir=str(log_dir),
                   run_name=f"{common['env_id']}_{algo}_s{seed}{suffix}", **common)
            for algo in ("cppo", "ppo-lag", "dyna-cppo")]


def train_or_reuse(configs: list[Any]) -> list[Path]:
    """Each config's run directory, after training what ``runlog.run_status`` says it needs:
    nothing for a finished run, the rest of an interrupted one (its own settings; the budget
    and the device are this config's), the whole of a new one."""
    from dynacppo_lite.runlog import run_status
    from dynacppo_lite.train import train

    runs = []
    for cfg in configs:
        run = Path(cfg.log_dir) / cfg.run_name
        changes = {"total_steps": cfg.total_steps, "device": cfg.device}
        status = run_status(run, changes)
        if status == "resume":
            run = train(resume=run, changes=changes)
        elif status == "train":
            run = train(cfg)
        runs.append(run)
    return runs


def render_policy_gif(out: str | Path, policy_file: str | Path | None = None, *,
                      env_id: str = FULL_ENV, steps: int = 200, fps: int = 25, size: int = 256,
                      camera_name: str | None = "fixedfar", seed: int = 0) -> Path:
    """Roll a policy in ``env_id`` and write the rendered frames as a GIF (imageio).

    ``policy_file``: a run's ``policy_final.pt`` (policy weights and the observation
    normaliser); ``None`` renders a fresh, untrained policy. The mean action is taken (no
    sampling). Rendering is offscreen through EGL (:func:`use_egl`).
    """
    use_egl()
    import dataclasses

    import imageio
    import torch

    from dynacppo_lite import make_env
    from dynacppo_lite.nets import GaussianPolicy
    from dynacppo_lite.runlog import saved_obs_norm

    env = make_env(env_id, 1, seed, render_mode="rgb_array")
    obs_dim, act_dim = env.single_observation_space.shape[0], env.single_action_space.shape[0]
    policy = GaussianPolicy(obs_dim, act_dim)
    if policy_file is not None:
        state = torch.load(policy_file, map_location="cpu", weights_only=True)
        hidden = tuple(state["config"]["hidden"])
        policy = GaussianPolicy(obs_dim, act_dim, hidden)
        policy.load_state_dict(state["policy"])
        env.load_state_dict(saved_obs_norm(state))
    env.frozen = True
    builder = env.unwrapped.envs[0].unwrapped  # the Safety-Gymnasium Builder: pick the camera
    if hasattr(builder, "render_parameters"):
        builder.render_parameters = dataclasses.replace(builder.render_parameters, width=size,
                                                        height=size, camera_name=camera_name)
    obs, _ = env.reset()
    frames = []
    for _ in range(steps):
        frames.append(env.call("render")[0])
        with torch.no_grad():
            act = policy(torch.as_tensor(obs, dtype=torch.float32)).mean
        act = np.clip(act.numpy(), env.single_action_space.low, env.single_action_space.high)
        obs, *_ = env.step(act)
    env.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(out, frames, duration=1000 / fps, loop=0)
    return out


# ------------------------------------------------------------------------------- everything
def regenerate(out_dir: str | Path | None = None, *, smoke: bool = False,
               runs_dir: str | Path | None = None) -> list[Path]:
    """Write every figure of the table above; returns their paths.

    Learning curves: the full-mode runs of notebook 05 (``runs/notebook05``) when all three
    have finished; otherwise three short toy-task runs are trained in a temporary folder (and
    the figure says so). The GIF is rendered only from a finished Safety-Gymnasium run.
    ``smoke=True`` uses the toy task and small sizes everywhere (for tests).
    """
    use_egl()  # before fig_dynamics imports mujoco (for the GIF at the end)
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    rollout = pretrained_rollout(steps=1_000)
    paths = [
        save(fig_dynamics(smoke), "01_dynamics_errors.png", out_dir),
        save(fig_coordinate_model(smoke), "01_coordinate_model.png", out_dir),
        save(fig_gae_perfect_critic(), "02_gae_perfect_critic.png", out_dir),
        save(fig_gae(_head(rollout, 200)), "02_gae_bootstrap.png", out_dir),
        save(fig_advantage_scatter(rollout), "02_advantage_scatter.png", out_dir),
        save(fig_estep_cases(), "03_estep_cases.png", out_dir),
        save(fig_estep_clipping(), "03_estep_clipping.png", out_dir),
        save(fig_mstep(), "04_mstep_clip.png", out_dir),
        save(fig_mstep_study(smoke), "04_mstep_linear.png", out_dir),
    ]
    runs_root = Path(runs_dir) if runs_dir is not None else project_root() / "runs" / "notebook05"
    full_cfgs = training_configs(False, runs_root)
    full = [runs_root / cfg.run_name for cfg in full_cfgs]
    with tempfile.TemporaryDirectory() as tmp:
        if not smoke and all(_finished(r, cfg.total_steps) for r, cfg in zip(full, full_cfgs, strict=True)):
            runs, title = full, f"{FULL_ENV}, same budget and seed"
        else:
            runs = train_or_reuse(training_configs(True, tmp, device="cpu"))
            title = f"{SMOKE_ENV}, short runs (notebook 5's full mode trains on {FULL_ENV})"
        paths.append(save(fig_learning_curves(runs, title), "05_learning_curves.png", out_dir))
        by_algo = {json.loads((Path(r) / "config.json").read_text())["algo"]: Path(r) for r in runs}
        paths.append(save(fig_dyna_diagnostics(by_algo), "05_dyna_diagnostics.png", out_dir))
        if runs is full:
            paths.append(render_policy_gif(figure_path("05_policy.gif", out_dir),
                                           full[0] / "policy_final.pt"))
        else:
            print(f"05_policy.gif: not rendered (no finished {FULL_ENV} run in {runs_root})")
        paths.append(save(fig_run_browser(Path(runs[0]).parent), "06_run_browser.png", out_dir))
    readme_run = _readme_run()
    if not smoke and (readme_run / "progress.csv").is_file():  # `make train`'s run, if there is one
        from dynacppo_lite.plots import save_learning_curves

        paths.append(save_learning_curves([readme_run], figure_path("train_learning_curve.png", out_dir)))
    for p in paths:
        print(p)
    return paths


def _readme_run() -> Path:
    """The run directory of ``make train`` (the CLI's ``readme`` preset)."""
    from dynacppo_lite.config import TRAIN_PRESETS, Config

    preset = TRAIN_PRESETS["readme"]
    return project_root() / preset.get("log_dir", Config().log_dir) / preset["run_name"]


def _finished(run_dir: Path, total_steps: int) -> bool:
    """A run directory whose run is finished for ``total_steps`` (``runlog.run_status``)."""
    from dynacppo_lite.runlog import run_status

    return run_status(run_dir, {"total_steps": total_steps}) == "finished"


def fig_run_browser(log_dir: str | Path):
    """06: the run browser's figure on a log directory (``widgets.RunBrowser``)."""
    from dynacppo_lite.widgets import RunBrowser

    browser = RunBrowser(log_dir, smoothing=3)
    browser.set(extra="kl")
    return browser.figure


def _head(rollout: tuple[Any, Any, Any], steps: int) -> tuple[Any, Any, Any]:
    """The first ``steps`` steps of a (config, rollout, gae) triple, for a readable time axis."""
    import dataclasses

    cfg, ro, adv = rollout
    cut = {f.name: getattr(ro, f.name)[:steps] if f.name != "episodes" else getattr(ro, f.name)
           for f in dataclasses.fields(ro)}
    adv_cut = type(adv)(**{k: getattr(adv, k)[:steps] for k in ("adv_r", "adv_c", "ret_r", "ret_c")})
    return cfg, type(ro)(**cut), adv_cut
