"""Draws BEVFormer's camera geometry on a real frame: BEV reference points and ground-truth boxes
projected into every camera, plus a top-down view of the grid, the boxes, the ego and the camera
frusta. Used by ``tools/analysis/visualize_bev_projection.py``.

Everything drawn goes through the training data path (``BEVNuScenesDataset`` with
``LoadMultiViewImages`` and ``PackBEVInputs``) and ``projects.bevformer.geometry``, so the picture
checks the matrices the model gets: a box centre's marker lands on its object only when
``lidar2img`` is right, also after ``MultiViewResize`` / ``MultiViewFlip``.

nuScenes data (e.g. ``/work/shared/data/nuscenes_demo``, one v1.0-mini keyframe) is (c) Motional,
licensed CC BY-NC-SA 4.0 (non-commercial use only); pictures made from it carry that notice
(:data:`NUSCENES_NOTICE`, written into the PNG's caption).
"""
import glob
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .geometry import pillar_points, project_to_cameras

__all__ = [
    'NUSCENES_NOTICE', 'DEFAULT_POINT_CLOUD_RANGE', 'load_packed_frame', 'box_edge_segments',
    'render_bev_projection', 'visualize_bev_projection'
]

NUSCENES_NOTICE = ('nuScenes data (c) Motional, CC BY-NC-SA 4.0 '
                   '(https://creativecommons.org/licenses/by-nc-sa/4.0/), non-commercial use only')
DEFAULT_POINT_CLOUD_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
# Camera panels, two rows of three, as a driver would arrange them.
PANEL_ORDER = ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT', 'CAM_BACK',
               'CAM_BACK_RIGHT')
NEAR_DEPTH = 0.1  # metres; box edges are clipped to lie at least this far in front of a camera


def _camera_prefixes(data_root: str, cam_names: Sequence[str]) -> Dict[str, str]:
    """nuScenes layout (``samples/CAM_X``) when ``data_root/samples`` exists, else every image
    directly in ``data_root``."""
    if osp.isdir(osp.join(data_root, 'samples')):
        return {name: osp.join('samples', name) for name in cam_names}
    return {name: '' for name in cam_names}


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
        The matplotlib figure.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

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

    corners = boxes.corners.numpy().astype(np.float64)  # (B, 8, 3)
    centers = boxes.gravity_center.numpy().astype(np.float64)  # (B, 3)

    panel_of = {name: i for i, name in enumerate(PANEL_ORDER)}
    order = sorted(range(num_views), key=lambda v: panel_of.get(cam_names[v], 100 + v))
    aspect = height / width
    panel_w, bottom_margin, top_margin = 5.0, 0.9, 0.25  # inches
    fig_h = panel_w * 2 * aspect + bottom_margin + top_margin
    fig = plt.figure(figsize=(panel_w * (3.15 + 2 * aspect), fig_h))
    grid = fig.add_gridspec(2, 5, width_ratios=[1, 1, 1, 0.12, 2 * aspect], left=0.004,
                            right=0.996, top=1 - top_margin / fig_h, bottom=bottom_margin / fig_h,
                            wspace=0.02, hspace=0.1)
    norm = matplotlib.colors.Normalize(z_min, z_max)
    cmap = matplotlib.colormaps['viridis']
    for panel, view in enumerate(order[:6]):
        progress(f'camera {panel + 1}/{min(num_views, 6)}: {cam_names[view]}')
        axis = fig.add_subplot(grid[panel // 3, panel % 3])
        img_h, img_w = images[view].shape[:2]
        axis.imshow(images[view], extent=(0, img_w, img_h, 0), interpolation='antialiased')
        hit = bev_mask[view]
        axis.scatter(pixels[view][..., 0][hit], pixels[view][..., 1][hit], s=1.2,
                     c=heights[hit], cmap=cmap, norm=norm, linewidths=0, alpha=0.9)
        segments, box_ids = box_edge_segments(corners, lidar2img[view])
        if len(segments):
            axis.add_collection(LineCollection(segments, colors=colors[box_ids],
                                               linewidths=0.9))
        center_px, center_depth = _project(centers, lidar2img[view])
        visible = ((center_depth > NEAR_DEPTH) & (center_px[:, 0] >= 0) &
                   (center_px[:, 0] < img_w) & (center_px[:, 1] >= 0) &
                   (center_px[:, 1] < img_h))
        axis.scatter(center_px[visible, 0], center_px[visible, 1], s=22, marker='+',
                     c=colors[visible], linewidths=1.3)
        axis.set_xlim(0, img_w)
        axis.set_ylim(img_h, 0)
        axis.set_title(f'{cam_names[view]}: {int(hit.any(-1).sum())} pillars, '
                       f'{int(visible.sum())} box centres', fontsize=8)
        axis.axis('off')

    progress('bird\'s-eye view')
    axis = fig.add_subplot(grid[:, 4])
    _draw_bev_panel(axis, bev_mask, points.numpy(), corners, centers, boxes, colors, lidar2img,
                    [img.shape[:2] for img in images], cam_names, point_cloud_range)
    fig.text(0.004, 0.01, caption, ha='left', va='bottom', fontsize=8)
    if out_path is not None:
        progress(f'writing {out_path}')
        fig.savefig(out_path, dpi=dpi)
    return fig


def _draw_bev_panel(axis, bev_mask: np.ndarray, points: np.ndarray, corners: np.ndarray,
                    centers: np.ndarray, boxes, colors: np.ndarray, lidar2img: np.ndarray,
                    image_hws: List[Tuple[int, int]], cam_names: Sequence[str],
                    point_cloud_range: Sequence[float]) -> None:
    """Top-down view, LiDAR frame: +x to the right, +y (the car's forward direction) up."""
    import matplotlib.pyplot as plt
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    cells_hit = bev_mask.any(-1).sum(0)  # (Q,) cameras that see some point of the pillar
    axis.scatter(points[:, 0, 0], points[:, 0, 1], s=3, c=cells_hit, cmap='Greys', vmin=-1,
                 vmax=3, linewidths=0, label='pillar (darker: seen by more cameras)')
    axis.add_patch(plt.Rectangle((x_min, y_min), x_max - x_min, y_max - y_min, fill=False,
                                 lw=0.8, color='k'))
    # Camera frusta: rays through the left and right image edges at mid-height.
    camera_colors = plt.get_cmap('tab10')
    reach = 0.45 * min(x_max - x_min, y_max - y_min)
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
                  color=color, alpha=0.08)
        for ray in rays:
            axis.plot([origin[0], ray[0]], [origin[1], ray[1]], color=color, lw=0.8)
        middle = (rays[0] + rays[1]) / 2
        axis.text(middle[0], middle[1], name.replace('CAM_', ''), color=color, fontsize=7,
                  ha='center', va='center')
    # Boxes: bottom face, heading (centre to front face) and velocity.
    for k in range(len(corners)):
        bottom = corners[k][[0, 3, 7, 4, 0], :2]
        axis.plot(bottom[:, 0], bottom[:, 1], color=colors[k], lw=1.0)
        front = corners[k][[4, 7], :2].mean(0)
        axis.plot([centers[k, 0], front[0]], [centers[k, 1], front[1]], color=colors[k], lw=1.0)
        if boxes.tensor.shape[1] >= 9:
            vx, vy = boxes.tensor[k, 7:9].tolist()
            if vx * vx + vy * vy > 0.01:
                axis.arrow(centers[k, 0], centers[k, 1], vx, vy, color=colors[k], width=0.05,
                           head_width=0.6, length_includes_head=True)
    # Ego: a 4.5 m x 1.9 m car footprint around the LiDAR, facing +y.
    axis.add_patch(plt.Rectangle((-0.95, -2.6), 1.9, 4.5, color='r', alpha=0.7))
    axis.set_xlim(x_min - 2, x_max + 2)
    axis.set_ylim(y_min - 2, y_max + 2)
    axis.set_aspect('equal')
    axis.tick_params(labelsize=7)
    axis.set_xlabel('x (m, LiDAR frame)', fontsize=8)
    axis.set_ylabel('y (m, forward)', fontsize=8)
    axis.set_title('BEV: grid, GT boxes (heading, velocity), ego, camera frusta', fontsize=8)


def visualize_bev_projection(data_root: str, out_path: str, info_path: Optional[str] = None,
                             index: int = 0,
                             point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
                             bev_size: Tuple[int, int] = (50, 50), num_heights: int = 4,
                             scale_factor: float = 1.0, flip: bool = False,
                             progress: Callable[[str], None] = print, dpi: int = 100) -> str:
    """Loads sample ``index`` (:func:`load_packed_frame`) and writes the contact sheet PNG
    (:func:`render_bev_projection`) to ``out_path``. Returns ``out_path``."""
    import matplotlib.pyplot as plt

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
    figure = render_bev_projection(
        images, sample.cam_names, sample.lidar2img[-1], gt.bboxes_3d, gt.labels_3d.numpy(),
        NuScenesDataset.METAINFO['classes'], NuScenesDataset.METAINFO['palette'],
        point_cloud_range, bev_size, num_heights, caption, out_path, progress, dpi)
    plt.close(figure)
    return out_path
