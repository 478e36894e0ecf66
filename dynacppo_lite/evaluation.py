"""Evaluating a trained run: episodes of its policy with the observation normaliser frozen.

``evaluate(run_dir)`` loads the run's ``checkpoint.pt`` (the agent and the normaliser statistics
it was trained with), steps fresh envs with the policy's mean action (or samples from it) and
returns each episode's return, cost and length. The normaliser is *frozen*: evaluation never
changes the statistics the policy was trained on. The command line form is
``python -m dynacppo_lite evaluate RUN_DIR``.

A run on a custom task (``register_env``) needs that task registered again in the evaluating
process before ``evaluate`` builds its envs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacppo_lite.config import Config
from dynacppo_lite.envs import default_cost_limit, make_env
from dynacppo_lite.nets import ActorCritic, sample_action
from dynacppo_lite.runlog import load_checkpoint, saved_obs_norm


@dataclass
class Evaluation:
    """Per-episode results of :func:`evaluate` (raw env units, undiscounted) and their means."""

    run_dir: str
    env_id: str
    cost_limit: float
    deterministic: bool
    seed: int
    returns: np.ndarray = field(repr=False)
    costs: np.ndarray = field(repr=False)
    lengths: np.ndarray = field(repr=False)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def mean_cost(self) -> float:
        return float(np.mean(self.costs))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))

    @property
    def satisfied(self) -> bool:
        """The mean episode cost is at most the run's cost limit."""
        return self.mean_cost <= self.cost_limit

    def table(self) -> str:
        """A markdown table: one row per episode, then the mean."""
        lines = ["| episode | return | cost | length |", "|---:|---:|---:|---:|"]
        lines += [f"| {i} | {r:.3f} | {c:.3f} | {n:d} |"
                  for i, (r, c, n) in enumerate(zip(self.returns, self.costs, self.lengths, strict=True))]
        lines.append(f"| mean | {self.mean_return:.3f} | {self.mean_cost:.3f} | {self.mean_length:.1f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "env_id": self.env_id, "cost_limit": self.cost_limit,
                "deterministic": self.deterministic, "seed": self.seed,
                "returns": self.returns.tolist(), "costs": self.costs.tolist(),
                "lengths": self.lengths.tolist(), "mean_return": self.mean_return,
                "mean_cost": self.mean_cost, "mean_length": self.mean_length,
                "satisfied": self.satisfied}


def load_trained(run_dir: str | Path, *, num_envs: int = 1, seed: int = 0,
                 render_mode: str | None = None, freeze_obs_norm: bool = True,
                 coordinates: bool = False) -> tuple[Config, Any, ActorCritic]:
    """A run's agent and a fresh env to run it in: ``(config, envs, agent)``.

    ``agent`` (an ``nets.ActorCritic``: ``agent.pi`` the policy, ``agent.v_r``/``agent.v_c`` the
    critics) is loaded from the run's ``checkpoint.pt``. ``envs`` is ``make_env(config.env_id,
    num_envs, seed)`` scaling observations with the run's normaliser statistics, *frozen*
    (``freeze_obs_norm``): stepping it does not change them. The caller closes ``envs``. For
    episode returns and costs, use :func:`evaluate`. ``coordinates``: the envs also record the
    coordinate state (``make_env(coordinates=True)``, navigation tasks)."""
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    cfg = Config.from_dict(ckpt["config"])
    envs = make_env(cfg.env_id, num_envs=num_envs, seed=seed, render_mode=render_mode,
                    max_episode_steps=cfg.max_episode_steps, coordinates=coordinates)
    envs.load_state_dict(saved_obs_norm(ckpt))
    envs.frozen = freeze_obs_norm
    agent = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space.shape[0],
                        cfg.hidden, cfg.init_log_std)
    agent.load_state_dict(ckpt["agent"])
    return cfg, envs, agent


def evaluate(run_dir: str | Path, episodes: int = 10, deterministic: bool = True, seed: int = 12345,
             num_envs: int = 1, max_steps: int = 1_000_000) -> Evaluation:
    """Run ``episodes`` episodes of the run's policy; per-episode return, cost, length.

    Args:
        run_dir: a run directory (with ``checkpoint.pt``, as ``train`` writes it).
        episodes: how many complete episodes to record (the first ones to finish).
        deterministic: act with the policy's mean (True) or sample from it (False).
        seed: seeds the envs (env ``i`` with ``seed + i``) and, when sampling, torch.
        num_envs: envs stepped together (1 runs in this process).
        max_steps: a safety stop on vector steps, for a task whose episodes never end.

    Returns:
        :class:`Evaluation` with ``returns``, ``costs``, ``lengths`` (episodes,) and their means;
        ``cost_limit`` is the limit the run trained with.

    >>> ev = evaluate("runs/cppo_ToySpeedLimit-v0_s0", episodes=5)      # doctest: +SKIP
    >>> ev.mean_return, ev.mean_cost, ev.satisfied                      # doctest: +SKIP
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    cfg, envs, agent = load_trained(run_dir, num_envs=num_envs, seed=seed)
    cost_limit = _run_cost_limit(Path(run_dir), cfg)
    try:
        r, c, n = run_episodes(agent, envs, episodes, deterministic=deterministic, seed=seed,
                               max_steps=max_steps)
    finally:
        envs.close()
    return Evaluation(str(run_dir), cfg.env_id, cost_limit, deterministic, seed, r, c, n.astype(int))


def run_episodes(agent: ActorCritic, envs: Any, episodes: int, *, deterministic: bool, seed: int,
                 max_steps: int = 1_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``episodes`` episodes to end in ``envs`` (reset here) under ``agent.pi``:
    (returns, costs, lengths), each (episodes,). ``deterministic``: act with the mean; else
    sample with a generator seeded by ``seed``. Does not close ``envs``."""
    gen = torch.Generator().manual_seed(seed)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    done_eps: list[tuple[float, float, int]] = []
    obs, _ = envs.reset()
    for _ in range(max_steps):
        with torch.no_grad():
            dist = agent.pi(torch.as_tensor(obs, dtype=torch.float32))
            act = sample_action(dist.mean, dist.stddev, gen, deterministic=deterministic)
        obs, _, _, _, _, info = envs.step(np.clip(act.numpy(), low, high))
        if "episode" in info:
            for i in np.flatnonzero(info["_episode"]):
                ep = info["episode"]
                done_eps.append((float(ep["r"][i]), float(ep["c"][i]), int(ep["l"][i])))
        if len(done_eps) >= episodes:
            break
    else:
        raise RuntimeError(f"evaluate: only {len(done_eps)} of {episodes} episodes ended within "
                           f"{max_steps} steps")
    r, c, n = (np.array(x) for x in zip(*done_eps[:episodes], strict=True))
    return r, c, n.astype(int)


def _run_cost_limit(run_dir: Path, cfg: Config) -> float:
    """The limit recorded in config.json (runs since the course kit), else the checkpoint's."""
    path = run_dir / "config.json"
    saved = json.loads(path.read_text()).get("cost_limit") if path.is_file() else None
    if saved is None:
        saved = cfg.cost_limit
    return float(saved) if saved is not None else float(default_cost_limit(cfg.env_id))
