"""Tests of the toy nuScenes world (projects/datasets/toy_nuscenes/) and of the mmdet3d info
builder (projects/datasets/nuscenes_infos.py), checked against nuscenes-devkit and mmdet3d."""
import importlib.util
import os
import os.path as osp
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch
from file_helpers import DEMO_INFO_PATH, file_bytes

from projects.datasets.can_bus import CanBusReader
from projects.datasets.nuscenes_infos import (CAMERA_CHANNELS, NUSCENES_CLASSES, TEMPORAL_KEYS,
                                              add_temporal_fields, augment_nuscenes_infos,
                                              build_nuscenes_infos, load_nuscenes)
from projects.datasets.toy_nuscenes import (CAN_POSE_INTERVAL_US, CAN_POSE_OFFSET_US, OBJECT_SPECS,
                                            RIG, ego_motion, generate_toy_nuscenes, plan_scene,
                                            prepare_toy_nuscenes, rig_from_info, scene_names,
                                            scene_trajectory, toy_nuscenes_ready)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# 1 train + the 2 val scenes, 4 keyframes each, small non-square images.
ARGS = dict(num_train_scenes=1, samples_per_scene=4, image_size=(144, 256), seed=3)
SPLIT_SCENES = dict(train=['scene-0061'], val=['scene-0103', 'scene-0916'])


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Summary dict of one small generated world, shared by the read-only tests."""
    return generate_toy_nuscenes(tmp_path_factory.mktemp('toy_nuscenes'), **ARGS, progress=False)


@pytest.fixture(scope='module')
def nusc(world):
    from nuscenes import NuScenes
    return NuScenes(version='v1.0-mini', dataroot=world['root'], verbose=False)


def _load_pkl(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


@pytest.fixture(scope='module')
def infos(world):
    """{'train': info dict, 'val': info dict} as written by the generator."""
    return {split: _load_pkl(path) for split, path in world['info_files'].items()}


def _load_cli(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO_ROOT, 'tools', 'data', f'{name}.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def _detection_name(category_name):
    from nuscenes.eval.detection.utils import category_to_detection_name
    return category_to_detection_name(category_name)


# ----------------------------------------------------------------------------- the database
def test_scenes_are_named_from_the_official_mini_splits(world, nusc):
    from nuscenes.utils.splits import create_splits_scenes
    splits = create_splits_scenes()
    assert scene_names(1) == SPLIT_SCENES
    assert world['scenes'] == SPLIT_SCENES
    assert [scene['name'] for scene in nusc.scene] == SPLIT_SCENES['train'] + SPLIT_SCENES['val']
    assert set(SPLIT_SCENES['train']) <= set(splits['mini_train'])
    assert SPLIT_SCENES['val'] == splits['mini_val']


def test_devkit_tables_are_complete_and_linked(world, nusc):
    num_samples = ARGS['samples_per_scene']
    assert len(nusc.sample) == 3 * num_samples
    for scene in nusc.scene:
        tokens, token = [], scene['first_sample_token']
        while token:
            sample = nusc.get('sample', token)
            assert sample['scene_token'] == scene['token']
            assert sorted(sample['data']) == sorted([*CAMERA_CHANNELS, 'LIDAR_TOP'])
            if tokens:
                assert sample['prev'] == tokens[-1]
                assert sample['timestamp'] - nusc.get('sample', tokens[-1])['timestamp'] == 500000
            tokens.append(token)
            token = sample['next']
        assert len(tokens) == scene['nbr_samples'] == num_samples
        assert tokens[-1] == scene['last_sample_token']
        assert nusc.get('sample', tokens[0])['prev'] == ''
        assert nusc.get('log', scene['log_token'])['map_token']
    for record in nusc.sample_data:
        assert osp.isfile(osp.join(world['root'], record['filename']))
        sample = nusc.get('sample', record['sample_token'])
        assert record['timestamp'] == sample['timestamp'] and record['is_key_frame']
        if record['next']:
            assert nusc.get('sample_data', record['next'])['prev'] == record['token']
            assert nusc.get('sample_data', record['next'])['channel'] == record['channel']
        if record['sensor_modality'] == 'camera':
            assert (record['height'], record['width']) == ARGS['image_size']
    for record in nusc.map:
        assert osp.isfile(osp.join(world['root'], record['filename']))
    tokens = [record['token'] for table in nusc.table_names for record in getattr(nusc, table)
              if table != 'visibility']
    assert len(set(tokens)) == len(tokens)
    assert all(len(token) == 32 and int(token, 16) >= 0 for token in tokens)


def test_instance_chains(nusc):
    for instance in nusc.instance:
        chain, token = [], instance['first_annotation_token']
        while token:
            annotation = nusc.get('sample_annotation', token)
            assert annotation['instance_token'] == instance['token']
            if chain:
                assert annotation['prev'] == chain[-1]
                previous = nusc.get('sample_annotation', chain[-1])
                assert nusc.get('sample', previous['sample_token'])['next'] == annotation[
                    'sample_token']
            chain.append(token)
            token = annotation['next']
        assert chain[-1] == instance['last_annotation_token']
        assert len(chain) == instance['nbr_annotations']
    assert sum(instance['nbr_annotations'] for instance in nusc.instance) == len(
        nusc.sample_annotation)


def test_every_split_has_every_class_with_points_in_range(nusc):
    for split_scenes in SPLIT_SCENES.values():
        found = set()
        for annotation in nusc.sample_annotation:
            scene = nusc.get('scene', nusc.get('sample', annotation['sample_token'])['scene_token'])
            name = _detection_name(annotation['category_name'])
            if scene['name'] not in split_scenes or name is None:
                continue
            found.add(name)
            assert annotation['num_lidar_pts'] > 0 and annotation['num_radar_pts'] == 0
            ego_pose = nusc.get('ego_pose', nusc.get(
                'sample_data', nusc.get('sample', annotation['sample_token'])['data']['LIDAR_TOP']
            )['ego_pose_token'])
            distance = np.linalg.norm(np.subtract(annotation['translation'][:2],
                                                  ego_pose['translation'][:2]))
            assert distance <= 30.0
        assert found == set(NUSCENES_CLASSES)


def test_sizes_attributes_and_no_overlap(nusc):
    from nuscenes.eval.detection.utils import detection_name_to_rel_attributes
    from shapely.geometry import Polygon
    category_spec = {spec.category: spec for spec in OBJECT_SPECS.values()}
    for sample in nusc.sample:
        footprints = []
        for token in sample['anns']:
            annotation = nusc.get('sample_annotation', token)
            spec = category_spec[annotation['category_name']]
            np.testing.assert_allclose(annotation['size'], spec.size, rtol=0.1)
            box = nusc.get_box(token)
            assert abs(box.center[2] - box.wlh[2] / 2) < 1e-5  # standing on the ground z = 0
            footprints.append(Polygon(box.bottom_corners()[:2].T))
            attributes = [nusc.get('attribute', a)['name'] for a in annotation['attribute_tokens']]
            name = _detection_name(annotation['category_name'])
            allowed = detection_name_to_rel_attributes(name) if name else []
            assert len(attributes) == (1 if allowed else 0) and set(attributes) <= set(allowed)
            if attributes:
                moving = attributes[0] in ('vehicle.moving', 'cycle.with_rider',
                                           'pedestrian.moving')
                speed = np.linalg.norm(nusc.box_velocity(token)[:2])
                assert (speed > 0.5) == moving, (attributes, speed)
        for i, first in enumerate(footprints):
            for second in footprints[i + 1:]:
                assert first.intersection(second).area == 0


def test_box_velocity_is_the_generated_velocity(nusc):
    moving = 0
    for name in SPLIT_SCENES['train'] + SPLIT_SCENES['val']:
        plan = plan_scene(ARGS['seed'], name, ARGS['samples_per_scene'])
        for obj in plan.objects:
            instance = nusc.get('instance', obj.instance_token)
            assert nusc.get('category', instance['category_token'])['name'] == OBJECT_SPECS[
                obj.name].category
            token = instance['first_annotation_token']
            while token:
                np.testing.assert_allclose(nusc.box_velocity(token)[:2], obj.velocity, atol=1e-4)
                token = nusc.get('sample_annotation', token)['next']
            moving += bool(np.any(obj.velocity))
    assert moving >= 5


def test_num_lidar_pts_counts_the_sweep_points_in_each_box(nusc):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion
    for sample in nusc.sample[::3]:
        lidar = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
        raw = np.fromfile(nusc.get_sample_data_path(lidar['token']), dtype=np.float32)
        assert raw.size % 5 == 0 and raw.size > 0
        cloud = LidarPointCloud.from_file(nusc.get_sample_data_path(lidar['token']))
        calibration = nusc.get('calibrated_sensor', lidar['calibrated_sensor_token'])
        ego_pose = nusc.get('ego_pose', lidar['ego_pose_token'])
        cloud.rotate(Quaternion(calibration['rotation']).rotation_matrix)
        cloud.translate(np.array(calibration['translation']))
        cloud.rotate(Quaternion(ego_pose['rotation']).rotation_matrix)
        cloud.translate(np.array(ego_pose['translation']))
        for token in sample['anns']:
            inside = points_in_box(nusc.get_box(token), cloud.points[:3]).sum()
            assert inside == nusc.get('sample_annotation', token)['num_lidar_pts']


def test_calibration_is_the_rig_with_scaled_intrinsics(nusc):
    height, width = ARGS['image_size']
    for record in nusc.calibrated_sensor:
        channel = nusc.get('sensor', record['sensor_token'])['channel']
        np.testing.assert_allclose(record['translation'], RIG[channel]['translation'])
        np.testing.assert_allclose(record['rotation'], RIG[channel]['rotation'])
        if channel == 'LIDAR_TOP':
            assert record['camera_intrinsic'] == []
            continue
        fx, fy, cx, cy = RIG[channel]['intrinsic']
        np.testing.assert_allclose(record['camera_intrinsic'], [
            [fx * width / 1600, 0, cx * width / 1600], [0, fy * height / 900, cy * height / 900],
            [0, 0, 1]], atol=1e-5)


def test_rig_constants_match_the_real_nuscenes_info():
    if not osp.isfile(DEMO_INFO_PATH):
        pytest.skip(f'the real nuScenes v1.0-mini info {DEMO_INFO_PATH} is not on this machine')
    real = rig_from_info(DEMO_INFO_PATH)
    assert sorted(real) == sorted(RIG)
    for channel, calibration in RIG.items():
        np.testing.assert_allclose(calibration['translation'], real[channel]['translation'],
                                   atol=1e-6)
        np.testing.assert_allclose(calibration['rotation'], real[channel]['rotation'], atol=1e-6)
        if calibration['intrinsic'] is not None:
            np.testing.assert_allclose(calibration['intrinsic'], real[channel]['intrinsic'],
                                       atol=1e-5)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files(tmp_path, world):
    generate_toy_nuscenes(tmp_path, **ARGS, progress=False)
    ours, reference = file_bytes(tmp_path), file_bytes(world['root'])
    assert sorted(ours) == sorted(reference)
    different = [path for path in reference if ours[path] != reference[path]]
    assert not different


def test_other_seed_gives_other_world(tmp_path, world):
    generate_toy_nuscenes(tmp_path, **{**ARGS, 'seed': ARGS['seed'] + 1}, progress=False)
    ours, reference = file_bytes(tmp_path), file_bytes(world['root'])
    for table in ('sample_annotation', 'sample', 'ego_pose', 'category'):
        path = osp.join('v1.0-mini', f'{table}.json')
        assert ours[path] != reference[path]


# ----------------------------------------------------------------------------- rendering
def _angle_deg(colour, reference):
    colour, reference = np.asarray(colour, float), np.asarray(reference, float)
    cosine = colour @ reference / (np.linalg.norm(colour) * np.linalg.norm(reference) + 1e-9)
    return float(np.degrees(np.arccos(np.clip(cosine, -1, 1))))


def test_box_centres_project_onto_their_class_colour(world, nusc):
    """Through the devkit's own transforms and view_points, an unoccluded box centre lands on a
    pixel of its class colour (up to shading, which scales all channels alike: colours are
    compared by the angle between RGB vectors; the palette's colours are >= 15 degrees apart)."""
    from nuscenes.utils.geometry_utils import view_points
    colour_of = {spec.category: spec.colour for spec in OBJECT_SPECS.values()}
    palette = {name: spec.colour for name, spec in OBJECT_SPECS.items() if name != 'debris'}
    height, width = ARGS['image_size']
    checked = 0
    for sample in nusc.sample:
        for channel in CAMERA_CHANNELS:
            path, boxes, intrinsic = nusc.get_sample_data(sample['data'][channel])
            image = cv2.imread(path)[:, :, ::-1]
            assert image.shape == (height, width, 3)
            boxes = [box for box in boxes if np.all(box.corners()[2] > 0.2)]
            hulls = [cv2.convexHull(view_points(box.corners(), intrinsic, True)[:2].T
                                    .astype(np.float32)) for box in boxes]
            for box, hull in zip(boxes, hulls):
                u, v = view_points(box.center[:, None], intrinsic, True)[:2, 0]
                centre = (float(u), float(v))
                if (not (3 <= u < width - 3 and 3 <= v < height - 3)
                        or cv2.contourArea(hull) < 60
                        or cv2.pointPolygonTest(hull, centre, True) < 3
                        or any(cv2.pointPolygonTest(other, centre, True) > -3
                               for other in hulls if other is not hull)):
                    continue
                row, col = int(round(v)), int(round(u))
                pixel = np.median(image[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3), axis=0)
                expected = colour_of[box.name]
                assert _angle_deg(pixel, expected) < 10, (box.name, channel, pixel)
                if box.name != 'movable_object.debris':
                    nearest = min(palette, key=lambda name: _angle_deg(pixel, palette[name]))
                    assert palette[nearest] == expected
                checked += 1
    assert checked >= 20


# ----------------------------------------------------------------------------- info files
def test_info_files_layout(world, infos, nusc):
    for split, info in infos.items():
        assert info['metainfo'] == dict(
            categories={name: i for i, name in enumerate(NUSCENES_CLASSES)}, dataset='nuscenes',
            version='v1.0-mini', info_version='1.1')
        entries = info['data_list']
        assert len(entries) == world['num_samples'][split] == len(SPLIT_SCENES[split]) * ARGS[
            'samples_per_scene']
        assert [e['sample_idx'] for e in entries] == list(range(len(entries)))
        for entry in entries:
            assert set(entry) == {'sample_idx', 'token', 'timestamp', 'ego2global', 'can_bus',
                                  'images', 'lidar_points', 'instances', 'cam_instances',
                                  *TEMPORAL_KEYS}
            assert sorted(entry['images']) == sorted(CAMERA_CHANNELS)
            assert entry['cam_instances'] == {channel: [] for channel in CAMERA_CHANNELS}
            for channel, image in entry['images'].items():
                sample_data = nusc.get('sample_data', image['sample_data_token'])
                assert sample_data['channel'] == channel
                assert image['img_path'] == osp.basename(sample_data['filename'])
                assert osp.isfile(osp.join(world['root'], 'samples', channel, image['img_path']))
            lidar = entry['lidar_points']
            assert lidar['num_pts_feats'] == 5
            assert osp.isfile(osp.join(world['root'], 'samples', 'LIDAR_TOP', lidar['lidar_path']))


def test_info_temporal_fields(infos, nusc):
    for split, info in infos.items():
        entries = info['data_list']
        assert [e['scene_name'] for e in entries][::ARGS['samples_per_scene']] == SPLIT_SCENES[
            split]
        for i, entry in enumerate(entries):
            sample = nusc.get('sample', entry['token'])
            scene = nusc.get('scene', sample['scene_token'])
            assert (entry['scene_token'], entry['scene_name']) == (scene['token'], scene['name'])
            assert entry['frame_idx'] == i % ARGS['samples_per_scene']
            first, last = entry['frame_idx'] == 0, entry['frame_idx'] == ARGS[
                'samples_per_scene'] - 1
            assert entry['prev'] == ('' if first else entries[i - 1]['token'])
            assert entry['next'] == ('' if last else entries[i + 1]['token'])
            assert entry['timestamp'] == sample['timestamp'] / 1e6
            if not first:
                assert entry['timestamp'] > entries[i - 1]['timestamp']


def _wrapped(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def test_toy_ego_motion_is_the_database_pose_and_its_derivatives(nusc):
    """The trajectory the CAN bus is written from: at the keyframes it is the database's ego
    pose; its velocity, acceleration and yaw rate are its finite differences, in the ego frame."""
    step = 1e-3
    for scene in nusc.scene:
        trajectory = scene_trajectory(ARGS['seed'], scene['name'], ARGS['samples_per_scene'])
        samples, token = [], scene['first_sample_token']
        while token:
            samples.append(nusc.get('sample', token))
            token = samples[-1]['next']
        times = np.array([s['timestamp'] - samples[0]['timestamp'] for s in samples]) / 1e6
        motion = ego_motion(trajectory, times)
        for sample, xy, yaw in zip(samples, motion['xy'], motion['yaw']):
            lidar = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
            pose = nusc.get('ego_pose', lidar['ego_pose_token'])
            np.testing.assert_allclose(pose['translation'], [*xy, 0.0], atol=2e-6)
            w, _, _, z = pose['rotation']
            assert abs(_wrapped(2 * np.arctan2(z, w) - yaw)) < 1e-7
        times = np.linspace(-0.2, times[-1] + 0.2, 7)
        before, now, after = (ego_motion(trajectory, times + dt) for dt in (-step, 0, step))
        cos, sin = np.cos(now['yaw']), np.sin(now['yaw'])

        def to_ego(vector):  # (T, 2) global -> (T, 2) ego frame
            return np.stack([cos * vector[:, 0] + sin * vector[:, 1],
                             -sin * vector[:, 0] + cos * vector[:, 1]], axis=1)

        velocity = (after['xy'] - before['xy']) / (2 * step)
        np.testing.assert_allclose(to_ego(velocity), now['velocity'][:, :2], atol=1e-5)
        global_velocity = [np.stack([np.cos(m['yaw']), np.sin(m['yaw'])], 1)
                           * m['velocity'][:, :1] for m in (before, after)]
        acceleration = (global_velocity[1] - global_velocity[0]) / (2 * step)
        np.testing.assert_allclose(to_ego(acceleration), now['acceleration'][:, :2], atol=1e-5)
        np.testing.assert_allclose((after['yaw'] - before['yaw']) / (2 * step),
                                   now['rotation_rate'][:, 2], atol=1e-7)
        assert np.all(now['velocity'][:, 0] > 1.0)
        for key in ('velocity', 'acceleration', 'rotation_rate'):
            other = {'velocity': (1, 2), 'acceleration': (2, ), 'rotation_rate': (0, 1)}[key]
            assert np.all(now[key][:, other] == 0)


def test_info_can_bus_is_read_from_the_toy_expansion(world, infos, nusc):
    """Per the official converter: position and orientation of the last pose message at or
    before the sample (12 ms before it in the toy expansion), accel, rotation rate and velocity
    of the first message after it (8 ms after), then two zeros."""
    before = (CAN_POSE_INTERVAL_US - CAN_POSE_OFFSET_US) / 1e6
    after = CAN_POSE_OFFSET_US / 1e6
    quirk_effect = 0.0
    for info in infos.values():
        for entry in info['data_list']:
            assert isinstance(entry['can_bus'], list) and len(entry['can_bus']) == 18
            can_bus = np.array(entry['can_bus'])
            sample = nusc.get('sample', entry['token'])
            scene = nusc.get('scene', sample['scene_token'])
            first = nusc.get('sample', scene['first_sample_token'])['timestamp']
            t = (sample['timestamp'] - first) / 1e6
            trajectory = scene_trajectory(ARGS['seed'], scene['name'], ARGS['samples_per_scene'])
            pose, motion = (ego_motion(trajectory, np.array([time]))
                            for time in (t - before, t + after))
            np.testing.assert_allclose(can_bus[0:3], [*pose['xy'][0], 0.0], atol=2e-6)
            w, x, y, z = can_bus[3:7]
            assert x == y == 0 and abs(np.hypot(w, z) - 1) < 1e-7
            assert abs(_wrapped(2 * np.arctan2(z, w) - pose['yaw'][0])) < 1e-7
            np.testing.assert_allclose(can_bus[7:10], motion['acceleration'][0], atol=2e-6)
            np.testing.assert_allclose(can_bus[10:13], motion['rotation_rate'][0], atol=2e-6)
            np.testing.assert_allclose(can_bus[13:16], motion['velocity'][0], atol=2e-6)
            np.testing.assert_array_equal(can_bus[16:], [0.0, 0.0])
            at_pose = ego_motion(trajectory, np.array([t - before]))
            quirk_effect = max(quirk_effect, np.abs(at_pose['velocity'][0, 0] - can_bus[13]),
                               np.abs(at_pose['acceleration'][0, 1] - can_bus[8]))
    assert quirk_effect > 1e-3  # the message after differs from the pose's message


def test_scene_without_pose_file_gets_zeros(world, infos, nusc, tmp_path):
    can_dir = tmp_path / 'can_bus'
    shutil.copytree(osp.join(world['root'], 'can_bus'), can_dir)
    os.remove(can_dir / 'scene-0103_pose.json')
    with pytest.warns(UserWarning, match='scene-0103') as record:
        rebuilt = build_nuscenes_infos(nusc, 'mini_val', can_bus_reader=CanBusReader(tmp_path))
    assert len([w for w in record if 'CAN bus' in str(w.message)]) == 1
    for entry, expected in zip(rebuilt['data_list'], infos['val']['data_list']):
        if entry['scene_name'] == 'scene-0103':
            assert entry['can_bus'] == [0.0] * 18
        else:
            assert entry == expected


def test_info_transforms(infos, nusc):
    """Matrices against the devkit's transform_matrix of the raw records."""
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion

    def record_matrix(record):
        return transform_matrix(record['translation'], Quaternion(record['rotation']))

    for entry in infos['val']['data_list']:
        lidar = nusc.get('sample_data', nusc.get('sample', entry['token'])['data']['LIDAR_TOP'])
        lidar2ego = record_matrix(nusc.get('calibrated_sensor', lidar['calibrated_sensor_token']))
        np.testing.assert_allclose(entry['lidar_points']['lidar2ego'], lidar2ego, atol=1e-9)
        np.testing.assert_allclose(entry['ego2global'],
                                   record_matrix(nusc.get('ego_pose', lidar['ego_pose_token'])),
                                   atol=1e-9)
        for image in entry['images'].values():
            camera = nusc.get('sample_data', image['sample_data_token'])
            calibration = nusc.get('calibrated_sensor', camera['calibrated_sensor_token'])
            cam2ego = record_matrix(calibration)
            np.testing.assert_allclose(image['cam2ego'], cam2ego, atol=1e-9)
            np.testing.assert_allclose(image['cam2img'], calibration['camera_intrinsic'])
            np.testing.assert_allclose(image['lidar2cam'], np.linalg.inv(cam2ego) @ lidar2ego,
                                       atol=1e-9)
            assert image['timestamp'] == camera['timestamp'] / 1e6


def test_info_boxes_go_back_to_the_annotations(infos, nusc):
    """mmdet3d's own NuScenesMetric conversion (output_to_nusc_box + lidar_nusc_box_to_global)
    of the info boxes reproduces the global annotations."""
    from mmdet3d.evaluation.metrics.nuscenes_metric import (lidar_nusc_box_to_global,
                                                            output_to_nusc_box)
    from mmdet3d.structures import LiDARInstance3DBoxes
    from nuscenes.eval.detection.config import config_factory
    from pyquaternion import Quaternion

    config = config_factory('detection_cvpr_2019')
    for entry in infos['val']['data_list']:
        sample = nusc.get('sample', entry['token'])
        assert len(entry['instances']) == len(sample['anns'])
        for instance, token in zip(entry['instances'], sample['anns']):
            annotation = nusc.get('sample_annotation', token)
            name = _detection_name(annotation['category_name'])
            label = NUSCENES_CLASSES.index(name) if name else -1
            assert instance['bbox_label'] == instance['bbox_label_3d'] == label
            assert instance['num_lidar_pts'] == annotation['num_lidar_pts']
            assert instance['bbox_3d_isvalid'] == (annotation['num_lidar_pts'] > 0)
            boxes = LiDARInstance3DBoxes(torch.tensor([instance['bbox_3d'] + instance['velocity']]),
                                         box_dim=9, origin=(0.5, 0.5, 0.5))
            (box, ), _ = output_to_nusc_box(dict(bboxes_3d=boxes, scores_3d=torch.ones(1),
                                                 labels_3d=torch.tensor([max(label, 0)])))
            (box, ) = lidar_nusc_box_to_global(entry, [box], NUSCENES_CLASSES, config)
            np.testing.assert_allclose(box.center, annotation['translation'], atol=1e-5)
            np.testing.assert_allclose(box.wlh, annotation['size'], atol=1e-5)
            yaw_error = (box.orientation.yaw_pitch_roll[0]
                         - Quaternion(annotation['rotation']).yaw_pitch_roll[0])
            assert abs((yaw_error + np.pi) % (2 * np.pi) - np.pi) < 2e-3
            np.testing.assert_allclose(box.velocity[:2], nusc.box_velocity(token)[:2], atol=0.02)


def test_mmdet3d_dataset_reads_the_infos(world, infos):
    from mmdet3d.datasets import NuScenesDataset
    from mmdet3d.datasets.transforms import LoadPointsFromFile
    prefixes = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                    **{channel: f'samples/{channel}' for channel in CAMERA_CHANNELS})
    dataset = NuScenesDataset(
        data_root=world['root'], ann_file=osp.basename(world['info_files']['val']),
        data_prefix=prefixes, modality=dict(use_lidar=True, use_camera=True))
    assert len(dataset) == len(infos['val']['data_list'])
    sample = LoadPointsFromFile(coord_type='LIDAR', load_dim=5, use_dim=5)(
        dataset.get_data_info(0))
    entry = infos['val']['data_list'][0]
    kept = [i for i in entry['instances'] if i['num_lidar_pts'] > 0]  # its default filter
    gt_boxes = sample['ann_info']['gt_bboxes_3d']
    assert len(gt_boxes) == len(kept)
    # the info's (x, y, z) is the gravity centre: the dataset moves z to the bottom
    np.testing.assert_allclose(gt_boxes.gravity_center.numpy(),
                               [i['bbox_3d'][:3] for i in kept], atol=1e-4)
    np.testing.assert_allclose(gt_boxes.bottom_height.numpy(),
                               [i['bbox_3d'][2] - i['bbox_3d'][5] / 2 for i in kept], atol=1e-4)
    assert sample['points'].shape[1] == 5 and len(sample['points']) > 1000
    assert all(osp.isfile(path) for path in (
        image['img_path'] for image in sample['images'].values()))


def _metric_on(world, infos, tmp_path, shift=0.0):
    """NuScenesMetric (mAP, NDS) of the val infos' valid GT boxes fed back as predictions."""
    from mmdet3d.evaluation.metrics import NuScenesMetric
    from mmdet3d.structures import LiDARInstance3DBoxes
    metric = NuScenesMetric(data_root=world['root'], ann_file=world['info_files']['val'],
                            metric='bbox', jsonfile_prefix=str(tmp_path / 'results'))
    metric.dataset_meta = dict(classes=NUSCENES_CLASSES, version='v1.0-mini')
    for entry in infos['val']['data_list']:
        kept = [i for i in entry['instances'] if i['bbox_3d_isvalid'] and i['bbox_label'] >= 0]
        boxes = torch.tensor([i['bbox_3d'] + i['velocity'] for i in kept])
        boxes[:, 0] += shift
        metric.process({}, [dict(
            pred_instances_3d=dict(
                bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9, origin=(0.5, 0.5, 0.5)),
                scores_3d=torch.ones(len(kept)),
                labels_3d=torch.tensor([i['bbox_label'] for i in kept])),
            pred_instances=dict(), sample_idx=entry['sample_idx'])])
    results = metric.compute_metrics(metric.results)
    prefix = 'pred_instances_3d_NuScenes'
    return results[f'{prefix}/mAP'], results[f'{prefix}/NDS']


def test_nuscenes_metric_scores_ground_truth_near_one(world, infos, tmp_path):
    mean_ap, nds = _metric_on(world, infos, tmp_path)
    assert mean_ap > 0.9 and nds > 0.9, (mean_ap, nds)
    shifted_ap, shifted_nds = _metric_on(world, infos, tmp_path / "shifted", shift=1.5)
    assert shifted_ap < 0.7 and shifted_ap < mean_ap - 0.3, (shifted_ap, shifted_nds)
    assert shifted_nds < nds - 0.2


def test_add_temporal_fields_restores_them(world, infos, nusc, tmp_path):
    stripped = {**infos['val'], 'data_list': [
        {k: v for k, v in e.items() if k not in TEMPORAL_KEYS} for e in infos['val']['data_list']]}
    assert add_temporal_fields(stripped, nusc) == infos['val']
    path = str(tmp_path / 'mmdet3d_infos_val.pkl')
    with open(path, 'wb') as f:
        pickle.dump(stripped, f)
    assert augment_nuscenes_infos(path, world['root']) == path  # no expansion: keeps can_bus
    assert _load_pkl(path) == infos['val']

    foreign = {**stripped, 'data_list': [{**stripped['data_list'][0], 'token': 'f' * 32}]}
    with pytest.raises(ValueError, match=r'data_list\[0\].*not a sample'):
        add_temporal_fields(foreign, nusc)


def test_build_infos_from_scene_names(nusc, infos):
    rebuilt = build_nuscenes_infos(nusc, ['scene-0916', 'scene-0103'])
    assert [e['scene_name'] for e in rebuilt['data_list']][::ARGS['samples_per_scene']] == [
        'scene-0916', 'scene-0103']
    with pytest.raises(ValueError, match='scene-0999'):
        build_nuscenes_infos(nusc, ['scene-0999'])
    with pytest.raises(ValueError, match='split'):
        build_nuscenes_infos(nusc, 'mini_everything')
    with pytest.raises(ValueError, match="'val' belongs to v1.0-trainval"):
        build_nuscenes_infos(nusc, 'val')


# ----------------------------------------------------------------------------- errors, CLIs
def test_missing_data_root_errors_name_the_path(tmp_path, world):
    with pytest.raises(FileNotFoundError, match='does_not_exist'):
        load_nuscenes(tmp_path / 'does_not_exist')
    with pytest.raises(FileNotFoundError, match='v1.0-mini'):
        load_nuscenes(tmp_path)
    partial = tmp_path / 'partial' / 'v1.0-mini'
    partial.mkdir(parents=True)
    (partial / 'scene.json').write_text('[]')
    with pytest.raises(FileNotFoundError, match='sample_annotation.json'):
        load_nuscenes(tmp_path / 'partial')
    cli = _load_cli('create_nuscenes_infos')
    with pytest.raises(SystemExit, match='does_not_exist'):
        cli.main(['--data-root', str(tmp_path / 'does_not_exist'), '--no-progress'])
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        augment_nuscenes_infos(tmp_path / 'nope.pkl', world['root'])


def test_create_infos_cli(world, infos, tmp_path):
    cli = _load_cli('create_nuscenes_infos')
    written = cli.main(['--data-root', world['root'], '--out-dir', str(tmp_path),
                        '--can-bus-root', world['root'], '--no-progress'])
    assert sorted(written) == ['mini_train', 'mini_val']
    assert osp.basename(written['mini_val']) == 'nuscenes_infos_val.pkl'
    assert _load_pkl(written['mini_val']) == infos['val']
    assert _load_pkl(written['mini_train']) == infos['train']

    stripped = {**infos['train'], 'data_list': [
        {k: v for k, v in e.items() if k not in (*TEMPORAL_KEYS, 'can_bus')}
        for e in infos['train']['data_list']]}
    source = tmp_path / 'old' / 'infos_train.pkl'
    source.parent.mkdir()
    with open(source, 'wb') as f:
        pickle.dump(stripped, f)
    out_dir = tmp_path / 'augmented'
    cli.main(['--data-root', world['root'], '--augment', str(source), '--out-dir', str(out_dir),
              '--can-bus-root', world['root'], '--no-progress'])
    assert _load_pkl(out_dir / 'infos_train.pkl') == infos['train']
    assert _load_pkl(source) == stripped  # the input is left alone when --out-dir is given


def test_infos_without_can_bus_expansion(world, infos, nusc, tmp_path):
    """No --can-bus-root: can_bus is the database's ego pose (LIDAR_TOP) and zeros, with one
    warning; --augment then keeps a can_bus that the entries already have."""
    cli = _load_cli('create_nuscenes_infos')
    with pytest.warns(UserWarning, match='no CAN bus expansion') as record:
        written = cli.main(['--data-root', world['root'], '--out-dir', str(tmp_path),
                            '--no-progress'])
    assert len([w for w in record if 'CAN bus' in str(w.message)]) == 1
    for split, path in written.items():
        for entry in _load_pkl(path)['data_list']:
            lidar = nusc.get('sample_data', nusc.get('sample', entry['token'])['data'][
                'LIDAR_TOP'])
            pose = nusc.get('ego_pose', lidar['ego_pose_token'])
            assert entry['can_bus'] == [*pose['translation'], *pose['rotation']] + [0.0] * 11
            np.testing.assert_array_equal(np.array(entry['ego2global'])[:3, 3],
                                          pose['translation'])

    half = {**infos['val'], 'data_list': [
        {k: v for k, v in e.items() if k != 'can_bus' or i % 2}
        for i, e in enumerate(infos['val']['data_list'])]}
    path = tmp_path / 'half_infos_val.pkl'
    with open(path, 'wb') as f:
        pickle.dump(half, f)
    with pytest.warns(UserWarning, match='no CAN bus expansion'):
        cli.main(['--data-root', world['root'], '--augment', str(path), '--no-progress'])
    fallback = _load_pkl(written['mini_val'])['data_list']
    for i, (entry, expected) in enumerate(zip(_load_pkl(path)['data_list'],
                                              infos['val']['data_list'])):
        assert entry['can_bus'] == (expected['can_bus'] if i % 2 else fallback[i]['can_bus'])
    with pytest.raises(SystemExit, match='no_such_dir.*not a directory'):
        cli.main(['--data-root', world['root'], '--augment', str(path), '--can-bus-root',
                  str(tmp_path / 'no_such_dir'), '--no-progress'])


def test_make_cli_ready_and_prepare(tmp_path, capsys):
    import json
    small = dict(num_train_scenes=1, samples_per_scene=2, image_size=(64, 112), seed=5)
    assert not toy_nuscenes_ready(tmp_path, **small)
    _load_cli('make_toy_nuscenes').main([
        '--out-dir', str(tmp_path), '--num-train-scenes', '1', '--samples-per-scene', '2',
        '--image-size', '64', '112', '--seed', '5', '--no-progress'])
    summary = json.loads(capsys.readouterr().out)
    assert summary['generated'] and summary['image_size'] == [64, 112]
    assert summary['num_samples'] == dict(train=2, val=4)
    assert toy_nuscenes_ready(tmp_path, **small)
    assert not toy_nuscenes_ready(tmp_path, **{**small, 'seed': 6})
    assert not prepare_toy_nuscenes(tmp_path, **small, progress=False)['generated']

    os.remove(tmp_path / 'can_bus' / 'scene-0103_pose.json')
    assert not toy_nuscenes_ready(tmp_path, **small)
    assert prepare_toy_nuscenes(tmp_path, **small, progress=False)['generated']
    assert toy_nuscenes_ready(tmp_path, **small)

    jpgs = sorted(os.listdir(tmp_path / 'samples' / 'CAM_BACK'))
    os.remove(tmp_path / 'samples' / 'CAM_BACK' / jpgs[0])
    assert not toy_nuscenes_ready(tmp_path, **small)


@pytest.mark.parametrize('overrides, parameter', [
    (dict(num_train_scenes=0), 'num_train_scenes'),
    (dict(num_train_scenes=9), 'num_train_scenes'),
    (dict(samples_per_scene=1), 'samples_per_scene'),
    (dict(samples_per_scene=2.5), 'samples_per_scene'),
    (dict(image_size=(16, 100)), 'image_size'),
    (dict(image_size=224), 'image_size'),
    (dict(image_size='224'), 'image_size'),
    (dict(seed=-1), 'seed'),
])
def test_bad_arguments_name_the_parameter(tmp_path, overrides, parameter):
    with pytest.raises(ValueError, match=parameter):
        generate_toy_nuscenes(tmp_path, **{**ARGS, **overrides}, progress=False)
    with pytest.raises(ValueError, match=parameter):
        toy_nuscenes_ready(tmp_path, **{**ARGS, **overrides})
    assert not os.listdir(tmp_path)  # nothing written
