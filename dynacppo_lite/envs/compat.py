"""Import Safety-Gymnasium on Python 3.11+ and on mujoco 3.

Two fixes, each applied only where it is needed, each leaving the upstream code unchanged:

**Python 3.11+: numpy-array dataclass defaults.**

safety-gymnasium 1.0.0 declares dataclass fields whose defaults are numpy arrays
(e.g. ``color: np.ndarray = np.array([...])``). Python 3.11 rejects every unhashable
default (``ValueError: mutable default <class 'numpy.ndarray'>``), Python 3.10 only
rejects list/dict/set. While, and only while, ``safety_gymnasium`` is imported we wrap
``dataclasses._get_field`` so that an ndarray default becomes a ``default_factory``
that hands each instance its own copy (which is what the upstream code means). On
Python 3.10 nothing is patched.

**mujoco 3: joint ids given as arrays.** ``BaseAgent._init_jnt_sensors`` looks a sensor's joint up
with ``model.jnt(model.sensor(i).objid)``, and ``objid`` is a 1-element int32 array. mujoco 2.3.3
accepted it; mujoco 3 wants a Python int (``TypeError: jnt(): incompatible function arguments``),
so every agent with joint sensors (Car, Ant, Doggo) fails at construction. On mujoco 3, and only
there, that one method runs with a view of the model whose ``jnt`` turns a 1-element array into
its int; everything else it reads goes to the real model. On mujoco 2.3.3 nothing is patched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import mujoco
import numpy as np

NEEDS_FIX = sys.version_info >= (3, 11)
#: mujoco 3's bindings reject the 1-element id arrays that safety-gymnasium 1.0.0 passes.
NEEDS_MUJOCO3_FIX = int(mujoco.__version__.split(".")[0]) >= 3


def _array_factory(value: np.ndarray):
    return lambda: value.copy()


@contextlib.contextmanager
def ndarray_defaults_as_factories() -> Iterator[None]:
    """Within the block, dataclasses accept numpy-array defaults (each instance gets a copy)."""
    if not NEEDS_FIX:
        yield
        return
    original = dataclasses._get_field

    def _get_field(cls, a_name, a_type, *args):
        default = cls.__dict__.get(a_name, dataclasses.MISSING)
        if isinstance(default, np.ndarray):
            setattr(cls, a_name, dataclasses.field(default_factory=_array_factory(default)))
        elif isinstance(default, dataclasses.Field) and isinstance(default.default, np.ndarray):
            default.default_factory = _array_factory(default.default)
            default.default = dataclasses.MISSING
        return original(cls, a_name, a_type, *args)

    dataclasses._get_field = _get_field
    try:
        yield
    finally:
        dataclasses._get_field = original


def silence_robotics_notice() -> None:
    """Drop gymnasium-robotics' Adroit-task notice, printed on every ``import gymnasium``.

    gymnasium loads gymnasium-robotics as a plugin, which prints a notice about its Adroit
    tasks (never used here) to stderr through ``farama_notifications``. Call before gymnasium
    is first imported.
    """
    try:
        import farama_notifications
    except ImportError:  # pragma: no cover - optional dependency of gymnasium
        return
    farama_notifications.notifications.pop("gymnasium_robotics", None)


def import_safety_gymnasium() -> ModuleType:
    """Import and return ``safety_gymnasium``, applying the 3.11 fix around the import only."""
    if "safety_gymnasium" in sys.modules:
        return sys.modules["safety_gymnasium"]
    try:
        with ndarray_defaults_as_factories():
            module = importlib.import_module("safety_gymnasium")
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "safety_gymnasium is not installed: run `make setup` (it installs "
            "safety-gymnasium==1.0.0 with --no-deps, see README)"
        ) from exc
    if NEEDS_MUJOCO3_FIX:
        base_agent = importlib.import_module("safety_gymnasium.bases.base_agent").BaseAgent
        base_agent._init_jnt_sensors = int_joint_ids(base_agent._init_jnt_sensors)
    return module


class IntIdModel:
    """A view of an ``MjModel`` whose ``jnt`` also takes a 1-element id array, as mujoco 2.3.3 did.

    Every other attribute is the real model's.
    """

    def __init__(self, model: Any) -> None:
        self._model = model

    def jnt(self, key: Any) -> Any:
        if isinstance(key, np.ndarray) and key.size == 1:
            key = int(key.item())
        return self._model.jnt(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _EngineView:
    """The agent's ``Engine`` (model, data) with the model seen through :class:`IntIdModel`."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.model = IntIdModel(engine.model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def int_joint_ids(init_jnt_sensors: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap ``BaseAgent._init_jnt_sensors`` to run with :class:`IntIdModel` (the mujoco 3 fix).

    Only for the duration of the call the agent's ``engine`` is a view; the real one is put back
    afterwards, whatever happens. Applied once: wrapping a wrapped method returns it unchanged.
    """
    if getattr(init_jnt_sensors, "_int_joint_ids", False):
        return init_jnt_sensors

    @functools.wraps(init_jnt_sensors)
    def wrapped(self: Any) -> None:
        engine = self.engine
        self.engine = _EngineView(engine)
        try:
            init_jnt_sensors(self)
        finally:
            self.engine = engine

    wrapped._int_joint_ids = True  # type: ignore[attr-defined]
    return wrapped


def safety_env_ids() -> set[str]:
    """The ids in Safety-Gymnasium's registry."""
    return set(import_safety_gymnasium().utils.registration.safe_registry)
