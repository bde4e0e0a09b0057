"""The prediction picture (``render_predictions``), the test-time ``BEVVisualizationHook`` and
``tools/analysis/visualize_predictions.py``.

Geometry reference: the real nuScenes camera rig (``projects.bevformer.rig``) with constant-colour
images, so each camera panel can be found in the picture by its colour and a box centre's pixel
mapped into it. The hook runs inside a real ``tools/test.py`` run on a tiny generated toy world
with a randomly initialised tiny model; the tool on the real demo frame
(../shared/data/nuscenes_demo, nuScenes data (c) Motional, CC BY-NC-SA 4.0) where present.
"""
import glob
import importlib.util
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from file_helpers import DEMO_ROOT
from mmdet3d.registry import HOOKS, MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.config import Config
from mmengine.registry import DefaultScope

from projects.bevformer.rig import nuscenes_rig_lidar2img
from projects.bevformer.visualization import (NUSCENES_CLASSES, BEVVisualizationHook, class_colors,
                                              load_packed_frame, load_sample_images,
                                              render_predictions)
from projects.datasets.nuscenes_infos import CAMERA_CHANNELS

DEFAULT_SCOPE = 'mmdet3d'
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs/bevformer/bevformer_nano_1xb2-24e_toy-nuscenes.py')
DEMO_INFOS = sorted(glob.glob(osp.join(DEMO_ROOT, '*.pkl')))
needs_demo = pytest.mark.skipif(
    not DEMO_INFOS, reason=f'the real nuScenes demo frame ({DEMO_ROOT}/*.pkl) is not available')
# A tiny BEVFormer: 8x8 BEV, 20 queries, one decoder layer (the toy config's backbone).
TINY_MODEL = {'model.encoder.bev_h': 8, 'model.encoder.bev_w': 8, 'model.bbox_head.num_query': 20,
              'model.bbox_head.max_num': 20, 'model.bbox_head.num_layers': 1}

IMAGE_HW = (112, 200)
DPI = 100


# ----------------------------------------------------------------------------------- helpers
def camera_backgrounds(num_views: int) -> list:
    """A distinct dark RGB colour per camera (none close to a class colour or white)."""
    return [(12 + 16 * view, 40, 64) for view in range(num_views)]


def panel_extent(picture: np.ndarray, color) -> tuple:
    """(x0, y0, x1, y1) of the pixels of exactly ``color``: the camera panel showing an image
    of that constant colour."""
    ys, xs = np.nonzero((picture == np.array(color, dtype=np.uint8)).all(-1))
    assert len(xs) > 1000, f'panel of colour {color} not found'
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def to_picture(extent: tuple, pixel_uv: np.ndarray) -> tuple:
    """Picture (x, y) of continuous image coordinates (u, v) in a panel."""
    x0, y0, x1, y1 = extent
    return (int(x0 + pixel_uv[0] / IMAGE_HW[1] * (x1 - x0)),
            int(y0 + pixel_uv[1] / IMAGE_HW[0] * (y1 - y0)))


def has_color(region: np.ndarray, rgb01, tol: int = 8) -> bool:
    target = np.round(np.asarray(rgb01) * 255).astype(int)
    return bool((np.abs(region.astype(int) - target).max(-1) <= tol).any())


def project(point: np.ndarray, lidar2img: np.ndarray):
    """(u, v) and depth of a LiDAR point in one camera."""
    p = lidar2img @ np.append(point, 1.0)
    return p[:2] / p[2], p[2]


def seeing_cameras(point: np.ndarray, lidar2img: np.ndarray) -> list:
    """Cameras whose image contains the point."""
    views = []
    for view in range(len(lidar2img)):
        uv, depth = project(point, lidar2img[view])
        if depth > 0.1 and 0 <= uv[0] < IMAGE_HW[1] and 0 <= uv[1] < IMAGE_HW[0]:
            views.append(view)
    return views


def tiny_checkpoint(path: str, options: dict = TINY_MODEL) -> str:
    """A randomly initialised tiny BEVFormer saved as an mmengine checkpoint."""
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(options)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


# ----------------------------------------------------------------------- render_predictions
@pytest.fixture(scope='module')
def rig():
    lidar2img = nuscenes_rig_lidar2img(IMAGE_HW)
    colors = camera_backgrounds(len(lidar2img))
    images = [np.full((*IMAGE_HW, 3), color, np.uint8) for color in colors]
    return lidar2img, images, colors


def test_predicted_centre_is_drawn_in_its_class_colour_in_the_camera_that_sees_it(rig):
    lidar2img, images, backgrounds = rig
    # car ahead, pedestrian behind (both drawn), a bus to the front right below the threshold.
    boxes = LiDARInstance3DBoxes(torch.tensor([
        [0.5, 15.0, -1.8, 4.5, 1.9, 1.6, 0.3, 1.0, 2.0],
        [-1.0, -12.0, -1.8, 0.7, 0.7, 1.8, 0.0, 0.0, 0.0],
        [8.0, 18.0, -1.8, 11.0, 2.9, 3.5, 0.0, 0.0, 0.0]]), box_dim=9)
    labels = [NUSCENES_CLASSES.index(name) for name in ('car', 'pedestrian', 'bus')]
    gt = LiDARInstance3DBoxes(torch.tensor([[-12.0, 4.0, -1.8, 4.0, 1.8, 1.5, 1.0]]))
    picture = render_predictions(images, lidar2img, boxes, labels, [0.9, 0.6, 0.1], gt_boxes=gt,
                                 gt_labels=[0], score_threshold=0.3, caption='synthetic',
                                 cam_names=CAMERA_CHANNELS, dpi=DPI)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    colors = class_colors(NUSCENES_CLASSES)
    extents = [panel_extent(picture, color) for color in backgrounds]
    centers = boxes.gravity_center.numpy().astype(np.float64)

    for k, label in enumerate(labels[:2]):
        views = seeing_cameras(centers[k], lidar2img)
        assert views, f'box {k} should be seen by some camera'
        for view in views:
            x, y = to_picture(extents[view], project(centers[k], lidar2img[view])[0])
            assert has_color(picture[y - 3:y + 4, x - 3:x + 4], colors[label]), \
                f'{NUSCENES_CLASSES[label]} centre not drawn in {CAMERA_CHANNELS[view]}'
        corners = boxes.corners[k].numpy().astype(np.float64)
        for view in range(len(lidar2img)):
            if any(project(c, lidar2img[view])[1] > 0 for c in corners):
                continue  # the box is at least partly in front of this camera
            x0, y0, x1, y1 = extents[view]
            assert not has_color(picture[y0:y1, x0:x1], colors[label]), \
                f'{NUSCENES_CLASSES[label]} drawn in {CAMERA_CHANNELS[view]} that faces away'
    # below the score threshold: in no camera
    for x0, y0, x1, y1 in extents:
        assert not has_color(picture[y0:y1, x0:x1], colors[labels[2]])
    # ground truth: white '+' at its centre
    gt_center = gt.gravity_center[0].numpy().astype(np.float64)
    views = seeing_cameras(gt_center, lidar2img)
    assert views
    x, y = to_picture(extents[views[0]], project(gt_center, lidar2img[views[0]])[0])
    assert has_color(picture[y - 3:y + 4, x - 3:x + 4], (1.0, 1.0, 1.0), tol=30)


def test_boxes_behind_every_camera_and_empty_inputs(rig):
    lidar2img, images, backgrounds = rig
    # A small box at the LiDAR origin, inside the ring of outward-facing cameras.
    boxes = LiDARInstance3DBoxes(torch.tensor([[0.0, 0.0, -0.2, 0.3, 0.3, 0.3, 0.0]]))
    corners = boxes.corners[0].numpy().astype(np.float64)
    assert all(project(c, m)[1] < 0 for c in corners for m in lidar2img)
    label = NUSCENES_CLASSES.index('car')
    picture = render_predictions(images, lidar2img, boxes, [label], [0.9], gt_boxes=boxes,
                                 cam_names=CAMERA_CHANNELS, dpi=40)
    for color in backgrounds:
        x0, y0, x1, y1 = panel_extent(picture, color)
        assert not has_color(picture[y0:y1, x0:x1], class_colors(NUSCENES_CLASSES)[label])
    # no predictions at all, no ground truth
    empty = render_predictions(images, lidar2img, None, [], [], dpi=40)
    assert empty.shape[2] == 3


def test_render_rejects_inconsistent_inputs(rig):
    lidar2img, images, _ = rig
    with pytest.raises(ValueError, match='lidar2img'):
        render_predictions(images, lidar2img[:5], None, [], [])
    boxes = LiDARInstance3DBoxes(torch.zeros(2, 7))
    with pytest.raises(ValueError, match='pred_scores'):
        render_predictions(images, lidar2img, boxes, [0, 1], [0.5])


# ----------------------------------------------------------------------------------- the hook
def test_hook_is_registered_and_idle_unless_drawing(monkeypatch):
    assert HOOKS.get('BEVVisualizationHook') is BEVVisualizationHook
    hook = HOOKS.build(dict(type='BEVVisualizationHook'))
    # draw=False: nothing is touched (the runner is not even looked at)
    hook.after_val_iter(None, 0, None, outputs=[object()])
    hook.after_test_iter(None, 0, None, outputs=[object()])
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    monkeypatch.setattr('sys.platform', 'linux')
    with pytest.warns(UserWarning, match='show=True ignored'):
        hook = BEVVisualizationHook(draw=True, show=True, wait_time=2)
    assert not hook.show
    with pytest.raises(ValueError, match='interval'):
        BEVVisualizationHook(interval=0)


@needs_demo
def test_images_read_back_match_the_network_input():
    """What the hook draws on: the files of ``img_path`` brought to ``img_shape`` by
    ``img_aug_matrix`` equal the pipeline's own (resized, flipped) images."""
    for flip, tolerance in ((True, 0.5), (False, 3.0)):
        packed = load_packed_frame(DEMO_ROOT, scale_factor=0.25, flip=flip)
        images = load_sample_images(packed['data_samples'].metainfo)
        network = [img.permute(1, 2, 0).numpy()[..., ::-1] for img in packed['inputs']['img']]
        for image, reference in zip(images, network):
            assert image.shape == reference.shape
            assert np.abs(image.astype(float) - reference.astype(float)).mean() < tolerance


@pytest.fixture(scope='module')
def toy_world(tmp_path_factory):
    from projects.datasets.toy_nuscenes import prepare_toy_nuscenes
    root = tmp_path_factory.mktemp('toy_nuscenes_vis')
    return prepare_toy_nuscenes(root, num_train_scenes=1, samples_per_scene=2,
                                image_size=IMAGE_HW, progress=False)


@pytest.mark.slow
def test_hook_writes_a_png_per_sample_in_a_test_run(toy_world, tmp_path):
    import pickle

    from projects.engine import launch
    root = toy_world['root'] + '/'
    checkpoint = tiny_checkpoint(str(tmp_path / 'tiny.pth'))
    work_dir = str(tmp_path / 'work')
    options = [f'{key}={value}' for key, value in TINY_MODEL.items()] + [
        'custom_imports.imports=[projects,projects.bevformer.visualization]',
        'default_hooks.visualization.type=BEVVisualizationHook',
        'default_hooks.visualization.score_threshold=0.0',
        'default_hooks.visualization.dpi=40',
        f'test_dataloader.dataset.data_root={root}', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False', f'test_evaluator.data_root={root}',
        f'test_evaluator.ann_file={root}nuscenes_infos_val.pkl']
    launch.test([CONFIG, checkpoint, '--work-dir', work_dir, '--show-dir', 'vis',
                 '--cfg-options', *options])
    pngs = sorted(glob.glob(osp.join(work_dir, '*', 'vis', '*.png')))
    with open(toy_world['info_files']['val'], 'rb') as file:
        tokens = sorted(info['token'] for info in pickle.load(file)['data_list'])
    assert [osp.splitext(osp.basename(p))[0] for p in pngs] == tokens
    for path in pngs:
        picture = cv2.imread(path)
        assert picture is not None and picture.shape[1] > 2 * picture.shape[0]


# ----------------------------------------------------------------------------------- the tool
def load_tool():
    spec = importlib.util.spec_from_file_location(
        'visualize_predictions', osp.join(REPO, 'tools/analysis/visualize_predictions.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_names_a_missing_checkpoint_or_config(tmp_path, capsys):
    tool = load_tool()
    with pytest.raises(SystemExit, match='checkpoint .*no_such.pth.* does not exist'):
        tool.main([CONFIG, str(tmp_path / 'no_such.pth')])
    with pytest.raises(SystemExit, match='config file .*no_such.py.* does not exist'):
        tool.main([str(tmp_path / 'no_such.py'), str(tmp_path / 'no_such.pth')])


@pytest.mark.slow
@needs_demo
def test_tool_writes_a_png_of_the_real_frame(tmp_path, capsys):
    """The demo frame's mmdet3d info has no CAN bus: a model without the CAN-bus input."""
    tool = load_tool()
    without_can_bus = dict(TINY_MODEL, **{'model.encoder.use_can_bus': False,
                                          'test_dataloader.dataset.with_can_bus': False})
    checkpoint = tiny_checkpoint(str(tmp_path / 'tiny.pth'), without_can_bus)
    options = [f'{key}={value}' for key, value in without_can_bus.items()]
    out_dir = tmp_path / 'vis'
    tool.main([CONFIG, checkpoint, '--data-root', DEMO_ROOT, '--ann-file', DEMO_INFOS[0],
               '--out-dir', str(out_dir), '--score-threshold', '0', '--dpi', '40',
               '--cfg-options', *options])
    pngs = glob.glob(str(out_dir / '*.png'))
    assert len(pngs) == 1
    picture = cv2.imread(pngs[0])
    assert picture is not None and picture.shape[1] > 2 * picture.shape[0]
    output = capsys.readouterr().out
    assert 'predicting' in output and 'wrote' in output
    with pytest.raises(SystemExit, match='--index 5 is out of range'):
        tool.main([CONFIG, checkpoint, '--data-root', DEMO_ROOT, '--ann-file', DEMO_INFOS[0],
                   '--index', '5', '--out-dir', str(out_dir), '--cfg-options', *options])
