"""The 18-value CAN-bus vector of official BEVFormer, per keyframe sample, for the info files.

The nuScenes CAN bus expansion (``can_bus_expansion.zip``, extracted so that ``<root>/can_bus/``
holds ``scene-0001_pose.json``, ``scene-0001_ms_imu.json``, ...) is read with nuscenes-devkit's
``nuscenes.can_bus.can_bus_api.NuScenesCanBus(dataroot=<root>)``. Its ``pose`` messages (about
50 Hz) carry ``utime`` (microseconds, the clock of ``sample['timestamp']``), ``pos`` (3, global
metres), ``orientation`` (4, w x y z), and ``accel`` (3, m/s^2), ``rotation_rate`` (3, rad/s),
``vel`` (3, m/s), all three in the ego frame. The vector of a sample, as the official converter
(``tools/data_converter/nuscenes_converter.py``, ``_get_can_bus_info``) builds it::

    [0:3]   pos           of the last pose message with utime <= the sample's timestamp (the
    [3:7]   orientation   first message when even that one comes after the sample)
    [7:10]  accel         of the FIRST message AFTER the sample's timestamp (the last message
    [10:13] rotation_rate when none comes after): the official loop reads them from its loop
    [13:16] vel           variable, not from the message it picked for the pose
    [16:18] 0, 0

``official_quirk=False`` reads [7:16] from the same message as the pose instead. A scene whose
messages cannot be read (the devkit's CAN-blacklisted scenes, no pose file, no messages) gets
``np.zeros(18)``, as in the official converter, with one warning naming the scene.

Without the expansion, [0:3] and [3:7] are the ego pose of the sample's LIDAR_TOP sample_data
(``ego2global`` translation and ``[w, x, y, z]`` rotation) and the rest are zeros, with one
warning. Official BEVFormer's dataset overwrites [0:7], [16] and [17] from the ego pose anyway
(:func:`frame_can_bus`), so only accel, rotation rate and velocity need the expansion.
"""
import os
import os.path as osp
import re
import warnings
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = [
    'CAN_BUS_DIM', 'POSE_MESSAGE_KEYS', 'check_can_bus_root', 'pose_message_can_bus',
    'ego_pose_can_bus', 'CanBusReader', 'frame_can_bus'
]

CAN_BUS_DIM = 18
POSE_MESSAGE_KEYS = ('accel', 'orientation', 'pos', 'rotation_rate', 'utime', 'vel')
_POSE_FILE = re.compile(r'^scene-\d{4}_pose\.json$')
_MESSAGE_FILE = re.compile(r'^scene-\d{4}_\w+\.json$')


def check_can_bus_root(can_bus_root: Union[str, os.PathLike]) -> str:
    """``can_bus_root`` as a str, after checking it holds the expansion's layout.

    Raises:
        FileNotFoundError: ``can_bus_root`` is not a directory, has no ``can_bus/`` folder, or
            its ``can_bus/`` holds no ``scene-XXXX_pose.json``.
    """
    can_bus_root = os.fspath(can_bus_root)
    expected = ('expected the folder where the nuScenes CAN bus expansion '
                '(can_bus_expansion.zip) was extracted, holding can_bus/scene-XXXX_pose.json '
                '(the folder that contains can_bus/, as nuscenes-devkit\'s '
                'NuScenesCanBus(dataroot=...) expects)')
    if not osp.isdir(can_bus_root):
        raise FileNotFoundError(f'can_bus_root {can_bus_root!r} is not a directory: {expected}')
    can_dir = osp.join(can_bus_root, 'can_bus')
    if not osp.isdir(can_dir):
        hint = ''
        if any(_MESSAGE_FILE.match(name) for name in os.listdir(can_bus_root)):
            hint = (f'; it holds scene-XXXX_*.json itself: pass its parent '
                    f'{osp.dirname(osp.abspath(can_bus_root))!r}')
        raise FileNotFoundError(f'can_bus_root {can_bus_root!r} has no can_bus/ folder: '
                                f'{expected}{hint}')
    if not any(_POSE_FILE.match(name) for name in os.listdir(can_dir)):
        raise FileNotFoundError(f'can_bus_root {can_bus_root!r}: {can_dir!r} holds no '
                                f'scene-XXXX_pose.json; {expected}')
    return can_bus_root


def pose_message_can_bus(pose_messages: Sequence[dict], timestamp_us: int,
                         official_quirk: bool = True) -> np.ndarray:
    """(18,) float64 CAN-bus vector of a sample from its scene's pose messages (see the module
    docstring for the layout).

    Args:
        pose_messages: the scene's ``pose`` messages (dicts with ``POSE_MESSAGE_KEYS``), in time
            order, at least one.
        timestamp_us: the sample's ``timestamp`` (microseconds).
        official_quirk: read accel, rotation_rate and vel from the first message after the
            sample (the official converter's loop variable); False: from the pose's message.
    """
    pose_index = 0  # the first message when every message comes after the sample
    while (pose_index + 1 < len(pose_messages)
           and pose_messages[pose_index + 1]['utime'] <= timestamp_us):
        pose_index += 1
    motion_index = pose_index
    if official_quirk:
        # the official loop stops at the first message after the sample, else ends on the last
        motion_index = next((i for i, message in enumerate(pose_messages)
                             if message['utime'] > timestamp_us), len(pose_messages) - 1)
    pose, motion = pose_messages[pose_index], pose_messages[motion_index]
    return np.array([*pose['pos'], *pose['orientation'], *motion['accel'],
                     *motion['rotation_rate'], *motion['vel'], 0.0, 0.0], dtype=np.float64)


def ego_pose_can_bus(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """(18,) float64 vector without the expansion: ego2global translation (3) and ``[w, x, y,
    z]`` rotation (4), then zeros."""
    can_bus = np.zeros(CAN_BUS_DIM)
    can_bus[0:3], can_bus[3:7] = translation, rotation
    return can_bus


class CanBusReader:
    """CAN-bus vectors of keyframe samples, from the expansion under ``can_bus_root`` or, when it
    is None, from the ego pose (one warning, on first use, that [7:16] are zeros then).

    Each scene's pose messages are read once; a scene whose messages cannot be read gets zeros
    and one warning naming it.

    Args:
        can_bus_root: the folder holding ``can_bus/`` (see :func:`check_can_bus_root`), or None.
        official_quirk: see :func:`pose_message_can_bus`.
    """

    def __init__(self, can_bus_root: Optional[Union[str, os.PathLike]] = None,
                 official_quirk: bool = True) -> None:
        self.official_quirk = official_quirk
        self.can_bus_root = None
        self._can_bus = None
        if can_bus_root is not None:
            from nuscenes.can_bus.can_bus_api import NuScenesCanBus

            self.can_bus_root = check_can_bus_root(can_bus_root)
            self._can_bus = NuScenesCanBus(dataroot=self.can_bus_root)
        self._messages: Dict[str, Optional[List[dict]]] = {}
        self._warned_no_expansion = False

    def _pose_messages(self, scene_name: str) -> Optional[List[dict]]:
        """The scene's pose messages, or None (warned once) when they cannot be read."""
        if scene_name in self._messages:
            return self._messages[scene_name]
        try:
            messages = self._can_bus.get_messages(scene_name, 'pose', print_warnings=False)
            problem = '' if messages else 'no pose messages'
        except Exception as error:  # the devkit raises a bare Exception for blacklisted scenes
            messages, problem = None, f'{type(error).__name__}: {error}'
        if problem:
            warnings.warn(f'CAN bus: {scene_name} has no usable pose messages under '
                          f'{osp.join(self.can_bus_root, "can_bus")!r} ({problem}); its samples '
                          'get can_bus = zeros(18), as in the official converter')
            messages = None
        elif set(POSE_MESSAGE_KEYS) - set(messages[0]):
            raise ValueError(f'CAN bus: {scene_name}_pose.json under {self.can_bus_root!r} has '
                             f'messages with the keys {sorted(messages[0])}; expected '
                             f'{list(POSE_MESSAGE_KEYS)}')
        self._messages[scene_name] = messages
        return messages

    def sample_can_bus(self, scene_name: str, timestamp_us: int,
                       ego_translation: Sequence[float],
                       ego_rotation: Sequence[float]) -> np.ndarray:
        """(18,) float64 CAN-bus vector of one keyframe sample.

        Args:
            scene_name: e.g. 'scene-0061'.
            timestamp_us: the sample record's ``timestamp`` (microseconds).
            ego_translation, ego_rotation: (3,) and (4,) ``[w, x, y, z]`` ego2global pose of the
                sample's LIDAR_TOP sample_data (used only without the expansion).
        """
        if self._can_bus is None:
            if not self._warned_no_expansion:
                self._warned_no_expansion = True
                warnings.warn('CAN bus: no CAN bus expansion given (can_bus_root / --can-bus-root):'
                              ' can_bus [0:7] is the ego pose and the accel, rotation-rate and '
                              'velocity slots [7:16] are zeros, which official BEVFormer '
                              'weights were not trained with')
            return ego_pose_can_bus(ego_translation, ego_rotation)
        messages = self._pose_messages(scene_name)
        if messages is None:
            return np.zeros(CAN_BUS_DIM)
        return pose_message_can_bus(messages, timestamp_us, self.official_quirk)


def frame_can_bus(stored_can_bus: Sequence[float], ego2global: np.ndarray) -> np.ndarray:
    """(18,) float64 CAN-bus vector of a frame as official BEVFormer's dataset
    (``get_data_info``) gives it to the model: a copy of the info's ``can_bus`` with

    * [0:3] the ego2global translation and [3:7] its ``[w, x, y, z]`` quaternion; of the two
      signs (the same rotation) the one closer to the stored [3:7] (the database's own sign),
      ``w >= 0`` when the stored one is zero;
    * [16] the ego yaw in radians in [0, 2 pi): the heading of the rotated x axis in the x-y
      plane (pyquaternion's ``quaternion_yaw`` as the official code uses), +2 pi if negative;
    * [17] the same yaw in degrees.

    Absolute values: the model takes the differences between frames itself.

    Args:
        stored_can_bus: (18,) the info's ``can_bus``.
        ego2global: (4, 4) the info's ``ego2global``.
    """
    from .nuscenes_infos import matrix_to_quaternion

    can_bus = np.array(stored_can_bus, dtype=np.float64)
    if can_bus.shape != (CAN_BUS_DIM, ):
        raise ValueError(f'can_bus must have {CAN_BUS_DIM} values, got shape {can_bus.shape}')
    ego2global = np.asarray(ego2global, dtype=np.float64)
    quaternion = matrix_to_quaternion(ego2global)
    if quaternion @ can_bus[3:7] < 0:
        quaternion = -quaternion
    can_bus[0:3], can_bus[3:7] = ego2global[:3, 3], quaternion
    yaw_deg = np.arctan2(ego2global[1, 0], ego2global[0, 0]) / np.pi * 180
    if yaw_deg < 0:
        yaw_deg += 360
    can_bus[16], can_bus[17] = yaw_deg / 180 * np.pi, yaw_deg
    return can_bus
