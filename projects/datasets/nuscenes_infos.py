"""mmdet3d 1.4 nuScenes info files (``info_version`` '1.1') with temporal links, from a database.

:func:`build_nuscenes_infos` walks the keyframe samples of some scenes of a ``nuscenes.NuScenes``
database, in scene order (the order asked for) then time order, and returns
``dict(metainfo=..., data_list=[...])`` in the layout mmdet3d 1.4's
``tools/create_data.py nuscenes`` writes (what ``NuScenesDataset`` and ``NuScenesMetric`` read)::

    sample_idx     int, index of the entry in this data_list (NuScenesMetric looks results up by it)
    token          sample token
    timestamp      float seconds (LIDAR_TOP sweep time)
    ego2global     4x4 list, ego pose of the LIDAR_TOP sample_data
    images         {CAM_*: img_path (file name), cam2img 3x3, cam2ego 4x4, sample_data_token,
                    timestamp (s), lidar2cam 4x4}
    lidar_points   {num_pts_feats 5, lidar_path (file name), lidar2ego 4x4}
    instances      [{bbox_3d, bbox_3d_isvalid, bbox_label, bbox_label_3d, num_lidar_pts,
                     num_radar_pts, velocity}]
    cam_instances  {CAM_*: []}

plus the temporal fields mmdet3d's infos lack: ``scene_token``, ``scene_name``, ``prev`` and
``next`` (sample tokens, '' at a scene's ends) and ``frame_idx`` (index of the sample in its scene),
and ``can_bus``: the 18 floats of official BEVFormer's CAN-bus vector, from the nuScenes CAN bus
expansion when one is given, else the ego pose and zeros (see ``can_bus.py``).
:func:`add_temporal_fields` and :func:`add_can_bus` add the same fields to an info dict that
mmdet3d already made.

Conventions (those of mmdet3d 1.x, checked against a real mmdet3d 1.4 v1.0-mini info):

* ``bbox_3d`` is ``[x, y, z, l, w, h, yaw]`` in the LIDAR_TOP frame. ``(x, y, z)`` is the box's
  *gravity* centre (the nuScenes annotation translation moved to the LiDAR frame), not its bottom
  centre: ``NuScenesDataset`` builds ``LiDARInstance3DBoxes(..., origin=(0.5, 0.5, 0.5))`` from it.
  ``(l, w, h)`` is the nuScenes ``size`` ``(w, l, h)`` reordered; ``yaw`` is the heading of the
  box's length axis in the LiDAR x-y plane, counter-clockwise from +x, i.e. the yaw of the
  annotation's rotation composed with global->LiDAR (roll and pitch of the LiDAR mount are
  dropped).
* ``velocity`` is ``NuScenes.box_velocity`` (global, m/s) rotated into the LiDAR frame, first two
  components; NaN (an instance seen once) becomes 0.
* ``bbox_label`` = ``bbox_label_3d`` indexes ``NUSCENES_CLASSES`` through the devkit's
  general-to-detection mapping; other categories are kept with label -1, as mmdet3d does.
* ``bbox_3d_isvalid`` = ``num_lidar_pts + num_radar_pts > 0``.
* ``lidar2cam`` goes LiDAR -> ego (at the LiDAR time) -> global -> ego (at the camera time) ->
  camera, so on real data it includes the ego motion between the LiDAR sweep and the camera
  exposure; it equals ``inv(cam2ego) @ lidar2ego`` when both share an ego pose.
* ``cam_instances`` holds an empty list per camera: the per-camera 2D/3D boxes that mmdet3d
  computes for monocular detectors (FCOS3D, PGD) are not produced. Multi-view detectors such as
  BEVFormer do not read them.
* LiDAR sweeps (non-keyframe ``sample_data``) are not listed, as in the v1.0-mini reference info.

Matrices are written in float64 (mmdet3d writes float32).
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mmengine
import numpy as np
from tqdm import tqdm

from ..common.checkpoint_io import write_atomic
from .can_bus import CanBusReader

__all__ = [
    'NUSCENES_CLASSES', 'CAMERA_CHANNELS', 'TEMPORAL_KEYS', 'quaternion_to_matrix',
    'matrix_to_quaternion', 'pose_matrix', 'global_box_to_lidar', 'nuscenes_metainfo',
    'load_nuscenes', 'select_scenes', 'build_nuscenes_infos', 'add_temporal_fields',
    'add_can_bus', 'augment_nuscenes_infos', 'create_nuscenes_infos', 'info_file_name',
    'default_splits'
]

# The order of mmdet3d's NuScenesDataset METAINFO['classes'] (labels index this tuple).
NUSCENES_CLASSES: Tuple[str, ...] = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
                                     'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone',
                                     'barrier')
CAMERA_CHANNELS: Tuple[str, ...] = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
                                    'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
LIDAR_CHANNEL = 'LIDAR_TOP'
TEMPORAL_KEYS: Tuple[str, ...] = ('scene_token', 'scene_name', 'prev', 'next', 'frame_idx')
INFO_VERSION = '1.1'
NUM_LIDAR_FEATURES = 5  # x, y, z, intensity, ring index
TABLE_NAMES = ('attribute', 'calibrated_sensor', 'category', 'ego_pose', 'instance', 'log', 'map',
               'sample', 'sample_annotation', 'sample_data', 'scene', 'sensor', 'visibility')


# ----------------------------------------------------------------------------- geometry
def quaternion_to_matrix(quaternion: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation matrix of a ``[w, x, y, z]`` quaternion (normalised first)."""
    w, x, y, z = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """(4,) unit ``[w, x, y, z]`` quaternion (``w >= 0``) of the rotation in ``matrix[:3, :3]``.

    Tolerates the float32 rounding of stored matrices: the nearest rotation's quaternion is taken
    as the dominant eigenvector of Bar-Itzhack's symmetric 4x4 matrix.
    """
    m = np.asarray(matrix, dtype=np.float64)[:3, :3]
    k = np.array([
        [m[0, 0] - m[1, 1] - m[2, 2], m[1, 0] + m[0, 1], m[2, 0] + m[0, 2], m[2, 1] - m[1, 2]],
        [m[1, 0] + m[0, 1], m[1, 1] - m[0, 0] - m[2, 2], m[2, 1] + m[1, 2], m[0, 2] - m[2, 0]],
        [m[2, 0] + m[0, 2], m[2, 1] + m[1, 2], m[2, 2] - m[0, 0] - m[1, 1], m[1, 0] - m[0, 1]],
        [m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], m[0, 0] + m[1, 1] + m[2, 2]],
    ]) / 3.0
    eigenvalues, eigenvectors = np.linalg.eigh(k)
    x, y, z, w = eigenvectors[:, np.argmax(eigenvalues)]
    quaternion = np.array([w, x, y, z])
    return quaternion if w >= 0 else -quaternion


def pose_matrix(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """(4, 4) homogeneous transform ``[[R, t], [0, 1]]`` of a translation and a ``[w, x, y, z]``
    quaternion (of a ``calibrated_sensor`` / ``ego_pose`` record: sensor->ego, ego->global)."""
    transform = np.eye(4)
    transform[:3, :3] = quaternion_to_matrix(rotation)
    transform[:3, 3] = translation
    return transform


def global_box_to_lidar(translation: Sequence[float], size: Sequence[float],
                        rotation: Sequence[float], lidar2global: np.ndarray) -> np.ndarray:
    """(7,) mmdet3d LiDAR box ``[x, y, z, l, w, h, yaw]`` of a nuScenes annotation.

    Args:
        translation: (3,) box centre in global metres.
        size: (3,) nuScenes ``(w, l, h)`` in metres.
        rotation: (4,) ``[w, x, y, z]`` box->global quaternion.
        lidar2global: (4, 4) ``ego2global @ lidar2ego``.
    """
    global2lidar = np.linalg.inv(lidar2global)
    centre = global2lidar[:3, :3] @ np.asarray(translation, dtype=np.float64) + global2lidar[:3, 3]
    box2lidar = global2lidar[:3, :3] @ quaternion_to_matrix(rotation)
    yaw = np.arctan2(box2lidar[1, 0], box2lidar[0, 0])  # heading of the box's x (length) axis
    width, length, height = size
    return np.array([*centre, length, width, height, yaw])


def _velocity_to_lidar(global_velocity: np.ndarray, lidar2global: np.ndarray) -> List[float]:
    """LiDAR-frame ``[vx, vy]`` (m/s) of a (3,) global velocity; NaN (unknown) becomes 0."""
    velocity = np.nan_to_num(np.asarray(global_velocity, dtype=np.float64), nan=0.0)
    return (lidar2global[:3, :3].T @ velocity)[:2].tolist()


# ----------------------------------------------------------------------------- database
def default_splits(version: str) -> Tuple[str, ...]:
    """The devkit's detection splits of a database version, e.g. ('mini_train', 'mini_val')."""
    if version.endswith('mini'):
        return ('mini_train', 'mini_val')
    if version.endswith('test'):
        return ('test', )
    return ('train', 'val')


def load_nuscenes(data_root: Union[str, os.PathLike], version: str = 'v1.0-mini',
                  verbose: bool = False):
    """``nuscenes.NuScenes(version, data_root)``, with errors that name what is missing.

    Raises:
        FileNotFoundError: ``data_root`` is not a directory, or ``data_root/version`` lacks one of
            the 13 JSON tables.
    """
    from nuscenes import NuScenes

    data_root = os.fspath(data_root)
    if not osp.isdir(data_root):
        raise FileNotFoundError(
            f'nuScenes data root {data_root!r} is not a directory: expected the dataset root '
            f'holding {version}/ (the JSON tables), samples/ and maps/')
    table_dir = osp.join(data_root, version)
    if not osp.isdir(table_dir):
        raise FileNotFoundError(
            f'nuScenes data root {data_root!r} has no {version}/ folder (expected {table_dir!r} '
            f'with the 13 JSON tables); folders there: {sorted(os.listdir(data_root))[:10]} '
            f'(is --version right?)')
    missing = [f'{name}.json' for name in TABLE_NAMES
               if not osp.isfile(osp.join(table_dir, f'{name}.json'))]
    if missing:
        raise FileNotFoundError(
            f'nuScenes tables of version {version!r} not found: {table_dir!r} lacks '
            f'{", ".join(missing)}; expected the 13 tables {", ".join(TABLE_NAMES)} (.json) '
            f'there (is --data-root the folder that contains {version}/, and --version right?)')
    return NuScenes(version=version, dataroot=data_root, verbose=verbose)


def select_scenes(nusc, scenes: Union[str, Sequence[str]]) -> List[dict]:
    """The ``scene`` records named by ``scenes``, in that order.

    ``scenes`` is a devkit split name (``'mini_train'``, ``'val'``, ... from
    ``nuscenes.utils.splits.create_splits_scenes``, which must belong to the database's version
    as in the devkit's evaluation: mini_* to v1.0-mini, test to v1.0-test, the others to
    v1.0-trainval; scenes of the split that the database lacks are skipped) or a sequence of
    scene names (all must exist).

    Raises:
        ValueError: an unknown split or scene name, a split of another version, or a split none
            of whose scenes exist.
    """
    from nuscenes.utils.splits import create_splits_scenes

    by_name = {scene['name']: scene for scene in nusc.scene}
    if isinstance(scenes, str):
        splits = create_splits_scenes()
        if scenes not in splits:
            raise ValueError(f'scenes: {scenes!r} is not a nuScenes split name; expected one of '
                             f'{sorted(splits)} or a list of scene names')
        split_version = {'mini_train': 'mini', 'mini_val': 'mini', 'test': 'test'}.get(
            scenes, 'trainval')
        if not nusc.version.endswith(split_version):
            raise ValueError(f'scenes: split {scenes!r} belongs to v1.0-{split_version}, not to '
                             f'the {nusc.version} database at {nusc.dataroot!r}')
        selected = [by_name[name] for name in splits[scenes] if name in by_name]
        if not selected:
            raise ValueError(f'scenes: none of the {len(splits[scenes])} scenes of split '
                             f'{scenes!r} is in the {nusc.version} database at {nusc.dataroot!r}')
        return selected
    names = list(scenes)
    unknown = [name for name in names if name not in by_name]
    if unknown or not names:
        raise ValueError(f'scenes: {unknown or names!r} not in the {nusc.version} database at '
                         f'{nusc.dataroot!r}, which has {sorted(by_name)}')
    return [by_name[name] for name in names]


def _scene_sample_tokens(nusc, scene: dict) -> List[str]:
    """Sample tokens of a scene in time order (its ``first_sample_token`` -> ``next`` chain)."""
    tokens = []
    token = scene['first_sample_token']
    while token:
        tokens.append(token)
        token = nusc.get('sample', token)['next']
    return tokens


def _temporal_fields(scene: dict, sample: dict, frame_idx: int) -> dict:
    """The temporal fields of one sample (see ``TEMPORAL_KEYS``)."""
    return dict(scene_token=scene['token'], scene_name=scene['name'], prev=sample['prev'],
                next=sample['next'], frame_idx=frame_idx)


# ----------------------------------------------------------------------------- one sample
def _sensor_to_global(nusc, sample_data_token: str) -> Tuple[dict, dict, np.ndarray, np.ndarray]:
    """A sample_data record, its calibrated_sensor record, sensor2ego (4, 4), ego2global (4, 4)."""
    sample_data = nusc.get('sample_data', sample_data_token)
    calibration = nusc.get('calibrated_sensor', sample_data['calibrated_sensor_token'])
    ego_pose = nusc.get('ego_pose', sample_data['ego_pose_token'])
    return (sample_data, calibration,
            pose_matrix(calibration['translation'], calibration['rotation']),
            pose_matrix(ego_pose['translation'], ego_pose['rotation']))


def _camera_info(nusc, sample_data_token: str, lidar2global: np.ndarray) -> dict:
    """One ``images[CAM_*]`` entry."""
    sample_data, calibration, cam2ego, ego2global = _sensor_to_global(nusc, sample_data_token)
    lidar2cam = np.linalg.inv(ego2global @ cam2ego) @ lidar2global
    return dict(img_path=osp.basename(sample_data['filename']),
                cam2img=np.asarray(calibration['camera_intrinsic'], dtype=np.float64).tolist(),
                cam2ego=cam2ego.tolist(), sample_data_token=sample_data_token,
                timestamp=sample_data['timestamp'] / 1e6, lidar2cam=lidar2cam.tolist())


def _instance_info(nusc, annotation: dict, lidar2global: np.ndarray,
                   label_of: Dict[str, int]) -> dict:
    """One ``instances`` entry of a ``sample_annotation`` record."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    label = label_of.get(category_to_detection_name(annotation['category_name']), -1)
    num_lidar_pts, num_radar_pts = annotation['num_lidar_pts'], annotation['num_radar_pts']
    return dict(
        bbox_3d=global_box_to_lidar(annotation['translation'], annotation['size'],
                                    annotation['rotation'], lidar2global).tolist(),
        bbox_3d_isvalid=bool(num_lidar_pts + num_radar_pts > 0),
        bbox_label=label, bbox_label_3d=label,
        num_lidar_pts=int(num_lidar_pts), num_radar_pts=int(num_radar_pts),
        velocity=_velocity_to_lidar(nusc.box_velocity(annotation['token']), lidar2global))


def _sample_can_bus(nusc, sample: dict, can_bus_reader: CanBusReader) -> List[float]:
    """The ``can_bus`` (18 floats) of a sample record."""
    scene_name = nusc.get('scene', sample['scene_token'])['name']
    lidar_data = nusc.get('sample_data', sample['data'][LIDAR_CHANNEL])
    ego_pose = nusc.get('ego_pose', lidar_data['ego_pose_token'])
    return can_bus_reader.sample_can_bus(scene_name, sample['timestamp'],
                                         ego_pose['translation'], ego_pose['rotation']).tolist()


def _sample_info(nusc, sample: dict, label_of: Dict[str, int],
                 can_bus_reader: CanBusReader) -> dict:
    """One data_list entry (without ``sample_idx`` and the temporal fields)."""
    lidar_data, _, lidar2ego, ego2global = _sensor_to_global(nusc, sample['data'][LIDAR_CHANNEL])
    lidar2global = ego2global @ lidar2ego
    return dict(
        token=sample['token'],
        timestamp=lidar_data['timestamp'] / 1e6,
        ego2global=ego2global.tolist(),
        can_bus=_sample_can_bus(nusc, sample, can_bus_reader),
        images={channel: _camera_info(nusc, sample['data'][channel], lidar2global)
                for channel in CAMERA_CHANNELS},
        lidar_points=dict(num_pts_feats=NUM_LIDAR_FEATURES,
                          lidar_path=osp.basename(lidar_data['filename']),
                          lidar2ego=lidar2ego.tolist()),
        instances=[_instance_info(nusc, nusc.get('sample_annotation', token), lidar2global,
                                  label_of) for token in sample['anns']],
        cam_instances={channel: [] for channel in CAMERA_CHANNELS})


# ----------------------------------------------------------------------------- info files
def nuscenes_metainfo(version: str) -> dict:
    """The info file's ``metainfo``: class name -> label, dataset, version, info_version."""
    return dict(categories={name: label for label, name in enumerate(NUSCENES_CLASSES)},
                dataset='nuscenes', version=version, info_version=INFO_VERSION)


def build_nuscenes_infos(nusc, scenes: Union[str, Sequence[str]], progress: bool = False,
                         can_bus_reader: Optional[CanBusReader] = None) -> dict:
    """``dict(metainfo, data_list)`` of every keyframe sample of ``scenes`` (see module docstring).

    Args:
        nusc: a ``nuscenes.NuScenes`` database.
        scenes: a split name or a list of scene names (see :func:`select_scenes`).
        progress: show a progress bar over the scenes.
        can_bus_reader: where ``can_bus`` comes from; default ``CanBusReader()``: the ego pose and
            zeros, with a warning.
    """
    can_bus_reader = can_bus_reader if can_bus_reader is not None else CanBusReader()
    label_of = {name: label for label, name in enumerate(NUSCENES_CLASSES)}
    data_list = []
    selected = select_scenes(nusc, scenes)
    for scene in tqdm(selected, desc='scenes', unit='scene', disable=not progress):
        for frame_idx, token in enumerate(_scene_sample_tokens(nusc, scene)):
            sample = nusc.get('sample', token)
            info = dict(sample_idx=len(data_list),
                        **_sample_info(nusc, sample, label_of, can_bus_reader))
            info.update(_temporal_fields(scene, sample, frame_idx))
            data_list.append(info)
    return dict(metainfo=nuscenes_metainfo(nusc.version), data_list=data_list)


def _check_info_dict(infos) -> None:
    """ValueError unless ``infos`` is a dict with a ``data_list`` list."""
    if not isinstance(infos, dict) or not isinstance(infos.get('data_list'), list):
        raise ValueError('infos must be an mmdet3d 1.x info dict (metainfo, data_list), got a '
                         f'{type(infos).__name__}' + (f' with keys {sorted(infos)}'
                                                      if isinstance(infos, dict) else ''))


def _info_sample(nusc, entry: dict, index: int) -> dict:
    """The sample record of ``data_list[index]`` (``entry``), or a ValueError naming it."""
    token = entry.get('token')
    try:
        return nusc.get('sample', token)
    except KeyError:
        raise ValueError(f'data_list[{index}] token {token!r} is not a sample of the '
                         f'{nusc.version} database at {nusc.dataroot!r}: does the info file '
                         f'belong to another version or data root?') from None


def add_temporal_fields(infos: dict, nusc) -> dict:
    """A copy of mmdet3d info dict ``infos`` whose entries also carry ``TEMPORAL_KEYS``.

    Each entry's ``token`` is looked up in ``nusc``; other fields are kept as they are.

    Raises:
        ValueError: ``infos`` has no ``data_list``, or a token is not a sample of ``nusc``.
    """
    _check_info_dict(infos)
    frame_of: Dict[str, int] = {}
    data_list = []
    for index, entry in enumerate(infos['data_list']):
        token = entry.get('token')
        sample = _info_sample(nusc, entry, index)
        scene = nusc.get('scene', sample['scene_token'])
        if token not in frame_of:
            frame_of.update((t, i) for i, t in enumerate(_scene_sample_tokens(nusc, scene)))
        data_list.append({**entry, **_temporal_fields(scene, sample, frame_of[token])})
    return {**infos, 'data_list': data_list}


def add_can_bus(infos: dict, nusc, can_bus_reader: Optional[CanBusReader] = None,
                overwrite: bool = True) -> dict:
    """A copy of info dict ``infos`` whose entries carry ``can_bus`` (18 floats).

    Args:
        infos: an mmdet3d 1.x info dict whose entries' ``token`` are samples of ``nusc``.
        nusc: the ``nuscenes.NuScenes`` database the infos were made from.
        can_bus_reader: where ``can_bus`` comes from; default ``CanBusReader()`` (the ego pose).
        overwrite: False keeps the ``can_bus`` that entries already have.

    Raises:
        ValueError: ``infos`` has no ``data_list``, or a token is not a sample of ``nusc``.
    """
    _check_info_dict(infos)
    can_bus_reader = can_bus_reader if can_bus_reader is not None else CanBusReader()
    data_list = []
    for index, entry in enumerate(infos['data_list']):
        if 'can_bus' in entry and not overwrite:
            data_list.append(entry)
            continue
        sample = _info_sample(nusc, entry, index)
        data_list.append({**entry, 'can_bus': _sample_can_bus(nusc, sample, can_bus_reader)})
    return {**infos, 'data_list': data_list}


def _dump_atomic(obj, path: str) -> None:
    """``obj`` pickled as mmengine.dump does, written atomically to ``path``."""
    write_atomic(mmengine.dump(obj, file_format='pkl'), path)


def augment_nuscenes_infos(info_path: Union[str, os.PathLike], data_root: Union[str, os.PathLike],
                           version: Optional[str] = None,
                           out_path: Optional[Union[str, os.PathLike]] = None,
                           nusc=None, can_bus_root: Optional[Union[str, os.PathLike]] = None,
                           can_bus_reader: Optional[CanBusReader] = None) -> str:
    """Add ``TEMPORAL_KEYS`` and ``can_bus`` to the entries of an mmdet3d 1.x nuScenes info pickle.

    Args:
        info_path: the existing info pkl (``{metainfo, data_list}``).
        data_root: the nuScenes root whose database the info file was made from.
        version: database version; default: the info's ``metainfo['version']``.
        out_path: where to write; default: overwrite ``info_path`` (atomically; only fields are
            added).
        nusc: an already loaded database to use instead of loading ``data_root``.
        can_bus_root: the folder holding the CAN bus expansion's ``can_bus/``: every entry's
            ``can_bus`` is read from it. None: entries that have a ``can_bus`` keep it, the others
            get the ego pose and zeros (with a warning).
        can_bus_reader: an already made ``CanBusReader`` to use instead of ``can_bus_root``.

    Returns:
        The path written.
    """
    info_path = os.fspath(info_path)
    if not osp.isfile(info_path):
        raise FileNotFoundError(f'info_path {info_path!r} does not exist: expected an mmdet3d '
                                f'1.x nuScenes info pkl')
    infos = mmengine.load(info_path)
    if not isinstance(infos, dict) or 'data_list' not in infos:
        raise ValueError(f'info_path {info_path!r} is not an mmdet3d 1.x info file (a dict with '
                         f'metainfo and data_list); convert old infos with mmdet3d\'s '
                         f'update_infos_to_v2.py first')
    if version is None:
        version = infos.get('metainfo', {}).get('version', 'v1.0-trainval')
    if can_bus_reader is None:
        can_bus_reader = CanBusReader(can_bus_root)
    if nusc is None:
        nusc = load_nuscenes(data_root, version)
    out_path = os.fspath(out_path) if out_path is not None else info_path
    infos = add_can_bus(add_temporal_fields(infos, nusc), nusc, can_bus_reader,
                        overwrite=can_bus_reader.can_bus_root is not None)
    _dump_atomic(infos, out_path)
    return out_path


def info_file_name(prefix: str, split: str) -> str:
    """``<prefix>_infos_<split>.pkl``, with the mini splits named as mmdet3d's create_data does
    for v1.0-mini (``mini_train`` -> ``train``), so mmdet3d's nuScenes configs find them."""
    short = split[len('mini_'):] if split in ('mini_train', 'mini_val') else split
    return f'{prefix}_infos_{short}.pkl'


def create_nuscenes_infos(data_root: Union[str, os.PathLike], out_dir=None,
                          version: str = 'v1.0-mini', splits: Optional[Sequence[str]] = None,
                          prefix: str = 'nuscenes', progress: bool = True, nusc=None,
                          can_bus_root: Optional[Union[str, os.PathLike]] = None,
                          can_bus_reader: Optional[CanBusReader] = None) -> Dict[str, str]:
    """Write one info pkl per split (:func:`info_file_name`) for a nuScenes database.

    Args:
        data_root: nuScenes root holding ``version/`` (the tables).
        out_dir: where the pkls go; default ``data_root``.
        version: database version, e.g. ``'v1.0-mini'``.
        splits: devkit split names; default :func:`default_splits` of ``version``.
        prefix: file name prefix.
        progress: print a line per split and a progress bar over its scenes.
        nusc: an already loaded database to use instead of loading ``data_root``.
        can_bus_root: the folder holding the CAN bus expansion's ``can_bus/``; None: ``can_bus``
            is the ego pose and zeros (with a warning).
        can_bus_reader: an already made ``CanBusReader`` to use instead of ``can_bus_root``.

    Returns:
        ``{split: path written}``.
    """
    if can_bus_reader is None:
        can_bus_reader = CanBusReader(can_bus_root)
    if nusc is None:
        nusc = load_nuscenes(data_root, version)
    out_dir = os.fspath(out_dir if out_dir is not None else data_root)
    written = {}
    for split in splits or default_splits(version):
        infos = build_nuscenes_infos(nusc, split, progress=progress,
                                     can_bus_reader=can_bus_reader)
        path = osp.join(out_dir, info_file_name(prefix, split))
        _dump_atomic(infos, path)
        if progress:
            print(f'{split}: {len(infos["data_list"])} samples -> {path}')
        written[split] = path
    return written
