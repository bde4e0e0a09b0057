"""What the toy world is made of, and the pose geometry shared by its modules.

``OBJECT_SPECS`` gives each object class its nuScenes category, typical size, speed range, count
per scene, rendered colour and LiDAR intensity; ``ATTRIBUTES``, ``VISIBILITY_BINS`` and
``LOCATIONS`` are the nuScenes vocabularies the tables use. The helpers turn an ego pose
(x, y, yaw) into an ego->global matrix, a yaw into a quaternion, and the planned objects into
global boxes at a time; scene planning, the LiDAR, the renderer and the tables all use them.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..nuscenes_infos import pose_matrix


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


def _yaw_quaternion(yaw: float) -> List[float]:
    """``[w, x, y, z]`` of a rotation by ``yaw`` about +z."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _ego2global(ego_pose: Tuple[float, float, float]) -> np.ndarray:
    """(4, 4) ego->global of an (x, y, yaw) ego pose on the ground plane."""
    x, y, yaw = ego_pose
    return pose_matrix((x, y, 0.0), _yaw_quaternion(yaw))


def _object_boxes(objects: Sequence[dict], t: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global boxes at time ``t``: centres (B, 3), yaws (B,), half extents (B, 3) along the box's
    (length, width, height) axes."""
    centres = np.array([[*(np.array(o['position']) + t * np.array(o['velocity'])),
                         o['size'][2] / 2] for o in objects])
    yaws = np.array([o['yaw'] for o in objects])
    half = np.array([[o['size'][1] / 2, o['size'][0] / 2, o['size'][2] / 2] for o in objects])
    return centres, yaws, half
