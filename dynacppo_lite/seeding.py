"""One call to make a run reproducible."""

from __future__ import annotations

import os
import platform
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


def numeric_environment() -> dict[str, str]:
    """What a run's last bits depend on besides its seed: library versions and BLAS kernels.

    The same seed gives the same numbers only with the same numpy BLAS kernel (OpenBLAS picks
    one per CPU, e.g. ``Haswell`` or ``SkylakeX``; ``OPENBLAS_CORETYPE`` overrides it) and the
    same torch CPU kernels (``torch.backends.cpu.get_cpu_capability``). Other kernels round
    otherwise and give the same learning within seed noise, not the same numbers.
    """
    import mujoco
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture') or 'unknown kernel'})"
            for i in threadpool_info() if i["user_api"] == "blas"]
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numpy_blas": ", ".join(blas) or "none found", "torch": torch.__version__,
            "torch_cpu": torch.backends.cpu.get_cpu_capability(),
            "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
            "mujoco": mujoco.__version__,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset")}
