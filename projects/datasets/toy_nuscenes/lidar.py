"""The toy world's ray-cast LiDAR: a 32-beam scanner at LIDAR_TOP.

Casts one ray per beam and ``AZIMUTH_STEP_DEG`` against the object boxes and the ground plane,
stores box returns just behind the surface they hit (grazing returns dropped) and every
``GROUND_THINNING``-th azimuth of the ground returns, and counts the stored points inside each
box; :func:`_simulate_scene_lidar` does this for every keyframe of a scene layout. Deterministic:
it draws no random numbers.
"""
from typing import List, Tuple

import numpy as np

from ..nuscenes_infos import LIDAR_CHANNEL
from .rig import sensor2ego
from .world import OBJECT_SPECS, _ego2global, _object_boxes

LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)  # HDL-32E beams, ring 0 = lowest
AZIMUTH_STEP_DEG = 0.6
GROUND_THINNING = 6
LIDAR_MAX_RANGE = 70.0
GROUND_INTENSITY = 5.0
SURFACE_DEPTH = 0.005  # LiDAR box returns sit this far behind the surface they hit (m)
MIN_INSIDE_DEPTH = 0.001  # ... and at least this far from every face of their box (m)


def _lidar_rays() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scanner's rays in the ego frame: origin (3,), unit directions (R, 3), ring (R,) and
    azimuth index (R,)."""
    lidar2ego = sensor2ego(LIDAR_CHANNEL)
    elevations = np.radians(LIDAR_ELEVATIONS_DEG)
    azimuths = np.radians(np.arange(0.0, 360.0, AZIMUTH_STEP_DEG))
    ring, azimuth_index = np.meshgrid(np.arange(len(elevations)), np.arange(len(azimuths)),
                                      indexing='ij')
    elevation, azimuth = elevations[ring.ravel()], azimuths[azimuth_index.ravel()]
    directions = np.stack([np.cos(elevation) * np.cos(azimuth),
                           np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=1)
    return (lidar2ego[:3, 3], directions @ lidar2ego[:3, :3].T, ring.ravel(),
            azimuth_index.ravel())


def _ray_box_hits(origin: np.ndarray, directions: np.ndarray, centres: np.ndarray,
                  yaws: np.ndarray, half: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances (R, B) of rays (origin (3,), directions (R, 3)) through boxes
    (centres (B, 3), yaws (B,), half extents (B, 3)), all in one frame; entry > exit: a miss."""
    cos, sin = np.cos(yaws), np.sin(yaws)  # (B,)
    offset = origin[None, :] - centres  # (B, 3)
    local_origin = np.stack([cos * offset[:, 0] + sin * offset[:, 1],
                             -sin * offset[:, 0] + cos * offset[:, 1], offset[:, 2]], axis=1)
    dx, dy, dz = (directions[:, i, None] for i in range(3))  # (R, 1)
    local_directions = (cos * dx + sin * dy, -sin * dx + cos * dy,
                        np.broadcast_to(dz, (len(directions), len(yaws))))
    entry = np.full((len(directions), len(yaws)), -np.inf)
    exit_ = np.full((len(directions), len(yaws)), np.inf)
    with np.errstate(divide='ignore', invalid='ignore'):
        for axis, direction in enumerate(local_directions):
            inverse = 1.0 / np.where(direction == 0, 1e-30, direction)
            t1 = (-half[:, axis] - local_origin[:, axis]) * inverse
            t2 = (half[:, axis] - local_origin[:, axis]) * inverse
            entry = np.maximum(entry, np.minimum(t1, t2))
            exit_ = np.minimum(exit_, np.maximum(t1, t2))
    return entry, exit_


def _depth_inside(points: np.ndarray, centres: np.ndarray, yaws: np.ndarray,
                  half: np.ndarray) -> np.ndarray:
    """(N,) distance from each point (N, 3) to the nearest face of its box (one box per point:
    centres (N, 3), yaws (N,), half extents (N, 3)); negative outside."""
    offset = points - centres
    cos, sin = np.cos(yaws), np.sin(yaws)
    local = np.stack([cos * offset[:, 0] + sin * offset[:, 1],
                      -sin * offset[:, 0] + cos * offset[:, 1], offset[:, 2]], axis=1)
    return np.min(half - np.abs(local), axis=1)


def _simulate_lidar(rays: tuple, boxes_ego: Tuple[np.ndarray, np.ndarray, np.ndarray],
                    intensities: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One sweep against ego-frame boxes (centres, yaws, half extents) and the ground (z = 0).

    A box return is stored ``SURFACE_DEPTH`` behind the surface it hits (at most half-way through
    the box) and dropped when that lies within ``MIN_INSIDE_DEPTH`` of another face (a grazing
    ray), so that every stored box point is unambiguously inside its box.

    Returns:
        points: float32 (N, 5) x, y, z (LIDAR_TOP frame), intensity, ring.
        hits: (B,) number of points inside each box.
    """
    origin, directions, ring, azimuth_index = rays
    num_rays, num_boxes = len(directions), len(intensities)
    with np.errstate(divide='ignore'):
        ground_distance = np.where(directions[:, 2] < 0, -origin[2] / directions[:, 2], np.inf)
    box_index = np.zeros(num_rays, dtype=np.int64)
    distance = ground_distance.copy()
    on_box = np.zeros(num_rays, dtype=bool)
    if num_boxes:
        entry, exit_ = _ray_box_hits(origin, directions, *boxes_ego)
        entry = np.where((entry <= exit_) & (entry > 0), entry, np.inf)  # (R, B)
        box_index = np.argmin(entry, axis=1)
        rows = np.arange(num_rays)
        box_distance = entry[rows, box_index]
        on_box = (box_distance < ground_distance) & (box_distance <= LIDAR_MAX_RANGE)
        hit = np.flatnonzero(on_box)
        depth = np.minimum(SURFACE_DEPTH, (exit_[hit, box_index[hit]] - box_distance[hit]) / 2)
        distance[hit] = box_distance[hit] + depth
        centres, yaws, half = (array[box_index[hit]] for array in boxes_ego)
        inside = _depth_inside(origin + distance[hit, None] * directions[hit], centres, yaws,
                               half)
        on_box[hit[inside < MIN_INSIDE_DEPTH]] = False
        blocked = np.zeros(num_rays, dtype=bool)
        blocked[hit] = True  # a dropped grazing return does not reach the ground either
    else:
        blocked = on_box
    on_ground = (~blocked & (ground_distance <= LIDAR_MAX_RANGE)
                 & (azimuth_index % GROUND_THINNING == 0))
    keep = on_box | on_ground
    points_ego = origin + distance[keep, None] * directions[keep]
    lidar2ego = sensor2ego(LIDAR_CHANNEL)
    points_lidar = (points_ego - lidar2ego[:3, 3]) @ lidar2ego[:3, :3]
    intensity = np.where(on_box[keep], intensities[box_index[keep]] if num_boxes else 0.0,
                         GROUND_INTENSITY)
    points = np.concatenate([points_lidar, intensity[:, None], ring[keep, None]], axis=1)
    hits = np.bincount(box_index[on_box], minlength=num_boxes)
    return points.astype(np.float32), hits


def _boxes_in_ego(boxes_global: Tuple[np.ndarray, np.ndarray, np.ndarray],
                  ego_pose: Tuple[float, float, float]) -> Tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Global boxes (centres, yaws, half extents) moved into the ego frame of ``ego_pose``."""
    centres, yaws, half = boxes_global
    ego2global = _ego2global(ego_pose)
    return ((centres - ego2global[:3, 3]) @ ego2global[:3, :3], yaws - ego_pose[2], half)


def _simulate_scene_lidar(objects: List[dict], times: np.ndarray,
                          ego_poses: List[Tuple[float, float, float]]
                          ) -> Tuple[List[np.ndarray], np.ndarray]:
    """Sweeps (K,) and per-keyframe hit counts (K, B) of a scene layout."""
    rays = _lidar_rays()
    intensities = np.array([OBJECT_SPECS[o['name']].intensity for o in objects])
    sweeps, counts = [], []
    for t, ego_pose in zip(times, ego_poses):
        boxes = _boxes_in_ego(_object_boxes(objects, t), ego_pose)
        points, hits = _simulate_lidar(rays, boxes, intensities)
        sweeps.append(points)
        counts.append(hits)
    return sweeps, np.array(counts)
