"""The real nuScenes camera rig (``projects.datasets.toy_nuscenes.RIG``) as ``lidar2img`` at a
chosen image size, for benchmarks and tests that want realistic camera geometry without data.

nuScenes calibration (c) Motional, CC BY-NC-SA 4.0 (https://www.nuscenes.org/terms-of-use).
"""
from typing import Tuple

import numpy as np

from projects.datasets.nuscenes_infos import CAMERA_CHANNELS, pose_matrix
from projects.datasets.toy_nuscenes import REAL_IMAGE_SIZE, RIG

__all__ = ['nuscenes_rig_lidar2img']


def nuscenes_rig_lidar2img(image_hw: Tuple[int, int] = REAL_IMAGE_SIZE) -> np.ndarray:
    """(6, 4, 4) lidar2img of the six cameras (``CAMERA_CHANNELS`` order) for images resized from
    1600x900 to ``image_hw`` (height, width); all sensors taken at one instant (lidar2cam =
    inv(cam2ego) @ lidar2ego)."""
    lidar2ego = pose_matrix(RIG['LIDAR_TOP']['translation'], RIG['LIDAR_TOP']['rotation'])
    scale_x, scale_y = image_hw[1] / REAL_IMAGE_SIZE[1], image_hw[0] / REAL_IMAGE_SIZE[0]
    lidar2img = []
    for channel in CAMERA_CHANNELS:
        fx, fy, cx, cy = RIG[channel]['intrinsic']
        cam2img = np.array([[fx * scale_x, 0, cx * scale_x, 0], [0, fy * scale_y, cy * scale_y, 0],
                            [0, 0, 1, 0], [0, 0, 0, 1]])
        cam2ego = pose_matrix(RIG[channel]['translation'], RIG[channel]['rotation'])
        lidar2img.append(cam2img @ np.linalg.inv(cam2ego) @ lidar2ego)
    return np.stack(lidar2img)
