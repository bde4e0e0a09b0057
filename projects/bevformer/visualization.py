"""Pictures of BEVFormer's camera geometry and of its detections, drawn into the six cameras of a
frame plus a bird's-eye panel. One drawing path (camera panels with box wireframes, BEV panel with
box outlines, camera frusta and the ego car) serves both pictures:

* :func:`render_bev_projection` / :func:`visualize_bev_projection` (the projection picture, used
  by ``tools/analysis/visualize_bev_projection.py``): BEV reference points and ground-truth boxes
  on a real frame, through the training data path (``BEVNuScenesDataset`` with
  ``LoadMultiViewImages`` and ``PackBEVInputs``) and ``projects.bevformer.geometry``, so a box
  centre's marker lands on its object only when ``lidar2img`` is right, also after
  ``MultiViewResize`` / ``MultiViewFlip``.
* :func:`render_predictions` (predictions in class colours, solid, with scores; ground truth
  white, dashed), drawn for test samples by :class:`BEVVisualizationHook` (``tools/test.py
  --show-dir``) and by :func:`visualize_predictions` (``tools/analysis/visualize_predictions.py``).

nuScenes data (e.g. ``../shared/data/nuscenes_demo``, one v1.0-mini keyframe) is (c) Motional,
licensed CC BY-NC-SA 4.0 (non-commercial use only); pictures made from it carry that notice
(:data:`NUSCENES_NOTICE`, written into the PNG's caption).
"""
import copy
import glob
import os
import os.path as osp
import sys
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.hooks import Hook

from mmdet3d.registry import HOOKS
from .geometry import pillar_points, project_to_cameras

__all__ = [
    'NUSCENES_NOTICE', 'DEFAULT_POINT_CLOUD_RANGE', 'NUSCENES_CLASS_COLORS', 'class_colors',
    'load_packed_frame', 'box_edge_segments', 'render_bev_projection', 'visualize_bev_projection',
    'render_predictions', 'load_sample_images', 'render_data_sample', 'BEVVisualizationHook',
    'visualize_predictions'
]

NUSCENES_NOTICE = ('nuScenes data (c) Motional, CC BY-NC-SA 4.0 '
                   '(https://creativecommons.org/licenses/by-nc-sa/4.0/), non-commercial use only')
TOY_NOTICE = ('Synthetic toy nuScenes world on the nuScenes camera rig; nuScenes calibration (c) '
              'Motional, CC BY-NC-SA 4.0, non-commercial use only')
TOY_MANIFEST = 'toy_nuscenes_manifest.json'  # projects.datasets.toy_nuscenes.MANIFEST_NAME
DEFAULT_POINT_CLOUD_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
NUSCENES_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle',
                    'motorcycle', 'pedestrian', 'traffic_cone', 'barrier')
# One colour per nuScenes class, far apart from each other and from the ground truth's white
# (nuScenes' own palette has five near-identical oranges).
NUSCENES_CLASS_COLORS: Dict[str, Tuple[int, int, int]] = {
    'car': (255, 158, 0), 'truck': (0, 200, 255), 'trailer': (180, 110, 255),
    'bus': (255, 50, 50), 'construction_vehicle': (255, 230, 0), 'bicycle': (0, 230, 120),
    'motorcycle': (255, 0, 200), 'pedestrian': (40, 100, 255), 'traffic_cone': (170, 255, 0),
    'barrier': (170, 120, 80)
}
GT_COLOR = (1.0, 1.0, 1.0)
# Camera panels, two rows of three, as a driver would arrange them.
PANEL_ORDER = ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT', 'CAM_BACK',
               'CAM_BACK_RIGHT')
NEAR_DEPTH = 0.1  # metres; box edges are clipped to lie at least this far in front of a camera


def class_colors(class_names: Sequence[str],
                 palette: Optional[Sequence[Tuple[int, int, int]]] = None) -> np.ndarray:
    """(C, 3) RGB in [0, 1], one per class: ``palette`` (RGB 0-255) when given, else
    :data:`NUSCENES_CLASS_COLORS` by name, else matplotlib's tab20 by index."""
    import matplotlib
    if palette is not None:
        if len(palette) < len(class_names):
            raise ValueError(f'palette has {len(palette)} colours for {len(class_names)} classes')
        return np.asarray(palette[:len(class_names)], dtype=np.float64).reshape(-1, 3) / 255.0
    tab20 = matplotlib.colormaps['tab20']
    return np.array([np.array(NUSCENES_CLASS_COLORS[name]) / 255.0
                     if name in NUSCENES_CLASS_COLORS else np.array(tab20(i % 20)[:3])
                     for i, name in enumerate(class_names)]).reshape(-1, 3)


def _camera_prefixes(data_root: str, cam_names: Sequence[str]) -> Dict[str, str]:
    """nuScenes layout (``samples/CAM_X``) when ``data_root/samples`` exists, else every image
    directly in ``data_root``."""
    if osp.isdir(osp.join(data_root, 'samples')):
        return {name: osp.join('samples', name) for name in cam_names}
    return {name: '' for name in cam_names}


def _data_notice(data_root: Optional[str]) -> str:
    """The licence line for a picture of the data under ``data_root``."""
    if data_root and osp.isfile(osp.join(data_root, TOY_MANIFEST)):
        return TOY_NOTICE
    return NUSCENES_NOTICE


def load_packed_frame(data_root: str, info_path: Optional[str] = None, index: int = 0,
                      scale_factor: float = 1.0, flip: bool = False) -> dict:
    """Sample ``index`` of an mmdet3d nuScenes info file through ``BEVNuScenesDataset``.

    Args:
        data_root: directory of the images (flat, or nuScenes' ``samples/CAM_X`` layout).
        info_path: the info .pkl; None takes the only .pkl in ``data_root``.
        index: sample index in the info file.
        scale_factor: ``MultiViewResize`` factor (1 leaves the images as they are).
        flip: apply ``MultiViewFlip(prob=1)``.

    Returns:
        ``PackBEVInputs``' output: ``inputs['img']`` (N, 3, H, W) BGR uint8 and ``data_samples``.
    """
    import pickle

    from mmengine.registry import DefaultScope

    from mmdet3d.registry import DATASETS
    from . import dataset, transforms  # noqa: F401  (registers the modules)

    if info_path is None:
        candidates = sorted(glob.glob(osp.join(data_root, '*.pkl')))
        if len(candidates) != 1:
            raise FileNotFoundError(f'pass the info file: {data_root} has {len(candidates)} .pkl '
                                    'files, expected exactly one')
        info_path = candidates[0]
    if not osp.isfile(info_path):
        raise FileNotFoundError(f'info file {info_path} does not exist')
    with open(info_path, 'rb') as file:
        first = pickle.load(file)['data_list'][0]
    pipeline = [
        dict(type='LoadMultiViewImages'),
        dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    ]
    if scale_factor != 1.0:
        pipeline.append(dict(type='MultiViewResize', scale_factor=scale_factor))
    if flip:
        pipeline.append(dict(type='MultiViewFlip', prob=1.0))
    pipeline.append(dict(type='PackBEVInputs'))
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        bev_dataset = DATASETS.build(dict(
            type='BEVNuScenesDataset', data_root=data_root, ann_file=info_path,
            data_prefix=_camera_prefixes(data_root, list(first['images'])), pipeline=pipeline,
            filter_empty_gt=False, test_mode=False))
        return bev_dataset[index]


# ------------------------------------------------------------------------------ projection
def _to_homogeneous(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)


def box_edge_segments(corners: np.ndarray, lidar2img: np.ndarray,
                      near: float = NEAR_DEPTH) -> Tuple[np.ndarray, np.ndarray]:
    """Image segments of the 12 edges of every box, clipped to the part in front of the camera.

    Args:
        corners: (B, 8, 3) box corners in the LiDAR frame, mmdet3d's corner order.
        lidar2img: (4, 4) one camera; its third row gives depth along the optical axis.
        near: metres; edge parts closer than this are dropped.

    Returns:
        segments: (S, 2, 2) pixel (u, v) of the segment ends (off-image ends are kept: the
            caller clips to the image by its axes limits).
        box_ids: (S,) the box of each segment.
    """
    unit = np.array(np.unravel_index(np.arange(8), (2, 2, 2))).T  # (8, 3) bits, mmdet3d order
    unit = unit[[0, 1, 3, 2, 4, 5, 7, 6]]
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8)
             if np.abs(unit[i] - unit[j]).sum() == 1]  # 12 pairs differing along one axis
    starts = corners[:, [i for i, _ in edges]].reshape(-1, 3)
    ends = corners[:, [j for _, j in edges]].reshape(-1, 3)
    depth_start = _to_homogeneous(starts) @ lidar2img[2]
    depth_end = _to_homogeneous(ends) @ lidar2img[2]
    box_ids = np.repeat(np.arange(len(corners)), len(edges))
    keep = (depth_start > near) | (depth_end > near)
    box_ids = box_ids[keep]
    starts, ends, depth_start, depth_end = (a[keep] for a in (starts, ends, depth_start,
                                                              depth_end))
    # Move an end behind the near plane along the edge onto it.
    t = np.clip((near - depth_start) / (depth_end - depth_start + 1e-12), 0, 1)
    starts = np.where((depth_start < near)[:, None], starts + t[:, None] * (ends - starts), starts)
    t = np.clip((near - depth_end) / (depth_start - depth_end + 1e-12), 0, 1)
    ends = np.where((depth_end < near)[:, None], ends + t[:, None] * (starts - ends), ends)
    segments = np.stack([starts, ends], axis=1)  # (S, 2, 3)
    in_image = _to_homogeneous(segments) @ lidar2img.T  # (S, 2, 4)
    return in_image[..., :2] / in_image[..., 2:3], box_ids


def _project(points: np.ndarray, lidar2img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(P, 2) pixels and (P,) depths of LiDAR points in one camera."""
    in_image = _to_homogeneous(points) @ lidar2img.T
    depth = in_image[:, 2]
    return in_image[:, :2] / np.maximum(depth, 1e-5)[:, None], depth


def _visible_centres(centers: np.ndarray, lidar2img: np.ndarray,
                     image_hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """(P, 2) pixels of box centres in one camera and (P,) whether each is in the image."""
    pixels, depth = _project(centers.reshape(-1, 3), lidar2img)
    img_h, img_w = image_hw
    visible = ((depth > NEAR_DEPTH) & (pixels[:, 0] >= 0) & (pixels[:, 0] < img_w) &
               (pixels[:, 1] >= 0) & (pixels[:, 1] < img_h))
    return pixels, visible


# --------------------------------------------------------------------------- shared drawing
class _BoxGeometry:
    """What the panels draw of a set of boxes, as float64 numpy (LiDAR frame): ``corners``
    (B, 8, 3), ``centers`` (B, 3) gravity centres, ``velocities`` (B, 2) or None."""

    def __init__(self, boxes) -> None:
        self.corners = boxes.corners.detach().cpu().numpy().astype(np.float64).reshape(-1, 8, 3)
        self.centers = boxes.gravity_center.detach().cpu().numpy().astype(np.float64).reshape(
            -1, 3)
        tensor = boxes.tensor.detach().cpu()
        self.velocities = (tensor[:, 7:9].numpy().astype(np.float64)
                           if tensor.ndim == 2 and tensor.shape[1] >= 9 else None)

    def __len__(self) -> int:
        return len(self.corners)


def _panel_order(cam_names: Sequence[str]) -> List[int]:
    """View indices in panel order (:data:`PANEL_ORDER` where the names match), at most six."""
    panel_of = {name: i for i, name in enumerate(PANEL_ORDER)}
    order = sorted(range(len(cam_names)), key=lambda v: panel_of.get(cam_names[v], 100 + v))
    return order[:6]


def _new_sheet(image_hw: Tuple[int, int], bottom_margin: float = 0.9, top_margin: float = 0.25,
               panel_width: float = 5.0):
    """A figure (with an Agg canvas, outside pyplot's state) of six camera slots (2 x 3) and a
    square BEV slot on the right. Returns (figure, camera slots, BEV slot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = image_hw
    aspect = height / width
    fig_h = panel_width * 2 * aspect + bottom_margin + top_margin
    fig = Figure(figsize=(panel_width * (3.15 + 2 * aspect), fig_h))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 5, width_ratios=[1, 1, 1, 0.12, 2 * aspect], left=0.004,
                            right=0.996, top=1 - top_margin / fig_h, bottom=bottom_margin / fig_h,
                            wspace=0.02, hspace=0.1)
    return fig, [grid[p // 3, p % 3] for p in range(6)], grid[:, 4]


def _draw_camera_image(axis, image: np.ndarray) -> None:
    img_h, img_w = image.shape[:2]
    axis.imshow(image, extent=(0, img_w, img_h, 0), interpolation='antialiased')
    axis.set_xlim(0, img_w)
    axis.set_ylim(img_h, 0)
    axis.axis('off')


def _draw_wireframes(axis, geometry: _BoxGeometry, lidar2img: np.ndarray, colors: np.ndarray,
                     linewidth: float, linestyle: str = '-') -> None:
    """The boxes' 12 edges in one camera, clipped to the part in front of it."""
    from matplotlib.collections import LineCollection
    if not len(geometry):
        return
    segments, box_ids = box_edge_segments(geometry.corners, lidar2img)
    if len(segments):
        axis.add_collection(LineCollection(segments, colors=colors[box_ids],
                                           linewidths=linewidth, linestyles=linestyle))


def _draw_bev_boxes(axis, geometry: _BoxGeometry, colors: np.ndarray, linewidth: float,
                    linestyle: str = '-', velocity: bool = True) -> None:
    """Top-down: bottom face, heading (centre to the front face) and velocity arrow."""
    for k in range(len(geometry)):
        corners, center = geometry.corners[k], geometry.centers[k]
        bottom = corners[[0, 3, 7, 4, 0], :2]
        axis.plot(bottom[:, 0], bottom[:, 1], color=colors[k], lw=linewidth, ls=linestyle)
        front = corners[[4, 7], :2].mean(0)
        axis.plot([center[0], front[0]], [center[1], front[1]], color=colors[k], lw=linewidth)
        if velocity and geometry.velocities is not None:
            vx, vy = geometry.velocities[k]
            if vx * vx + vy * vy > 0.01:
                axis.arrow(center[0], center[1], vx, vy, color=colors[k], width=0.05,
                           head_width=0.6, length_includes_head=True)


def _draw_camera_frusta(axis, lidar2img: np.ndarray, image_hws: Sequence[Tuple[int, int]],
                        cam_names: Sequence[str], reach: float, fill_alpha: float = 0.08,
                        text_color: Optional[str] = None) -> None:
    """Rays through the left and right image edges at mid-height, from each camera centre."""
    import matplotlib
    camera_colors = matplotlib.colormaps['tab10']
    for view, name in enumerate(cam_names):
        img_h, img_w = image_hws[view]
        inverse = np.linalg.inv(lidar2img[view])
        origin = inverse @ np.array([0.0, 0.0, 0.0, 1.0])  # depth 0: the camera centre
        origin = origin[:3] / origin[3]
        rays = []
        for u in (0.0, float(img_w)):
            point = inverse @ np.array([u, img_h / 2, 1.0, 1.0])  # one metre deep
            direction = point[:3] / point[3] - origin
            direction /= np.linalg.norm(direction[:2]) + 1e-12
            rays.append(origin + reach * direction)
        color = camera_colors(view % 10)
        axis.fill([origin[0], rays[0][0], rays[1][0]], [origin[1], rays[0][1], rays[1][1]],
                  color=color, alpha=fill_alpha)
        for ray in rays:
            axis.plot([origin[0], ray[0]], [origin[1], ray[1]], color=color, lw=0.8,
                      alpha=min(1.0, 10 * fill_alpha))
        middle = (rays[0] + rays[1]) / 2
        axis.text(middle[0], middle[1], name.replace('CAM_', ''), color=text_color or color,
                  fontsize=7, ha='center', va='center')


def _finish_bev_axis(axis, point_cloud_range: Sequence[float], title: str,
                     frame_color: str = 'k') -> None:
    """Ego car (a 4.5 m x 1.9 m footprint around the LiDAR, facing +y), the range, limits and
    labels. LiDAR frame: +x to the right, +y (the car's forward direction) up."""
    from matplotlib.patches import Rectangle
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    axis.add_patch(Rectangle((x_min, y_min), x_max - x_min, y_max - y_min, fill=False, lw=0.8,
                             color=frame_color))
    axis.add_patch(Rectangle((-0.95, -2.6), 1.9, 4.5, color='r', alpha=0.7))
    axis.set_xlim(x_min - 2, x_max + 2)
    axis.set_ylim(y_min - 2, y_max + 2)
    axis.set_aspect('equal')
    axis.tick_params(labelsize=7)
    axis.set_xlabel('x (m, LiDAR frame)', fontsize=8)
    axis.set_ylabel('y (m, forward)', fontsize=8)
    axis.set_title(title, fontsize=8)


def _figure_rgb(fig) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a figure with an Agg canvas."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


# ------------------------------------------------------------------- projection picture
def render_bev_projection(images: Sequence[np.ndarray], cam_names: Sequence[str],
                          lidar2img: np.ndarray, boxes, labels: np.ndarray,
                          class_names: Sequence[str], palette: Sequence[Tuple[int, int, int]],
                          point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
                          bev_size: Tuple[int, int] = (50, 50), num_heights: int = 4,
                          caption: str = '', out_path: Optional[str] = None,
                          progress: Callable[[str], None] = print, dpi: int = 100):
    """Draws the contact sheet: six camera panels and a BEV panel.

    Args:
        images: N (H, W, 3) RGB uint8 images, one per camera.
        cam_names: N camera names (panels follow :data:`PANEL_ORDER` where the names match).
        lidar2img: (N, 4, 4) of these images.
        boxes: ``LiDARInstance3DBoxes`` ground truth (LiDAR frame).
        labels: (B,) class indices (-1: not a class of ``class_names``, drawn grey).
        class_names, palette: class names and their RGB colours.
        point_cloud_range: the BEV grid's range.
        bev_size: (bev_h, bev_w) grid cells.
        num_heights: reference points per pillar.
        caption: text under the panels (put the data's licence notice here).
        out_path: PNG to write, or None.
        progress: called with a line of progress.
        dpi: resolution of the PNG.

    Returns:
        The matplotlib figure (with an Agg canvas; not registered with pyplot).
    """
    import matplotlib

    num_views = len(images)
    bev_h, bev_w = bev_size
    x_min, y_min, z_min, x_max, y_max, z_max = point_cloud_range
    lidar2img = np.asarray(lidar2img, dtype=np.float64)
    labels = np.asarray(labels)
    colors = np.array([(np.array(palette[label]) / 255.0) if 0 <= label < len(palette)
                       else np.array([0.6, 0.6, 0.6]) for label in labels]).reshape(-1, 3)

    # BEV reference points into every camera, by the model's own function.
    points = pillar_points(bev_h, bev_w, point_cloud_range, num_heights).double()  # (Q, Z, 3)
    image_hw = torch.tensor([img.shape[:2] for img in images], dtype=torch.float64)[None]
    height, width = images[0].shape[:2]
    reference_points_cam, bev_mask = project_to_cameras(
        points, torch.from_numpy(lidar2img)[None], image_hw, (height, width))
    pixels = (reference_points_cam[0] * torch.tensor([width, height], dtype=torch.float64)
              ).numpy()  # (N, Q, Z, 2)
    bev_mask = bev_mask[0].numpy()  # (N, Q, Z)
    heights = points[..., 2].numpy()  # (Q, Z)
    geometry = _BoxGeometry(boxes)

    order = _panel_order(cam_names)
    fig, camera_slots, bev_slot = _new_sheet((height, width))
    norm = matplotlib.colors.Normalize(z_min, z_max)
    cmap = matplotlib.colormaps['viridis']
    for panel, view in enumerate(order):
        progress(f'camera {panel + 1}/{min(num_views, 6)}: {cam_names[view]}')
        axis = fig.add_subplot(camera_slots[panel])
        _draw_camera_image(axis, images[view])
        hit = bev_mask[view]
        axis.scatter(pixels[view][..., 0][hit], pixels[view][..., 1][hit], s=1.2,
                     c=heights[hit], cmap=cmap, norm=norm, linewidths=0, alpha=0.9)
        _draw_wireframes(axis, geometry, lidar2img[view], colors, 0.9)
        center_px, visible = _visible_centres(geometry.centers, lidar2img[view],
                                              images[view].shape[:2])
        axis.scatter(center_px[visible, 0], center_px[visible, 1], s=22, marker='+',
                     c=colors[visible], linewidths=1.3)
        axis.set_title(f'{cam_names[view]}: {int(hit.any(-1).sum())} pillars, '
                       f'{int(visible.sum())} box centres', fontsize=8)

    progress('bird\'s-eye view')
    axis = fig.add_subplot(bev_slot)
    flat_points = points.numpy()
    cells_hit = bev_mask.any(-1).sum(0)  # (Q,) cameras that see some point of the pillar
    axis.scatter(flat_points[:, 0, 0], flat_points[:, 0, 1], s=3, c=cells_hit, cmap='Greys',
                 vmin=-1, vmax=3, linewidths=0, label='pillar (darker: seen by more cameras)')
    _draw_camera_frusta(axis, lidar2img, [img.shape[:2] for img in images], cam_names,
                        reach=0.45 * min(x_max - x_min, y_max - y_min))
    _draw_bev_boxes(axis, geometry, colors, 1.0)
    _finish_bev_axis(axis, point_cloud_range,
                     'BEV: grid, GT boxes (heading, velocity), ego, camera frusta')
    fig.text(0.004, 0.01, caption, ha='left', va='bottom', fontsize=8)
    if out_path is not None:
        progress(f'writing {out_path}')
        fig.savefig(out_path, dpi=dpi)
    return fig


def visualize_bev_projection(data_root: str, out_path: str, info_path: Optional[str] = None,
                             index: int = 0,
                             point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
                             bev_size: Tuple[int, int] = (50, 50), num_heights: int = 4,
                             scale_factor: float = 1.0, flip: bool = False,
                             progress: Callable[[str], None] = print, dpi: int = 100) -> str:
    """Loads sample ``index`` (:func:`load_packed_frame`) and writes the contact sheet PNG
    (:func:`render_bev_projection`) to ``out_path``. Returns ``out_path``."""
    from mmdet3d.datasets import NuScenesDataset

    progress(f'loading sample {index} of {info_path or data_root}')
    packed = load_packed_frame(data_root, info_path, index, scale_factor, flip)
    sample = packed['data_samples']
    num_views = sample.num_views
    imgs = packed['inputs']['img'][-num_views:]  # the current frame: (N, 3, H, W) BGR
    images = [img.permute(1, 2, 0).numpy()[..., ::-1].astype(np.uint8) for img in imgs]
    gt = sample.gt_instances_3d
    caption = (f'sample {sample.token} ({sample.img_shape[1]}x{sample.img_shape[0]} images'
               f'{", flipped" if sample.flip else ""}). Dots: BEV reference points, '
               f'{bev_size[0]}x{bev_size[1]} pillars x {num_heights} heights over '
               f'{list(point_cloud_range)}, coloured by height (viridis, low = purple); boxes: '
               'ground truth, + = box centre.\n' + NUSCENES_NOTICE)
    render_bev_projection(
        images, sample.cam_names, sample.lidar2img[-1], gt.bboxes_3d, gt.labels_3d.numpy(),
        NuScenesDataset.METAINFO['classes'], NuScenesDataset.METAINFO['palette'],
        point_cloud_range, bev_size, num_heights, caption, out_path, progress, dpi)
    return out_path


# ------------------------------------------------------------------------ predictions picture
def _as_boxes(boxes, name: str):
    """``LiDARInstance3DBoxes`` on the CPU from boxes, a (B, 7 or 9) tensor / array, or None."""
    from mmdet3d.structures import BaseInstance3DBoxes, LiDARInstance3DBoxes
    if boxes is None:
        return LiDARInstance3DBoxes(torch.zeros(0, 7))
    if isinstance(boxes, BaseInstance3DBoxes):
        return boxes.to('cpu')
    tensor = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    if tensor.ndim != 2 or tensor.shape[1] not in (7, 9):
        raise ValueError(f'{name} must be LiDARInstance3DBoxes or a (B, 7) / (B, 9) array, got '
                         f'shape {tuple(tensor.shape)}')
    return LiDARInstance3DBoxes(tensor, box_dim=tensor.shape[1])


def _as_vector(values, length: int, name: str, dtype) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=dtype).reshape(-1)
    if len(values) != length:
        raise ValueError(f'{name} has {len(values)} entries for {length} boxes')
    return values


def render_predictions(images: Sequence[np.ndarray], lidar2img: np.ndarray, pred_boxes,
                       pred_labels, pred_scores, gt_boxes=None, gt_labels=None,
                       class_names: Sequence[str] = NUSCENES_CLASSES,
                       score_threshold: float = 0.3,
                       point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
                       caption: str = '', cam_names: Optional[Sequence[str]] = None,
                       palette: Optional[Sequence[Tuple[int, int, int]]] = None,
                       dpi: int = 100) -> np.ndarray:
    """Predictions and ground truth in the cameras and from above, as one RGB picture.

    Cameras (2 x 3 panels): predictions as solid wireframes in their class colour with a filled
    dot at the projected box centre, ground truth as white dashed wireframes with a ``+`` at the
    centre; edges behind a camera are clipped away. BEV panel (dark): the same boxes' bottom
    outlines with heading (centre to front face) and velocity arrows, each prediction's score
    next to it, the camera frusta and the ego car. A legend of the classes and the caption below.

    Args:
        images: N (H, W, 3) RGB uint8 camera images (the size ``lidar2img`` maps to).
        lidar2img: (N, 4, 4) LiDAR to image pixels of these images.
        pred_boxes: ``LiDARInstance3DBoxes`` (7 or 9 dims, velocity allowed), or a (P, 7 / 9)
            array; None for none.
        pred_labels: (P,) class indices into ``class_names``.
        pred_scores: (P,) scores; predictions below ``score_threshold`` are not drawn.
        gt_boxes: ground-truth ``LiDARInstance3DBoxes`` (or array), or None. Only boxes whose
            centre lies in ``point_cloud_range`` (x, y) are drawn.
        gt_labels: (G,) class indices; boxes labelled -1 (not a class of the model) are skipped.
        class_names: class names (legend, colours).
        score_threshold: the lowest score drawn.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the BEV panel.
        caption: text under the panels (put the data's licence notice here).
        cam_names: N camera names (panel order and titles); default ``CAM_0`` ...
        palette: RGB 0-255 per class; default :func:`class_colors`.
        dpi: pixels per inch of the picture (a panel is 5 inches wide).

    Returns:
        (H', W', 3) uint8 RGB picture.
    """
    from matplotlib.lines import Line2D

    num_views = len(images)
    lidar2img = np.asarray(lidar2img, dtype=np.float64)
    if num_views == 0:
        raise ValueError('images is empty: expected one image per camera')
    if lidar2img.shape != (num_views, 4, 4):
        raise ValueError(f'lidar2img must be ({num_views}, 4, 4) for {num_views} images, got '
                         f'{lidar2img.shape}')
    if cam_names is None:
        cam_names = [f'CAM_{view}' for view in range(num_views)]
    cam_names = list(cam_names)
    if len(cam_names) != num_views:
        raise ValueError(f'cam_names has {len(cam_names)} names for {num_views} images')
    colors_of_class = class_colors(class_names, palette)
    grey = np.array([0.6, 0.6, 0.6])

    pred_boxes = _as_boxes(pred_boxes, 'pred_boxes')
    pred_labels = _as_vector(pred_labels, len(pred_boxes), 'pred_labels', np.int64)
    pred_scores = _as_vector(pred_scores, len(pred_boxes), 'pred_scores', np.float64)
    keep = pred_scores >= score_threshold
    pred = _BoxGeometry(pred_boxes[torch.from_numpy(keep)]) if keep.any() else _BoxGeometry(
        _as_boxes(None, ''))
    pred_labels, pred_scores = pred_labels[keep], pred_scores[keep]
    pred_colors = np.array([colors_of_class[label] if 0 <= label < len(colors_of_class)
                            else grey for label in pred_labels]).reshape(-1, 3)

    gt_boxes = _as_boxes(gt_boxes, 'gt_boxes')
    gt_keep = np.ones(len(gt_boxes), dtype=bool)
    if gt_labels is not None:
        gt_keep &= _as_vector(gt_labels, len(gt_boxes), 'gt_labels', np.int64) >= 0
    gt_centers = gt_boxes.gravity_center.numpy().reshape(-1, 3)
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    gt_keep &= ((gt_centers[:, 0] >= x_min) & (gt_centers[:, 0] <= x_max) &
                (gt_centers[:, 1] >= y_min) & (gt_centers[:, 1] <= y_max))
    gt = _BoxGeometry(gt_boxes[torch.from_numpy(gt_keep)]) if gt_keep.any() else _BoxGeometry(
        _as_boxes(None, ''))
    gt_colors = np.tile(np.array(GT_COLOR), (len(gt), 1))

    height, width = images[0].shape[:2]
    caption_lines = caption.count('\n') + 1 if caption else 0
    fig, camera_slots, bev_slot = _new_sheet((height, width),
                                             bottom_margin=0.75 + 0.17 * caption_lines)
    for panel, view in enumerate(_panel_order(cam_names)):
        axis = fig.add_subplot(camera_slots[panel])
        image_hw = images[view].shape[:2]
        _draw_camera_image(axis, images[view])
        _draw_wireframes(axis, gt, lidar2img[view], gt_colors, 0.8, linestyle=(0, (4, 3)))
        _draw_wireframes(axis, pred, lidar2img[view], pred_colors, 1.3)
        gt_px, gt_visible = _visible_centres(gt.centers, lidar2img[view], image_hw)
        axis.scatter(gt_px[gt_visible, 0], gt_px[gt_visible, 1], s=30, marker='+',
                     c=gt_colors[gt_visible], linewidths=1.2)
        pred_px, pred_visible = _visible_centres(pred.centers, lidar2img[view], image_hw)
        axis.scatter(pred_px[pred_visible, 0], pred_px[pred_visible, 1], s=16, marker='o',
                     c=pred_colors[pred_visible], linewidths=0)
        axis.set_title(f'{cam_names[view]}: {int(pred_visible.sum())} predicted, '
                       f'{int(gt_visible.sum())} GT box centres', fontsize=8)

    axis = fig.add_subplot(bev_slot)
    axis.set_facecolor('#1c1c1c')
    _draw_camera_frusta(axis, lidar2img, [img.shape[:2] for img in images], cam_names,
                        reach=0.45 * min(x_max - x_min, y_max - y_min), fill_alpha=0.04,
                        text_color='#9a9a9a')
    _draw_bev_boxes(axis, gt, gt_colors, 0.8, linestyle=(0, (3, 2)), velocity=False)
    _draw_bev_boxes(axis, pred, pred_colors, 1.1)
    for k in range(len(pred)):
        axis.text(pred.centers[k, 0] + 1.0, pred.centers[k, 1] + 1.0, f'{pred_scores[k]:.2f}',
                  color=pred_colors[k], fontsize=6, clip_on=True)
    _finish_bev_axis(axis, point_cloud_range,
                     f'BEV: {len(pred)} predictions with score >= {score_threshold:g} (solid, '
                     f'score), {len(gt)} GT (white dashed)', frame_color='#808080')

    handles = [Line2D([0], [0], color=colors_of_class[c], lw=2.5, label=name)
               for c, name in enumerate(class_names)]
    handles.append(Line2D([0], [0], color=GT_COLOR, lw=1.2, ls=(0, (4, 3)), marker='+',
                          label='ground truth'))
    legend = fig.legend(handles=handles, loc='lower right', bbox_to_anchor=(0.996, 0.005),
                        ncol=(len(handles) + 1) // 2, fontsize=7, frameon=True,
                        facecolor='#2a2a2a', labelcolor='white', edgecolor='#2a2a2a')
    legend.get_frame().set_alpha(1.0)
    if caption:
        fig.text(0.004, 0.01, caption, ha='left', va='bottom', fontsize=7)
    fig.set_dpi(dpi)
    return _figure_rgb(fig)


# ------------------------------------------------------------------------- data samples
def _warp_to_network(image: np.ndarray, aug_matrix: np.ndarray,
                     image_hw: Tuple[int, int]) -> np.ndarray:
    """The loaded image as the network saw it: ``aug_matrix`` (4, 4) (resize / crop / flip, in
    the continuous pixel convention of ``projects.bevformer.transforms``) applied, ``image_hw``
    (H, W) big."""
    import cv2
    height, width = image_hw
    a, b, d, e = aug_matrix[0, 0], aug_matrix[0, 2], aug_matrix[1, 1], aug_matrix[1, 2]
    if a > 0 and d > 0 and abs(b) < 1e-9 and abs(e) < 1e-9:  # a plain resize
        if image.shape[:2] == (height, width):
            return image
        shrink = a * d < 1
        return cv2.resize(image, (width, height),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    # continuous u' = a u + b; pixel index i covers [i, i + 1): i' = a i + (a / 2 + b - 1 / 2)
    matrix = np.array([[a, 0.0, b + a / 2 - 0.5], [0.0, d, e + d / 2 - 0.5]])
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)


def load_sample_images(metainfo: dict, backend_args: Optional[dict] = None) -> List[np.ndarray]:
    """The current frame's N camera images of a packed sample, RGB uint8, as the network saw
    them: read from ``metainfo['img_path']`` and brought to ``metainfo['img_shape']`` by the
    current frame's ``img_aug_matrix`` (a plain resize without one), so that the current frame's
    ``lidar2img`` (``metainfo['lidar2img'][-1]``) maps onto them."""
    import mmcv
    from mmengine.fileio import get

    paths = metainfo.get('img_path')
    if not paths:
        raise KeyError("the data sample has no 'img_path' in its metainfo: keep 'img_path' in "
                       "PackBEVInputs' meta_keys")
    paths = [paths] if isinstance(paths, str) else list(paths)
    image_hw = tuple(int(s) for s in metainfo['img_shape'][:2])
    aug = metainfo.get('img_aug_matrix')
    aug = None if aug is None else np.asarray(aug, dtype=np.float64)
    if aug is not None and aug.ndim == 4:
        aug = aug[-1]  # (T, N, 4, 4): the current frame's
    images = []
    for view, path in enumerate(paths):
        try:
            image = mmcv.imfrombytes(get(path, backend_args=backend_args), channel_order='rgb')
        except FileNotFoundError as error:
            raise FileNotFoundError(f'image {path!r} of the data sample does not exist') from error
        if image is None:
            raise OSError(f'image {path!r} of the data sample could not be decoded')
        images.append(_warp_to_network(image, np.eye(4) if aug is None else aug[view], image_hw))
    return images


def _ground_truth(data_sample) -> Tuple[Optional[object], Optional[np.ndarray]]:
    """(boxes, labels) of a data sample: ``eval_ann_info`` (mmdet3d's test mode) first, else
    non-empty ``gt_instances_3d``; (None, None) without ground truth."""
    eval_ann = data_sample.get('eval_ann_info', None)
    if isinstance(eval_ann, dict) and eval_ann.get('gt_bboxes_3d') is not None:
        return eval_ann['gt_bboxes_3d'], eval_ann.get('gt_labels_3d')
    gt = data_sample.get('gt_instances_3d', None)
    if gt is not None and 'bboxes_3d' in gt:
        return gt.bboxes_3d, gt.labels_3d if 'labels_3d' in gt else None
    return None, None


def _sample_name(metainfo: dict, fallback: int) -> str:
    """File stem of a sample's picture: its token, else its sample index, else ``fallback``."""
    token = metainfo.get('token')
    if token:
        return str(token).replace(os.sep, '_')
    sample_idx = metainfo.get('sample_idx')
    if sample_idx is not None and int(sample_idx) >= 0:
        return f'{int(sample_idx):06d}'
    return f'{fallback:06d}'


def render_data_sample(data_sample, class_names: Sequence[str] = NUSCENES_CLASSES,
                       score_threshold: float = 0.3,
                       point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
                       caption: str = '', images: Optional[Sequence[np.ndarray]] = None,
                       palette: Optional[Sequence[Tuple[int, int, int]]] = None,
                       draw_gt: bool = True, backend_args: Optional[dict] = None,
                       dpi: int = 100) -> np.ndarray:
    """:func:`render_predictions` of a predicted ``Det3DDataSample`` (``PackBEVInputs``' metainfo
    and ``pred_instances_3d``; ground truth from ``eval_ann_info`` or ``gt_instances_3d``).

    ``images``: the current frame's N RGB images at ``img_shape``; None reads them back with
    :func:`load_sample_images`. Returns the (H', W', 3) uint8 RGB picture.
    """
    meta = data_sample.metainfo
    if 'pred_instances_3d' not in data_sample:
        raise KeyError('the data sample has no pred_instances_3d: draw it after predict()')
    lidar2img = np.asarray(meta['lidar2img'], dtype=np.float64)
    if lidar2img.ndim == 4:
        lidar2img = lidar2img[-1]  # (T, N, 4, 4): the current frame's
    if images is None:
        images = load_sample_images(meta, backend_args)
    pred = data_sample.pred_instances_3d
    gt_boxes, gt_labels = _ground_truth(data_sample) if draw_gt else (None, None)
    return render_predictions(images, lidar2img, pred.bboxes_3d, pred.labels_3d, pred.scores_3d,
                              gt_boxes, gt_labels, class_names, score_threshold,
                              point_cloud_range, caption, cam_names=meta.get('cam_names'),
                              palette=palette, dpi=dpi)


def _caption(meta: dict, name: str, notice: str) -> str:
    return (f'sample {name} ({meta["img_shape"][1]}x{meta["img_shape"][0]} network input). '
            'Predictions: class colours, solid, dot = box centre; ground truth: white dashed, '
            '+ = box centre.\n' + notice)


def _has_display() -> bool:
    if sys.platform.startswith('linux'):
        return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))
    return True


# ------------------------------------------------------------------------------------ hook
@HOOKS.register_module()
class BEVVisualizationHook(Hook):
    """Draws BEVFormer's test predictions (and the ground truth) with :func:`render_predictions`:
    the six cameras as the network saw them and a BEV panel, one PNG per sample.

    ``tools/test.py CONFIG CKPT --show-dir vis`` sets ``draw=True`` and ``test_out_dir='vis'``
    (mmdet's ``trigger_visualization_hook``): every ``interval``-th test sample is written to
    ``<work_dir>/<timestamp>/vis/<sample token>.png`` (its sample index when it has no token).
    With ``draw=True`` and neither ``test_out_dir`` nor a usable ``show``, the PNGs go to
    ``<work_dir>/<timestamp>/vis_test``. During validation the hook does nothing unless ``draw``;
    then the first sample of every ``interval``-th batch is written to
    ``<work_dir>/<timestamp>/vis_val/iter_<training iteration>/``.

    Config: ``default_hooks = dict(visualization=dict(type='BEVVisualizationHook', draw=False))``.

    Args:
        draw: draw at all (``--show`` / ``--show-dir`` turn it on).
        interval: draw every ``interval``-th test sample (validation: batch).
        score_threshold: the lowest prediction score drawn.
        show: also show each picture in a window (needs a display and an OpenCV with GUI
            support; ignored with a warning otherwise).
        wait_time: seconds each shown picture stays (``--wait-time``); 0 waits for a key.
        test_out_dir: directory for the test PNGs, relative to ``<work_dir>/<timestamp>``
            (absolute paths are kept).
        draw_gt: draw the ground truth when the samples carry it (``eval_ann_info`` in test mode).
        point_cloud_range: BEV panel range; None takes the model's ``encoder.point_cloud_range``
            (else nuScenes' +-51.2 m).
        notice: licence line under each picture; None: the nuScenes notice (the toy world's for
            a generated toy nuScenes data root).
        dpi: pixels per inch of the PNGs (a camera panel is 5 inches wide).
        backend_args: mmengine file backend arguments for reading the images back.
    """

    priority = 'NORMAL'

    def __init__(self, draw: bool = False, interval: int = 1, score_threshold: float = 0.3,
                 show: bool = False, wait_time: float = 0.0, test_out_dir: Optional[str] = None,
                 draw_gt: bool = True, point_cloud_range: Optional[Sequence[float]] = None,
                 notice: Optional[str] = None, dpi: int = 100,
                 backend_args: Optional[dict] = None) -> None:
        if int(interval) != interval or interval < 1:
            raise ValueError(f'interval must be a positive integer, got {interval}')
        if not 0 <= score_threshold <= 1:
            raise ValueError(f'score_threshold must be in [0, 1], got {score_threshold}')
        if point_cloud_range is not None and len(point_cloud_range) != 6:
            raise ValueError('point_cloud_range must be (x_min, y_min, z_min, x_max, y_max, '
                             f'z_max), got {point_cloud_range}')
        self.draw = bool(draw)
        self.interval = int(interval)
        self.score_threshold = float(score_threshold)
        self.show = bool(show)
        self.wait_time = float(wait_time)
        self.test_out_dir = test_out_dir
        self.draw_gt = draw_gt
        self.point_cloud_range = point_cloud_range
        self.notice = notice
        self.dpi = int(dpi)
        self.backend_args = backend_args
        if self.show and not _has_display():
            warnings.warn('BEVVisualizationHook: show=True ignored, no display (DISPLAY is not '
                          'set); use --show-dir to write the pictures')
            self.show = False
        self._test_count = 0
        self._out_dir: Optional[str] = None
        self._test_settings: Optional[dict] = None

    # ---- settings taken from the runner
    @staticmethod
    def _dataset(runner, mode: str):
        loop = getattr(runner, f'{mode}_loop', None)
        return getattr(getattr(loop, 'dataloader', None), 'dataset', None)

    def _settings(self, runner, mode: str) -> dict:
        dataset = self._dataset(runner, mode)
        meta = dict(getattr(dataset, 'metainfo', None) or
                    getattr(runner.visualizer, 'dataset_meta', None) or {})
        point_cloud_range = self.point_cloud_range
        if point_cloud_range is None:
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            encoder = getattr(model, 'encoder', None)
            point_cloud_range = getattr(encoder, 'point_cloud_range', DEFAULT_POINT_CLOUD_RANGE)
        notice = self.notice
        if notice is None:
            notice = _data_notice(getattr(dataset, 'data_root', None))
        return dict(class_names=tuple(meta.get('classes') or NUSCENES_CLASSES),
                    point_cloud_range=tuple(point_cloud_range), notice=notice)

    def _draw(self, data_sample, settings: dict, fallback_index: int,
              out_dir: Optional[str]) -> None:
        meta = data_sample.metainfo
        name = _sample_name(meta, fallback_index)
        picture = render_data_sample(
            data_sample, settings['class_names'], self.score_threshold,
            settings['point_cloud_range'], _caption(meta, name, settings['notice']),
            draw_gt=self.draw_gt, backend_args=self.backend_args, dpi=self.dpi)
        if out_dir is not None:
            import mmcv
            mmcv.imwrite(picture[..., ::-1], osp.join(out_dir, f'{name}.png'))
        if self.show:
            self._show(picture, name)

    def _show(self, picture: np.ndarray, name: str) -> None:
        import mmcv
        try:
            mmcv.imshow(picture[..., ::-1], win_name='BEVFormer predictions',
                        wait_time=int(self.wait_time * 1000))
        except Exception as error:  # an OpenCV without GUI support (opencv-*-headless)
            warnings.warn(f'BEVVisualizationHook: cannot show {name} ({error}); show disabled')
            self.show = False

    # ---- test
    def before_test(self, runner) -> None:
        self._test_count = 0
        self._out_dir = None
        if not self.draw:
            return
        if self.test_out_dir is not None:
            self._out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
        elif not self.show:
            self._out_dir = osp.join(runner.work_dir, runner.timestamp, 'vis_test')
        if self._out_dir is not None:
            os.makedirs(self._out_dir, exist_ok=True)
            runner.logger.info(f'BEVVisualizationHook: writing pictures of the test samples '
                               f'(every {self.interval}) to {self._out_dir}')
        self._test_settings = self._settings(runner, 'test')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or not outputs:
            return
        if self._test_settings is None:  # driven without before_test
            self.before_test(runner)
        for data_sample in outputs:
            index = self._test_count
            self._test_count += 1
            if index % self.interval == 0:
                self._draw(data_sample, self._test_settings, index, self._out_dir)

    # ---- validation
    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or not outputs or batch_idx % self.interval:
            return
        out_dir = osp.join(runner.work_dir, runner.timestamp, 'vis_val', f'iter_{runner.iter}')
        self._draw(outputs[0], self._settings(runner, 'val'), batch_idx, out_dir)


# ------------------------------------------------------------------------- command logic
def _scene_history(dataset, index: int, history: int) -> List[int]:
    """Indices of up to ``history`` (-1: all) keyframes before ``index`` in its scene, oldest
    first (consecutive entries of the info file with the same ``scene_token``)."""
    scene = dataset.get_data_info(index).get('scene_token')
    if not scene or history == 0:
        return []
    previous = []
    j = index - 1
    while j >= 0 and (history < 0 or len(previous) < history):
        if dataset.get_data_info(j).get('scene_token') != scene:
            break
        previous.append(j)
        j -= 1
    return previous[::-1]


def visualize_predictions(config: str, checkpoint: str, indices: Sequence[int] = (0, ),
                          out_dir: str = 'prediction_vis', data_root: Optional[str] = None,
                          ann_file: Optional[str] = None, score_threshold: float = 0.3,
                          history: int = 0, cfg_options: Optional[dict] = None,
                          progress: Callable[[str], None] = print,
                          dpi: int = 100) -> List[str]:
    """Predicts samples of a config's test dataset with a checkpoint and writes one picture each
    (:func:`render_data_sample`: predictions and ground truth).

    Args:
        config: model config (its ``model`` and ``test_dataloader.dataset``).
        checkpoint: weights (an mmengine checkpoint, ``state_dict`` inside).
        indices: dataset indices to draw.
        out_dir: directory of the PNGs, ``<sample token>.png``.
        data_root: another data root for the test dataset (camera images directly in it, or in
            nuScenes' ``samples/CAM_X``); its ``ann_file`` is then looked up there.
        ann_file: another info .pkl (a path, or relative to the data root).
        score_threshold: the lowest prediction score drawn.
        history: keyframes of the same scene run before each sample, so that the temporal
            model has its previous BEV as in ``tools/test.py``: 0 none (the sample as the first
            keyframe of a scene), -1 every earlier keyframe of the scene.
        cfg_options: ``--cfg-options`` style overrides of the config.
        progress: called with a line of progress.
        dpi: pixels per inch of the pictures.

    Returns:
        The PNG paths written.
    """
    import mmcv
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint

    from mmdet3d.registry import DATASETS, MODELS

    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} does not exist')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
    if data_root is not None and not osp.isdir(data_root):
        raise FileNotFoundError(f'--data-root {data_root!r} is not a directory')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    if data_root is not None:
        dataset_cfg.data_root = data_root
        from projects.datasets.nuscenes_infos import CAMERA_CHANNELS
        dataset_cfg.data_prefix = dict(_camera_prefixes(data_root, CAMERA_CHANNELS), img='')
    if ann_file is not None:
        if osp.isfile(ann_file):
            dataset_cfg.ann_file = osp.abspath(ann_file)
        elif osp.isfile(osp.join(dataset_cfg.get('data_root') or '', ann_file)):
            dataset_cfg.ann_file = ann_file
        else:
            raise FileNotFoundError(f'--ann-file {ann_file!r} does not exist (neither as a path '
                                    f'nor under the data root {dataset_cfg.get("data_root")!r})')
    resolved_ann = osp.join(dataset_cfg.get('data_root') or '', dataset_cfg.ann_file)
    if not osp.isfile(resolved_ann):
        raise FileNotFoundError(f'the test dataset\'s info file {resolved_ann!r} does not exist; '
                                'pass --data-root / --ann-file')

    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet3d')):
        progress(f'building the model of {config}')
        model = MODELS.build(cfg.model)
        load_checkpoint(model, checkpoint, map_location='cpu', logger='current')
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        model = model.to(device).eval()
        progress(f'loading the infos {resolved_ann}')
        dataset = DATASETS.build(dataset_cfg)
        class_names = tuple(dataset.metainfo.get('classes') or NUSCENES_CLASSES)
        encoder = getattr(model, 'encoder', None)
        point_cloud_range = tuple(getattr(encoder, 'point_cloud_range',
                                          DEFAULT_POINT_CLOUD_RANGE))
        notice = _data_notice(dataset_cfg.get('data_root'))
        for index in indices:
            if not -len(dataset) <= index < len(dataset):
                raise IndexError(f'--index {index} is out of range: the dataset has '
                                 f'{len(dataset)} samples')
        os.makedirs(out_dir, exist_ok=True)
        written = []
        for number, index in enumerate(indices):
            index = index % len(dataset)
            if hasattr(model, 'reset_temporal_state'):
                model.reset_temporal_state()  # BEVFormerDetector's test-time BEV memory
            frames = _scene_history(dataset, index, history) + [index]
            for frame_number, frame in enumerate(frames):
                progress(f'sample {number + 1}/{len(indices)} (index {index}): predicting '
                         f'{"keyframe" if frame != index else "the sample"} '
                         f'{frame_number + 1}/{len(frames)}')
                item = dataset[frame]
                with torch.no_grad():
                    output = model.test_step(pseudo_collate([item]))[0]
            meta = output.metainfo
            name = _sample_name(meta, index)
            num_views = meta['num_views']
            imgs = item['inputs']['img'][-num_views:]  # the current frame: (N, 3, H, W) BGR
            images = [img.permute(1, 2, 0).numpy()[..., ::-1].astype(np.uint8) for img in imgs]
            caption = (_caption(meta, name, notice).replace(
                '\n', f'\n{osp.basename(config)}, {osp.basename(checkpoint)}; ', 1))
            picture = render_data_sample(output, class_names, score_threshold,
                                         point_cloud_range, caption, images=images, dpi=dpi)
            path = osp.join(out_dir, f'{name}.png')
            mmcv.imwrite(picture[..., ::-1], path)
            progress(f'wrote {path}')
            written.append(path)
    return written
