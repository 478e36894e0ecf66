"""The simulator as a perfect model: :class:`SimulatorEnv`, a MuJoCo task behind
``dynamics.ModelEnv``'s batched ``reset``/``step``.

Only for tasks whose observation is the simulator state without the x position (``qpos[1:]``,
``qvel``: the Safety velocity tasks such as SafetyHalfCheetahVelocity-v1), where a state can be
set from an observation. Dyna-CPPO branches in it with ``Config.dyna_model = "simulator"`` (the
ceiling of what imagined branches can give), and ``bench model`` compares the learned model
with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynacppo_lite.envs.make import single_env_factory


class SimulatorEnv:
    """The simulator behind ``ModelEnv``'s interface: B branches stepped one after another in
    one MuJoCo env, each set to its branch's state (``qpos = (0, obs[:nq - 1])``, ``qvel =
    obs[nq - 1:]``) before its step. Reward and cost are the env's; it never truncates a
    branch (the caller cuts it at its horizon). Tensors come back on ``device``.

    Raises a one-line ValueError for a task whose observation is not the MuJoCo state.
    """

    def __init__(self, env_id: str, seed: int = 0, *, fast: bool = True,
                 device: torch.device | str = "cpu") -> None:
        self.env = single_env_factory(env_id, fast=fast)()
        self.device = torch.device(device)
        obs, _ = self.env.reset(seed=seed)
        self.sim = self.env.unwrapped
        data = getattr(self.sim, "data", None)
        state = None if data is None else np.concatenate([data.qpos[1:], data.qvel])
        if state is None or state.shape != obs.shape or not np.allclose(state, obs):
            self.env.close()
            raise ValueError(f"the simulator as a model needs a task whose observation is the "
                             f"MuJoCo state (qpos[1:], qvel), like SafetyHalfCheetahVelocity-v1; "
                             f"{env_id} is not one")
        self.nq = data.qpos.shape[0]
        self._obs: np.ndarray | None = None

    def reset(self, start_obs: Any) -> tuple[torch.Tensor, dict]:
        """Start B branches at ``start_obs`` (B, obs_dim); returns (obs, {}) like ``ModelEnv``."""
        self._obs = np.asarray(torch.as_tensor(start_obs).cpu(), dtype=np.float64).copy()
        return torch.as_tensor(self._obs, dtype=torch.float32, device=self.device), {}

    def step(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor, dict]:
        """Advance every branch by one simulator step; ``actions`` is (B, act_dim). Returns
        ``ModelEnv.step``'s 6-tuple: next obs (B, obs_dim), reward, cost, terminated,
        truncated (all False) and an empty info."""
        if self._obs is None:
            raise RuntimeError("SimulatorEnv: call reset(start_obs) before step(actions)")
        acts = np.asarray(torch.as_tensor(actions).cpu(), dtype=np.float64)
        out = []
        for obs, act in zip(self._obs, acts, strict=True):
            self.env.reset()  # clears the time limit; the state is set just below
            self.sim.set_state(np.concatenate([[0.0], obs[:self.nq - 1]]), obs[self.nq - 1:])
            nxt, r, c, term, _, _ = self.env.step(act)
            out.append((nxt, r, c, term))
        nxt, r, c, term = (np.array(x) for x in zip(*out, strict=True))
        self._obs = nxt
        f32, dev = torch.float32, self.device
        return (torch.as_tensor(nxt, dtype=f32, device=dev),
                torch.as_tensor(r, dtype=f32, device=dev),
                torch.as_tensor(c, dtype=f32, device=dev),
                torch.as_tensor(term, dtype=torch.bool, device=dev),
                torch.zeros(len(r), dtype=torch.bool, device=dev), {})

    def close(self) -> None:
        """Close the MuJoCo env."""
        self.env.close()
