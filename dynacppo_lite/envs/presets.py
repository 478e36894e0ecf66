"""Named task presets: an env id plus the settings a paper used with it."""

from __future__ import annotations

from dataclasses import dataclass, field

from dynacppo_lite.envs.toy import TOY_COST_LIMIT, TOY_ENV_ID

#: Safety-Gymnasium's convention: 25 per 1000-step navigation episode (undiscounted).
SAFETY_GYM_COST_LIMIT = 25.0


@dataclass(frozen=True)
class EnvPreset:
    """A task as a paper ran it."""

    env_id: str
    """The underlying registered env id."""
    cost_limit: float
    """Per-episode (undiscounted) cost limit d."""
    make_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for the env (e.g. ``max_episode_steps``)."""
    source: str = ""
    """Where the setting comes from."""


PRESETS: dict[str, EnvPreset] = {
    # CPPO paper (arXiv 2305.14216), Table 1: PointCircle with 50-step episodes, cost limit 5.
    "CPPO-PointCircle1-v0": EnvPreset(
        env_id="SafetyPointCircle1-v0",
        cost_limit=5.0,
        make_kwargs={"max_episode_steps": 50},
        source="CPPO paper, Table 1",
    ),
}


def default_cost_limit(env_id: str) -> float:
    """The cost limit a run on ``env_id`` uses when the user gives none: the preset's, the toy
    task's, the one given to ``register_env``, or Safety-Gymnasium's 25 for its own tasks. Any
    other id is a one-line ValueError: an unknown task never silently gets a limit."""
    from dynacppo_lite.envs.custom import CUSTOM_COST_LIMITS

    if env_id in PRESETS:
        return PRESETS[env_id].cost_limit
    if env_id == TOY_ENV_ID:
        return TOY_COST_LIMIT
    if env_id in CUSTOM_COST_LIMITS:
        return CUSTOM_COST_LIMITS[env_id]
    if env_id.startswith("Safety"):
        from dynacppo_lite.envs.compat import safety_env_ids

        if env_id in safety_env_ids():
            return SAFETY_GYM_COST_LIMIT
    raise ValueError(f"no cost limit is known for {env_id!r}: give one (Config(cost_limit=...), "
                     "--cost-limit) or register the task with register_env(id, entry_point, "
                     "cost_limit=...)")
