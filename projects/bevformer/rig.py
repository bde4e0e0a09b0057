"""The real nuScenes camera rig (``projects.datasets.toy_nuscenes.RIG``) as ``lidar2img`` at a
chosen image size, for benchmarks and tests that want realistic camera geometry without data.

nuScenes calibration (c) Motional, CC BY-NC-SA 4.0 (https://www.nuscenes.org/terms-of-use).
"""
from typing import Tuple

import numpy as np

from projects.datasets.nuscenes_infos import CAMERA_CHANNELS, LIDAR_CHANNEL
from projects.datasets.toy_nuscenes import REAL_IMAGE_SIZE, camera_intrinsic, sensor2ego

__all__ = ['nuscenes_rig_lidar2img']


def nuscenes_rig_lidar2img(image_hw: Tuple[int, int] = REAL_IMAGE_SIZE) -> np.ndarray:
    """(6, 4, 4) lidar2img of the six cameras (``CAMERA_CHANNELS`` order) for images resized from
    1600x900 to ``image_hw`` (height, width); all sensors taken at one instant (lidar2cam =
    inv(cam2ego) @ lidar2ego)."""
    lidar2ego = sensor2ego(LIDAR_CHANNEL)
    lidar2img = []
    for channel in CAMERA_CHANNELS:
        cam2img = np.eye(4)
        cam2img[:3, :3] = camera_intrinsic(channel, image_hw)
        lidar2img.append(cam2img @ np.linalg.inv(sensor2ego(channel)) @ lidar2ego)
    return np.stack(lidar2img)
