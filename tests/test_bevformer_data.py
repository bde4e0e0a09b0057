"""BEVFormer's multi-view data path: loading, joint image transforms with their camera matrices,
the temporal queue of BEVNuScenesDataset, the packed data contract and the projection picture.

Independent references: nuscenes-devkit's ``view_points`` on the raw calibration, the 2D box
centres mmdet3d's converter stored in the info (``cam_instances[*].center_2d``), closed-form image
maps, and where a painted blob actually ends up in the transformed images.

The demo frame (../shared/data/nuscenes_demo, one nuScenes v1.0-mini keyframe; nuScenes data
(c) Motional, CC BY-NC-SA 4.0) is used where present; the other tests build their own small
images and info files.
"""
import glob
import os
import os.path as osp
import pickle
import random
import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from file_helpers import DEMO_ROOT
from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
from mmdet3d.registry import DATASETS, TRANSFORMS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

import projects.bevformer.dataset  # noqa: F401  (registers BEVNuScenesDataset)
import projects.bevformer.transforms  # noqa: F401  (registers the transforms)
from projects.bevformer.dataset import BEVNuScenesDataset
from projects.bevformer.geometry import project_to_cameras
from projects.bevformer.transforms import (LoadMultiViewImages, MultiViewCrop, MultiViewFlip,
                                           MultiViewResize, PackBEVInputs)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_INFOS = sorted(glob.glob(osp.join(DEMO_ROOT, '*.pkl')))
needs_demo = pytest.mark.skipif(
    not DEMO_INFOS, reason=f'the real nuScenes demo frame ({DEMO_ROOT}/*.pkl) is not available')
NUSCENES_CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
                    'CAM_BACK_RIGHT')


@pytest.fixture(autouse=True)
def mmdet3d_scope():
    """Pipelines name mmdet3d's transforms (and ours, registered in mmdet3d's registry)."""
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield


# ----------------------------------------------------------------------------------- helpers
def project_pixels(points: np.ndarray, lidar2img: np.ndarray, image_hw) -> tuple:
    """(N, P, 2) pixels and (N, P) hit mask of LiDAR points through the model's function."""
    num_views = lidar2img.shape[0]
    hw = torch.tensor(image_hw, dtype=torch.float64).expand(1, num_views, 2)
    reference, mask = project_to_cameras(
        torch.from_numpy(points), torch.from_numpy(lidar2img)[None], hw, tuple(image_hw))
    scale = torch.tensor([image_hw[1], image_hw[0]], dtype=torch.float64)
    return (reference[0] * scale).numpy(), mask[0].numpy()


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def synthetic_camera(yaw: float, width: int, height: int, shift=(0.0, 0.0, 0.0)) -> dict:
    """Camera looking along direction ``yaw`` in the LiDAR x-y plane (x right, y down, z forward)
    with a made-up pinhole."""
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    cam2lidar_rotation = np.stack([right, down, forward], axis=1)
    position = np.array([0.3, 0.1, 0.2]) + np.asarray(shift)
    lidar2cam = np.eye(4)
    lidar2cam[:3, :3] = cam2lidar_rotation.T
    lidar2cam[:3, 3] = -cam2lidar_rotation.T @ position
    focal = 0.6 * width
    cam2img = [[focal, 0.0, width / 2 + 1.3], [0.0, focal * 1.05, height / 2 - 2.7], [0, 0, 1.0]]
    return dict(cam2img=cam2img, lidar2cam=lidar2cam.tolist())


def gaussian_blob(height: int, width: int, center_uv, sigma: float = 3.0) -> np.ndarray:
    """(H, W) blob centred at continuous (u, v); pixel (r, c) has its centre at (c + .5, r + .5)."""
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    u, v = center_uv
    return (np.exp(-((cols[None] - u)**2 + (rows[:, None] - v)**2) / (2 * sigma**2)) * 250)


def intensity_centroid(image: np.ndarray) -> np.ndarray:
    """(u, v) centroid of a single-blob image in continuous coordinates."""
    weight = image[..., 0].astype(np.float64)
    rows, cols = np.indices(weight.shape)
    return np.array([((cols + 0.5) * weight).sum(), ((rows + 0.5) * weight).sum()]) / weight.sum()


# Three cameras 120 degrees apart, an odd image size, and one LiDAR point in front of each.
RIG_W, RIG_H = 203, 117
RIG_YAWS = (0.3, 0.3 + 2 * np.pi / 3, 0.3 + 4 * np.pi / 3)
RIG_POINTS = np.array([[8.0 * np.cos(y) + 0.4, 8.0 * np.sin(y) - 0.3, 0.5] for y in RIG_YAWS])


@pytest.fixture
def rig_results(tmp_path):
    """Pipeline results of LoadMultiViewImages(to_float32=True) on three PNGs, each showing a
    blob at the projection of its camera's RIG_POINTS entry."""
    images = {}
    for view, yaw in enumerate(RIG_YAWS):
        camera = synthetic_camera(yaw, RIG_W, RIG_H)
        lidar2img = np.eye(4)
        lidar2img[:3, :3] = camera['cam2img']
        lidar2img = lidar2img @ np.array(camera['lidar2cam'])
        pixels, mask = project_pixels(RIG_POINTS[view:view + 1], lidar2img[None], (RIG_H, RIG_W))
        assert mask.all()
        blob = gaussian_blob(RIG_H, RIG_W, pixels[0, 0])
        path = str(tmp_path / f'cam{view}.png')
        cv2.imwrite(path, np.repeat(blob[..., None], 3, axis=2).round().astype(np.uint8))
        images[f'CAM_{view}'] = dict(img_path=path, **camera)
    return LoadMultiViewImages(to_float32=True).transform(dict(images=images, token='rig'))


def rig_projections(results: dict) -> np.ndarray:
    """(N, 2) pixel of each view's own point under the results' current lidar2img."""
    height, width = results['img'][0].shape[:2]
    pixels, _ = project_pixels(RIG_POINTS, results['lidar2img'], (height, width))
    return pixels[np.arange(len(RIG_POINTS)), np.arange(len(RIG_POINTS))]


def check_blobs_follow(results: dict, atol: float) -> None:
    """The painted blobs sit where the updated lidar2img projects their points."""
    expected = rig_projections(results)
    for view, img in enumerate(results['img']):
        assert img.shape[:2] == tuple(results['img_shape'][view])
        np.testing.assert_allclose(intensity_centroid(img), expected[view], atol=atol)


# ------------------------------------------------------------------------------------ loading
def test_registered_in_mmdet3d():
    for name in ('LoadMultiViewImages', 'MultiViewResize', 'MultiViewCrop', 'MultiViewFlip',
                 'PackBEVInputs'):
        assert TRANSFORMS.get(name) is not None, name
    assert DATASETS.get('BEVNuScenesDataset') is BEVNuScenesDataset


def test_load_sets_views_and_lidar2img(rig_results):
    results = rig_results
    assert results['cam_names'] == ['CAM_0', 'CAM_1', 'CAM_2']
    assert len(results['img']) == 3
    assert all(img.shape == (RIG_H, RIG_W, 3) and img.dtype == np.float32
               for img in results['img'])
    assert results['img_shape'] == [(RIG_H, RIG_W)] * 3
    for key in ('cam2img', 'lidar2cam', 'lidar2img', 'img_aug_matrix'):
        assert results[key].shape == (3, 4, 4) and results[key].dtype == np.float64, key
    for view in range(3):
        camera = synthetic_camera(RIG_YAWS[view], RIG_W, RIG_H)
        intrinsics = np.eye(4)
        intrinsics[:3, :3] = camera['cam2img']
        np.testing.assert_array_equal(results['cam2img'][view], intrinsics)
        np.testing.assert_allclose(results['lidar2img'][view],
                                   intrinsics @ np.array(camera['lidar2cam']), rtol=0, atol=1e-12)
    # The blobs were drawn where lidar2img projects: the loader's matrices match the images.
    check_blobs_follow(results, atol=0.05)


@pytest.mark.parametrize('damage', ['missing', 'garbage', 'truncated', 'empty'])
def test_unreadable_camera_image_names_file_and_camera(tmp_path, damage):
    good = np.full((20, 30, 3), 100, np.uint8)
    images = {}
    for view in range(2):
        path = str(tmp_path / f'view{view}.jpg')
        cv2.imwrite(path, good)
        images[f'CAM_{view}'] = dict(img_path=path, **synthetic_camera(0.0, 30, 20))
    bad = images['CAM_1']['img_path']
    if damage == 'missing':
        os.remove(bad)
    else:
        payload = open(bad, 'rb').read()
        payload = {'garbage': b'not an image' * 20, 'truncated': payload[:len(payload) // 3],
                   'empty': b''}[damage]
        with open(bad, 'wb') as file:
            file.write(payload)
    error = FileNotFoundError if damage == 'missing' else OSError
    with pytest.raises(error) as info:
        LoadMultiViewImages().transform(dict(images=images))
    assert bad in str(info.value) and 'CAM_1' in str(info.value)


# --------------------------------------------------------------------- image transforms
@pytest.mark.parametrize('kwargs, size', [
    (dict(scale_factor=0.5), (102, 59)),
    (dict(scale_factor=1.6), (325, 187)),
    (dict(scale=(150, 90), keep_ratio=False), (150, 90)),
    (dict(scale=(300, 300), keep_ratio=True), (300, 173)),
])
def test_resize_updates_intrinsics_exactly(rig_results, kwargs, size):
    before = rig_projections(rig_results)
    results = MultiViewResize(**kwargs).transform(rig_results)
    new_w, new_h = size
    assert results['img_shape'] == [(new_h, new_w)] * 3
    # Closed form: continuous coordinates scale by the ratio of the integer sizes.
    np.testing.assert_allclose(rig_projections(results),
                               before * [new_w / RIG_W, new_h / RIG_H], atol=1e-9)
    # The image content moved the same way. (Pixel centres at integers would be off by
    # 0.5 * (1 - ratio) px, 0.25 px or more here.)
    check_blobs_follow(results, atol=0.08)


def test_crop_shifts_principal_point(rig_results):
    before = rig_projections(rig_results)
    results = MultiViewCrop((90, 160), position='bottom').transform(rig_results)
    x0, y0 = (RIG_W - 160) // 2, RIG_H - 90
    assert results['crop_offset'] == (x0, y0)
    assert results['img_shape'] == [(90, 160)] * 3
    np.testing.assert_allclose(rig_projections(results), before - [x0, y0], atol=1e-9)
    check_blobs_follow(results, atol=0.05)


def test_random_crop_content_follows(rig_results):
    np.random.seed(3)
    results = MultiViewCrop((100, 170), position='random').transform(rig_results)
    check_blobs_follow(results, atol=0.05)
    with pytest.raises(ValueError, match='larger than'):
        MultiViewCrop((200, 100)).transform(results)


def test_flip_mirrors_u_to_width_minus_u(rig_results):
    before = rig_projections(rig_results)
    results = MultiViewFlip(prob=1.0).transform(rig_results)
    assert results['flip'] and results['flip_direction'] == 'horizontal'
    expected = np.stack([RIG_W - before[:, 0], before[:, 1]], axis=1)
    np.testing.assert_allclose(rig_projections(results), expected, atol=1e-9)
    # (u -> W - 1 - u would be a full pixel off.)
    check_blobs_follow(results, atol=0.05)
    unflipped = MultiViewFlip(prob=0.0).transform(dict(results))
    assert unflipped['flip']  # prob 0 leaves the state alone


def test_composed_transforms_and_aug_matrix(rig_results):
    original_lidar2img = rig_results['lidar2img'].copy()
    np.random.seed(0)
    results = rig_results
    for transform in (MultiViewResize(scale_factor=0.8, ratio_range=(0.9, 1.2)),
                      MultiViewCrop((70, 130), position='center'), MultiViewFlip(prob=1.0)):
        results = transform.transform(results)
    check_blobs_follow(results, atol=0.1)
    np.testing.assert_allclose(results['lidar2img'], results['img_aug_matrix'] @
                               original_lidar2img, atol=1e-9)
    np.testing.assert_allclose(results['lidar2img'], results['cam2img'] @ results['lidar2cam'],
                               atol=1e-9)
    # The random ratio is drawn once for all views.
    assert len(set(map(tuple, results['img_shape']))) == 1


# ------------------------------------------------------------- projection on the real frame
@needs_demo
def test_demo_projection_matches_devkit_view_points():
    view_points = pytest.importorskip('nuscenes.utils.geometry_utils').view_points

    with open(DEMO_INFOS[0], 'rb') as file:
        raw = pickle.load(file)['data_list'][0]
    dataset = DATASETS.build(dict(
        type='BEVNuScenesDataset', data_root=DEMO_ROOT, ann_file=DEMO_INFOS[0],
        data_prefix={name: '' for name in NUSCENES_CAMERAS},
        pipeline=[dict(type='LoadMultiViewImages'),
                  dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
                  dict(type='PackBEVInputs')]))
    sample = dataset[0]['data_samples']
    assert sample.cam_names == list(raw['images'])
    assert sample.img_shape == (900, 1600)
    lidar2img = sample.lidar2img[0]  # (6, 4, 4)

    # Info boxes are nuScenes box centres (gravity centre), NuScenesDataset makes them
    # mmdet3d LiDAR boxes (bottom centre); the packed GT must keep the centres.
    centres = np.array([inst['bbox_3d'][:3] for inst in raw['instances']])
    kept = np.array([inst['num_lidar_pts'] > 0 for inst in raw['instances']])
    np.testing.assert_allclose(sample.gt_instances_3d.bboxes_3d.gravity_center.numpy(),
                               centres[kept], atol=1e-4)
    assert sample.gt_instances_3d.bboxes_3d.tensor.shape[1] == 9

    pixels, hit = project_pixels(centres, lidar2img, (900, 1600))
    for view, (name, camera) in enumerate(raw['images'].items()):
        lidar2cam = np.array(camera['lidar2cam'])
        in_camera = lidar2cam[:3, :3] @ centres.T + lidar2cam[:3, 3:]  # (3, B)
        reference = view_points(in_camera, np.array(camera['cam2img']), normalize=True)[:2].T
        in_front = in_camera[2] > 0
        inside = (in_front & (reference[:, 0] >= 0) & (reference[:, 0] < 1600)
                  & (reference[:, 1] >= 0) & (reference[:, 1] < 900))
        np.testing.assert_array_equal(hit[view], inside, err_msg=name)
        np.testing.assert_allclose(pixels[view][in_front], reference[in_front], atol=1e-6,
                                   err_msg=name)
        # mmdet3d's converter stored each visible box's projected centre (through the devkit's
        # own chain of ego poses): each one is one of ours.
        for instance in raw['cam_instances'][name]:
            distance = np.linalg.norm(pixels[view] - instance['center_2d'], axis=1)
            distance[~in_front] = np.inf
            assert distance.min() < 1e-2, (name, instance['center_2d'])
    assert hit.sum() > 50


# ------------------------------------------------------------------------ temporal dataset
VIEW_W, VIEW_H = 96, 54
SCENES = {'scene-a': 4, 'scene-b': 2}
# data_list order differs from time order: the queue must follow the prev links.
LIST_ORDER = [('scene-a', 2), ('scene-b', 0), ('scene-a', 0), ('scene-a', 3), ('scene-b', 1),
              ('scene-a', 1)]


def frame_code(scene: str, frame: int, view: int) -> int:
    """Channel-0 value of (scene, frame, view)'s synthetic image."""
    return 40 * list(SCENES).index(scene) + 6 * frame + view + 1


def stored_can_bus(scene: str, frame: int) -> list:
    """The ``can_bus`` (18 floats) :func:`make_info_file` stores: each value tells its frame."""
    return [frame_code(scene, frame, 0) + 0.01 * i for i in range(18)]


def make_info_file(root, temporal: bool = True, empty_frame=None, can_bus: bool = False) -> str:
    """An mmdet3d-1.x-style nuScenes info file (+ images) of two scenes, 6 cameras each.

    Every image is uniform (channel 0 = :func:`frame_code`) with a bright left half in
    channel 1, so the tests can tell frames, cameras and a flip apart. Each frame's ego pose
    moves 2 m along x and turns 0.1 rad, and its cameras' lidar2cam move by a few cm. With
    ``can_bus`` the entries carry :func:`stored_can_bus`.
    """
    data_list = []
    for scene, frame in LIST_ORDER:
        token = f'{scene}-{frame}'
        images = {}
        for view, name in enumerate(NUSCENES_CAMERAS):
            img = np.zeros((VIEW_H, VIEW_W, 3), np.uint8)
            img[..., 0] = frame_code(scene, frame, view)
            img[:, :VIEW_W // 2, 1] = 200
            file_name = f'{token}__{name}.png'
            cv2.imwrite(osp.join(root, file_name), img)
            camera = synthetic_camera(view * np.pi / 3, VIEW_W, VIEW_H,
                                      shift=(0.01 * frame, 0, 0))
            images[name] = dict(img_path=file_name, sample_data_token=f'{token}-{name}',
                                timestamp=100.0 + frame * 0.5, cam2ego=np.eye(4).tolist(),
                                **camera)
        ego2global = np.eye(4)
        ego2global[:3, :3] = rotation_z(0.1 * frame)
        ego2global[:3, 3] = [2.0 * frame, 1.0, 0.0]
        instances = [] if token == empty_frame else [
            dict(bbox_label=0, bbox_label_3d=0, bbox_3d=[5.0 + frame, 1.0, -0.5, 4.0, 2.0, 1.5,
                                                         0.2], bbox_3d_isvalid=True,
                 num_lidar_pts=10, num_radar_pts=0, velocity=[1.0, 0.5]),
            dict(bbox_label=7, bbox_label_3d=7, bbox_3d=[-3.0, 6.0 + frame, -0.8, 0.7, 0.6, 1.7,
                                                         1.0], bbox_3d_isvalid=True,
                 num_lidar_pts=3, num_radar_pts=0, velocity=[np.nan, np.nan]),
        ]
        info = dict(sample_idx=len(data_list), token=token, timestamp=100.0 + frame * 0.5,
                    ego2global=ego2global.tolist(), images=images,
                    lidar_points=dict(num_pts_feats=5, lidar_path=f'{token}.bin',
                                      lidar2ego=np.eye(4).tolist()),
                    instances=instances, cam_instances={})
        if can_bus:
            info['can_bus'] = stored_can_bus(scene, frame)
        if temporal:
            info.update(scene_token=f'token-{scene}', scene_name=scene, frame_idx=frame,
                        prev=f'{scene}-{frame - 1}' if frame > 0 else '',
                        next=f'{scene}-{frame + 1}' if frame + 1 < SCENES[scene] else '')
        data_list.append(info)
    metainfo = dict(categories={name: i for i, name in enumerate(
        BEVNuScenesDataset.METAINFO['classes'])}, dataset='nuscenes', version='v1.0-mini',
                    info_version='1.1')
    path = osp.join(root, ('infos_temporal' if temporal else 'infos_plain')
                    + ('_can_bus.pkl' if can_bus else '.pkl'))
    with open(path, 'wb') as file:
        pickle.dump(dict(metainfo=metainfo, data_list=data_list), file)
    return path


def build_dataset(root, ann_file, queue_length=3, pipeline_middle=(), **kwargs):
    pipeline = [dict(type='LoadMultiViewImages'),
                dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
                *pipeline_middle, dict(type='PackBEVInputs')]
    return DATASETS.build(dict(
        type='BEVNuScenesDataset', data_root=str(root), ann_file=ann_file,
        data_prefix={name: '' for name in NUSCENES_CAMERAS}, queue_length=queue_length,
        pipeline=pipeline, **kwargs))


def index_of(dataset, token: str) -> int:
    return [dataset.get_data_info(i)['token'] for i in range(len(dataset))].index(token)


@pytest.mark.parametrize('token, expected', [
    ('scene-a-3', ['scene-a-1', 'scene-a-2', 'scene-a-3']),
    ('scene-a-2', ['scene-a-0', 'scene-a-1', 'scene-a-2']),
    ('scene-a-1', ['scene-a-0', 'scene-a-0', 'scene-a-1']),  # scene start: first frame repeated
    ('scene-a-0', ['scene-a-0', 'scene-a-0', 'scene-a-0']),
    ('scene-b-1', ['scene-b-0', 'scene-b-0', 'scene-b-1']),
])
def test_queue_oldest_to_current_within_scene(tmp_path, token, expected):
    dataset = build_dataset(tmp_path, make_info_file(str(tmp_path)))
    packed = dataset[index_of(dataset, token)]
    sample = packed['data_samples']
    assert sample.frame_tokens == expected
    assert sample.token == token and sample.num_frames == 3 and sample.num_views == 6
    # the current frame's database predecessor ('' at a scene start), for the test-time memory
    previous = expected[-2] if expected[-2] != token else ''
    assert sample.prev_token == previous
    scene = token.rsplit('-', 1)[0]
    assert sample.scene_token == [f'token-{scene}'] * 3
    frames = [int(t.rsplit('-', 1)[1]) for t in expected]
    assert sample.frame_idx == frames
    assert sample.timestamp == [100.0 + f * 0.5 for f in frames]
    for t, frame in enumerate(frames):  # each frame's own ego pose and cameras
        np.testing.assert_allclose(sample.ego2global[t, :3, 3], [2.0 * frame, 1.0, 0.0])
        for view in range(6):
            camera = synthetic_camera(view * np.pi / 3, VIEW_W, VIEW_H, shift=(0.01 * frame, 0, 0))
            intrinsics = np.eye(4)
            intrinsics[:3, :3] = camera['cam2img']
            np.testing.assert_allclose(sample.lidar2img[t, view],
                                       intrinsics @ np.array(camera['lidar2cam']), atol=1e-9)
    # Images: frame-major, oldest first, cameras in info order (channel 0 is BGR's blue).
    codes = packed['inputs']['img'][:, 0, VIEW_H // 2, VIEW_W // 4].tolist()
    assert codes == [frame_code(scene, f, v) for f in frames for v in range(6)]
    # Ground truth: the current frame's boxes, with velocity (NaN -> 0).
    boxes = sample.gt_instances_3d.bboxes_3d
    current = frames[-1]
    np.testing.assert_allclose(boxes.gravity_center[:, :2].numpy(),
                               [[5.0 + current, 1.0], [-3.0, 6.0 + current]], atol=1e-5)
    np.testing.assert_allclose(boxes.tensor[:, 7:].numpy(), [[1.0, 0.5], [0.0, 0.0]])


def test_packed_contract_and_preprocessor(tmp_path):
    dataset = build_dataset(tmp_path, make_info_file(str(tmp_path)), pipeline_middle=[
        dict(type='MultiViewResize', scale_factor=0.75)])
    packed = [dataset[index_of(dataset, 'scene-a-3')], dataset[index_of(dataset, 'scene-b-0')]]
    height, width = 41, 72  # 54 * 0.75 = 40.5 rounds up, 96 * 0.75
    for item in packed:
        img, sample = item['inputs']['img'], item['data_samples']
        assert set(item['inputs']) == {'img'}
        assert img.shape == (18, 3, height, width) and img.dtype == torch.uint8
        assert isinstance(sample, Det3DDataSample)
        meta = sample.metainfo
        assert meta['num_frames'] == 3 and meta['num_views'] == 6
        assert type(meta['num_frames']) is int and type(meta['num_views']) is int
        for key, shape in (('lidar2img', (3, 6, 4, 4)), ('cam2img', (3, 6, 4, 4)),
                           ('lidar2cam', (3, 6, 4, 4)), ('img_aug_matrix', (3, 6, 4, 4)),
                           ('ego2global', (3, 4, 4)), ('lidar2ego', (3, 4, 4))):
            assert isinstance(meta[key], np.ndarray) and meta[key].dtype == np.float64, key
            assert meta[key].shape == shape, key
        assert meta['img_shape'] == (height, width) and isinstance(meta['img_shape'], tuple)
        assert meta['ori_shape'] == (VIEW_H, VIEW_W)
        assert len(meta['scene_token']) == 3 and all(isinstance(s, str)
                                                     for s in meta['scene_token'])
        assert len(meta['timestamp']) == 3 and all(isinstance(s, float)
                                                   for s in meta['timestamp'])
        assert meta['box_type_3d'] is LiDARInstance3DBoxes
        assert isinstance(meta['sample_idx'], int) and isinstance(meta['token'], str)
        assert meta['cam_names'] == list(NUSCENES_CAMERAS)
        np.testing.assert_allclose(meta['lidar2img'], meta['cam2img'] @ meta['lidar2cam'],
                                   atol=1e-9)
        gt = sample.gt_instances_3d
        assert isinstance(gt.bboxes_3d, LiDARInstance3DBoxes) and gt.bboxes_3d.box_dim == 9
        assert gt.labels_3d.dtype == torch.int64 and gt.labels_3d.tolist() == [0, 7]

    preprocessor = Det3DDataPreprocessor(mean=[123.675, 116.28, 103.53],
                                         std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                                         pad_size_divisor=32)
    batch = preprocessor(pseudo_collate(packed), training=True)
    padded_h, padded_w = -(-height // 32) * 32, -(-width // 32) * 32
    imgs = batch['inputs']['imgs']
    assert imgs.shape == (2, 18, 3, padded_h, padded_w) and imgs.dtype == torch.float32
    for item, sample in zip(packed, batch['data_samples']):
        assert sample.batch_input_shape == (padded_h, padded_w)
        assert sample.pad_shape == (padded_h, padded_w)
        assert sample.img_shape == (height, width)  # the content stays at the top left
        assert sample.lidar2img.shape == (3, 6, 4, 4)
    raw = packed[0]['inputs']['img'][4, :, 5, 5].float()  # BGR
    expected = (raw.flip(0) - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor(
        [58.395, 57.12, 57.375])
    torch.testing.assert_close(imgs[0, 4, :, 5, 5], expected)
    assert imgs[0, :, :, height:].abs().max() == 0 and imgs[0, :, :, :, width:].abs().max() == 0


def test_same_augmentation_for_every_frame(tmp_path):
    dataset = build_dataset(tmp_path, make_info_file(str(tmp_path)), pipeline_middle=[
        dict(type='MultiViewResize', scale_factor=0.5, ratio_range=(0.8, 1.25)),
        dict(type='MultiViewFlip', prob=0.5)])
    index = index_of(dataset, 'scene-a-3')
    flips, sizes = set(), set()
    for seed in range(8):
        np.random.seed(seed)
        packed = dataset[index]
        sample = packed['data_samples']
        matrices = sample.img_aug_matrix  # (3, 6, 4, 4)
        np.testing.assert_array_equal(matrices, np.broadcast_to(matrices[:1], matrices.shape))
        img = packed['inputs']['img']
        # Bright left half in the file: after a flip it is on the right, in every frame.
        left_bright = (img[:, 1, :, :img.shape[-1] // 4].float().mean((1, 2)) > 100)
        assert left_bright.all() or not left_bright.any()
        assert bool(left_bright[0]) != sample.flip
        flips.add(sample.flip)
        sizes.add(sample.img_shape)
    assert flips == {True, False} and len(sizes) > 1


def test_missing_temporal_fields(tmp_path):
    plain = make_info_file(str(tmp_path), temporal=False)
    with pytest.raises(ValueError) as info:
        build_dataset(tmp_path, plain, queue_length=3)
    message = str(info.value)
    assert plain in message and 'create_nuscenes_infos.py --data-root' in message \
        and '--augment' in message
    dataset = build_dataset(tmp_path, plain, queue_length=1)
    sample = dataset[0]['data_samples']
    assert sample.num_frames == 1 and sample.scene_token == ['']
    assert dataset[0]['inputs']['img'].shape == (6, 3, VIEW_H, VIEW_W)


@pytest.mark.parametrize('token, frames', [('scene-a-3', [1, 2, 3]), ('scene-a-1', [0, 0, 1])])
def test_can_bus_per_frame(tmp_path, token, frames):
    dataset = build_dataset(tmp_path, make_info_file(str(tmp_path), can_bus=True),
                            with_can_bus=True)
    sample = dataset[index_of(dataset, token)]['data_samples']
    can_bus = sample.can_bus
    assert isinstance(can_bus, np.ndarray) and can_bus.dtype == np.float64
    assert can_bus.shape == (3, 18)
    for t, frame in enumerate(frames):  # oldest first, each frame's own
        ego2global = np.eye(4)
        ego2global[:3, :3] = rotation_z(0.1 * frame)
        ego2global[:3, 3] = [2.0 * frame, 1.0, 0.0]
        np.testing.assert_array_equal(can_bus[t, :3], ego2global[:3, 3])
        w, x, y, z = can_bus[t, 3:7]
        np.testing.assert_allclose([w, x, y, z], [np.cos(0.05 * frame), 0, 0,
                                                  np.sin(0.05 * frame)], atol=1e-12)
        yaw = np.arctan2(sample.ego2global[t, 1, 0], sample.ego2global[t, 0, 0]) % (2 * np.pi)
        np.testing.assert_allclose(can_bus[t, 16], yaw, atol=1e-12)
        np.testing.assert_allclose(can_bus[t, 16], 0.1 * frame, atol=1e-12)
        np.testing.assert_allclose(can_bus[t, 17], np.degrees(0.1 * frame), atol=1e-10)
        np.testing.assert_array_equal(can_bus[t, 7:16], stored_can_bus('scene-a', frame)[7:16])


def test_can_bus_needs_the_infos_field(tmp_path):
    plain = make_info_file(str(tmp_path))
    with pytest.raises(ValueError) as info:
        build_dataset(tmp_path, plain, with_can_bus=True)
    message = str(info.value)
    assert plain in message and 'create_nuscenes_infos.py' in message \
        and '--can-bus-root' in message
    # infos with can_bus and with_can_bus=False: the model gets none, as before
    dataset = build_dataset(tmp_path, make_info_file(str(tmp_path), can_bus=True))
    assert 'can_bus' not in dataset[0]['data_samples'].metainfo


def test_pack_can_bus_of_every_frame_or_none(rig_results):
    rig_results.update(ego2global=np.eye(4), lidar_points=dict(lidar2ego=np.eye(4)),
                       timestamp=0.0)
    frames = [dict(rig_results, can_bus=np.full(18, float(t))) for t in range(2)]
    packed = PackBEVInputs(keys=('img', )).transform(frames)['data_samples']
    np.testing.assert_array_equal(packed.can_bus, [[0.0] * 18, [1.0] * 18])
    assert 'can_bus' not in PackBEVInputs(keys=('img', )).transform(
        [rig_results, rig_results])['data_samples'].metainfo
    with pytest.raises(ValueError, match=r'frames \[0\].*no can_bus'):
        PackBEVInputs(keys=('img', )).transform([rig_results, frames[1]])


def test_pipeline_must_end_with_pack_for_a_queue(tmp_path):
    with pytest.raises(ValueError, match='PackBEVInputs'):
        DATASETS.build(dict(type='BEVNuScenesDataset', data_root=str(tmp_path),
                            ann_file=make_info_file(str(tmp_path)), queue_length=2,
                            pipeline=[dict(type='LoadMultiViewImages')]))


def test_empty_current_frame_is_skipped_in_training(tmp_path):
    dataset = build_dataset(tmp_path, make_info_file(str(tmp_path), empty_frame='scene-a-3'))
    assert dataset.prepare_data(index_of(dataset, 'scene-a-3')) is None
    assert dataset.prepare_data(index_of(dataset, 'scene-a-2')) is not None


def test_pack_rejects_views_of_different_sizes(rig_results):
    rig_results['img'][1] = rig_results['img'][1][:-3]
    rig_results.update(ego2global=np.eye(4), lidar_points=dict(lidar2ego=np.eye(4)),
                       timestamp=0.0)
    with pytest.raises(ValueError, match='different image sizes'):
        PackBEVInputs(keys=('img', )).transform(rig_results)


# ---------------------------------------------------------------------------- visualisation
def test_box_edges_are_clipped_to_the_front():
    from projects.bevformer.visualization import box_edge_segments
    camera = synthetic_camera(0.0, 200, 100)
    lidar2img = np.eye(4)
    lidar2img[:3, :3] = camera['cam2img']
    lidar2img = lidar2img @ np.array(camera['lidar2cam'])
    # Box around the camera (straddles its image plane) and one fully in front.
    boxes = LiDARInstance3DBoxes(torch.tensor([[0.3, 0.1, -0.5, 4.0, 2.0, 1.5, 0.0],
                                               [10.0, 0.0, -0.5, 4.0, 2.0, 1.5, 0.3]]))
    corners = boxes.corners.numpy().astype(np.float64)
    segments, box_ids = box_edge_segments(corners, lidar2img, near=0.1)
    assert (box_ids == 1).sum() == 12 and 0 < (box_ids == 0).sum() < 12
    # The fully visible box: its segment ends are its projected corners.
    projected, _ = project_pixels(corners[1], lidar2img[None], (100, 200))
    ends = segments[box_ids == 1].reshape(-1, 2)
    distances = np.linalg.norm(ends[:, None] - projected[0][None], axis=-1).min(1)
    assert distances.max() < 1e-9


@needs_demo
def test_visualisation_library_writes_png(tmp_path):
    from projects.bevformer.visualization import NUSCENES_NOTICE, visualize_bev_projection
    out = str(tmp_path / 'bev.png')
    lines = []
    visualize_bev_projection(DEMO_ROOT, out, scale_factor=0.25, bev_size=(20, 20),
                             num_heights=2, progress=lines.append, dpi=40)
    image = cv2.imread(out)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 300
    assert any('CAM_FRONT' in line for line in lines) and 'CC BY-NC-SA' in NUSCENES_NOTICE


@pytest.mark.slow
@needs_demo
def test_visualisation_command(tmp_path):
    out = tmp_path / 'sheet.png'
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/analysis/visualize_bev_projection.py'),
         '--out', str(out), '--dpi', '50'], capture_output=True, text=True, timeout=300,
        cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'CAM_BACK_RIGHT' in result.stdout and 'done' in result.stdout
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > image.shape[0]


def test_official_queue_sampling_drops_one_of_the_previous_frames_at_random(tmp_path):
    """queue_length 3: two of the three keyframes before the current one, in time order, each
    dropped with chance 1/3; before the scene start the frame after is repeated."""
    dataset = build_dataset(tmp_path, make_info_file(str(tmp_path)), queue_sampling='official')
    tokens = [dataset.get_data_info(i)['token'] for i in range(len(dataset))]
    random.seed(0)
    draws = Counter(tuple(tokens[i] for i in dataset.queue_indices(index_of(dataset, 'scene-a-3')))
                    for _ in range(600))
    assert set(draws) == {('scene-a-0', 'scene-a-1', 'scene-a-3'),
                          ('scene-a-0', 'scene-a-2', 'scene-a-3'),
                          ('scene-a-1', 'scene-a-2', 'scene-a-3')}
    assert all(150 < count < 250 for count in draws.values())
    at_start = {tuple(tokens[i] for i in dataset.queue_indices(index_of(dataset, 'scene-a-1')))
                for _ in range(100)}
    assert at_start == {('scene-a-0', 'scene-a-0', 'scene-a-1'),  # a-0 kept
                        ('scene-a-1', 'scene-a-1', 'scene-a-1')}  # a-0 dropped: none before
    with pytest.raises(ValueError, match='queue_sampling must be one of'):
        build_dataset(tmp_path, make_info_file(str(tmp_path)), queue_sampling='shuffled')


def test_photometric_distortion_draws_per_view_and_keeps_geometry():
    """mmdet's PhotoMetricDistortion on each view with its own draws (the same transform on a
    single image with the same random state gives each view), cameras untouched."""
    generator = np.random.default_rng(0)
    views = [generator.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(6)]
    cam2img = np.stack([np.eye(4)] * 6)
    results = dict(img=[v.copy() for v in views], cam2img=cam2img.copy())
    np.random.seed(3)
    out = TRANSFORMS.build(dict(type='MultiViewPhotoMetricDistortion')).transform(results)
    np.random.seed(3)
    single = TRANSFORMS.build(dict(type='mmdet.PhotoMetricDistortion'))
    expected = [single.transform(dict(img=v.copy()))['img'] for v in views]
    for got, want in zip(out['img'], expected):
        assert got.dtype == np.float32 and np.array_equal(got, want)
    changes = [float(np.abs(got - view).mean()) for got, view in zip(out['img'], views)]
    assert len({round(c, 3) for c in changes}) > 1  # not one draw shared by all views
    assert np.array_equal(out['cam2img'], cam2img)
