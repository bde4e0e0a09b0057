"""Writing the toy nuScenes world to disk: the public entry points.

:func:`generate_toy_nuscenes` validates its arguments, plans each scene (``plan``), renders and
writes its images and LiDAR sweeps (``render``, ``lidar``), writes its CAN bus pose messages and
the 13 tables (``tables``), builds the mmdet3d info files with ``nuscenes_infos`` and writes the
manifest last. :func:`toy_nuscenes_ready` checks a world on disk against the arguments and
:func:`prepare_toy_nuscenes` generates one only when that check fails.
"""
import json
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from ..nuscenes_infos import (CAMERA_CHANNELS, LIDAR_CHANNEL, create_nuscenes_infos, info_file_name,
                              load_nuscenes)
from .plan import ScenePlan, plan_scene, scene_names
from .render import _render_camera, _visibility_token
from .tables import (_can_bus_file, _can_bus_pose_messages, _log_name, _map_records, _sample_file,
                     _scene_records, _static_tables, _write_json)
from .world import LOCATIONS, _ego2global, _object_boxes

VERSION = 'v1.0-mini'
FORMAT_VERSION = 2  # bump when the world changes, so toy_nuscenes_ready() rejects old worlds
MANIFEST_NAME = 'toy_nuscenes_manifest.json'
INFO_PREFIX = 'nuscenes'
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


# ----------------------------------------------------------------------------- files
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


def _write_scenes(root: str, names: Dict[str, List[str]], seed: int, samples_per_scene: int,
                  image_size: Tuple[int, int], tables: dict, lookup: dict,
                  progress: bool) -> Tuple[set, Dict[str, int], Dict[str, int]]:
    """Plan every scene of ``names`` ({split: scene names}), write its images, sweeps and CAN bus
    pose file, and append its records to ``tables``.

    Returns the relative paths written and the number of samples and of annotations per split.
    """
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
    return written, num_samples, num_annotations


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
    """Generate (or overwrite) the toy nuScenes world under ``root``; see the package docstring.

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
    written, num_samples, num_annotations = _write_scenes(
        root, names, seed, samples_per_scene, image_size, tables, lookup, progress)
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
