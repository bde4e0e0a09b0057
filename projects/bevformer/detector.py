"""``BEVFormerDetector``: image backbone + neck, the BEV encoder and the 3D DETR head, on
mmdet3d 1.x's ``Base3DDetector`` (its data preprocessor, ``loss`` / ``predict`` API and metrics).

Inputs follow the contract of ``PackBEVInputs`` (``projects/bevformer/transforms.py``): per sample
``imgs`` (num_frames * num_views, 3, H, W), frame-major, oldest first, the current frame last, and
metainfo with per-frame ``lidar2img`` (T, N, 4, 4), ``ego2global`` and ``lidar2ego`` (T, 4, 4),
``scene_token`` (T,), the image content shape ``img_shape`` and the padded ``batch_input_shape``.

Temporal behaviour:

* training: the BEV of the queue's previous frames is computed in order without gradients (the
  network in eval mode, as BEVFormer does), each from its own predecessor; the current frame's BEV
  then attends to the last of them. A frame whose predecessor is from another scene, or whose ego
  moved more than ``max_ego_jump`` metres since it, gets no previous BEV.
* A frame repeated at the start of a scene (the dataset fills the queue that way) is not its own
  predecessor: it gets no previous BEV, as at test time.
* inference (``video_test_mode``): the last BEV is kept with its sample token, scene and pose; the
  next frame uses it only if the kept frame is its ``prev`` keyframe (when the infos carry the
  link), in the same scene, without a jump; otherwise it starts afresh. The samples of a batch are
  processed one after the other (each is the next frame of the sequence). A frame whose ``prev``
  keyframe was not the frame processed before it (a shuffled or round-robin sampler, e.g.
  mmengine's ``DefaultSampler`` on several processes) is predicted without history, with a
  warning: test with ``SceneShardSampler`` (whole scenes per process, the configs' default).
  ``reset_temporal_state()`` forgets the kept BEV.
* CAN bus: when the infos carry it (``PackBEVInputs``' per-frame ``can_bus``), the encoder gets
  the 18 values with the translation and heading taken relative to the frame its previous BEV
  comes from, zero without one, as the official dataset (training) and detector (test) do.
"""
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample
from mmengine.logging import print_log
from torch import Tensor

from .convert import install_official_checkpoint_guard
from .geometry import current_to_previous_lidar, lidar_to_global
from .grid_mask import GridMask

__all__ = ['BEVFormerDetector']


@MODELS.register_module()
class BEVFormerDetector(Base3DDetector):
    """BEVFormer for mmdet3d 1.x.

    Args:
        img_backbone, img_neck: image feature extractor configs (e.g. ``mmdet.ResNet`` +
            ``mmdet.FPN``); the neck's levels must match the encoder's ``num_feature_levels``.
        encoder: ``BEVFormerEncoder`` config.
        bbox_head: ``BEVFormerHead`` config.
        video_test_mode: keep the previous BEV between test frames.
        max_ego_jump: metres of ego motion between consecutive keyframes above which the previous
            BEV is dropped (a gap in the recording or a wrong pose; 30 m in 0.5 s is 216 km/h).
        grid_mask: ``GridMask`` arguments (e.g. ``dict(prob=0.7)``, the official recipe) to mask
            the current frame's images in training; None: no masking.
    """

    def __init__(self, img_backbone: dict, encoder: dict, bbox_head: dict,
                 img_neck: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 video_test_mode: bool = True, max_ego_jump: float = 30.0,
                 grid_mask: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.grid_mask = GridMask(**grid_mask) if grid_mask is not None else None
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck) if img_neck is not None else None
        self.encoder = MODELS.build(encoder)
        self.bbox_head = MODELS.build(bbox_head)
        self._check_same_range()
        self.video_test_mode = video_test_mode
        self.max_ego_jump = float(max_ego_jump)
        # test-time memory: token, scene_token, lidar2global and bev (1, Q, C) of the last frame
        self._previous_frame: Optional[dict] = None
        self._warned_missing_predecessor = False
        # official BEVFormer weights (mmdet3d 0.17 layout) are refused, naming the converter
        install_official_checkpoint_guard(self)

    def _check_same_range(self) -> None:
        """The head reads the BEV through reference points normalised over its own range: a
        range different from the encoder's would put every box in the wrong place."""
        encoder_range = [float(v) for v in self.encoder.point_cloud_range]
        head_range = [float(v) for v in self.bbox_head.point_cloud_range]
        if encoder_range != head_range:
            raise ValueError(f'encoder.point_cloud_range {encoder_range} and '
                             f'bbox_head.point_cloud_range {head_range} must be the same: the '
                             'head locates boxes on the BEV grid the encoder built over its range')

    # ---- features -----------------------------------------------------------------------------
    def extract_img_feat(self, imgs: Tensor) -> List[Tensor]:
        """(B, N, 3, H, W) images -> per level (B, N, C, h, w). In training the images go
        through ``grid_mask`` first (the history frames are encoded in eval mode: unmasked)."""
        batch, views = imgs.shape[:2]
        imgs = imgs.flatten(0, 1)
        if self.grid_mask is not None:
            imgs = self.grid_mask(imgs)
        feats = self.img_backbone(imgs)
        if self.img_neck is not None:
            feats = self.img_neck(feats)
        return [f.view(batch, views, *f.shape[1:]) for f in feats]

    def extract_feat(self, batch_inputs_dict: dict, batch_input_metas: List[dict]) -> List[Tensor]:
        """The current frame's image features (Base3DDetector's API)."""
        imgs = self._frames(batch_inputs_dict, batch_input_metas)
        return self.extract_img_feat(imgs[:, -1])

    @staticmethod
    def _frames(batch_inputs_dict: dict, metas: List[dict]) -> Tensor:
        """(B, T, N, 3, H, W) from the stacked (B, T * N, 3, H, W) inputs."""
        if 'imgs' not in batch_inputs_dict:
            raise KeyError('BEVFormerDetector needs camera images: inputs["imgs"] is missing '
                           '(is PackBEVInputs the last transform of the pipeline?)')
        imgs = batch_inputs_dict['imgs']
        frames, views = metas[0]['num_frames'], metas[0]['num_views']
        if imgs.shape[1] != frames * views:
            raise ValueError(f'inputs["imgs"] has {imgs.shape[1]} images per sample, metainfo '
                             f'says num_frames={frames} x num_views={views}')
        return imgs.view(imgs.shape[0], frames, views, *imgs.shape[2:])

    # ---- geometry -----------------------------------------------------------------------------
    def _camera_geometry(self, metas: List[dict], frame: int,
                         device) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """lidar2img (B, N, 4, 4), image content (B, N, 2) and the padded input (H, W)."""
        lidar2img = torch.stack([torch.as_tensor(m['lidar2img'][frame], dtype=torch.float32)
                                 for m in metas]).to(device)
        views = lidar2img.shape[1]
        image_hw = torch.tensor([list(m['img_shape'][:2]) for m in metas], device=device)
        image_hw = image_hw[:, None].expand(len(metas), views, 2)
        input_hw = tuple(metas[0]['batch_input_shape'])
        return lidar2img, image_hw, input_hw

    @staticmethod
    def _lidar2global(meta: dict, frame: int) -> Tensor:
        ego2global = torch.as_tensor(meta['ego2global'][frame], dtype=torch.float64)
        lidar2ego = torch.as_tensor(meta['lidar2ego'][frame], dtype=torch.float64)
        return lidar_to_global(ego2global, lidar2ego)

    def reset_temporal_state(self) -> None:
        """Forget the BEV kept from the last test frame."""
        self._previous_frame = None

    def _follows(self, scene_token: str, lidar2global: Tensor, previous_scene_token: str,
                 previous_lidar2global: Tensor) -> bool:
        """Whether a frame can use the BEV of the one before: same scene, no jump in pose."""
        jump = (lidar2global[:3, 3] - previous_lidar2global[:3, 3]).norm()
        return scene_token == previous_scene_token and bool(jump <= self.max_ego_jump)

    @staticmethod
    def _repeated(meta: dict, frame: int) -> bool:
        """Whether queue frame ``frame`` is the frame before it again (a scene start)."""
        tokens = meta.get('frame_tokens')
        return bool(tokens) and bool(tokens[frame]) and tokens[frame] == tokens[frame - 1]

    @staticmethod
    def _can_bus_input(current: np.ndarray, previous: Optional[np.ndarray]) -> np.ndarray:
        """(18,) the encoder's CAN-bus input from absolute vectors (``PackBEVInputs``' per-frame
        ``can_bus``): translation [0:3] and heading [17] (degrees) relative to the previous
        frame, zero without one; the rest absolute (the official dataset's and detector's
        convention, without wrapping the heading difference)."""
        values = np.array(current, dtype=np.float64)
        if previous is None:
            values[:3], values[17] = 0.0, 0.0
        else:
            values[:3] -= previous[:3]
            values[17] -= previous[17]
        return values

    @staticmethod
    def _can_bus_tensor(metas: List[dict], frame: int, previous: List[Optional[np.ndarray]],
                        device) -> Optional[Tensor]:
        """(B, 18) CAN-bus input of ``frame`` (``previous``: each sample's absolute vector of
        the frame its previous BEV comes from, or None); None when the infos carry none."""
        if 'can_bus' not in metas[0]:
            return None
        vectors = [BEVFormerDetector._can_bus_input(meta['can_bus'][frame], prev)
                   for meta, prev in zip(metas, previous)]
        return torch.from_numpy(np.stack(vectors)).float().to(device)

    def _encode(self, feats: List[Tensor], metas: List[dict], frame: int,
                previous_bev: Optional[Tensor]) -> Tensor:
        """BEV (B, Q, C) of ``frame`` of every sample, using the BEV of ``frame - 1``."""
        device = feats[0].device
        lidar2img, image_hw, input_hw = self._camera_geometry(metas, frame, device)
        if previous_bev is None:
            can_bus = self._can_bus_tensor(metas, frame, [None] * len(metas), device)
            return self.encoder(feats, lidar2img, image_hw, input_hw, can_bus=can_bus)
        motions, follows = [], []
        for meta in metas:
            current, previous = self._lidar2global(meta, frame), self._lidar2global(meta, frame - 1)
            motions.append(current_to_previous_lidar(current, previous))
            follows.append(not self._repeated(meta, frame)
                           and self._follows(meta['scene_token'][frame], current,
                                             meta['scene_token'][frame - 1], previous))
        previous_can_bus = [meta['can_bus'][frame - 1] if follow and 'can_bus' in meta else None
                            for meta, follow in zip(metas, follows)]
        return self.encoder(feats, lidar2img, image_hw, input_hw, previous_bev=previous_bev,
                            current2previous=torch.stack(motions).float().to(device),
                            has_previous=torch.tensor(follows, device=device),
                            can_bus=self._can_bus_tensor(metas, frame, previous_can_bus, device))

    def _history_bev(self, frames: Tensor, metas: List[dict]) -> Optional[Tensor]:
        """BEV (B, Q, C) of the frame before the current one, from the queue, without gradients."""
        num_frames = frames.shape[1]
        if num_frames == 1:
            return None
        was_training = self.training
        self.eval()
        previous_bev = None
        try:
            with torch.no_grad():
                for frame in range(num_frames - 1):
                    feats = self.extract_img_feat(frames[:, frame])
                    previous_bev = self._encode(feats, metas, frame, previous_bev)
        finally:
            self.train(was_training)
        return previous_bev

    # ---- Base3DDetector API -------------------------------------------------------------------
    def loss(self, batch_inputs_dict: dict, batch_data_samples: List[Det3DDataSample]) -> Dict:
        metas = [s.metainfo for s in batch_data_samples]
        frames = self._frames(batch_inputs_dict, metas)
        previous_bev = self._history_bev(frames, metas)
        feats = self.extract_img_feat(frames[:, -1])
        bev = self._encode(feats, metas, frames.shape[1] - 1, previous_bev)
        outputs = self.bbox_head(bev, self._bev_hw(bev))
        gt_instances = [s.gt_instances_3d for s in batch_data_samples]
        return self.bbox_head.loss_by_feat(*outputs, gt_instances)

    def predict(self, batch_inputs_dict: dict,
                batch_data_samples: List[Det3DDataSample]) -> List[Det3DDataSample]:
        metas = [s.metainfo for s in batch_data_samples]
        frames = self._frames(batch_inputs_dict, metas)
        results = []
        for index, meta in enumerate(metas):  # one after the other: each follows the previous
            feats = self.extract_img_feat(frames[index:index + 1, -1])
            bev = self._encode_test_frame(feats, meta, frames.shape[1] - 1)
            outputs = self.bbox_head(bev, self._bev_hw(bev))
            results.extend(self.bbox_head.predict_by_feat(*outputs, [meta]))
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _encode_test_frame(self, feats: List[Tensor], meta: dict, frame: int) -> Tensor:
        """BEV (1, Q, C) of one test frame, using the BEV kept from the frame before."""
        bev = self.encoder(feats, **self.test_frame_inputs(meta, frame, feats[0].device))
        self.keep_test_frame(meta, frame, bev)
        return bev

    def test_frame_inputs(self, meta: dict, frame: int, device) -> dict:
        """The encoder's arguments but the image features for test frame ``frame`` of one sample:
        ``lidar2img``, ``image_hw``, ``input_hw``, ``can_bus``, and ``previous_bev`` with
        ``current2previous`` when the kept BEV is usable (module doc), else None. (Also used by
        the ONNX Runtime deployment, which runs the encoder as a graph.)"""
        lidar2global = self._lidar2global(meta, frame)
        scene_token = meta['scene_token'][frame]
        kept = self._previous_frame
        prev_token = meta.get('prev_token')
        usable = (self.video_test_mode and kept is not None
                  and (prev_token is None or (prev_token != '' and prev_token == kept['token']))
                  and self._follows(scene_token, lidar2global, kept['scene_token'],
                                    kept['lidar2global']))
        if (self.video_test_mode and prev_token and not self._warned_missing_predecessor
                and (kept is None or kept['token'] != prev_token)):
            print_log(f'BEVFormerDetector: sample {meta.get("token")} is predicted without its '
                      f'previous BEV: its prev keyframe {prev_token} was not the frame tested '
                      'before it (the sampler shuffles, deals frames round-robin or skips some); '
                      'test with sampler=dict(type=\'SceneShardSampler\') for the temporal '
                      'figures (warned once)', logger='current', level=logging.WARNING)
            self._warned_missing_predecessor = True
        lidar2img, image_hw, input_hw = self._camera_geometry([meta], frame, device)
        can_bus = self._can_bus_tensor([meta], frame, [kept['can_bus'] if usable else None],
                                       device)
        inputs = dict(lidar2img=lidar2img, image_hw=image_hw, input_hw=input_hw, can_bus=can_bus,
                      previous_bev=None, current2previous=None)
        if usable:
            motion = current_to_previous_lidar(lidar2global, kept['lidar2global'])
            inputs.update(previous_bev=kept['bev'],
                          current2previous=motion[None].float().to(device))
        return inputs

    def keep_test_frame(self, meta: dict, frame: int, bev: Tensor) -> None:
        """Keeps ``bev`` (1, Q, C) of test frame ``frame`` for the next one (video_test_mode)."""
        if self.video_test_mode:
            self._previous_frame = dict(
                token=meta.get('token', ''), scene_token=meta['scene_token'][frame],
                lidar2global=self._lidar2global(meta, frame), bev=bev.detach(),
                can_bus=meta['can_bus'][frame] if 'can_bus' in meta else None)

    def _forward(self, batch_inputs_dict: dict, batch_data_samples: List[Det3DDataSample]):
        """Raw head outputs of the current frame (no temporal state), for tracing/FLOPs."""
        metas = [s.metainfo for s in batch_data_samples]
        frames = self._frames(batch_inputs_dict, metas)
        feats = self.extract_img_feat(frames[:, -1])
        bev = self._encode(feats, metas, frames.shape[1] - 1, None)
        return self.bbox_head(bev, self._bev_hw(bev))

    def _bev_hw(self, bev: Tensor) -> Tensor:
        return torch.tensor([[self.encoder.bev_h, self.encoder.bev_w]], device=bev.device)
