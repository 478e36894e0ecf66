"""dynacppo_lite: Constrained PPO (CPPO) and Dyna-CPPO for Safety-Gymnasium, built to teach.

Public API: ``make_env``, ``register_env``, ``Config``, ``Trainer``, ``train``, ``evaluate``,
and the modules ``gae``, ``estep``, ``mstep``, ``dynamics``, ``exercises``, ``plots``,
``widgets``.

``dynacppo_lite.train`` is the function ``train(cfg)`` (defined in ``dynacppo_lite/train.py``).
Import that module's other names from it (``from dynacppo_lite.train import update_policy``);
the module object itself is ``importlib.import_module("dynacppo_lite.train")``.
"""

from dynacppo_lite.config import Config
from dynacppo_lite.envs import make_env, register_env
from dynacppo_lite.evaluation import Evaluation, evaluate
from dynacppo_lite.plugins import PluginError
from dynacppo_lite.train import Trainer, train

__all__ = ["Config", "Evaluation", "PluginError", "Trainer", "evaluate", "make_env", "register_env", "train"]
__version__ = "0.1.0"
