"""BEVFormer in ONNX: the exported part (one frame, its temporal inputs given) and the frame
loop around it in ONNX Runtime.

A deployment runs the temporal loop outside the graph: it keeps the BEV the graph returns and
feeds it back as the next frame's ``previous_bev`` (with ``has_previous`` False at a scene's first
frame, as ``BEVFormerDetector`` decides from scene tokens and ego motion); ``OnnxRuntimeBEVFormer``
does that with the detector's own decisions (``test_frame_inputs`` / ``keep_test_frame``).
Camera geometry is an input, so one file serves any calibration; the image size is fixed at
export.

While exported, the spatial cross-attention computes every (camera, query) pair with misses
masked instead of packing the hits (``_pack_hits``): the same sums, with no size that depends on
the data.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from projects.bevformer.rig import nuscenes_rig_lidar2img

__all__ = ['ExportedBEVFormer', 'OnnxRuntimeBEVFormer']


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

    def dynamic_shapes(self, dynamic: bool) -> None:
        """All sizes fixed (the image size is fixed at export; the dynamo exporter only)."""
        if dynamic:
            from .onnx_export import ExportError
            raise ExportError('BEVFormerDetector exports for one image size (the encoder needs '
                              'its level sizes as Python ints): export one file per input size '
                              'instead of --dynamic')
        return None

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


class OnnxRuntimeBEVFormer:
    """``BEVFormerDetector``'s test-time predictions with one frame's network replaced by an
    exported file: the detector (built from the same config, weights not needed) decides, frame
    by frame, whether the BEV kept from the previous frame is used and supplies the data
    preprocessor and the head's ``predict_by_feat``; the graph computes the BEV and the head's
    outputs, and the BEV it returns is kept for the next frame."""

    def __init__(self, onnx_file: str, detector: nn.Module, num_threads=None):
        from .onnx_runtime import OnnxRuntimeNetwork
        self.network = OnnxRuntimeNetwork(onnx_file, num_threads)
        self.output_spec = pytree.treespec_loads(self.network.metadata['output_spec'])
        self.detector = detector.eval()
        self.exported = ExportedBEVFormer(detector)
        if not set(self.network.input_names) <= set(self.exported.input_names):
            raise ValueError(f'{onnx_file} takes {self.network.input_names}; the config\'s '
                             f'encoder reads {self.exported.input_names} (another config?)')

    @torch.no_grad()
    def predict(self, data: dict) -> list:
        """A test batch -> its data samples with ``pred_instances_3d``, in order (each sample
        is the next frame of the sequence, as ``BEVFormerDetector.predict``)."""
        detector = self.detector
        data = detector.data_preprocessor(data, False)
        samples = data['data_samples']
        metas = [s.metainfo for s in samples]
        frames = detector._frames(data['inputs'], metas)
        frame = frames.shape[1] - 1
        results = []
        for index, meta in enumerate(metas):
            inputs = detector.test_frame_inputs(meta, frame, 'cpu')
            outputs = self.network.run_named(self._arrays(frames[index:index + 1, -1], inputs))
            bev = torch.from_numpy(outputs[0])
            detector.keep_test_frame(meta, frame, bev)
            head_outputs = pytree.tree_unflatten([torch.from_numpy(o) for o in outputs[1:]],
                                                 self.output_spec)
            results.extend(detector.bbox_head.predict_by_feat(*head_outputs, [meta]))
        return detector.add_pred_to_datasample(samples, results)

    def _arrays(self, imgs: Tensor, inputs: dict) -> Dict[str, np.ndarray]:
        """The graph's inputs from ``test_frame_inputs``: without a usable previous BEV, zeros
        with ``has_previous`` False (the graph then ignores them) and the identity motion."""
        encoder = self.detector.encoder
        previous_bev = inputs['previous_bev']
        has_previous = previous_bev is not None
        if not has_previous:
            previous_bev = imgs.new_zeros(1, encoder.bev_h * encoder.bev_w, encoder.embed_dims)
        arrays = [imgs, inputs['lidar2img'], inputs['image_hw'], previous_bev,
                  torch.tensor([has_previous])]
        if self.exported.uses_motion:
            motion = inputs['current2previous']
            arrays.append(torch.eye(4)[None] if motion is None else motion)
        if self.exported.uses_can_bus:
            arrays.append(inputs['can_bus'])
        return {name: array.cpu().numpy()
                for name, array in zip(self.exported.input_names, arrays)}
