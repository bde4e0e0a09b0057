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

Modules: ``draw`` (colours, projection of points and box edges into a camera, matplotlib panels),
``data`` (the frame, a sample's images and ground truth, the data's licence line), ``render``
(composing the two pictures), ``hook`` (``BEVVisualizationHook``, registered in mmdet3d's
``HOOKS`` when this package is imported), ``cli`` (what the ``tools/analysis`` commands call).

nuScenes data (e.g. ``../shared/data/nuscenes_demo``, one v1.0-mini keyframe) is (c) Motional,
licensed CC BY-NC-SA 4.0 (non-commercial use only); pictures made from it carry that notice
(:data:`NUSCENES_NOTICE`, written into the PNG's caption).
"""
from ...datasets.nuscenes_infos import NUSCENES_CLASSES  # noqa: F401  (imported from here)
from .cli import visualize_bev_projection, visualize_predictions
from .data import NUSCENES_NOTICE, load_packed_frame, load_sample_images
from .draw import DEFAULT_POINT_CLOUD_RANGE, NUSCENES_CLASS_COLORS, box_edge_segments, class_colors
from .hook import BEVVisualizationHook
from .render import render_bev_projection, render_data_sample, render_predictions

__all__ = [
    'NUSCENES_NOTICE', 'DEFAULT_POINT_CLOUD_RANGE', 'NUSCENES_CLASS_COLORS', 'class_colors',
    'load_packed_frame', 'box_edge_segments', 'render_bev_projection', 'visualize_bev_projection',
    'render_predictions', 'load_sample_images', 'render_data_sample', 'BEVVisualizationHook',
    'visualize_predictions'
]
