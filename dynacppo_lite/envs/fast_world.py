"""Fast resets: a Safety-Gymnasium ``World`` that rebuilds its MuJoCo model cheaply.

Every reset of a navigation task compiles a fresh MuJoCo model from XML
(``safety_gymnasium.world.World.build``). In safety-gymnasium 1.0.0 about 1.7 s of each
~1.75 s build is MuJoCo decoding the six HD skybox PNGs (``star_hd.*.png``), which only a
rendered frame ever shows, and a few more milliseconds are PyYAML parsing
``configs/assets.yaml`` from disk again. :class:`FastWorld` changes only those two inputs:

* ``assets.yaml`` is parsed once per process and every build gets a deep copy of it, and the
  first reset builds once instead of twice;
* unless frames are needed (a render mode or vision observations), the skybox entry is a
  tiny builtin gradient. The texture count, and so every other model index, is unchanged,
  and nothing physical depends on a texture, so physics and observations stay bit-identical.

``World.build`` reads the YAML through the ``yaml`` name of its own module and offers no hook,
so the cache is handed in by a *scoped* stand-in for that name (:func:`_cached_assets`): it
is installed only while some ``FastWorld`` builds, and even then it answers with the cache only
on the thread that is running that build; a stock ``World`` building at the same moment in
another thread still reads the file through the real PyYAML. Stock envs in the same process
are never changed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import yaml

from dynacppo_lite.envs.compat import import_safety_gymnasium

import_safety_gymnasium()
_sg_world = importlib.import_module("safety_gymnasium.world")

#: Replaces the six HD PNG faces; 8 px faces decode in microseconds. Sky blue over black.
FAST_SKYBOX: dict[str, str] = {
    "@type": "skybox",
    "@builtin": "gradient",
    "@rgb1": "0.4 0.6 0.8",
    "@rgb2": "0 0 0",
    "@width": "8",
    "@height": "8",
}


@functools.cache
def _assets_config(hd_skybox: bool) -> dict[str, Any]:
    """``configs/assets.yaml`` parsed once; with ``hd_skybox=False`` the skybox is swapped."""
    path = os.path.join(_sg_world.BASE_DIR, "configs", "assets.yaml")
    with open(path, encoding="utf-8") as file:
        assets = yaml.load(file, Loader=yaml.FullLoader)  # noqa: S506 - same call as World.build
    if not hd_skybox:
        assets["textures"]["skybox"] = dict(FAST_SKYBOX)
    return assets


class _CachedAssetsYaml:
    """Stands in for the ``yaml`` module inside ``safety_gymnasium.world`` during fast builds."""

    FullLoader = yaml.FullLoader

    def __init__(self) -> None:
        self.local = threading.local()  # .assets: the cache of the FastWorld building here

    def load(self, stream: Any, Loader: Any) -> Any:  # noqa: N803 - yaml.load's own signature
        assets = getattr(self.local, "assets", None)
        if assets is None:  # a stock World building on another thread: stay stock
            return yaml.load(stream, Loader=Loader)  # noqa: S506
        return copy.deepcopy(assets)  # World.build must not be able to touch the cache

    def __getattr__(self, name: str) -> Any:
        return getattr(yaml, name)


_STAND_IN = _CachedAssetsYaml()
_install_lock = threading.Lock()
_builds_running = [0]  # FastWorld builds in progress, all threads (guarded by _install_lock)


@contextlib.contextmanager
def _cached_assets(assets: dict[str, Any]) -> Iterator[None]:
    """While the block runs, ``World.build`` on this thread gets ``assets`` instead of the file."""
    with _install_lock:
        if _builds_running[0] == 0:
            _sg_world.yaml = _STAND_IN
        _builds_running[0] += 1
    _STAND_IN.local.assets = assets
    try:
        yield
    finally:
        _STAND_IN.local.assets = None
        with _install_lock:
            _builds_running[0] -= 1
            if _builds_running[0] == 0:
                _sg_world.yaml = yaml


class FastWorld(_sg_world.World):
    """A ``World`` whose ``build`` skips the YAML parse and, optionally, the HD skybox decode."""

    def __init__(self, agent: Any, obstacles: list, config: dict | None = None, *,
                 hd_skybox: bool) -> None:
        super().__init__(agent, obstacles, config)
        self.hd_skybox = hd_skybox

    def build(self) -> None:
        """Stock build (same XML but the skybox entry), with the parsed assets from the cache."""
        with _cached_assets(_assets_config(self.hd_skybox)):
            super().build()

    def rebuild(self, config: dict | None = None, state: bool = True) -> None:
        """Stock ``rebuild``; the first time, stock's first build instead.

        A stock first reset builds a new ``World(config)`` twice and keeps the second build,
        which ends in one ``mj_forward``; ``rebuild`` would add a second forward, and each
        forward moves MuJoCo's solver warm start (see :mod:`dynacppo_lite.envs.fast_task`).
        """
        if self.model is None:
            self.parse(config)
            self.build()
        else:
            super().rebuild(config, state)
