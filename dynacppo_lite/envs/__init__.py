"""The world layer: Safety-Gymnasium tasks, the toy task, presets and wrappers."""

from dynacppo_lite.envs.compat import silence_robotics_notice

silence_robotics_notice()  # before the first `import gymnasium` below

from dynacppo_lite.envs.custom import CUSTOM_COST_LIMITS, register_env  # noqa: E402
from dynacppo_lite.envs.make import check_env_id, known_env_ids, make_env  # noqa: E402
from dynacppo_lite.envs.presets import PRESETS, EnvPreset, default_cost_limit  # noqa: E402
from dynacppo_lite.envs.toy import TOY_COST_LIMIT, TOY_ENV_ID, ToySpeedLimitEnv, register_toy_env  # noqa: E402
from dynacppo_lite.envs.vector import AsyncSafeVectorEnv, SyncSafeVectorEnv  # noqa: E402
from dynacppo_lite.envs.wrappers import NormalizeObservation, SafeVectorEnv  # noqa: E402

register_toy_env()

__all__ = [
    "CUSTOM_COST_LIMITS",
    "PRESETS",
    "AsyncSafeVectorEnv",
    "TOY_COST_LIMIT",
    "TOY_ENV_ID",
    "EnvPreset",
    "NormalizeObservation",
    "SafeVectorEnv",
    "SyncSafeVectorEnv",
    "ToySpeedLimitEnv",
    "check_env_id",
    "default_cost_limit",
    "known_env_ids",
    "make_env",
    "register_env",
]
