"""A small, deterministic nuScenes-format world: tables, camera images, LiDAR sweeps, infos.

The world is a flat ground plane (global z = 0) with boxes on it. In each scene the ego vehicle
drives forward at 4-8 m/s, speeding up or slowing down by up to 0.5 m/s^2, on a gentle curve (yaw
rate up to 0.06 rad/s, changing linearly in time): ``EgoTrajectory``; keyframes come at 2 Hz.
Around it stand or move, at constant velocity, objects of all ten nuScenes detection classes
with realistic sizes (plus one ``movable_object.debris``, a category outside the detection
classes): ``OBJECT_SPECS``. Every object stays within ``MAX_EGO_DISTANCE`` (28 m) of the
ego at every keyframe, inside every class's evaluation range, and no two objects (nor an object
and the ego) come close to overlapping. Attributes follow the motion (``vehicle.moving`` /
``vehicle.parked`` (a bus: ``vehicle.stopped``), ``pedestrian.moving`` / ``pedestrian.standing``,
``cycle.with_rider`` / ``cycle.without_rider``, none for cones, barriers and debris).

Sensors are the real nuScenes rig (``RIG``: the six cameras and LIDAR_TOP of log
n015-2018-07-24-11-22-45+0800 of nuScenes v1.0-mini; nuScenes is (c) Motional, CC BY-NC-SA 4.0,
https://www.nuscenes.org/terms-of-use). Extrinsics are unchanged; camera intrinsics are scaled
from the real 1600x900 images to ``image_size`` (default 400x224: ``fx, cx`` times 400/1600,
``fy, cy`` times 224/900, as mmdet3d's ``Resize`` scales ``cam2img``). All sensors of a keyframe
fire at the same instant (real nuScenes cameras trigger up to ~40 ms from the LiDAR sweep), so
every sample_data of a sample has the same timestamp and ego pose.

* Images (JPEG): sky and a ground plane with a 5 m checkerboard fixed in global coordinates
  (it slides past as the ego moves), then each box drawn as filled faces in its class colour
  (``OBJECT_SPECS``), shaded by the face's orientation to a fixed light, back faces culled, faces
  clipped at ``NEAR_PLANE`` in front of the camera, boxes painted far to near. Pixel ``(col, row)``
  has its centre at image coordinates ``(col, row)`` (OpenCV's convention).
* LiDAR (``.pcd.bin``, float32 ``(N, 5)``: x, y, z in the LIDAR_TOP frame, intensity, ring): a
  32-beam scanner (elevations -30.67..10.67 deg, like the real HDL-32E) cast against the boxes and
  the ground every ``AZIMUTH_STEP_DEG``. Box returns are stored 5 mm behind the surface hit
  (grazing returns within 1 mm of an edge are dropped, so no point sits on a box boundary);
  ground returns are thinned to one azimuth in ``GROUND_THINNING`` to keep the files small.
  ``num_lidar_pts`` of an annotation is the number of stored points inside its box; object
  placement is redrawn until every detection-class object has points at every keyframe, so the
  devkit's evaluation keeps every box. There is no radar (``num_radar_pts`` = 0).
* ``visibility_token``: the fraction of the object's silhouette (over the six images) left
  unoccluded, in the real nuScenes bins (tokens '1'..'4': 0-40, 40-60, 60-80, 80-100 %).
* Objects are annotated in every keyframe of their scene.

Layout written by :func:`generate_toy_nuscenes`::

    root/
        v1.0-mini/*.json                 the 13 tables nuscenes-devkit's NuScenes() loads
        samples/CAM_*/<log>__<CAM>__<us>.jpg, samples/LIDAR_TOP/<log>__LIDAR_TOP__<us>.pcd.bin
        maps/<token>.png                 placeholder semantic-prior masks (the devkit requires a
                                         file per map record; the world has no map content)
        can_bus/<scene>_pose.json        CAN bus expansion pose messages (see below)
        nuscenes_infos_train.pkl         mmdet3d 1.4 infos (+ temporal fields) of the train scenes
        nuscenes_infos_val.pkl           ... of 'scene-0103' and 'scene-0916' (the mini_val split)
        toy_nuscenes_manifest.json       generator arguments; written last, marks completeness

The CAN bus expansion holds only the ``pose`` messages, as nuscenes-devkit's ``NuScenesCanBus``
reads them: 50 Hz from 0.2 s before a scene's first keyframe to 0.2 s after its last, 12 ms off
the keyframes (a message 12 ms before and one 8 ms after each keyframe), with ``pos`` and
``orientation`` the ego pose at ``utime``, and ``vel``, ``accel`` (the time derivatives of the
ego's velocity, no gravity term) and ``rotation_rate`` in the ego frame (``ego_motion``). The
info files' ``can_bus`` is read back from it with the devkit (``can_bus.py``).

Scenes carry the names of the devkit's official v1.0-mini splits (``mini_train``: the first
``num_train_scenes`` of its 8 names; ``mini_val``: both of its names), so the devkit's
``DetectionEval(eval_set='mini_val')`` and mmdet3d's ``NuScenesMetric`` run on the world as is.

Everything is a function of the arguments: a scene is drawn from ``numpy.random.Generator`` s
seeded with ``(seed, scene number)``, tokens (32 hex digits) included, so the same arguments give
byte-identical tables and images, and the val scenes do not depend on ``num_train_scenes``.
"""
import json
import os
import os.path as osp
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from .nuscenes_infos import (CAMERA_CHANNELS, LIDAR_CHANNEL, NUSCENES_CLASSES,
                             create_nuscenes_infos, info_file_name, load_nuscenes,
                             matrix_to_quaternion, pose_matrix)

__all__ = [
    'RIG', 'camera_intrinsic', 'sensor2ego', 'OBJECT_SPECS',
    'ToyObject', 'EgoTrajectory', 'ScenePlan', 'rig_from_info', 'scene_names',
    'scene_trajectory', 'ego_motion', 'plan_scene', 'generate_toy_nuscenes', 'toy_nuscenes_ready',
    'prepare_toy_nuscenes'
]

VERSION = 'v1.0-mini'
FORMAT_VERSION = 2  # bump when the world changes, so toy_nuscenes_ready() rejects old worlds
MANIFEST_NAME = 'toy_nuscenes_manifest.json'
INFO_PREFIX = 'nuscenes'

# ----------------------------------------------------------------------------- the real rig
# Sensor extrinsics (sensor->ego translation in metres, rotation as a [w, x, y, z] quaternion)
# and camera intrinsics (fx, fy, cx, cy in pixels of the 1600x900 images) of nuScenes v1.0-mini
# log n015-2018-07-24-11-22-45+0800, read from the mmdet3d info of one of its keyframes
# (n015-2018-07-24-11-22-45+0800.pkl of the team's demo frame; ``rig_from_info`` reads them back). nuScenes data (c) Motional, licensed
# CC BY-NC-SA 4.0 (https://www.nuscenes.org/terms-of-use).
REAL_IMAGE_SIZE = (900, 1600)  # (height, width)
RIG: Dict[str, dict] = {
    'CAM_FRONT': dict(translation=(1.70079124, 0.01594563, 1.5109576),
                      rotation=(0.49980154, -0.50303162, 0.49977981, -0.49737084),
                      intrinsic=(1266.417203, 1266.417203, 816.26702, 491.507066)),
    'CAM_FRONT_RIGHT': dict(translation=(1.55084777, -0.49340481, 1.49574804),
                            rotation=(0.20603479, -0.20269405, 0.68245078, -0.67136109),
                            intrinsic=(1260.847445, 1260.847445, 807.968245, 495.334427)),
    'CAM_FRONT_LEFT': dict(translation=(1.52387798, 0.49463135, 1.50932825),
                           rotation=(0.6757265, -0.67362665, 0.21214015, -0.21122827),
                           intrinsic=(1272.597947, 1272.597947, 826.615493, 479.751654)),
    'CAM_BACK': dict(translation=(0.02832603, 0.00345137, 1.57910347),
                     rotation=(0.50378727, -0.4974025, -0.49418502, 0.50454961),
                     intrinsic=(809.220991, 809.220991, 829.2196, 481.778424)),
    'CAM_BACK_LEFT': dict(translation=(1.03569102, 0.48479503, 1.59097016),
                          rotation=(0.69241856, -0.70316194, -0.11648343, 0.11203318),
                          intrinsic=(1256.741481, 1256.741481, 792.112574, 492.775747)),
    'CAM_BACK_RIGHT': dict(translation=(1.01487815, -0.48056823, 1.56239545),
                           rotation=(0.1228098, -0.13240084, -0.70043058, 0.69049603),
                           intrinsic=(1259.513741, 1259.513741, 807.252905, 501.195799)),
    'LIDAR_TOP': dict(translation=(0.94371301, 0.0, 1.84022999),
                      rotation=(0.70779551, -0.00649224, 0.01064621, -0.70630731),
                      intrinsic=None),
}


def rig_from_info(info_path: str) -> Dict[str, dict]:
    """The rig (same layout as ``RIG``) of the first keyframe of an mmdet3d 1.x nuScenes info pkl.

    Rotations come from the stored (float32-rounded) matrices, so they agree with the original
    calibration to about 1e-7.
    """
    import mmengine

    if not osp.isfile(info_path):
        raise FileNotFoundError(f'info_path {info_path!r} does not exist: expected an mmdet3d 1.x '
                                f'nuScenes info pkl')
    info = mmengine.load(info_path)['data_list'][0]
    rig = {}
    for channel in CAMERA_CHANNELS:
        cam2ego, cam2img = np.array(info['images'][channel]['cam2ego']), np.array(
            info['images'][channel]['cam2img'])
        rig[channel] = dict(translation=tuple(cam2ego[:3, 3]),
                            rotation=tuple(matrix_to_quaternion(cam2ego)),
                            intrinsic=(cam2img[0, 0], cam2img[1, 1], cam2img[0, 2], cam2img[1, 2]))
    lidar2ego = np.array(info['lidar_points']['lidar2ego'])
    rig[LIDAR_CHANNEL] = dict(translation=tuple(lidar2ego[:3, 3]),
                              rotation=tuple(matrix_to_quaternion(lidar2ego)), intrinsic=None)
    return rig


def camera_intrinsic(channel: str, image_size: Tuple[int, int]) -> np.ndarray:
    """(3, 3) intrinsic matrix of a ``RIG`` camera for images of ``image_size`` (height, width)."""
    fx, fy, cx, cy = RIG[channel]['intrinsic']
    scale_y, scale_x = (new / old for new, old in zip(image_size, REAL_IMAGE_SIZE))
    return np.array([[fx * scale_x, 0.0, cx * scale_x], [0.0, fy * scale_y, cy * scale_y],
                     [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- world constants
class _ObjectSpec(NamedTuple):
    category: str  # nuScenes general category name
    size: Tuple[float, float, float]  # typical (w, l, h) in metres (nuScenes order)
    speed: Optional[Tuple[float, float]]  # (min, max) m/s when moving; None: never moves
    count: int  # objects per scene: the first is always placed, the others when they fit
    colour: Tuple[int, int, int]  # RGB of the rendered faces
    intensity: float  # LiDAR return intensity


# Keyed by detection class (``NUSCENES_CLASSES``), plus 'debris', a category mapped to no class.
# Colours are 10 hues 15+ degrees apart in RGB space (and from the grey ground and the sky).
OBJECT_SPECS: Dict[str, _ObjectSpec] = {
    'car': _ObjectSpec('vehicle.car', (1.95, 4.62, 1.72), (3.0, 9.0), 3, (230, 23, 23), 40.0),
    'truck': _ObjectSpec('vehicle.truck', (2.5, 6.9, 2.85), (3.0, 7.0), 1, (23, 23, 230), 45.0),
    'trailer': _ObjectSpec('vehicle.trailer', (2.9, 12.0, 3.8), (3.0, 6.0), 1, (133, 230, 23),
                           35.0),
    'bus': _ObjectSpec('vehicle.bus.rigid', (2.95, 11.1, 3.5), (3.0, 7.0), 1, (23, 230, 126), 50.0),
    'construction_vehicle': _ObjectSpec('vehicle.construction', (2.8, 6.4, 3.2), (1.0, 3.0), 1,
                                        (230, 223, 23), 30.0),
    'bicycle': _ObjectSpec('vehicle.bicycle', (0.6, 1.7, 1.3), (2.0, 5.0), 1, (23, 230, 23), 20.0),
    'motorcycle': _ObjectSpec('vehicle.motorcycle', (0.77, 2.1, 1.47), (3.0, 8.0), 1,
                              (23, 230, 230), 25.0),
    'pedestrian': _ObjectSpec('human.pedestrian.adult', (0.67, 0.73, 1.77), (0.8, 1.6), 3,
                              (143, 23, 230), 15.0),
    'traffic_cone': _ObjectSpec('movable_object.trafficcone', (0.41, 0.41, 1.07), None, 2,
                                (230, 126, 23), 60.0),
    'barrier': _ObjectSpec('movable_object.barrier', (2.5, 0.5, 0.98), None, 2, (230, 23, 178),
                           55.0),
    'debris': _ObjectSpec('movable_object.debris', (0.6, 0.6, 0.5), None, 1, (140, 120, 100), 10.0),
}
ATTRIBUTES: Dict[str, str] = {
    'vehicle.moving': 'Vehicle is moving.',
    'vehicle.stopped': 'Vehicle, with a driver, is temporarily stationary.',
    'vehicle.parked': 'Vehicle is stationary with no driver.',
    'cycle.with_rider': 'There is someone riding the bicycle or motorcycle.',
    'cycle.without_rider': 'There is nobody riding the bicycle or motorcycle.',
    'pedestrian.sitting_lying_down': 'The pedestrian is sitting or lying down.',
    'pedestrian.standing': 'The pedestrian is standing.',
    'pedestrian.moving': 'The pedestrian is moving.',
}
# (token, level, upper bound of the visible fraction): the real nuScenes visibility table.
VISIBILITY_BINS = (('1', 'v0-40', 0.4), ('2', 'v40-60', 0.6), ('3', 'v60-80', 0.8),
                   ('4', 'v80-100', 1.0))
LOCATIONS = ('singapore-onenorth', 'boston-seaport')

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
CAN_POSE_INTERVAL_US = 20_000  # 50 Hz, as the real CAN bus pose messages
CAN_POSE_MARGIN_US = 200_000  # pose messages cover a scene's keyframes with this margin each side
CAN_POSE_OFFSET_US = 8_000  # the first pose message after a keyframe comes this much later
FIRST_TIMESTAMP_US = 1_531_000_000_000_000  # 2018-07-07; scene n starts n * 1000 s later

LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)  # HDL-32E beams, ring 0 = lowest
AZIMUTH_STEP_DEG = 0.6
GROUND_THINNING = 6
LIDAR_MAX_RANGE = 70.0
GROUND_INTENSITY = 5.0
SURFACE_DEPTH = 0.005  # LiDAR box returns sit this far behind the surface they hit (m)
MIN_INSIDE_DEPTH = 0.001  # ... and at least this far from every face of their box (m)

NEAR_PLANE = 0.1  # camera-space depth at which faces are clipped (m)
LIGHT_DIRECTION = np.array([-0.3, 0.4, 1.0]) / np.linalg.norm([-0.3, 0.4, 1.0])  # global
CHECKER_SIZE = 5.0  # m
MIN_IMAGE_SIDE = 32
MAX_SAMPLES_PER_SCENE = 12
JPEG_QUALITY = 92
_SAMPLE_FILE = re.compile(r'^toy\d+-scene-\d{4}__')
_CAN_BUS_FILE = re.compile(r'^scene-\d{4}_pose\.json$')


# ----------------------------------------------------------------------------- validation
def _check_int(name: str, value, low: int, high: Optional[int] = None) -> int:
    """``value`` as an int in [low, high], or a ValueError naming ``name``."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
            or (high is not None and value > high)):
        bound = f'in [{low}, {high}]' if high is not None else f'>= {low}'
        raise ValueError(f'{name} must be an int {bound}, got {value!r}')
    return int(value)


def _check_image_size(image_size) -> Tuple[int, int]:
    """``image_size`` as a (height, width) pair of ints >= ``MIN_IMAGE_SIDE``."""
    try:
        height, width = image_size
    except (TypeError, ValueError):
        height = width = None
    if isinstance(image_size, str) or not all(
            isinstance(side, (int, np.integer)) and not isinstance(side, bool)
            and side >= MIN_IMAGE_SIDE for side in (height, width)):
        raise ValueError(f'image_size must be a (height, width) pair of ints >= {MIN_IMAGE_SIDE}, '
                         f'got {image_size!r}')
    return int(height), int(width)


def _checked_args(num_train_scenes, samples_per_scene, image_size, seed) -> dict:
    """The generator arguments, validated and in JSON-friendly form (also the manifest)."""
    return dict(num_train_scenes=_check_int('num_train_scenes', num_train_scenes, 1,
                                            len(scene_names()['train'])),
                samples_per_scene=_check_int('samples_per_scene', samples_per_scene, 2,
                                             MAX_SAMPLES_PER_SCENE),
                image_size=list(_check_image_size(image_size)),
                seed=_check_int('seed', seed, 0))


def scene_names(num_train_scenes: Optional[int] = None) -> Dict[str, List[str]]:
    """{'train': the first ``num_train_scenes`` (default all 8) of the devkit's mini_train scene
    names, 'val': the 2 mini_val names}."""
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    return dict(train=list(splits['mini_train'][:num_train_scenes]),
                val=list(splits['mini_val']))


# ----------------------------------------------------------------------------- scene plan
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


# ----------------------------------------------------------------------------- geometry
def _yaw_quaternion(yaw: float) -> List[float]:
    """``[w, x, y, z]`` of a rotation by ``yaw`` about +z."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _ego2global(ego_pose: Tuple[float, float, float]) -> np.ndarray:
    """(4, 4) ego->global of an (x, y, yaw) ego pose on the ground plane."""
    x, y, yaw = ego_pose
    return pose_matrix((x, y, 0.0), _yaw_quaternion(yaw))


def sensor2ego(channel: str) -> np.ndarray:
    """(4, 4) sensor->ego of a ``RIG`` channel."""
    return pose_matrix(RIG[channel]['translation'], RIG[channel]['rotation'])


def _object_boxes(objects: Sequence[dict], t: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global boxes at time ``t``: centres (B, 3), yaws (B,), half extents (B, 3) along the box's
    (length, width, height) axes."""
    centres = np.array([[*(np.array(o['position']) + t * np.array(o['velocity'])),
                         o['size'][2] / 2] for o in objects])
    yaws = np.array([o['yaw'] for o in objects])
    half = np.array([[o['size'][1] / 2, o['size'][0] / 2, o['size'][2] / 2] for o in objects])
    return centres, yaws, half


def _box_corners(centre: np.ndarray, yaw: float, half: np.ndarray) -> np.ndarray:
    """(8, 3) corners of a box; corner ``i`` has local signs (+-x, +-y, +-z) from bits 2, 1, 0
    of ``i`` (set bit: minus)."""
    signs = np.array([[1 - 2 * ((i >> 2) & 1), 1 - 2 * ((i >> 1) & 1), 1 - 2 * (i & 1)]
                      for i in range(8)], dtype=np.float64)
    cos, sin = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return (signs * half) @ rotation.T + centre


# Faces as corner indices (see _box_corners) in cyclic order, with their outward normal in the
# box frame.
_BOX_FACES = (((0, 2, 6, 4), (0, 0, 1)), ((1, 5, 7, 3), (0, 0, -1)), ((0, 1, 3, 2), (1, 0, 0)),
              ((4, 6, 7, 5), (-1, 0, 0)), ((0, 4, 5, 1), (0, 1, 0)), ((2, 3, 7, 6), (0, -1, 0)))


# ----------------------------------------------------------------------------- LiDAR
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


# ----------------------------------------------------------------------------- plan
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


# ----------------------------------------------------------------------------- rendering
def _clip_near(polygon: np.ndarray) -> np.ndarray:
    """The part (M, 3) of a camera-frame polygon (N, 3) with depth z >= ``NEAR_PLANE``."""
    clipped = []
    for current, following in zip(polygon, np.roll(polygon, -1, axis=0)):
        current_in, following_in = current[2] >= NEAR_PLANE, following[2] >= NEAR_PLANE
        if current_in:
            clipped.append(current)
        if current_in != following_in:
            fraction = (NEAR_PLANE - current[2]) / (following[2] - current[2])
            clipped.append(current + fraction * (following - current))
    return np.array(clipped).reshape(-1, 3)


_GROUND_RGB = (105.0, 105.0, 100.0)
_HAZE_RGB = (175.0, 185.0, 195.0)
_SKY_HORIZON_RGB = (200.0, 215.0, 230.0)
_SKY_ZENITH_RGB = (110.0, 150.0, 210.0)


def _background(cam2global: np.ndarray, intrinsic: np.ndarray, height: int,
                width: int) -> np.ndarray:
    """(height, width, 3) float32 RGB sky above the horizon, checkered ground below it."""
    pixel2global = (cam2global[:3, :3] @ np.linalg.inv(intrinsic)).astype(np.float32)
    cols = np.arange(width, dtype=np.float32)[None, :]
    rows = np.arange(height, dtype=np.float32)[:, None]
    dx, dy, dz = (m[0] * cols + m[1] * rows + m[2] for m in pixel2global)  # (H, W) directions
    length = np.sqrt(dx * dx + dy * dy + dz * dz)
    is_ground = dz < -1e-6 * length
    steps = np.where(is_ground, np.float32(-cam2global[2, 3]) / np.where(is_ground, dz, -1), 0)
    ground_x = np.float32(cam2global[0, 3]) + steps * dx
    ground_y = np.float32(cam2global[1, 3]) + steps * dy
    checker = (np.floor(ground_x / CHECKER_SIZE) + np.floor(ground_y / CHECKER_SIZE)) % 2 * 2 - 1
    fade = np.exp(steps * length / -60.0)  # 1 at the camera, 0 far away
    ground_weight = fade ** 0.3  # far ground fades into haze
    elevation = np.clip(dz / length, 0, 1)
    image = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):
        ground = ((_GROUND_RGB[channel] + 14 * checker * fade) * ground_weight
                  + _HAZE_RGB[channel] * (1 - ground_weight))
        sky = (_SKY_HORIZON_RGB[channel] * (1 - elevation)
               + _SKY_ZENITH_RGB[channel] * elevation)
        image[..., channel] = np.where(is_ground, ground, sky)
    return image


def _face_shade(normal_global: np.ndarray) -> float:
    """Brightness factor of a face with this outward global normal (ambient + diffuse)."""
    return 0.45 + 0.55 * max(0.0, float(normal_global @ LIGHT_DIRECTION))


def _fixed_point(points: np.ndarray) -> np.ndarray:
    """(N, 1, 2) int32 pixel coordinates with 4 fractional bits, for cv2's ``shift=4``."""
    return np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)


def _render_camera(objects: List[ToyObject], boxes_global: tuple, ego2global: np.ndarray,
                   channel: str, image_size: Tuple[int, int]
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one camera image.

    Returns:
        image: (height, width, 3) uint8 RGB.
        visible: (B,) pixels where each object is the nearest surface.
        silhouette: (B,) pixels each object covers when drawn alone.
    """
    height, width = image_size
    intrinsic = camera_intrinsic(channel, image_size)
    cam2global = ego2global @ sensor2ego(channel)
    global2cam = np.linalg.inv(cam2global)
    image = _background(cam2global, intrinsic, height, width)
    object_ids = np.zeros((height, width), dtype=np.uint8)  # 0: background, b + 1: object b
    centres, yaws, half = boxes_global
    silhouette = np.zeros(len(objects), dtype=np.int64)
    distances = np.linalg.norm(centres - cam2global[:3, 3], axis=1)
    for b in np.argsort(-distances, kind='stable'):  # far to near
        corners = _box_corners(centres[b], yaws[b], half[b])
        corners_cam = corners @ global2cam[:3, :3].T + global2cam[:3, 3]
        if np.all(corners_cam[:, 2] < NEAR_PLANE):
            continue  # behind the camera
        cos, sin = np.cos(yaws[b]), np.sin(yaws[b])
        colour = np.array(OBJECT_SPECS[objects[b].name].colour, dtype=np.float32)
        alone = np.zeros((height, width), dtype=np.uint8)
        for face, normal in _BOX_FACES:
            normal_global = np.array([cos * normal[0] - sin * normal[1],
                                      sin * normal[0] + cos * normal[1], normal[2]])
            polygon = corners_cam[list(face)]
            if (global2cam[:3, :3] @ normal_global) @ polygon.mean(axis=0) >= 0:
                continue  # back face
            polygon = _clip_near(polygon)
            if len(polygon) < 3:
                continue
            pixels = _fixed_point((polygon / polygon[:, 2:]) @ intrinsic.T[:, :2])
            shade = colour * _face_shade(normal_global)
            cv2.fillPoly(image, [pixels], shade.tolist(), cv2.LINE_AA, shift=4)
            cv2.polylines(image, [pixels], True, (shade * 0.45).tolist(), 1, cv2.LINE_AA,
                          shift=4)
            cv2.fillPoly(object_ids, [pixels], int(b) + 1, cv2.LINE_8, shift=4)
            cv2.fillPoly(alone, [pixels], 1, cv2.LINE_8, shift=4)
        silhouette[b] = int(alone.sum())
    visible = np.bincount(object_ids.ravel(), minlength=len(objects) + 1)[1:]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), visible, silhouette


def _visibility_token(visible: int, silhouette: int) -> str:
    """nuScenes visibility token of an object with this many visible of ``silhouette`` pixels."""
    fraction = visible / silhouette if silhouette else 0.0
    for token, _, upper in VISIBILITY_BINS:
        if fraction < upper:
            return token
    return VISIBILITY_BINS[-1][0]


# ----------------------------------------------------------------------------- tables
def _write_json(path: str, obj, indent: Optional[int] = 0) -> None:
    """Write ``obj`` as JSON (by default one value per line, like nuScenes), atomically."""
    tmp_path = f'{path}.tmp'
    with open(tmp_path, 'w') as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp_path, path)


# ----------------------------------------------------------------------------- CAN bus
def _can_bus_pose_messages(plan: ScenePlan) -> List[dict]:
    """The scene's CAN bus ``pose`` messages (see the module docstring), keys in the real files'
    order."""
    first, last = plan.timestamps[0], plan.timestamps[-1]
    utimes = np.arange(first - CAN_POSE_MARGIN_US + CAN_POSE_OFFSET_US,
                       last + CAN_POSE_MARGIN_US + 1, CAN_POSE_INTERVAL_US)
    motion = ego_motion(plan.trajectory, (utimes - first) / 1e6)
    return [dict(accel=_round(motion['acceleration'][i], 6),
                 orientation=_round(_yaw_quaternion(_wrap(motion['yaw'][i])), 8),
                 pos=_round((*motion['xy'][i], 0.0), 6),
                 rotation_rate=_round(motion['rotation_rate'][i], 6), utime=int(utime),
                 vel=_round(motion['velocity'][i], 6))
            for i, utime in enumerate(utimes)]


def _can_bus_file(scene_name: str) -> str:
    """Relative path of a scene's CAN bus pose messages."""
    return f'can_bus/{scene_name}_pose.json'


def _static_tables(seed: int) -> Tuple[dict, dict]:
    """Records of the tables shared by all scenes (sensor, category, attribute, visibility) and
    {name: token} lookups for them."""
    rng = np.random.default_rng([seed, 0])
    channels = (*CAMERA_CHANNELS, LIDAR_CHANNEL)
    sensor = [dict(token=_random_token(rng), channel=channel,
                   modality='lidar' if channel == LIDAR_CHANNEL else 'camera')
              for channel in channels]
    category = [dict(token=_random_token(rng), name=spec.category,
                     description=f'{spec.category} (toy world)') for spec in OBJECT_SPECS.values()]
    attribute = [dict(token=_random_token(rng), name=name, description=description)
                 for name, description in ATTRIBUTES.items()]
    visibility = [dict(token=token, level=level,
                       description=f'visibility of whole object is between {level[1:]} %')
                  for token, level, _ in VISIBILITY_BINS]
    lookup = dict(sensor={r['channel']: r['token'] for r in sensor},
                  category={r['name']: r['token'] for r in category},
                  attribute={r['name']: r['token'] for r in attribute})
    return dict(sensor=sensor, category=category, attribute=attribute,
                visibility=visibility), lookup


def _round(values, digits: int) -> List[float]:
    """Floats rounded for the JSON tables (mm / 1e-8 precision keeps files small and stable)."""
    return [round(float(v), digits) for v in values]


def _log_name(seed: int, scene: str) -> str:
    """The log file name of a scene, which prefixes its sample file names."""
    return f'toy{seed}-{scene}'


def _scene_records(plan: ScenePlan, seed: int, location: str, image_size: Tuple[int, int],
                   lookup: dict, visibility: np.ndarray) -> dict:
    """All table records of one scene. ``visibility`` (K, B) holds visibility tokens."""
    tokens, channels = plan.tokens, (*CAMERA_CHANNELS, LIDAR_CHANNEL)
    num_samples = len(plan.timestamps)
    log_name = _log_name(seed, plan.name)
    records = {name: [] for name in ('log', 'scene', 'calibrated_sensor', 'sample', 'sample_data',
                                     'ego_pose', 'instance', 'sample_annotation')}
    records['log'].append(dict(token=tokens['log'], logfile=log_name, vehicle='toy',
                               date_captured='2018-07-07', location=location))
    records['scene'].append(dict(
        token=tokens['scene'], log_token=tokens['log'], nbr_samples=num_samples,
        first_sample_token=tokens['sample'][0], last_sample_token=tokens['sample'][-1],
        name=plan.name, description=f'toy world scene, seed {seed}'))
    for channel in channels:
        intrinsic = ([] if channel == LIDAR_CHANNEL else
                     [_round(row, 6) for row in camera_intrinsic(channel, image_size)])
        records['calibrated_sensor'].append(dict(
            token=tokens['calibrated_sensor'][channel], sensor_token=lookup['sensor'][channel],
            translation=list(RIG[channel]['translation']),
            rotation=list(RIG[channel]['rotation']), camera_intrinsic=intrinsic))
    height, width = image_size

    def neighbour(items: list, k: int) -> Tuple[str, str]:
        return (items[k - 1] if k > 0 else '', items[k + 1] if k + 1 < num_samples else '')

    for k, (timestamp, ego_pose) in enumerate(zip(plan.timestamps, plan.ego_poses)):
        prev, next_ = neighbour(tokens['sample'], k)
        records['sample'].append(dict(token=tokens['sample'][k], timestamp=timestamp, prev=prev,
                                      next=next_, scene_token=tokens['scene']))
        for channel in channels:
            records['ego_pose'].append(dict(
                token=tokens['ego_pose'][k][channel], timestamp=timestamp,
                rotation=_round(_yaw_quaternion(ego_pose[2]), 8),
                translation=_round((ego_pose[0], ego_pose[1], 0.0), 6)))
            is_lidar = channel == LIDAR_CHANNEL
            prev, next_ = neighbour([data[channel] for data in tokens['sample_data']], k)
            records['sample_data'].append(dict(
                token=tokens['sample_data'][k][channel], sample_token=tokens['sample'][k],
                ego_pose_token=tokens['ego_pose'][k][channel],
                calibrated_sensor_token=tokens['calibrated_sensor'][channel],
                timestamp=timestamp, fileformat='pcd' if is_lidar else 'jpg', is_key_frame=True,
                height=0 if is_lidar else height, width=0 if is_lidar else width,
                filename=_sample_file(log_name, channel, timestamp), prev=prev, next=next_))
    for b, obj in enumerate(plan.objects):
        annotation_tokens = [tokens['annotation'][k][b] for k in range(num_samples)]
        records['instance'].append(dict(
            token=obj.instance_token,
            category_token=lookup['category'][OBJECT_SPECS[obj.name].category],
            nbr_annotations=num_samples, first_annotation_token=annotation_tokens[0],
            last_annotation_token=annotation_tokens[-1]))
        for k, t in enumerate(np.asarray(plan.timestamps) - plan.timestamps[0]):
            prev, next_ = neighbour(annotation_tokens, k)
            x, y = np.array(obj.position) + t / 1e6 * np.array(obj.velocity)
            records['sample_annotation'].append(dict(
                token=annotation_tokens[k], sample_token=tokens['sample'][k],
                instance_token=obj.instance_token, visibility_token=str(visibility[k, b]),
                attribute_tokens=[lookup['attribute'][obj.attribute]] if obj.attribute else [],
                translation=_round((x, y, obj.size[2] / 2), 6), size=list(obj.size),
                rotation=_round(_yaw_quaternion(obj.yaw), 8), prev=prev, next=next_,
                num_lidar_pts=int(plan.num_lidar_pts[k, b]), num_radar_pts=0))
    return records


def _sample_file(log_name: str, channel: str, timestamp: int) -> str:
    """Relative path of a sample file, named like nuScenes': samples/<CH>/<log>__<CH>__<us>.ext"""
    extension = 'pcd.bin' if channel == LIDAR_CHANNEL else 'jpg'
    return f'samples/{channel}/{log_name}__{channel}__{timestamp}.{extension}'


def _write_scene_files(root: str, plan: ScenePlan, seed: int, image_size: Tuple[int, int],
                       progress_bar: tqdm) -> Tuple[np.ndarray, List[str]]:
    """Render and write a scene's images and sweeps.

    Returns the (K, B) visibility tokens and the relative paths written.
    """
    log_name = _log_name(seed, plan.name)
    visibility = np.empty((len(plan.timestamps), len(plan.objects)), dtype=object)
    written = []
    for k, (timestamp, ego_pose) in enumerate(zip(plan.timestamps, plan.ego_poses)):
        t = (timestamp - plan.timestamps[0]) / 1e6
        boxes = _object_boxes([o._asdict() for o in plan.objects], t)
        ego2global = _ego2global(ego_pose)
        visible = np.zeros(len(plan.objects), dtype=np.int64)
        silhouette = np.zeros(len(plan.objects), dtype=np.int64)
        for channel in CAMERA_CHANNELS:
            image, seen, alone = _render_camera(plan.objects, boxes, ego2global, channel,
                                                image_size)
            visible += seen
            silhouette += alone
            path = _sample_file(log_name, channel, timestamp)
            ok, encoded = cv2.imencode('.jpg', image[:, :, ::-1],
                                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            encoded.tofile(osp.join(root, path))
            written.append(path)
        visibility[k] = [_visibility_token(v, s) for v, s in zip(visible, silhouette)]
        path = _sample_file(log_name, LIDAR_CHANNEL, timestamp)
        plan.lidar_points[k].tofile(osp.join(root, path))
        written.append(path)
        progress_bar.update()
    return visibility, written


def _map_records(seed: int, logs: List[dict]) -> List[dict]:
    """One map record per location, pointing at a placeholder mask file."""
    rng = np.random.default_rng([seed, 0, 1])
    records = []
    for location in LOCATIONS:
        log_tokens = [log['token'] for log in logs if log['location'] == location]
        token = _random_token(rng)
        if log_tokens:
            records.append(dict(category='semantic_prior', token=token,
                                filename=f'maps/{token}.png', log_tokens=log_tokens))
    return records


def _remove_stale_samples(root: str, written: set) -> None:
    """Delete sample and CAN bus files of an earlier generation (our naming) that this one did not
    write."""
    for channel in (*CAMERA_CHANNELS, LIDAR_CHANNEL):
        directory = osp.join(root, 'samples', channel)
        for name in os.listdir(directory):
            if _SAMPLE_FILE.match(name) and f'samples/{channel}/{name}' not in written:
                os.remove(osp.join(directory, name))
    for name in os.listdir(osp.join(root, 'can_bus')):
        if _CAN_BUS_FILE.match(name) and f'can_bus/{name}' not in written:
            os.remove(osp.join(root, 'can_bus', name))


def _summary(root: str, manifest: dict, generated: bool) -> dict:
    """The summary returned by :func:`generate_toy_nuscenes` and :func:`prepare_toy_nuscenes`."""
    args = manifest['args']
    return dict(root=root, generated=generated, version=VERSION,
                image_size=tuple(args['image_size']), scenes=manifest['scenes'],
                num_samples=manifest['num_samples'],
                num_annotations=manifest['num_annotations'],
                info_files={split: osp.join(root, info_file_name(INFO_PREFIX, f'mini_{split}'))
                            for split in ('train', 'val')})


def _read_manifest(root: str) -> Optional[dict]:
    """The manifest dict, or None when it is missing or unreadable."""
    try:
        with open(osp.join(root, MANIFEST_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- public API
def generate_toy_nuscenes(root: Union[str, os.PathLike], num_train_scenes: int = 4,
                          samples_per_scene: int = 8, image_size: Tuple[int, int] = (224, 400),
                          seed: int = 0, progress: bool = True) -> dict:
    """Generate (or overwrite) the toy nuScenes world under ``root``; see the module docstring.

    Args:
        root: dataset root; created if missing.
        num_train_scenes: how many of the 8 mini_train scene names to generate (1-8); both
            mini_val scenes are always generated.
        samples_per_scene: keyframes per scene (2-12), 0.5 s apart.
        image_size: (height, width) of the camera images, each >= 32.
        seed: int >= 0; the same arguments always give byte-identical files.
        progress: show a progress bar and the info files written.

    Returns:
        dict with ``root``, ``generated`` (True), ``version``, ``image_size``, ``scenes``
        ({'train': names, 'val': names}), ``num_samples`` and ``num_annotations`` (per split) and
        ``info_files`` ({'train': path, 'val': path}).
    """
    args = _checked_args(num_train_scenes, samples_per_scene, image_size, seed)
    root = os.fspath(root)
    image_size = tuple(args['image_size'])
    names = scene_names(args['num_train_scenes'])
    channels = (*CAMERA_CHANNELS, LIDAR_CHANNEL)
    for directory in (VERSION, 'maps', 'can_bus',
                      *(f'samples/{channel}' for channel in channels)):
        os.makedirs(osp.join(root, directory), exist_ok=True)
    manifest_path = osp.join(root, MANIFEST_NAME)
    if osp.exists(manifest_path):
        os.remove(manifest_path)  # an interrupted run must not look complete
    tables, lookup = _static_tables(seed)
    for name in ('log', 'scene', 'calibrated_sensor', 'sample', 'sample_data', 'ego_pose',
                 'instance', 'sample_annotation'):
        tables[name] = []
    written = set()
    num_samples, num_annotations = {}, {}
    all_scenes = [(split, name) for split in ('train', 'val') for name in names[split]]
    with tqdm(total=len(all_scenes) * samples_per_scene, desc='toy_nuscenes', unit='sample',
              disable=not progress) as progress_bar:
        for index, (split, name) in enumerate(all_scenes):
            plan = plan_scene(seed, name, samples_per_scene)
            visibility, paths = _write_scene_files(root, plan, seed, image_size, progress_bar)
            written.update(paths)
            _write_json(osp.join(root, _can_bus_file(name)), _can_bus_pose_messages(plan),
                        indent=None)
            written.add(_can_bus_file(name))
            records = _scene_records(plan, seed, LOCATIONS[index % len(LOCATIONS)], image_size,
                                     lookup, visibility)
            for table, rows in records.items():
                tables[table].extend(rows)
            num_samples[split] = num_samples.get(split, 0) + samples_per_scene
            num_annotations[split] = (num_annotations.get(split, 0)
                                      + len(records['sample_annotation']))
    tables['map'] = _map_records(seed, tables['log'])
    for record in tables['map']:
        cv2.imwrite(osp.join(root, record['filename']), np.full((8, 8), 255, dtype=np.uint8))
    for table, rows in tables.items():
        _write_json(osp.join(root, VERSION, f'{table}.json'), rows)
    _remove_stale_samples(root, written)
    nusc = load_nuscenes(root, VERSION)
    create_nuscenes_infos(root, out_dir=root, version=VERSION, splits=('mini_train', 'mini_val'),
                          prefix=INFO_PREFIX, progress=progress, nusc=nusc, can_bus_root=root)
    manifest = dict(generator='projects.datasets.toy_nuscenes', format_version=FORMAT_VERSION,
                    args=args, scenes=names, num_samples=num_samples,
                    num_annotations=num_annotations)
    _write_json(manifest_path, manifest)
    return _summary(root, manifest, generated=True)


def toy_nuscenes_ready(root: Union[str, os.PathLike], num_train_scenes: int = 4,
                       samples_per_scene: int = 8, image_size: Tuple[int, int] = (224, 400),
                       seed: int = 0) -> bool:
    """Whether ``root`` holds a complete world generated with exactly these arguments.

    True when the manifest (written last) matches the arguments and the generator version, and
    the tables, the info files, every sample file the tables list and every scene's CAN bus pose
    file exist.
    """
    args = _checked_args(num_train_scenes, samples_per_scene, image_size, seed)
    root = os.fspath(root)
    manifest = _read_manifest(root)
    if (manifest is None or manifest.get('format_version') != FORMAT_VERSION
            or manifest.get('args') != args):
        return False
    summary = _summary(root, manifest, generated=False)
    if not all(osp.isfile(path) for path in summary['info_files'].values()):
        return False
    if not all(osp.isfile(osp.join(root, _can_bus_file(name)))
               for names in manifest['scenes'].values() for name in names):
        return False
    try:
        with open(osp.join(root, VERSION, 'sample_data.json')) as f:
            sample_data = json.load(f)
    except (OSError, ValueError):
        return False
    return all(osp.isfile(osp.join(root, record['filename'])) for record in sample_data)


def prepare_toy_nuscenes(root: Union[str, os.PathLike], num_train_scenes: int = 4,
                         samples_per_scene: int = 8, image_size: Tuple[int, int] = (224, 400),
                         seed: int = 0, force: bool = False, progress: bool = True) -> dict:
    """Generate the world unless ``root`` already holds it (see :func:`toy_nuscenes_ready`).

    ``force=True`` regenerates anyway. Returns the summary of :func:`generate_toy_nuscenes`, with
    ``generated`` False when the existing world was kept.
    """
    if not force and toy_nuscenes_ready(root, num_train_scenes, samples_per_scene, image_size,
                                        seed):
        root = os.fspath(root)
        return _summary(root, _read_manifest(root), generated=False)
    return generate_toy_nuscenes(root, num_train_scenes, samples_per_scene, image_size, seed,
                                 progress)
