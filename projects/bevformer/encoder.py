"""The BEV encoder: learned BEV queries refined by temporal self-attention and spatial
cross-attention into a bird's-eye-view feature map.

One call turns the current frame's multi-camera image features (and the previous frame's BEV, if
any) into the current BEV:

1. BEV queries (bev_h * bev_w learned embeddings) with a learned positional embedding; camera and
   level embeddings added to the flattened image features.
   With ``use_can_bus``, the CAN-bus MLP's output (18 numbers per frame, see
   ``projects/datasets/can_bus.py``) is added to every BEV query, as in the official model.
2. Pillar points of every BEV cell projected into every camera (``geometry``), giving
   ``reference_points_cam`` and the hit mask ``bev_mask``.
3. The previous BEV brought onto the current grid (``temporal_alignment``, below); samples
   without a previous BEV (first frame, scene change) use the current queries instead.
4. ``num_layers`` x (temporal self-attention with the BEV positional embedding, norm, spatial
   cross-attention without it, norm, FFN, norm).

``temporal_alignment``:

* ``'exact'`` (ours, for training from scratch): the previous BEV is resampled bilinearly by the
  rigid ego motion between the two LiDAR frames (``align_previous_bev``); the temporal
  self-attention samples both maps around the cell centres.
* ``'official'`` (the code path the published checkpoints were trained with, fundamentalvision/
  BEVFormer at its first release): the previous BEV is rotated by the CAN-bus heading change about
  the pixel ``rotate_center`` (nearest neighbour, ``rotate_bev_like_torchvision``), not
  translated; the reference points of both maps are shifted by the CAN-bus translation
  (``can_bus_bev_shift``; the release shifted the current map's points too, as an aliased
  tensor did, and the checkpoints learned that). Needs ``can_bus``. ``rotate_center`` is (100,
  100) in every official config, the grid centre of base (200 x 200) only.

``hit_area``: ``'image'`` counts a pillar point as seen by a camera inside the image content;
``'padded'`` inside the padded input, as the official code (its bottom padding strip hits).

The published BEVFormer sizes are config variables in ``configs/_base_/bev_encoders.py``.
"""
import warnings
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmdet3d.registry import MODELS
from mmdet.models.layers import LearnedPositionalEncoding
from mmengine.model import BaseModule, ModuleList, xavier_init
from torch import Tensor, nn

from ..common.layers import use_fast_dropout_
from ..datasets.can_bus import CAN_BUS_DIM
from .attention import BEVSpatialCrossAttention, BEVTemporalSelfAttention
from .geometry import (HIT_AREAS, align_previous_bev, bev_cell_centers, can_bus_bev_shift,
                       check_bev_grid, pillar_points, project_to_cameras,
                       rotate_bev_like_torchvision)

__all__ = [
    'BEVFormerEncoderLayer', 'BEVFormerEncoder', 'TEMPORAL_ALIGNMENTS', 'OFFICIAL_SETTINGS',
    'OFFICIAL_WEIGHTS_MARKER'
]

TEMPORAL_ALIGNMENTS = ('exact', 'official')
# The settings under which converted official weights compute what the official model does, and
# the state-dict entry (added by projects/bevformer/convert.py) that marks such weights; its value
# is the source's use_can_bus.
OFFICIAL_SETTINGS = dict(use_can_bus=True, temporal_alignment='official', hit_area='padded')
OFFICIAL_WEIGHTS_MARKER = 'official_bevformer_weights'


@MODELS.register_module()
class BEVFormerEncoderLayer(BaseModule):
    """Temporal self-attention, norm, spatial cross-attention, norm, FFN, norm (post-norm)."""

    def __init__(self, embed_dims: int = 256, feedforward_channels: int = 512,
                 ffn_drop: float = 0.1, self_attn_cfg: Optional[dict] = None,
                 cross_attn_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='LN'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.self_attn = BEVTemporalSelfAttention(embed_dims=embed_dims, **(self_attn_cfg or {}))
        self.cross_attn = BEVSpatialCrossAttention(embed_dims=embed_dims,
                                                   **(cross_attn_cfg or {}))
        self.ffn = FFN(embed_dims=embed_dims, feedforward_channels=feedforward_channels,
                       ffn_drop=ffn_drop, act_cfg=dict(type='ReLU', inplace=True))
        self.norms = ModuleList([build_norm_layer(norm_cfg, embed_dims)[1] for _ in range(3)])
        use_fast_dropout_(self)  # the attentions' and the FFN's dropouts

    def forward(self, bev_query: Tensor, bev_pos: Tensor, previous_bev: Optional[Tensor],
                has_previous: Optional[Tensor], bev_reference_points: Tensor, bev_hw: Tensor,
                img_feats: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                reference_points_cam: Tensor, bev_mask: Tensor,
                bev_queries: Optional[Tensor] = None) -> Tensor:
        """Shapes as in the two attentions (``bev_pos`` goes to the temporal self-attention
        only; ``bev_queries``: the encoder's input queries, its current map); returns
        (bs, Q, C)."""
        bev_query = self.norms[0](
            self.self_attn(bev_query, bev_pos, previous_bev, bev_reference_points, bev_hw,
                           has_previous, bev_queries))
        bev_query = self.norms[1](
            self.cross_attn(bev_query, img_feats, spatial_shapes, level_start_index,
                            reference_points_cam, bev_mask))
        return self.norms[2](self.ffn(bev_query))


@MODELS.register_module()
class BEVFormerEncoder(BaseModule):
    """BEV queries over ``point_cloud_range`` refined from multi-camera features (see module doc).

    Args:
        bev_h, bev_w: BEV grid rows (along y) and columns (along x).
        point_cloud_range: [x_min, y_min, z_min, x_max, y_max, z_max] metres, LiDAR frame.
        num_layers: encoder layers.
        embed_dims: channels of the BEV and of the image features.
        num_cams: cameras (each gets a learned embedding).
        num_feature_levels: image feature levels (each gets a learned embedding).
        num_points_in_pillar: heights sampled per BEV cell.
        layer_cfg: keyword arguments of ``BEVFormerEncoderLayer`` (embed_dims, the cross
            attention's num_levels and num_heights are filled in from the above).
        use_can_bus: add ``can_bus_mlp(can_bus)`` to every BEV query (official models: True).
        can_bus_norm: end the CAN-bus MLP with a LayerNorm (official default: True).
        temporal_alignment: ``'exact'`` or ``'official'`` (module doc).
        rotate_center: (x, y) pixel the previous BEV turns about under ``'official'``.
        hit_area: ``'image'`` or ``'padded'`` (module doc; official models: ``'padded'``).
    """

    def __init__(self, bev_h: int = 50, bev_w: int = 50,
                 point_cloud_range: Sequence[float] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0),
                 num_layers: int = 3, embed_dims: int = 256, num_cams: int = 6,
                 num_feature_levels: int = 1, num_points_in_pillar: int = 4,
                 layer_cfg: Optional[dict] = None, use_can_bus: bool = False,
                 can_bus_norm: bool = True, temporal_alignment: str = 'exact',
                 rotate_center: Sequence[float] = (100, 100), hit_area: str = 'image',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        check_bev_grid(bev_h, bev_w, point_cloud_range)
        if embed_dims % 2 != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be even: half of it encodes the '
                             'BEV row, half the column')
        if temporal_alignment not in TEMPORAL_ALIGNMENTS:
            raise ValueError(f'temporal_alignment must be one of {TEMPORAL_ALIGNMENTS}, got '
                             f'{temporal_alignment!r}')
        if hit_area not in HIT_AREAS:
            raise ValueError(f'hit_area must be one of {HIT_AREAS}, got {hit_area!r}')
        if len(rotate_center) != 2:
            raise ValueError(f'rotate_center must be (x, y) pixels, got {rotate_center!r}')
        self.use_can_bus, self.temporal_alignment = bool(use_can_bus), temporal_alignment
        self.rotate_center = tuple(float(v) for v in rotate_center)
        self.hit_area = hit_area
        self.bev_h, self.bev_w = int(bev_h), int(bev_w)
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.embed_dims, self.num_cams = embed_dims, num_cams
        self.num_feature_levels = num_feature_levels
        self.num_points_in_pillar = num_points_in_pillar

        self.bev_embedding = nn.Embedding(self.bev_h * self.bev_w, embed_dims)
        self.positional_encoding = LearnedPositionalEncoding(
            num_feats=embed_dims // 2, row_num_embed=self.bev_h, col_num_embed=self.bev_w)
        self.cams_embeds = nn.Parameter(torch.zeros(num_cams, embed_dims))
        self.level_embeds = nn.Parameter(torch.zeros(num_feature_levels, embed_dims))
        self.can_bus_mlp = self._can_bus_mlp(embed_dims, can_bus_norm) if use_can_bus else None
        layer_cfg = dict(layer_cfg or {})
        cross_attn_cfg = dict(layer_cfg.pop('cross_attn_cfg', None) or {})
        cross_attn_cfg.update(num_levels=num_feature_levels, num_heights=num_points_in_pillar)
        self.layers = ModuleList([
            BEVFormerEncoderLayer(embed_dims=embed_dims, cross_attn_cfg=cross_attn_cfg,
                                  **layer_cfg) for _ in range(num_layers)
        ])
        # Constant geometry of the grid, not parameters: (Q, D, 3) metres and (Q, 2) in [0, 1],
        # in float64 (cast where used), so a float64 model computes the geometry exactly.
        self.register_buffer('pillar_points', pillar_points(
            self.bev_h, self.bev_w, self.point_cloud_range, num_points_in_pillar,
            dtype=torch.float64), persistent=False)
        self.register_buffer('bev_reference_points', self._normalised_cell_centers(),
                             persistent=False)
        self.register_load_state_dict_pre_hook(self._warn_if_not_set_for_official_weights)

    def _warn_if_not_set_for_official_weights(self, module, state_dict, prefix, *args) -> None:
        """Load-state-dict pre-hook: takes the converter's marker out of ``state_dict`` and warns,
        naming the switches, when this encoder would run official weights through another
        function than the official one."""
        source_used_can_bus = state_dict.pop(prefix + OFFICIAL_WEIGHTS_MARKER, None)
        if source_used_can_bus is None:
            return
        expected = dict(OFFICIAL_SETTINGS, use_can_bus=bool(source_used_can_bus))
        differing = {name: value for name, value in expected.items()
                     if getattr(self, name) != value}
        if differing:
            settings = ', '.join(f'{name}={value!r}' for name, value in differing.items())
            warnings.warn(
                'loading weights converted from an official BEVFormer checkpoint into an encoder '
                f'set otherwise: set {settings} (BEVFormerEncoder; configs/bevformer/'
                'bevformer_tiny_8xb1-24e_nuscenes.py does) to compute what the official model '
                'computes; as set, the BEV differs from the official one '
                '(docs/official_differences.md)', stacklevel=2)

    @staticmethod
    def _can_bus_mlp(embed_dims: int, with_norm: bool) -> nn.Sequential:
        """(bs, 18) -> (bs, C): Linear, ReLU, Linear, ReLU[, LayerNorm], named as the official
        ``can_bus_mlp`` (``0``, ``2``, ``norm``)."""
        layers = OrderedDict([('0', nn.Linear(CAN_BUS_DIM, embed_dims // 2)), ('1', nn.ReLU()),
                              ('2', nn.Linear(embed_dims // 2, embed_dims)), ('3', nn.ReLU())])
        if with_norm:
            layers['norm'] = nn.LayerNorm(embed_dims)
        return nn.Sequential(layers)

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.normal_(self.cams_embeds)
        nn.init.normal_(self.level_embeds)
        if self.can_bus_mlp is not None:
            for layer in self.can_bus_mlp:
                if isinstance(layer, nn.Linear):
                    xavier_init(layer, distribution='uniform', bias=0.0)

    def _normalised_cell_centers(self) -> Tensor:
        x_min, y_min, _, x_max, y_max, _ = self.point_cloud_range
        centers = bev_cell_centers(self.bev_h, self.bev_w, self.point_cloud_range,
                                   dtype=torch.float64)
        return (centers - centers.new_tensor([x_min, y_min])) / centers.new_tensor(
            [x_max - x_min, y_max - y_min])

    def forward(self, img_feats: List[Tensor], lidar2img: Tensor, image_hw: Tensor,
                input_hw: Tuple[int, int], previous_bev: Optional[Tensor] = None,
                current2previous: Optional[Tensor] = None,
                has_previous: Optional[Tensor] = None,
                can_bus: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            img_feats: per level (bs, num_cams, C, h, w).
            lidar2img: (bs, num_cams, 4, 4) of the current frame, for the network's input image.
            image_hw: (bs, num_cams, 2) image content height and width per camera.
            input_hw: (H, W) of the padded network input.
            previous_bev: (bs, Q, C) the previous frame's BEV in its own grid, or None.
            current2previous: (bs, 4, 4) current LiDAR frame -> previous LiDAR frame.
            has_previous: (bs,) bool; False where the sample has no usable previous BEV (first
                frame, scene change). Default: all True when previous_bev is given.
            can_bus: (bs, 18) official CAN-bus vectors (translation and heading relative to the
                previous frame, zero without one); needed with ``use_can_bus`` and with
                ``temporal_alignment='official'`` (which then ignores current2previous).

        Returns:
            (bs, Q, C) the current BEV, Q = bev_h * bev_w, row-major (h along y, w along x).
        """
        feats, spatial_shapes, level_start_index = self._flatten_image_features(img_feats)
        bs = feats.shape[0]
        can_bus = self._check_can_bus(can_bus, bs)
        bev_query = self.bev_embedding.weight.to(feats.dtype)[None].expand(bs, -1, -1)
        if self.can_bus_mlp is not None:
            bev_query = bev_query + self.can_bus_mlp(can_bus.to(feats.dtype))[:, None]
        grid_mask = feats.new_zeros(bs, self.bev_h, self.bev_w)
        bev_pos = self.positional_encoding(grid_mask).flatten(2).transpose(1, 2).to(feats.dtype)
        # the projection runs in float32 at least (as the official code: fp16 pixels are too
        # coarse), in float64 for a float64 model
        geometry_dtype = torch.promote_types(feats.dtype, torch.float32)
        reference_points_cam, bev_mask = project_to_cameras(
            self.pillar_points.to(geometry_dtype), lidar2img.to(geometry_dtype), image_hw,
            input_hw, self.hit_area)
        reference_points_cam = reference_points_cam.to(feats.dtype)
        bev_reference_points = self.bev_reference_points.to(feats.dtype)  # (Q, 2)
        if self.temporal_alignment == 'exact':
            previous_bev = self._aligned_previous_bev(previous_bev, current2previous)
        else:
            previous_bev = self._rotated_previous_bev(previous_bev, can_bus)
            shift = can_bus_bev_shift(can_bus, self.point_cloud_range).to(feats.dtype)
            bev_reference_points = bev_reference_points[None] + shift[:, None]  # (bs, Q, 2)
        bev_hw = torch.tensor([[self.bev_h, self.bev_w]], device=feats.device)
        bev_queries = bev_query
        for layer in self.layers:
            bev_query = layer(bev_query, bev_pos, previous_bev, has_previous,
                              bev_reference_points, bev_hw, feats, spatial_shapes,
                              level_start_index, reference_points_cam, bev_mask, bev_queries)
        return bev_query

    def _check_can_bus(self, can_bus: Optional[Tensor], bs: int) -> Optional[Tensor]:
        if not (self.use_can_bus or self.temporal_alignment == 'official'):
            return None
        if can_bus is None:
            raise ValueError('this encoder needs can_bus (bs, 18) (use_can_bus='
                             f'{self.use_can_bus}, temporal_alignment='
                             f'{self.temporal_alignment!r}): the infos must carry CAN-bus values '
                             '(tools/data/create_nuscenes_infos.py --can-bus-root)')
        if tuple(can_bus.shape) != (bs, CAN_BUS_DIM):
            raise ValueError(f'can_bus must be (bs, {CAN_BUS_DIM}) = ({bs}, {CAN_BUS_DIM}), got '
                             f'{tuple(can_bus.shape)}')
        return can_bus

    def _flatten_image_features(self, img_feats: List[Tensor]):
        """Per level (bs, cams, C, h, w) -> (bs, cams, sum h*w, C) with camera and level
        embeddings added, spatial_shapes (levels, 2) and level_start_index (levels,)."""
        if len(img_feats) != self.num_feature_levels:
            raise ValueError(f'got {len(img_feats)} image feature levels, the encoder was built '
                             f'with num_feature_levels={self.num_feature_levels}')
        flat, shapes = [], []
        for level, feat in enumerate(img_feats):
            bs, num_cams, channels, height, width = feat.shape
            if num_cams != self.num_cams or channels != self.embed_dims:
                raise ValueError(f'image features of level {level} have {num_cams} cameras and '
                                 f'{channels} channels, expected {self.num_cams} and '
                                 f'{self.embed_dims} (num_cams, embed_dims)')
            feat = feat.flatten(3).transpose(2, 3)  # (bs, cams, h*w, C)
            flat.append(feat + self.cams_embeds[None, :, None].to(feat.dtype)
                        + self.level_embeds[None, None, level:level + 1].to(feat.dtype))
            shapes.append((height, width))
        device = img_feats[0].device
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return torch.cat(flat, dim=2), spatial_shapes, level_start_index

    def _previous_bev_map(self, previous_bev: Tensor) -> Tensor:
        """(bs, Q, C) -> (bs, C, bev_h, bev_w)."""
        bs, num_queries, channels = previous_bev.shape
        if num_queries != self.bev_h * self.bev_w:
            raise ValueError(f'previous_bev has {num_queries} cells, the grid has '
                             f'{self.bev_h} x {self.bev_w} (bev_h x bev_w)')
        return previous_bev.transpose(1, 2).reshape(bs, channels, self.bev_h, self.bev_w)

    def _aligned_previous_bev(self, previous_bev: Optional[Tensor],
                              current2previous: Optional[Tensor]) -> Optional[Tensor]:
        """(bs, Q, C) previous BEV resampled onto the current grid (None stays None)."""
        if previous_bev is None:
            return None
        if current2previous is None:
            raise ValueError('previous_bev needs current2previous (bs, 4, 4), the ego motion '
                             'from the current LiDAR frame to the previous one')
        aligned = align_previous_bev(self._previous_bev_map(previous_bev), current2previous,
                                     self.point_cloud_range)
        return aligned.flatten(2).transpose(1, 2)

    def _rotated_previous_bev(self, previous_bev: Optional[Tensor],
                              can_bus: Tensor) -> Optional[Tensor]:
        """(bs, Q, C) previous BEV turned by the CAN-bus heading change (``can_bus[:, 17]``,
        degrees) about ``rotate_center`` (None stays None)."""
        if previous_bev is None:
            return None
        rotated = rotate_bev_like_torchvision(self._previous_bev_map(previous_bev),
                                              can_bus[:, 17], self.rotate_center)
        return rotated.flatten(2).transpose(1, 2)
