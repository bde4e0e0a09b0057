"""Scene planning for the toy world: names, ego motion, object layout, tokens.

:func:`plan_scene` draws a scene from random generators seeded with ``(seed, scene number)``:
the ego trajectory (``EgoTrajectory``, evaluated by :func:`ego_motion`), then object layouts
(``ToyObject`` s placed clear of the ego and of each other, in range of the ego and not hidden
behind each other) until every detection-class object gets LiDAR points in every keyframe, then
the tokens of the scene's records. The result, a ``ScenePlan``, holds everything of the scene
except its images.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..nuscenes_infos import CAMERA_CHANNELS, LIDAR_CHANNEL, NUSCENES_CLASSES
from .lidar import _simulate_scene_lidar
from .rig import RIG
from .world import OBJECT_SPECS

SIZE_JITTER = 0.08  # relative +- jitter of each box side
MOVING_FRACTION = 0.5  # probability that an object able to move does
EGO_SPEED = (4.0, 8.0)  # m/s at the first keyframe
EGO_MAX_ACCEL = 0.5  # m/s^2, constant over a scene
EGO_MAX_PATH = 28.0  # longer scenes drive slower, so that objects can stay in range (m)
EGO_MAX_YAW_RATE = 0.06  # rad/s, at the first and at the last keyframe
MAX_EGO_DISTANCE = 28.0  # every object centre stays within this of the ego origin (m)
EGO_CLEARANCE = 4.5  # minimum gap between an object's bounding circle and the ego origin (m)
CLEARANCE_STEPS = 10  # clearances are checked this many times per keyframe interval
OBJECT_GAP = 0.6  # minimum gap between two objects' bounding circles (m)
MAX_OCCLUSION = 0.6  # most of an object's azimuth extent that nearer objects may hide
PLACEMENT_TRIES = 100
SCENE_ATTEMPTS = 40  # object layouts tried until every object has LiDAR points in every keyframe
KEYFRAME_INTERVAL_US = 500_000  # 2 Hz
FIRST_TIMESTAMP_US = 1_531_000_000_000_000  # 2018-07-07; scene n starts n * 1000 s later


def scene_names(num_train_scenes: Optional[int] = None) -> Dict[str, List[str]]:
    """{'train': the first ``num_train_scenes`` (default all 8) of the devkit's mini_train scene
    names, 'val': the 2 mini_val names}."""
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    return dict(train=list(splits['mini_train'][:num_train_scenes]),
                val=list(splits['mini_val']))


class ToyObject(NamedTuple):
    """One object of a scene; its pose at time ``t`` (s from the scene start) is
    ``position + t * velocity`` with constant ``yaw``."""
    name: str  # key of OBJECT_SPECS (a detection class or 'debris')
    size: Tuple[float, float, float]  # (w, l, h) m
    position: Tuple[float, float]  # global (x, y) of the box centre at the first keyframe (m)
    yaw: float  # heading of the box's length axis, counter-clockwise from global +x (rad)
    velocity: Tuple[float, float]  # global (vx, vy) m/s; zero for static objects
    attribute: Optional[str]  # nuScenes attribute name, or None
    instance_token: str


class EgoTrajectory(NamedTuple):
    """The ego's motion in a scene, t in seconds from the first keyframe: it starts at
    ``(x0, y0)`` heading ``yaw0`` and drives forward at ``speed + accel * t`` with yaw rate
    ``yaw_rate + yaw_accel * t`` (see :func:`ego_motion`)."""
    x0: float  # global m
    y0: float
    yaw0: float  # rad, counter-clockwise from global +x
    speed: float  # m/s at t = 0
    accel: float  # m/s^2
    yaw_rate: float  # rad/s at t = 0
    yaw_accel: float  # rad/s^2


class ScenePlan(NamedTuple):
    """Everything of one scene except the rendered images."""
    name: str  # e.g. 'scene-0061'
    timestamps: List[int]  # (K,) keyframe times in microseconds
    trajectory: EgoTrajectory
    ego_poses: List[Tuple[float, float, float]]  # (K,) ego (x, y, yaw) in global frame
    objects: List[ToyObject]
    lidar_points: List[np.ndarray]  # (K,) float32 (N_k, 5) sweeps in the LIDAR_TOP frame
    num_lidar_pts: np.ndarray  # (K, num_objects) int, stored points inside each box
    tokens: dict  # pre-drawn tokens of the scene's records (see _draw_scene_tokens)


def _random_token(rng: np.random.Generator) -> str:
    """A 32-hex-digit token (like nuScenes tokens) drawn from ``rng``."""
    return rng.bytes(16).hex()


def _scene_number(name: str) -> int:
    """1061 for 'scene-1061'."""
    return int(name.split('-')[1])


def _ego_trajectory(rng: np.random.Generator, duration: float) -> EgoTrajectory:
    """A random ego motion over ``duration`` seconds (> 0): start speed in ``EGO_SPEED`` and a
    constant acceleration, both scaled down when the path would exceed ``EGO_MAX_PATH``; yaw
    rates in +-``EGO_MAX_YAW_RATE`` at the first and last keyframe, linear in between."""
    x0, y0 = rng.uniform(300.0, 1700.0, size=2)
    yaw0 = rng.uniform(-np.pi, np.pi)
    speed, accel = rng.uniform(*EGO_SPEED), rng.uniform(-EGO_MAX_ACCEL, EGO_MAX_ACCEL)
    scale = min(1.0, EGO_MAX_PATH / (speed * duration + accel * duration ** 2 / 2))
    yaw_rate, final_yaw_rate = rng.uniform(-EGO_MAX_YAW_RATE, EGO_MAX_YAW_RATE, size=2)
    return EgoTrajectory(float(x0), float(y0), float(yaw0), float(speed * scale),
                         float(accel * scale), float(yaw_rate),
                         float((final_yaw_rate - yaw_rate) / duration))


# Gauss-Legendre nodes on [-1, 1]: the path integral below is exact to ~1e-12 m for these motions
_QUADRATURE_NODES, _QUADRATURE_WEIGHTS = np.polynomial.legendre.leggauss(24)


def ego_motion(trajectory: EgoTrajectory, times: np.ndarray) -> Dict[str, np.ndarray]:
    """The ego's state at ``times`` (T,) seconds from the first keyframe (negative: before it).

    Returns:
        dict of ``xy`` (T, 2) global position (m), ``yaw`` (T,) heading (rad, not wrapped),
        ``velocity`` (T, 3) m/s, ``acceleration`` (T, 3) m/s^2 (the time derivative of the
        velocity, no gravity) and ``rotation_rate`` (T, 3) rad/s, the last three in the ego frame
        (x forward, y left, z up).
    """
    traj = trajectory
    times = np.asarray(times, dtype=np.float64)
    # position: x0 + the integral over [0, t] of speed(s) * (cos, sin)(yaw(s)) ds
    s = times[:, None] * (_QUADRATURE_NODES[None, :] + 1) / 2  # (T, Q) quadrature points
    weights = times[:, None] / 2 * _QUADRATURE_WEIGHTS[None, :]
    speed_s = traj.speed + traj.accel * s
    yaw_s = traj.yaw0 + traj.yaw_rate * s + traj.yaw_accel * s ** 2 / 2
    xy = np.stack([traj.x0 + (weights * speed_s * np.cos(yaw_s)).sum(1),
                   traj.y0 + (weights * speed_s * np.sin(yaw_s)).sum(1)], axis=1)
    speed = traj.speed + traj.accel * times
    yaw_rate = traj.yaw_rate + traj.yaw_accel * times
    zeros = np.zeros_like(times)
    return dict(xy=xy, yaw=traj.yaw0 + traj.yaw_rate * times + traj.yaw_accel * times ** 2 / 2,
                velocity=np.stack([speed, zeros, zeros], axis=1),
                acceleration=np.stack([np.full_like(times, traj.accel), speed * yaw_rate, zeros],
                                      axis=1),
                rotation_rate=np.stack([zeros, zeros, yaw_rate], axis=1))


def _ego_poses(trajectory: EgoTrajectory, times: np.ndarray) -> List[Tuple[float, float, float]]:
    """(T,) ego (x, y, yaw wrapped into [-pi, pi]) at ``times`` (s)."""
    motion = ego_motion(trajectory, times)
    return [(float(x), float(y), float(np.arctan2(np.sin(a), np.cos(a))))
            for (x, y), a in zip(motion['xy'], motion['yaw'])]


def scene_trajectory(seed: int, name: str, samples_per_scene: int) -> EgoTrajectory:
    """The ego trajectory of scene ``name`` (the one :func:`plan_scene` uses), without the rest
    of the plan."""
    return _ego_trajectory(np.random.default_rng([seed, _scene_number(name), 0]),
                           (samples_per_scene - 1) * KEYFRAME_INTERVAL_US / 1e6)


def _attribute(name: str, moving: bool) -> Optional[str]:
    """The nuScenes attribute of an object of class ``name``."""
    if name in ('car', 'truck', 'trailer', 'bus', 'construction_vehicle'):
        if moving:
            return 'vehicle.moving'
        return 'vehicle.stopped' if name == 'bus' else 'vehicle.parked'
    if name in ('bicycle', 'motorcycle'):
        return 'cycle.with_rider' if moving else 'cycle.without_rider'
    if name == 'pedestrian':
        return 'pedestrian.moving' if moving else 'pedestrian.standing'
    return None


def _sample_heading(rng: np.random.Generator, name: str, road_yaw: float) -> float:
    """A plausible heading: vehicles along the road either way, barriers across their length
    (their long side, the width, along the road), pedestrians, cones and debris any way."""
    if name in ('pedestrian', 'traffic_cone', 'debris'):
        return rng.uniform(-np.pi, np.pi)
    if name == 'barrier':
        return road_yaw + np.pi / 2 + rng.normal(0, 0.05)
    return road_yaw + np.pi * (rng.random() < 0.3) + rng.normal(0, 0.05)


def _footprint_radius(size: Sequence[float]) -> float:
    """Radius of the circle around a (w, l, h) box's footprint (m)."""
    return 0.5 * float(np.hypot(size[0], size[1]))


def _track(position: np.ndarray, velocity: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(K, 2) positions at ``times`` of a point moving at constant ``velocity``."""
    return position[None, :] + times[:, None] * velocity[None, :]


def _fine_times(times: np.ndarray) -> np.ndarray:
    """(CLEARANCE_STEPS * (K - 1) + 1,) times from ``times[0]`` to ``times[-1]`` (K,), with
    ``CLEARANCE_STEPS`` steps per keyframe interval."""
    return np.linspace(times[0], times[-1], CLEARANCE_STEPS * (len(times) - 1) + 1)


def _placement_ok(track: np.ndarray, radius: float, ego_xy: np.ndarray,
                  placed: List[Tuple[np.ndarray, float]]) -> bool:
    """Whether a track keeps clear of the ego and of the ``placed`` (track, radius) objects.

    All tracks, ``track`` and ``ego_xy`` included, are (T, 2) positions at the same times.
    """
    if np.any(np.linalg.norm(track - ego_xy, axis=1) < radius + EGO_CLEARANCE):
        return False
    return all(np.all(np.linalg.norm(track - other, axis=1) >= radius + other_radius + OBJECT_GAP)
               for other, other_radius in placed)


def _wrap(angle):
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _azimuth_extents(track: np.ndarray, size: Sequence[float], yaw: float,
                     eyes: np.ndarray) -> np.ndarray:
    """(K, 3) (centre azimuth, half width (rad), distance) of a box footprint seen from ``eyes``.

    Args:
        track: (K, 2) box centres; size: (w, l, h); yaw: box heading; eyes: (K, 2) viewpoints.
    """
    half_l, half_w = size[1] / 2, size[0] / 2
    local = np.array([[half_l, half_w], [half_l, -half_w], [-half_l, -half_w], [-half_l, half_w]])
    rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    offsets = track - eyes  # (K, 2)
    corners = offsets[:, None, :] + local @ rotation.T  # (K, 4, 2)
    centre = np.arctan2(offsets[:, 1], offsets[:, 0])
    half_width = np.abs(_wrap(np.arctan2(corners[..., 1], corners[..., 0]) - centre[:, None]))
    return np.stack([centre, half_width.max(axis=1), np.linalg.norm(offsets, axis=1)], axis=1)


def _hidden_fraction(target: np.ndarray, occluders: List[np.ndarray]) -> np.ndarray:
    """(K,) share of ``target``'s azimuth extent behind nearer ``occluders`` (extents (K, 3))."""
    angles = target[:, :1] + target[:, 1:2] * np.linspace(-1.0, 1.0, 17)  # (K, 17)
    hidden = np.zeros(angles.shape, dtype=bool)
    for other in occluders:
        nearer = (other[:, 2] < target[:, 2])[:, None]
        hidden |= nearer & (np.abs(_wrap(angles - other[:, :1])) < other[:, 1:2])
    return hidden.mean(axis=1)


def _occlusion_ok(extents: np.ndarray, placed_extents: List[np.ndarray]) -> bool:
    """Whether adding an object with these (K, 3) keyframe extents leaves it and every placed
    object at most ``MAX_OCCLUSION`` hidden in azimuth at every keyframe."""
    if np.any(_hidden_fraction(extents, placed_extents) > MAX_OCCLUSION):
        return False
    for index, other in enumerate(placed_extents):
        occluders = [extents, *placed_extents[:index], *placed_extents[index + 1:]]
        if np.any(_hidden_fraction(other, occluders) > MAX_OCCLUSION):
            return False
    return True


def _place_object(rng: np.random.Generator, name: str, times: np.ndarray,
                  ego_track: np.ndarray, lidar_track: np.ndarray, road_yaw: float,
                  placed: List[Tuple[np.ndarray, float]], placed_extents: List[np.ndarray]
                  ) -> Optional[dict]:
    """Size, pose and motion of one object that fits among ``placed`` (which it then joins), or
    None when ``PLACEMENT_TRIES`` tries, moving and then standing, found no room.

    Args:
        times: (K,) keyframe times (s).
        ego_track: (T, 2) ego positions at ``_fine_times(times)``; every ``CLEARANCE_STEPS``-th
            is a keyframe's.
        lidar_track: (K, 2) LiDAR positions at the keyframes.
        road_yaw: heading of the ego in the middle of the scene.
        placed, placed_extents: the objects placed so far, as (fine track, radius) and as
            keyframe azimuth extents from the LiDAR (see ``_azimuth_extents``).
    """
    spec = OBJECT_SPECS[name]
    size = tuple(round(side * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER), 3)
                 for side in spec.size)
    radius = _footprint_radius(size)
    moving = spec.speed is not None and rng.random() < MOVING_FRACTION
    fine_times = _fine_times(times)
    middle_index = CLEARANCE_STEPS * (len(times) // 2)
    for attempt in range(2 * PLACEMENT_TRIES):
        if attempt == PLACEMENT_TRIES:
            moving = False  # no room to move: stand still instead
        yaw = _sample_heading(rng, name, road_yaw)
        speed = rng.uniform(*spec.speed) if moving else 0.0
        velocity = speed * np.array([np.cos(yaw), np.sin(yaw)])
        middle = ego_track[middle_index] + rng.uniform(-MAX_EGO_DISTANCE, MAX_EGO_DISTANCE, 2)
        start = middle - velocity * fine_times[middle_index]
        track = _track(start, velocity, fine_times)
        keyframe_distance = np.linalg.norm(track - ego_track, axis=1)[::CLEARANCE_STEPS]
        if np.any(keyframe_distance > MAX_EGO_DISTANCE) or not _placement_ok(
                track, radius, ego_track, placed):
            continue
        extents = _azimuth_extents(track[::CLEARANCE_STEPS], size, yaw, lidar_track)
        if _occlusion_ok(extents, placed_extents):
            placed.append((track, radius))
            placed_extents.append(extents)
            return dict(name=name, size=size, position=tuple(start.tolist()),
                        yaw=float(np.arctan2(np.sin(yaw), np.cos(yaw))),
                        velocity=tuple(velocity.tolist()), attribute=_attribute(name, moving))
    return None


def _place_objects(rng: np.random.Generator, times: np.ndarray,
                   ego_poses: List[Tuple[float, float, float]], ego_track: np.ndarray
                   ) -> Optional[List[dict]]:
    """One layout of the ``OBJECT_SPECS`` objects, largest first (they are hardest to fit), or
    None when the first object of a class found no room (later ones are left out then).

    ``ego_poses``: (K,) keyframe ego (x, y, yaw); ``ego_track`` (T, 2): ego positions at
    ``_fine_times(times)``.
    """
    lidar_offset = np.array(RIG[LIDAR_CHANNEL]['translation'][:2])
    lidar_track = np.array([[x, y] + _rotate_2d(lidar_offset, yaw) for x, y, yaw in ego_poses])
    road_yaw = ego_poses[len(ego_poses) // 2][2]
    names = [name for name, spec in OBJECT_SPECS.items() for _ in range(spec.count)]
    names.sort(key=lambda name: -_footprint_radius(OBJECT_SPECS[name].size))
    placed: List[Tuple[np.ndarray, float]] = []
    placed_extents: List[np.ndarray] = []
    objects = []
    for name in names:
        obj = _place_object(rng, name, times, ego_track, lidar_track, road_yaw, placed,
                            placed_extents)
        if obj is not None:
            objects.append(obj)
        elif not any(other['name'] == name for other in objects):
            return None
    return objects


def _rotate_2d(vector: np.ndarray, angle: float) -> np.ndarray:
    """(2,) ``vector`` rotated counter-clockwise by ``angle``."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([cos * vector[0] - sin * vector[1], sin * vector[0] + cos * vector[1]])


def _draw_scene_tokens(rng: np.random.Generator, num_samples: int, num_objects: int) -> dict:
    """Tokens of one scene's records, drawn in a fixed order."""
    channels = (*CAMERA_CHANNELS, LIDAR_CHANNEL)
    return dict(
        scene=_random_token(rng), log=_random_token(rng),
        calibrated_sensor={channel: _random_token(rng) for channel in channels},
        sample=[_random_token(rng) for _ in range(num_samples)],
        sample_data=[{channel: _random_token(rng) for channel in channels}
                     for _ in range(num_samples)],
        ego_pose=[{channel: _random_token(rng) for channel in channels}
                  for _ in range(num_samples)],
        instance=[_random_token(rng) for _ in range(num_objects)],
        annotation=[[_random_token(rng) for _ in range(num_objects)]
                    for _ in range(num_samples)])


def plan_scene(seed: int, name: str, samples_per_scene: int) -> ScenePlan:
    """The ego motion, objects, LiDAR sweeps and tokens of scene ``name`` (e.g. 'scene-0103').

    Object layouts are drawn until every detection-class object has LiDAR points in every
    keyframe (at most ``SCENE_ATTEMPTS`` layouts).
    """
    number = _scene_number(name)
    rng = np.random.default_rng([seed, number, 0])
    times = np.arange(samples_per_scene) * KEYFRAME_INTERVAL_US / 1e6
    trajectory = _ego_trajectory(rng, float(times[-1]))  # the same as scene_trajectory's
    ego_poses = _ego_poses(trajectory, times)
    ego_track = np.array([pose[:2] for pose in _ego_poses(trajectory, _fine_times(times))])
    for _ in range(SCENE_ATTEMPTS):
        objects = _place_objects(rng, times, ego_poses, ego_track)
        if objects is None:
            continue
        sweeps, counts = _simulate_scene_lidar(objects, times, ego_poses)
        detection = np.array([o['name'] in NUSCENES_CLASSES for o in objects])
        if np.all(counts[:, detection] > 0):
            break
    else:
        raise RuntimeError(f'{name}: none of {SCENE_ATTEMPTS} object layouts fitted every object '
                           f'with LiDAR points in every keyframe')
    tokens = _draw_scene_tokens(np.random.default_rng([seed, number, 1]), samples_per_scene,
                                len(objects))
    start = FIRST_TIMESTAMP_US + number * 1_000_000_000
    return ScenePlan(
        name=name,
        timestamps=[start + k * KEYFRAME_INTERVAL_US for k in range(samples_per_scene)],
        trajectory=trajectory, ego_poses=ego_poses,
        objects=[ToyObject(instance_token=token, **o) for o, token in
                 zip(objects, tokens['instance'])],
        lidar_points=sweeps, num_lidar_pts=counts, tokens=tokens)
