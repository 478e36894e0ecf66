"""Vector-env wrappers: the Safety-Gymnasium 6-tuple, episode statistics, observation scaling.

:class:`NormalizeObservation` wraps every env :func:`~dynacppo_lite.envs.make_env` returns.
:class:`CostInInfo` and :class:`SafeVectorEnv` build ``make_env(lean=False)``, gymnasium's own
vector envs, which the lean ones (:mod:`dynacppo_lite.envs.vector`) are tested and timed against.

gymnasium 0.28's vector envs speak the 5-tuple ``(obs, reward, terminated, truncated, info)``.
Each sub-env therefore carries its cost in ``info["cost"]`` (:class:`CostInInfo`) and
:class:`SafeVectorEnv` turns the batch back into ``(obs, reward, cost, terminated, truncated,
info)``. Autoreset is gymnasium's: when env ``i`` ends, ``obs[i]`` is already the first
observation of its next episode and the true last observation is
``info["final_observation"][i]`` (the trainer bootstraps truncated episodes from it).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers.normalize import RunningMeanStd


class CostInInfo(gym.Wrapper):
    """Single env: 6-tuple step -> 5-tuple step with the cost in ``info["cost"]``."""

    def step(self, action: Any):
        obs, reward, cost, terminated, truncated, info = self.env.step(action)
        info["cost"] = float(cost)
        return obs, reward, terminated, truncated, info


class CostInStep(gym.Wrapper):
    """Single env: 5-tuple step with ``info["cost"]`` -> the 6-tuple (the inverse of
    :class:`CostInInfo`), for tasks registered with gymnasium (``register_env``)."""

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, info["cost"], terminated, truncated, info


class SafeVectorEnv(gym.vector.VectorEnvWrapper):
    """A vector env of :class:`CostInInfo` envs that steps with the 6-tuple API.

    Also records episode statistics from the raw (never normalised) rewards and costs: when
    env ``i`` finishes an episode, ``info["episode"]`` holds arrays ``r`` (return), ``c`` (cost)
    and ``l`` (length) and ``info["_episode"][i]`` is True, as gymnasium's
    ``RecordEpisodeStatistics`` does.
    """

    def __init__(self, env: gym.vector.VectorEnv, seed: int | None = None) -> None:
        super().__init__(env)
        self._first_seed = seed
        self._ret = np.zeros(self.num_envs)
        self._cost = np.zeros(self.num_envs)
        self._len = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        # The first reset uses make_env's seed, so make_env(seed=s).reset() is reproducible.
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        self._ret[:] = 0.0
        self._cost[:] = 0.0
        self._len[:] = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        cost = np.zeros(self.num_envs)
        if "cost" in info:  # absent when every env has just reset
            cost[info["_cost"]] = info["cost"][info["_cost"]]
        # A finished env's step info sits in final_info (its info is the next episode's reset).
        for i in np.flatnonzero(done):
            cost[i] = info["final_info"][i]["cost"]
        self._ret += reward
        self._cost += cost
        self._len += 1
        if done.any():
            info["episode"] = {
                "r": np.where(done, self._ret, 0.0),
                "c": np.where(done, self._cost, 0.0),
                "l": np.where(done, self._len, 0),
            }
            info["_episode"] = done
            self._ret[done] = 0.0
            self._cost[done] = 0.0
            self._len[done] = 0
        return obs, reward, cost, terminated, truncated, info


class NormalizeObservation(gym.vector.VectorEnvWrapper):
    """Running mean/variance observation scaling for a :class:`SafeVectorEnv`.

    ``obs_norm = clip((obs - mean) / sqrt(var + eps), -clip, clip)``. Unlike gymnasium's
    wrapper it also scales ``info["final_observation"]``, since the trainer evaluates V(s_T)
    of truncated episodes on it. The unscaled observations stay available as
    ``info["raw_obs"]`` and ``info["raw_final_observation"]`` (the dynamics model learns in raw
    units). ``frozen = True`` stops the statistics (for evaluation).
    """

    def __init__(self, env: gym.vector.VectorEnv, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__(env)
        shape = self.single_observation_space.shape
        self.obs_rms = RunningMeanStd(shape=shape)
        self.clip = clip
        self.eps = eps
        self.frozen = False
        # Per step, these make the scaling cheap (numpy's fixed cost per call dominates at this
        # size: np.clip ~9 us, an op with a Python float ~0.8 us, with an array ~0.4 us).
        self._low, self._high = np.full(shape, -clip), np.full(shape, clip)
        self._std_of: np.ndarray | None = None  # the ``obs_rms.var`` that ``_std`` is sqrt of
        self._std = np.ones(shape)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Scale one observation (obs_dim,) or a batch (B, obs_dim) with the current statistics:
        the values of ``np.clip((obs - mean) / np.sqrt(var + eps), -clip, clip)``."""
        rms = self.obs_rms
        if self._std_of is not rms.var:
            self._std = np.sqrt(rms.var + self.eps)
            self._std_of = rms.var
        scaled = obs - rms.mean
        scaled /= self._std
        return np.minimum(np.maximum(scaled, self._low), self._high)

    def update(self, obs: np.ndarray) -> None:
        """Add a batch (B, obs_dim) of finite observations to the running statistics.

        Exactly gymnasium's ``RunningMeanStd.update``. For one observation (B = 1, one env) its
        batch mean is the observation itself and its batch variance 0, so the update reduces to
        the operations below, bit for bit, without ``np.mean``/``np.var`` (which cost more than
        the update itself at this size).
        """
        rms = self.obs_rms
        if obs.shape[0] != 1:
            rms.update(obs)
            return
        tot = rms.count + 1
        delta = obs[0] - rms.mean
        m2 = rms.var * rms.count
        spread = np.square(delta)
        spread *= rms.count
        spread /= tot
        m2 += spread
        delta /= tot
        rms.mean = rms.mean + delta
        m2 /= tot
        rms.var, rms.count = m2, tot

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info["raw_obs"] = obs
        if not self.frozen:
            self.update(obs)
        return self.normalize(obs), info

    def step(self, actions: np.ndarray):
        obs, reward, cost, terminated, truncated, info = self.env.step(actions)
        info["raw_obs"] = obs
        if not self.frozen:
            self.update(obs)
        # Final observations use the same statistics as the observations returned with them.
        if "final_observation" in info:
            info["raw_final_observation"] = info["final_observation"]
            final = info["final_observation"].copy()
            for i in np.flatnonzero(info["_final_observation"]):
                final[i] = self.normalize(final[i])
            info["final_observation"] = final
        return self.normalize(obs), reward, cost, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.obs_rms.mean.copy(), "var": self.obs_rms.var.copy(),
                "count": float(self.obs_rms.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        if mean.shape != self.obs_rms.mean.shape:
            raise ValueError(f"normaliser shape {mean.shape} does not match the env's "
                             f"observation shape {self.obs_rms.mean.shape}")
        self.obs_rms.mean = mean
        self.obs_rms.var = np.asarray(state["var"], dtype=np.float64)
        self.obs_rms.count = float(state["count"])
