"""dynacppo_lite: Constrained PPO (CPPO) and Dyna-CPPO for Safety-Gymnasium, built to teach.

Public API: ``make_env``, ``Config``, ``train``, and the modules ``gae``, ``estep``, ``mstep``,
``dynamics``, ``exercises``, ``plots``, ``widgets``.
"""

from dynacppo_lite.config import Config
from dynacppo_lite.envs import make_env
from dynacppo_lite.train import train

__all__ = ["Config", "make_env", "train"]
__version__ = "0.1.0"
