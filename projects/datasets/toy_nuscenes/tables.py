"""The nuScenes tables and the CAN bus pose messages of the toy world.

Turns scene plans into records: the tables shared by all scenes (sensor, category, attribute,
visibility: :func:`_static_tables`), one scene's log, scene, calibrated_sensor, sample,
sample_data, ego_pose, instance and sample_annotation records (:func:`_scene_records`), the map
records (:func:`_map_records`) and a scene's CAN bus ``pose`` messages
(:func:`_can_bus_pose_messages`), with the file naming and the atomic JSON writer they share.
"""
import json
from typing import List, Optional, Tuple

import numpy as np

from ...common.checkpoint_io import write_atomic
from ..nuscenes_infos import CAMERA_CHANNELS, LIDAR_CHANNEL
from .plan import ScenePlan, _random_token, _wrap, ego_motion
from .rig import RIG, camera_intrinsic
from .world import ATTRIBUTES, LOCATIONS, OBJECT_SPECS, VISIBILITY_BINS, _yaw_quaternion

CAN_POSE_INTERVAL_US = 20_000  # 50 Hz, as the real CAN bus pose messages
CAN_POSE_MARGIN_US = 200_000  # pose messages cover a scene's keyframes with this margin each side
CAN_POSE_OFFSET_US = 8_000  # the first pose message after a keyframe comes this much later


def _write_json(path: str, obj, indent: Optional[int] = 0) -> None:
    """Write ``obj`` as JSON (by default one value per line, like nuScenes), atomically."""
    write_atomic(json.dumps(obj, indent=indent).encode(), path)


def _can_bus_pose_messages(plan: ScenePlan) -> List[dict]:
    """The scene's CAN bus ``pose`` messages (see the package docstring), keys in the real files'
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
