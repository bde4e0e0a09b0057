"""The exported part of BEVFormer: one frame, with its temporal inputs given.

A deployment runs the temporal loop outside the graph: it keeps the BEV the graph returns and
feeds it back as the next frame's ``previous_bev`` (with ``has_previous`` False at a scene's first
frame, as ``BEVFormerDetector`` decides from scene tokens and ego motion). Camera geometry is an
input, so one file serves any calibration; the image size is fixed at export.

While exported, the spatial cross-attention computes every (camera, query) pair with misses
masked instead of packing the hits (``_pack_hits``): the same sums, with no size that depends on
the data.
"""
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from projects.bevformer.rig import nuscenes_rig_lidar2img

__all__ = ['ExportedBEVFormer']


class ExportedBEVFormer(nn.Module):
    """``BEVFormerDetector`` for one frame: inputs (see :meth:`input_names`)

    - ``imgs`` (1, cams, 3, H, W) normalised, padded images of the current frame;
    - ``lidar2img`` (1, cams, 4, 4) float32 for the network input's pixels;
    - ``image_hw`` (1, cams, 2) int64 height and width of the image content per camera;
    - ``previous_bev`` (1, Q, C) and ``has_previous`` (1,) bool: the last frame's BEV and whether
      to use it;
    - ``current2previous`` (1, 4, 4) float32 LiDAR motion (``temporal_alignment='exact'``) and/or
      ``can_bus`` (1, 18) float32 (``use_can_bus`` or ``temporal_alignment='official'``), as the
      encoder reads them;

    -> the BEV (1, Q, C), then the head's outputs flattened (``output_spec`` rebuilds them).
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        encoder = detector.encoder
        self.uses_motion = encoder.temporal_alignment == 'exact'
        self.uses_can_bus = encoder.use_can_bus or encoder.temporal_alignment == 'official'
        self.output_spec = None

    @property
    def input_names(self) -> List[str]:
        return (['imgs', 'lidar2img', 'image_hw', 'previous_bev', 'has_previous']
                + ['current2previous'] * self.uses_motion + ['can_bus'] * self.uses_can_bus)

    def forward(self, imgs: Tensor, lidar2img: Tensor, image_hw: Tensor, previous_bev: Tensor,
                has_previous: Tensor, *motion_and_can_bus: Tensor) -> Tuple[Tensor, ...]:
        extra = dict(zip(['current2previous'] * self.uses_motion
                         + ['can_bus'] * self.uses_can_bus, motion_and_can_bus))
        feats = self.detector.extract_img_feat(imgs)
        bev = self.detector.encoder(feats, lidar2img, image_hw, tuple(imgs.shape[-2:]),
                                    previous_bev=previous_bev, has_previous=has_previous,
                                    **extra)
        # the grid as ints: a traced [[bev_h, bev_w]] tensor breaks the TorchScript exporter's
        # graph (Expand / Add nodes left without inputs)
        bev_hw = (self.detector.encoder.bev_h, self.detector.encoder.bev_w)
        flat, self.output_spec = pytree.tree_flatten(self.detector.bbox_head(bev, bev_hw))
        return (bev, *flat)

    def example_inputs(self, input_hw: Tuple[int, int],
                       generator: torch.Generator) -> Tuple[Tensor, ...]:
        """Random images on the real nuScenes rig (``projects.bevformer.rig``), a random previous
        BEV that is used, a 1 m / 2 degree ego motion and a CAN bus with that motion."""
        encoder = self.detector.encoder
        cams = encoder.num_cams
        imgs = torch.randn(1, cams, 3, *input_hw, generator=generator)
        lidar2img = torch.from_numpy(nuscenes_rig_lidar2img(input_hw)[:cams]).float()[None]
        image_hw = torch.tensor(input_hw).expand(1, cams, 2).contiguous()
        previous_bev = torch.randn(1, encoder.bev_h * encoder.bev_w, encoder.embed_dims,
                                   generator=generator)
        inputs = [imgs, lidar2img, image_hw, previous_bev, torch.tensor([True])]
        angle = np.deg2rad(2.0)
        if self.uses_motion:
            motion = torch.eye(4)
            motion[:2, :2] = torch.tensor([[np.cos(angle), -np.sin(angle)],
                                           [np.sin(angle), np.cos(angle)]])
            motion[0, 3] = -1.0
            inputs.append(motion[None])
        if self.uses_can_bus:
            can_bus = torch.zeros(1, 18)
            can_bus[0, 0], can_bus[0, 16], can_bus[0, 17] = 1.0, angle, 2.0
            inputs.append(can_bus)
        return tuple(inputs)
