"""Collecting a batch of real experience from a vector env with one batched inference per step."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from dynacppo_lite.nets import ActorCritic, NumpyActor


@dataclass
class Rollout:
    """T steps of E envs. Tensors are (T, E, ...) on the agent's device; numpy arrays are raw.

    ``next_values_*[t]`` is V(s_{t+1}) of the true next state: the next observation, or at an
    episode end the episode's final observation (gymnasium autoresets, so ``obs[t+1]`` is then
    the first observation of the next episode).
    """

    obs: torch.Tensor
    act: torch.Tensor
    logp: torch.Tensor
    rew: torch.Tensor
    cost: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    values_r: torch.Tensor
    values_c: torch.Tensor
    next_values_r: torch.Tensor
    next_values_c: torch.Tensor
    raw_obs: np.ndarray
    """(T, E, obs_dim) unnormalised observations (for the dynamics model)."""
    raw_next_obs: np.ndarray
    """(T, E, obs_dim) unnormalised true next observations."""
    env_act: np.ndarray
    """(T, E, act_dim) the actions the envs received (clipped to the action space)."""
    episodes: list[tuple[float, float, int]]
    """(return, cost, length) of every episode that ended in this rollout (raw units)."""
    states: np.ndarray | None = None
    """(T, E, D) the privileged state rows the envs record (``make_env(coordinates=True)``:
    ``envs.coordinates.state_vector``), None where they record none. For a model only."""
    next_states: np.ndarray | None = None
    """(T, E, D) the state after each step (at an episode end, the state it ended in)."""


class Collector:
    """Steps ``envs`` with ``agent`` and keeps the current observation between rollouts."""

    def __init__(self, envs: gym.vector.VectorEnv, agent: ActorCritic, device: torch.device,
                 seed: int | None = None) -> None:
        self.envs = envs
        self.agent = agent
        self.device = device
        self.low = envs.single_action_space.low
        self.high = envs.single_action_space.high
        obs, info = envs.reset(seed=seed)
        # Action noise comes from this generator (the numpy actor), seeded with the envs.
        self.rng = np.random.default_rng(seed)
        self.time_env = 0.0
        """Seconds spent in ``envs.step`` during the last :meth:`collect`."""
        self.time_infer = 0.0
        """Seconds spent in policy/critic inference (acting and the batched log-probs and
        values) during the last :meth:`collect`."""
        self.obs = obs
        self.raw_obs = info.get("raw_obs", obs)
        self.state = info.get("state")  # (E, D) where the envs record a state, else None

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    def collect(self, num_steps: int) -> Rollout:
        """Run ``num_steps`` steps in every env (num_steps * E transitions).

        Acting uses a numpy snapshot of the policy (:class:`NumpyActor`); log-probabilities and
        values are then computed by the torch networks in one batch over the whole rollout, so
        ``logp_old`` is exactly what the M-step's torch forward gives at its first step.
        """
        T, E = num_steps, self.envs.num_envs
        obs_dim = self.obs.shape[-1]
        obs = np.zeros((T, E, obs_dim), dtype=np.float32)
        act = np.zeros((T, E, *self.low.shape), dtype=np.float32)
        rew, cost = np.zeros((T, E)), np.zeros((T, E))
        term, trunc = np.zeros((T, E), dtype=bool), np.zeros((T, E), dtype=bool)
        raw_obs = np.zeros((T, E, obs_dim))
        raw_next = np.zeros((T, E, obs_dim))
        env_act = np.zeros((T, E, *self.low.shape))
        states = next_states = None
        if self.state is not None:
            states, next_states = (np.zeros((T, *self.state.shape)) for _ in range(2))
        finals: list[tuple[int, np.ndarray, np.ndarray]] = []
        episodes: list[tuple[float, float, int]] = []
        actor = NumpyActor(self.agent.pi, self.rng)
        self.time_env = self.time_infer = 0.0
        for t in range(T):
            t0 = time.perf_counter()
            obs[t] = self.obs
            raw_obs[t] = self.raw_obs
            act[t] = actor(obs[t])
            env_act[t] = np.clip(act[t], self.low, self.high)
            t1 = time.perf_counter()
            next_obs, rew[t], cost[t], term[t], trunc[t], info = self.envs.step(env_act[t])
            t2 = time.perf_counter()
            self.time_infer += t1 - t0
            self.time_env += t2 - t1
            next_raw = info.get("raw_obs", next_obs)
            raw_next[t] = next_raw
            if states is not None:
                states[t] = self.state
                next_states[t] = self.state = info["state"]
            done = term[t] | trunc[t]
            if done.any():
                idx = np.flatnonzero(done)
                finals.append((t, idx, np.stack(info["final_observation"][idx])))
                raw_next[t, idx] = np.stack(info.get("raw_final_observation",
                                                     info["final_observation"])[idx])
                if states is not None:
                    next_states[t, idx] = info["final_state"][idx]
                ep = info["episode"]
                episodes += [(float(ep["r"][i]), float(ep["c"][i]), int(ep["l"][i])) for i in idx]
            self.obs, self.raw_obs = next_obs, next_raw
        t0 = time.perf_counter()
        obs_t, act_t = self._tensor(obs), self._tensor(act)
        with torch.no_grad():
            flat = obs_t.reshape(T * E, obs_dim)
            logp = self.agent.pi.log_prob(self.agent.pi(flat), act_t.reshape(T * E, -1)).reshape(T, E)
            v_r, v_c = (v.reshape(T, E) for v in self.agent.values(flat))
            # V(s_{t+1}): the next row's value, the value after the last step, and at episode
            # ends the value of the final observation (obs[t+1] is then the next episode's start).
            next_v_r, next_v_c = torch.empty_like(v_r), torch.empty_like(v_c)
            next_v_r[:-1], next_v_c[:-1] = v_r[1:], v_c[1:]
            next_v_r[-1], next_v_c[-1] = self.agent.values(self._tensor(self.obs))
            if finals:
                fv_r, fv_c = self.agent.values(self._tensor(np.concatenate([f for _, _, f in finals])))
                rows = torch.as_tensor(np.concatenate([np.full(len(i), t) for t, i, _ in finals]),
                                       device=self.device)
                cols = torch.as_tensor(np.concatenate([i for _, i, _ in finals]), device=self.device)
                next_v_r[rows, cols], next_v_c[rows, cols] = fv_r, fv_c
        self.time_infer += time.perf_counter() - t0
        return Rollout(
            obs=obs_t, act=act_t, logp=logp, rew=self._tensor(rew), cost=self._tensor(cost),
            terminated=torch.as_tensor(term, device=self.device),
            truncated=torch.as_tensor(trunc, device=self.device),
            values_r=v_r, values_c=v_c, next_values_r=next_v_r, next_values_c=next_v_c,
            raw_obs=raw_obs, raw_next_obs=raw_next, env_act=env_act, episodes=episodes,
            states=states, next_states=next_states,
        )
