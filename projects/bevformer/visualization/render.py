"""Composing BEVFormer's two pictures from the drawing primitives of :mod:`.draw`: six camera
panels (2 x 3) and a bird's-eye panel on one sheet.

* :func:`render_bev_projection`: the BEV grid's pillar reference points (through the model's own
  ``pillar_points`` / ``project_to_cameras``) and ground-truth boxes in every camera, the grid,
  boxes, camera frusta and ego car from above.
* :func:`render_predictions`: predictions (class colours, solid, scores in the BEV panel) and
  ground truth (white, dashed); :func:`render_data_sample` draws it for a predicted
  ``Det3DDataSample``.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...datasets.nuscenes_infos import NUSCENES_CLASSES
from ..geometry import pillar_points, project_to_cameras
from .data import _ground_truth, load_sample_images
from .draw import (DEFAULT_POINT_CLOUD_RANGE, GT_COLOR, _BoxGeometry, _draw_bev_boxes,
                   _draw_camera_frusta, _draw_camera_image, _draw_wireframes, _figure_rgb,
                   _finish_bev_axis, _new_sheet, _panel_order, _visible_centres, class_colors)

__all__ = ['render_bev_projection', 'render_predictions', 'render_data_sample']


# ------------------------------------------------------------------- projection picture
def _label_colors(labels: np.ndarray, palette: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """(B, 3) RGB in [0, 1] of box labels: ``palette[label]`` (RGB 0-255), grey for a label
    outside the palette (-1: not a class)."""
    labels = np.asarray(labels)
    return np.array([(np.array(palette[label]) / 255.0) if 0 <= label < len(palette)
                     else np.array([0.6, 0.6, 0.6]) for label in labels]).reshape(-1, 3)


def _reference_points_in_cameras(images: Sequence[np.ndarray], lidar2img: np.ndarray,
                                 point_cloud_range: Sequence[float], bev_size: Tuple[int, int],
                                 num_heights: int):
    """The BEV grid's pillar reference points in every camera, by the model's own functions.

    Returns:
        points: (Q, Z, 3) float64 tensor, LiDAR frame.
        pixels: (N, Q, Z, 2) their pixels (u, v) in each camera.
        bev_mask: (N, Q, Z) whether each point lands in each camera's image.
    """
    bev_h, bev_w = bev_size
    points = pillar_points(bev_h, bev_w, point_cloud_range, num_heights).double()  # (Q, Z, 3)
    image_hw = torch.tensor([img.shape[:2] for img in images], dtype=torch.float64)[None]
    height, width = images[0].shape[:2]
    reference_points_cam, bev_mask = project_to_cameras(
        points, torch.from_numpy(lidar2img)[None], image_hw, (height, width))
    pixels = (reference_points_cam[0] * torch.tensor([width, height], dtype=torch.float64)
              ).numpy()  # (N, Q, Z, 2)
    return points, pixels, bev_mask[0].numpy()


def _draw_reference_point_cameras(fig, camera_slots, images: Sequence[np.ndarray],
                                  cam_names: Sequence[str], lidar2img: np.ndarray, points,
                                  pixels: np.ndarray, bev_mask: np.ndarray,
                                  geometry: _BoxGeometry, colors: np.ndarray,
                                  point_cloud_range: Sequence[float],
                                  progress: Callable[[str], None]) -> None:
    """Camera panels: reference points coloured by height (viridis), box wireframes and a ``+``
    at each visible box centre."""
    import matplotlib

    num_views = len(images)
    _, _, z_min, _, _, z_max = point_cloud_range
    heights = points[..., 2].numpy()  # (Q, Z)
    norm = matplotlib.colors.Normalize(z_min, z_max)
    cmap = matplotlib.colormaps['viridis']
    for panel, view in enumerate(_panel_order(cam_names)):
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


def _draw_reference_point_bev(axis, points, bev_mask: np.ndarray, images: Sequence[np.ndarray],
                              cam_names: Sequence[str], lidar2img: np.ndarray,
                              geometry: _BoxGeometry, colors: np.ndarray,
                              point_cloud_range: Sequence[float]) -> None:
    """BEV panel: the pillars (darker: seen by more cameras), camera frusta, boxes, ego car."""
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    flat_points = points.numpy()
    cells_hit = bev_mask.any(-1).sum(0)  # (Q,) cameras that see some point of the pillar
    axis.scatter(flat_points[:, 0, 0], flat_points[:, 0, 1], s=3, c=cells_hit, cmap='Greys',
                 vmin=-1, vmax=3, linewidths=0, label='pillar (darker: seen by more cameras)')
    _draw_camera_frusta(axis, lidar2img, [img.shape[:2] for img in images], cam_names,
                        reach=0.45 * min(x_max - x_min, y_max - y_min))
    _draw_bev_boxes(axis, geometry, colors, 1.0)
    _finish_bev_axis(axis, point_cloud_range,
                     'BEV: grid, GT boxes (heading, velocity), ego, camera frusta')


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
    lidar2img = np.asarray(lidar2img, dtype=np.float64)
    colors = _label_colors(labels, palette)
    points, pixels, bev_mask = _reference_points_in_cameras(images, lidar2img, point_cloud_range,
                                                            bev_size, num_heights)
    geometry = _BoxGeometry(boxes)

    fig, camera_slots, bev_slot = _new_sheet(images[0].shape[:2])
    _draw_reference_point_cameras(fig, camera_slots, images, cam_names, lidar2img, points, pixels,
                                  bev_mask, geometry, colors, point_cloud_range, progress)
    progress('bird\'s-eye view')
    _draw_reference_point_bev(fig.add_subplot(bev_slot), points, bev_mask, images, cam_names,
                              lidar2img, geometry, colors, point_cloud_range)
    fig.text(0.004, 0.01, caption, ha='left', va='bottom', fontsize=8)
    if out_path is not None:
        progress(f'writing {out_path}')
        fig.savefig(out_path, dpi=dpi)
    return fig


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


def _check_cameras(images: Sequence[np.ndarray], lidar2img: np.ndarray,
                   cam_names: Optional[Sequence[str]]) -> Tuple[np.ndarray, List[str]]:
    """``lidar2img`` as (N, 4, 4) float64 and N camera names (default ``CAM_0`` ...), checked
    against the N images."""
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
    return lidar2img, cam_names


def _kept_predictions(pred_boxes, pred_labels, pred_scores, score_threshold: float,
                      colors_of_class: np.ndarray
                      ) -> Tuple[_BoxGeometry, np.ndarray, np.ndarray]:
    """The predictions scored at least ``score_threshold``: their geometry, (P,) scores and
    (P, 3) colours (their class's, grey for a label outside the classes)."""
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
    return pred, pred_scores, pred_colors


def _kept_ground_truth(gt_boxes, gt_labels, point_cloud_range: Sequence[float]) -> _BoxGeometry:
    """The ground-truth boxes drawn: labelled (not -1) and centred inside the range (x, y)."""
    gt_boxes = _as_boxes(gt_boxes, 'gt_boxes')
    gt_keep = np.ones(len(gt_boxes), dtype=bool)
    if gt_labels is not None:
        gt_keep &= _as_vector(gt_labels, len(gt_boxes), 'gt_labels', np.int64) >= 0
    gt_centers = gt_boxes.gravity_center.numpy().reshape(-1, 3)
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    gt_keep &= ((gt_centers[:, 0] >= x_min) & (gt_centers[:, 0] <= x_max) &
                (gt_centers[:, 1] >= y_min) & (gt_centers[:, 1] <= y_max))
    return _BoxGeometry(gt_boxes[torch.from_numpy(gt_keep)]) if gt_keep.any() else _BoxGeometry(
        _as_boxes(None, ''))


def _draw_prediction_cameras(fig, camera_slots, images: Sequence[np.ndarray],
                             lidar2img: np.ndarray, cam_names: Sequence[str],
                             pred: _BoxGeometry, pred_colors: np.ndarray, gt: _BoxGeometry,
                             gt_colors: np.ndarray) -> None:
    """Camera panels: ground truth dashed with a ``+`` at each visible centre, predictions
    solid with a dot."""
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


def _draw_prediction_bev(axis, images: Sequence[np.ndarray], lidar2img: np.ndarray,
                         cam_names: Sequence[str], pred: _BoxGeometry, pred_scores: np.ndarray,
                         pred_colors: np.ndarray, gt: _BoxGeometry, gt_colors: np.ndarray,
                         point_cloud_range: Sequence[float], score_threshold: float) -> None:
    """BEV panel (dark): camera frusta, ground truth dashed, predictions solid with their
    scores, the ego car."""
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
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


def _add_class_legend(fig, class_names: Sequence[str], colors_of_class: np.ndarray) -> None:
    """A legend of the class colours and the ground truth's style, bottom right."""
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=colors_of_class[c], lw=2.5, label=name)
               for c, name in enumerate(class_names)]
    handles.append(Line2D([0], [0], color=GT_COLOR, lw=1.2, ls=(0, (4, 3)), marker='+',
                          label='ground truth'))
    legend = fig.legend(handles=handles, loc='lower right', bbox_to_anchor=(0.996, 0.005),
                        ncol=(len(handles) + 1) // 2, fontsize=7, frameon=True,
                        facecolor='#2a2a2a', labelcolor='white', edgecolor='#2a2a2a')
    legend.get_frame().set_alpha(1.0)


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
    lidar2img, cam_names = _check_cameras(images, lidar2img, cam_names)
    colors_of_class = class_colors(class_names, palette)
    pred, pred_scores, pred_colors = _kept_predictions(pred_boxes, pred_labels, pred_scores,
                                                       score_threshold, colors_of_class)
    gt = _kept_ground_truth(gt_boxes, gt_labels, point_cloud_range)
    gt_colors = np.tile(np.array(GT_COLOR), (len(gt), 1))

    caption_lines = caption.count('\n') + 1 if caption else 0
    fig, camera_slots, bev_slot = _new_sheet(images[0].shape[:2],
                                             bottom_margin=0.75 + 0.17 * caption_lines)
    _draw_prediction_cameras(fig, camera_slots, images, lidar2img, cam_names, pred, pred_colors,
                             gt, gt_colors)
    _draw_prediction_bev(fig.add_subplot(bev_slot), images, lidar2img, cam_names, pred,
                         pred_scores, pred_colors, gt, gt_colors, point_cloud_range,
                         score_threshold)
    _add_class_legend(fig, class_names, colors_of_class)
    if caption:
        fig.text(0.004, 0.01, caption, ha='left', va='bottom', fontsize=7)
    fig.set_dpi(dpi)
    return _figure_rgb(fig)


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
