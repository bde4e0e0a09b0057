"""The sensor rig of the toy world: the real nuScenes cameras and LIDAR_TOP.

``RIG`` holds the extrinsics and the camera intrinsics of one real nuScenes log (the 1600x900
images); ``camera_intrinsic`` scales a camera's intrinsics to the toy images' size,
``sensor2ego`` gives a sensor's extrinsic matrix, and ``rig_from_info`` reads a rig back from an
mmdet3d info file. Every other toy_nuscenes module takes its sensor geometry from here.
"""
import os.path as osp
from typing import Dict, Tuple

import numpy as np

from ..nuscenes_infos import CAMERA_CHANNELS, LIDAR_CHANNEL, matrix_to_quaternion, pose_matrix

# Sensor extrinsics (sensor->ego translation in metres, rotation as a [w, x, y, z] quaternion)
# and camera intrinsics (fx, fy, cx, cy in pixels of the 1600x900 images) of nuScenes v1.0-mini
# log n015-2018-07-24-11-22-45+0800, read from the mmdet3d info of one of its keyframes
# (n015-2018-07-24-11-22-45+0800.pkl of the team's demo frame; ``rig_from_info`` reads them
# back). nuScenes data (c) Motional, licensed CC BY-NC-SA 4.0
# (https://www.nuscenes.org/terms-of-use).
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


def sensor2ego(channel: str) -> np.ndarray:
    """(4, 4) sensor->ego of a ``RIG`` channel."""
    return pose_matrix(RIG[channel]['translation'], RIG[channel]['rotation'])
