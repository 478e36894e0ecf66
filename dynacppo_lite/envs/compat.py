"""Import Safety-Gymnasium on Python 3.11+.

safety-gymnasium 1.0.0 declares dataclass fields whose defaults are numpy arrays
(e.g. ``color: np.ndarray = np.array([...])``). Python 3.11 rejects every unhashable
default (``ValueError: mutable default <class 'numpy.ndarray'>``), Python 3.10 only
rejects list/dict/set. While, and only while, ``safety_gymnasium`` is imported we wrap
``dataclasses._get_field`` so that an ndarray default becomes a ``default_factory``
that hands each instance its own copy (which is what the upstream code means). On
Python 3.10 nothing is patched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np

NEEDS_FIX = sys.version_info >= (3, 11)


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
            return importlib.import_module("safety_gymnasium")
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "safety_gymnasium is not installed: run `make setup` (it installs "
            "safety-gymnasium==1.0.0 with --no-deps, see README)"
        ) from exc


def safety_env_ids() -> set[str]:
    """The ids in Safety-Gymnasium's registry."""
    return set(import_safety_gymnasium().utils.registration.safe_registry)
