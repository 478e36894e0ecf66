"""One call to make a run reproducible."""

from __future__ import annotations

import os
import random

import gymnasium as gym
import numpy as np
import torch


def seed_everything(seed: int, env: gym.vector.VectorEnv | gym.Env | None = None) -> None:
    """Seed python, numpy, torch (CPU and CUDA), cuDNN, and optionally an env's action spaces.

    cuDNN is set deterministic with autotuning off, so a CUDA run does not pick kernels by
    timing. The env's observations are seeded by ``env.reset(seed=...)`` (``make_env`` does this
    on the first reset); here its action spaces are seeded so ``action_space.sample()`` repeats.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if env is not None:
        env.action_space.seed(seed)
        single = getattr(env, "single_action_space", None)
        if single is not None:
            single.seed(seed)
