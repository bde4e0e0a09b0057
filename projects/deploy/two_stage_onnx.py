"""Two-stage detectors (Mask R-CNN) in ONNX: three graphs with mmdet's own NMS between them.

A two-stage detector selects its regions with NMS twice (proposals, then detections) and pools
features for them. Its exported form is three files, each a network up to raw outputs, so that
mmdet's own ``predict_by_feat`` code does the selection between them as it does for one-stage
detectors:

- ``FILE.onnx``: images -> the neck's features and the RPN head's raw outputs
  (``ExportedNetwork``);
- ``FILE.bbox_roi.onnx``: features + RoIs (N, 5) -> the box head's class scores and deltas;
- ``FILE.mask_roi.onnx``: features + RoIs (N, 5) -> the mask head's logits (with a mask head).

N, the number of RoIs, is free in the RoI graphs. ``OnnxRuntimeTwoStageDetector`` runs mmdet's
``rpn_head.predict_by_feat`` and ``roi_head.predict`` around them, so its predictions are those
of ``tools/test.py``.

RoI pooling: mmdet's ``SingleRoIExtractor`` pools each RoI from one FPN level chosen by its size,
indexing the RoIs of each level (sizes that depend on the data). ``pooled_roi_features`` pools
every RoI from every level and keeps the chosen level's result: the same values, in a graph of
fixed structure. mmcv's RoIAlign runs through the op ``mm_transformer_plugins::roi_align``: mmcv's
kernel in PyTorch, ONNX's ``RoiAlign`` in the file (both average an adaptive number of samples per
bin, ceil(RoI size / output size), with the same half-pixel offset for ``aligned=True``).
"""
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.roi_heads import SingleRoIExtractor, StandardRoIHead
from mmdet.structures import DetDataSample
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .onnx_runtime import OnnxRuntimeNetwork

__all__ = ['roi_align', 'pooled_roi_features', 'ExportedRoIStage', 'OnnxRuntimeTwoStageDetector',
           'ROI_BRANCHES', 'check_roi_head', 'stage_file']

ROI_BRANCHES = ('bbox', 'mask')


# ------------------------------------------------------------------ RoIAlign as an ONNX op
@torch.library.custom_op('mm_transformer_plugins::roi_align', mutates_args=())
def roi_align(features: Tensor, rois: Tensor, output_height: int, output_width: int,
              spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """mmcv's RoIAlign (average pooling): features (B, C, H, W), rois (N, 5) as (batch index,
    x1, y1, x2, y2) in input pixels -> (N, C, output_height, output_width)."""
    from mmcv.ops import roi_align as mmcv_roi_align
    return mmcv_roi_align(features, rois, (output_height, output_width), spatial_scale,
                          sampling_ratio, 'avg', aligned)


@roi_align.register_fake
def _roi_align_shape(features, rois, output_height, output_width, spatial_scale,
                     sampling_ratio, aligned):
    return features.new_empty(rois.shape[0], features.shape[1], output_height, output_width)


def roi_align_onnx(features, rois, output_height: int, output_width: int, spatial_scale: float,
                   sampling_ratio: int, aligned: bool):
    """ONNX's RoiAlign for :func:`roi_align` (the dynamo exporter's custom translation):
    'half_pixel' is mmcv's ``aligned=True`` (coordinates shifted by half a pixel, RoI sizes not
    raised to 1), 'output_half_pixel' its ``aligned=False``."""
    from onnxscript import INT64
    from onnxscript import opset18 as op
    batch_indices = op.Cast(op.Squeeze(op.Slice(rois, [0], [1], [1]), [1]), to=INT64.dtype)
    boxes = op.Slice(rois, [1], [5], [1])
    return op.RoiAlign(features, boxes, batch_indices, mode='avg',
                       coordinate_transformation_mode='half_pixel' if aligned
                       else 'output_half_pixel',
                       output_height=output_height, output_width=output_width,
                       sampling_ratio=sampling_ratio, spatial_scale=spatial_scale)


CUSTOM_TRANSLATIONS = {torch.ops.mm_transformer_plugins.roi_align.default: roi_align_onnx}


def pooled_roi_features(extractor: SingleRoIExtractor, features: Tuple[Tensor, ...],
                        rois: Tensor) -> Tensor:
    """``extractor(features, rois)`` (N, C, h, w) with no data-dependent sizes: every RoI is
    pooled from every level and the level ``extractor.map_roi_levels`` chooses is kept."""
    levels = extractor.map_roi_levels(rois, len(features))  # (N, )
    pooled = None
    for level, (feature, layer) in enumerate(zip(features, extractor.roi_layers)):
        height, width = layer.output_size
        here = roi_align(feature, rois, height, width, float(layer.spatial_scale),
                         int(layer.sampling_ratio), bool(layer.aligned))
        if pooled is None:
            pooled = here
        else:
            pooled = torch.where((levels == level)[:, None, None, None], here, pooled)
    return pooled


def check_roi_head(detector: nn.Module) -> None:
    """ExportError (naming the module) unless the RoI head is one ``ExportedRoIStage`` exports:
    a ``StandardRoIHead`` whose extractors are ``SingleRoIExtractor`` with mmcv's RoIAlign in
    average mode."""
    from .onnx_export import ExportError
    roi_head = detector.roi_head
    if type(roi_head) is not StandardRoIHead:
        raise ExportError(f'{type(detector).__name__}: roi_head ({type(roi_head).__name__}) is '
                          'not a StandardRoIHead; only its RoI stages export (cascades and '
                          'heads of other flow do not); export the backbone and neck with '
                          '--part backbone')
    for branch in ROI_BRANCHES:
        extractor = getattr(roi_head, f'{branch}_roi_extractor', None)
        if extractor is None:
            continue
        layer = extractor.roi_layers[0]
        if (type(extractor) is not SingleRoIExtractor or type(layer).__name__ != 'RoIAlign'
                or layer.pool_mode != 'avg' or getattr(layer, 'use_torchvision', False)):
            raise ExportError(f'{type(detector).__name__}: roi_head.{branch}_roi_extractor '
                              f'({type(extractor).__name__} with {type(layer).__name__}) is not '
                              'a SingleRoIExtractor with mmcv RoIAlign (pool_mode avg); export '
                              'the backbone and neck with --part backbone')


class ExportedRoIStage(nn.Module):
    """One branch of a ``StandardRoIHead``: the neck's features (those its extractor reads,
    ``feature0``, ...) and ``rois`` (N, 5) -> ``branch`` 'bbox': class scores (N, classes + 1)
    and box deltas (N, 4 x classes or 4); 'mask': mask logits (N, classes, h, w)."""

    def __init__(self, detector: nn.Module, branch: str):
        super().__init__()
        if branch not in ROI_BRANCHES:
            raise ValueError(f'branch must be one of {ROI_BRANCHES}, got {branch!r}')
        check_roi_head(detector)
        self.detector = detector
        self.branch = branch
        self.extractor = getattr(detector.roi_head, f'{branch}_roi_extractor')
        self.num_features = self.extractor.num_inputs
        self.output_spec: Optional[pytree.TreeSpec] = None

    @property
    def input_names(self) -> List[str]:
        return [f'feature{i}' for i in range(self.num_features)] + ['rois']

    def forward(self, *features_and_rois: Tensor) -> Tuple[Tensor, ...]:
        *features, rois = features_and_rois
        roi_head = self.detector.roi_head
        pooled = pooled_roi_features(self.extractor, tuple(features), rois)
        if roi_head.with_shared_head:
            pooled = roi_head.shared_head(pooled)
        head = roi_head.bbox_head if self.branch == 'bbox' else roi_head.mask_head
        outputs = head(pooled)
        flat, self.output_spec = pytree.tree_flatten(outputs)
        return tuple(flat)

    def example_inputs(self, features: Tuple[Tensor, ...], input_hw: Tuple[int, int],
                       generator: torch.Generator, num_rois: int = 24) -> Tuple[Tensor, ...]:
        """The given features and ``num_rois`` random RoIs around the image, of sizes from 8 to
        16 times the extractor's ``finest_scale`` so that every level is chosen."""
        height, width = input_hw
        largest = 16 * self.extractor.finest_scale
        size = 8 * (largest / 8) ** torch.rand(num_rois, 2, generator=generator)  # log-uniform
        centre = torch.rand(num_rois, 2, generator=generator) * torch.tensor([width, height])
        rois = torch.cat([torch.zeros(num_rois, 1), centre - size / 2, centre + size / 2], 1)
        return (*features[:self.num_features], rois)

    def dynamic_shapes(self, dynamic: bool) -> Tuple[dict, ...]:
        """N free; the features' height and width free too with ``dynamic`` (one entry: the
        inputs are ``forward``'s one variadic argument)."""
        free = torch.export.Dim.DYNAMIC
        feature = {2: free, 3: free} if dynamic else None
        return ((*[feature] * self.num_features, {0: free}), )


def stage_file(onnx_file: str, branch: str) -> str:
    """The file of the RoI stage ``branch`` next to the main file ``onnx_file``."""
    stem = onnx_file[:-len('.onnx')] if onnx_file.endswith('.onnx') else onnx_file
    return f'{stem}.{branch}_roi.onnx'


class OnnxRuntimeTwoStageDetector:
    """A two-stage detector's predictions with its three networks replaced by the exported
    files: mmdet's own RPN ``predict_by_feat`` and ``StandardRoIHead.predict`` run between them
    (the RoI head's ``_bbox_forward`` / ``_mask_forward``, its hooks for the network part, are
    served by ONNX Runtime on this instance)."""

    def __init__(self, onnx_file: str, detector: nn.Module, num_threads: Optional[int] = None):
        self.network = OnnxRuntimeNetwork(onnx_file, num_threads)
        stages = self.network.metadata.get('stages')
        if self.network.metadata.get('part') != 'detector' or not stages:
            raise ValueError(f'{onnx_file} holds no two-stage detector network (export the '
                             'whole detector, --part detector)')
        self.output_spec = pytree.treespec_loads(self.network.metadata['output_spec'])
        folder = osp.dirname(onnx_file)
        self.roi_networks: Dict[str, OnnxRuntimeNetwork] = {}
        for branch, name in stages.items():
            path = osp.join(folder, name)
            if not osp.exists(path):
                raise FileNotFoundError(f'{onnx_file} needs its {branch} RoI stage {path} '
                                        '(written next to it by the export)')
            self.roi_networks[branch] = OnnxRuntimeNetwork(path, num_threads)
        self.detector = detector.eval()
        roi_head = self.detector.roi_head
        roi_head._bbox_forward = self._bbox_forward
        if 'mask' in self.roi_networks:
            roi_head._mask_forward = self._mask_forward

    def _run_roi_stage(self, branch: str, features: Tuple[Tensor, ...],
                       rois: Tensor) -> List[Tensor]:
        network = self.roi_networks[branch]
        arrays = [feature.numpy() for feature in features[:len(network.input_names) - 1]]
        return [torch.from_numpy(out) for out in network.run(*arrays, rois.float().numpy())]

    def _bbox_forward(self, x: Tuple[Tensor, ...], rois: Tensor) -> dict:
        cls_score, bbox_pred = self._run_roi_stage('bbox', x, rois)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred)

    def _mask_forward(self, x: Tuple[Tensor, ...], rois: Tensor) -> dict:
        mask_preds, = self._run_roi_stage('mask', x, rois)
        return dict(mask_preds=mask_preds)

    @torch.no_grad()
    def predict(self, data: dict) -> List[DetDataSample]:
        """A dataloader batch -> its data samples with ``pred_instances`` (rescaled to the
        original images), one image at a time."""
        detector = self.detector
        data = detector.data_preprocessor(data, False)
        for image, sample in zip(data['inputs'], data['data_samples']):
            flat = [torch.from_numpy(out) for out in self.network.run(image[None].numpy())]
            features, rpn_outputs = pytree.tree_unflatten(flat, self.output_spec)
            proposals = detector.rpn_head.predict_by_feat(
                *rpn_outputs, batch_img_metas=[sample.metainfo], rescale=False)
            results = detector.roi_head.predict(features, proposals, [sample], rescale=True)
            detector.add_pred_to_datasample([sample], results)
        return data['data_samples']
