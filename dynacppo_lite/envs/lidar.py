"""Safety-Gymnasium 1.0.0's pseudo-lidar as pure numpy functions over a batch of robots.

Stock ``BaseTask._obs_lidar_pseudo`` loops over objects, one at a time. Here the same float
operations run over all objects of all robots at once, in the same order per element (the
``vec @ mat`` product of ``_ego_xy`` as ``v0*m0 + v1*m1 + v2*m2``), so the readings are the
stock ones; a bin keeps the largest reading, and a maximum does not depend on the order it is
taken in. The fast env (:mod:`dynacppo_lite.envs.fast_task`, batch of one) and the coordinate
state (:mod:`dynacppo_lite.envs.coordinates`, any batch) both read their lidar from here.

For an object at world ``(x, y)`` seen from a robot at ``position`` with rotation ``R``
(world from body):

    (ex, ey) = first two of ([x, y, 0] - position) @ R       (robot frame)
    dist = |ex + i ey|,   angle = atan2(ey, ex) mod 2 pi,   bin = floor(angle / (2 pi / bins))
    reading = max(max_dist - dist, 0) / max_dist   (or exp(-exp_gain dist) when max_dist is None)

The reading lights its bin; with ``alias`` also bin + 1 with ``alias * reading`` and bin - 1
with ``(1 - alias) * reading``, where ``alias = (angle - bin * bin_size) / bin_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["LidarConfig", "LidarSettings", "ego_xy", "pseudo_lidar"]

#: A lidar hit lights its bin and, aliased, the bins either side (rows: bin, bin+1, bin-1).
_ALIAS_SHIFTS = np.array([[0], [1], [-1]], dtype=np.intp)


class LidarConfig(Protocol):
    """What the lidar reads of a stock ``LidarConf`` (or a :class:`LidarSettings`)."""

    num_bins: int
    max_dist: float | None
    exp_gain: float
    alias: bool


@dataclass(frozen=True)
class LidarSettings:
    """A snapshot of a task's ``lidar_conf`` (pseudo type): bins, max distance, gain, aliasing."""

    num_bins: int
    max_dist: float | None
    exp_gain: float
    alias: bool

    @classmethod
    def of(cls, conf: Any) -> LidarSettings:
        """From a stock ``LidarConf`` (anything with these four attributes)."""
        return cls(int(conf.num_bins), conf.max_dist, conf.exp_gain, bool(conf.alias))


def ego_xy(xy: np.ndarray, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Robot-frame x-y of world points on the floor, as stock ``_ego_xy``.

    xy: (B, n, 2) world x-y of the points (their z is taken as 0, as stock does);
    position: (B, 3) the robot's body origin; rotation: (B, 3, 3) world-from-body matrix.
    Returns (B, n, 2): the first two columns of ``([x, y, 0] - position) @ rotation``.
    """
    mat = rotation.reshape(rotation.shape[0], 1, 9)  # row-major: row k is mat[3k:3k+3]
    rel = xy - position[:, None, :2]
    height = 0.0 - position[:, None, 2:3]
    return rel[..., :1] * mat[..., 0:2] + rel[..., 1:] * mat[..., 3:5] + height * mat[..., 6:8]


def pseudo_lidar(ego: np.ndarray, group: np.ndarray, num_groups: int,
                 settings: LidarConfig) -> np.ndarray:
    """Pseudo-lidar of objects in the robot frame, one block of bins per object group.

    ego: (B, n, 2) robot-frame x-y of n objects (:func:`ego_xy`); group: (n,) the block
    (0..num_groups-1) each object lights. Returns (B, num_groups * num_bins): the blocks in
    group order, each the stock ``_obs_lidar_pseudo`` of that group's objects.
    """
    bins = settings.num_bins
    batch = ego.shape[0]
    lidar = np.zeros((batch, num_groups * bins))
    ego = np.ascontiguousarray(ego)
    dist = np.abs(ego.view(np.complex128)[..., 0])  # stock: abs(complex(x, y))
    angle = np.arctan2(ego[..., 1], ego[..., 0]) % (np.pi * 2)  # stock: np.angle(complex)
    bin_size = (np.pi * 2) / bins
    hit = (angle / bin_size).astype(np.intp)
    if settings.max_dist is None:
        sensor = np.exp(-settings.exp_gain * dist)
    else:
        sensor = np.maximum(settings.max_dist - dist, 0.0) / settings.max_dist
    offsets = group * bins  # flat index of each object's block in the output ...
    if batch > 1:  # ... and of each robot's row (skipped for the fast env's batch of one)
        offsets = offsets + np.arange(0, lidar.size, num_groups * bins)[:, None]
    if settings.alias:
        weights = np.empty((3, *hit.shape))  # 1, alias, 1 - alias; 1.0 * sensor is sensor
        weights[0] = 1.0
        np.divide(angle - bin_size * hit, bin_size, out=weights[1])
        np.subtract(1, weights[1], out=weights[2])
        index = offsets + (hit + _ALIAS_SHIFTS[:, :, None]) % bins
        np.maximum.at(lidar.reshape(-1), index, weights * sensor)
    else:
        np.maximum.at(lidar.reshape(-1), offsets + hit, sensor)
    return lidar
