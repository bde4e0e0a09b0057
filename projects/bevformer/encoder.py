"""The BEV encoder: learned BEV queries refined by temporal self-attention and spatial
cross-attention into a bird's-eye-view feature map.

One call turns the current frame's multi-camera image features (and the previous frame's BEV, if
any) into the current BEV:

1. BEV queries (bev_h * bev_w learned embeddings) with a learned positional embedding; camera and
   level embeddings added to the flattened image features.
2. Pillar points of every BEV cell projected into every camera (``geometry``), giving
   ``reference_points_cam`` and the hit mask ``bev_mask``.
3. The previous BEV resampled onto the current grid by the ego motion (``align_previous_bev``);
   samples without a previous BEV (first frame, scene change) use the current queries instead.
4. ``num_layers`` x (temporal self-attention, norm, spatial cross-attention, norm, FFN, norm).

The published BEVFormer sizes are config variables in ``configs/_base_/bev_encoders.py``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmdet.models.layers import LearnedPositionalEncoding
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from .attention import BEVSpatialCrossAttention, BEVTemporalSelfAttention
from .geometry import (align_previous_bev, bev_cell_centers, check_bev_grid, pillar_points,
                       project_to_cameras)

__all__ = ['BEVFormerEncoderLayer', 'BEVFormerEncoder']


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

    def forward(self, bev_query: Tensor, bev_pos: Tensor, previous_bev: Optional[Tensor],
                has_previous: Optional[Tensor], bev_reference_points: Tensor, bev_hw: Tensor,
                img_feats: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                reference_points_cam: Tensor, bev_mask: Tensor,
                bev_queries: Optional[Tensor] = None) -> Tensor:
        """Shapes as in the two attentions (``bev_queries``: the encoder's input queries, for the
        temporal self-attention); returns (bs, Q, C)."""
        bev_query = self.norms[0](
            self.self_attn(bev_query, bev_pos, previous_bev, bev_reference_points, bev_hw,
                           has_previous, bev_queries))
        bev_query = self.norms[1](
            self.cross_attn(bev_query, bev_pos, img_feats, spatial_shapes, level_start_index,
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
    """

    def __init__(self, bev_h: int = 50, bev_w: int = 50,
                 point_cloud_range: Sequence[float] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0),
                 num_layers: int = 3, embed_dims: int = 256, num_cams: int = 6,
                 num_feature_levels: int = 1, num_points_in_pillar: int = 4,
                 layer_cfg: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        check_bev_grid(bev_h, bev_w, point_cloud_range)
        if embed_dims % 2 != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be even: half of it encodes the '
                             'BEV row, half the column')
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
        layer_cfg = dict(layer_cfg or {})
        cross_attn_cfg = dict(layer_cfg.pop('cross_attn_cfg', None) or {})
        cross_attn_cfg.update(num_levels=num_feature_levels, num_heights=num_points_in_pillar)
        self.layers = ModuleList([
            BEVFormerEncoderLayer(embed_dims=embed_dims, cross_attn_cfg=cross_attn_cfg,
                                  **layer_cfg) for _ in range(num_layers)
        ])
        # Constant geometry of the grid, not parameters: (Q, D, 3) metres and (Q, 2) in [0, 1].
        self.register_buffer('pillar_points', pillar_points(
            self.bev_h, self.bev_w, self.point_cloud_range, num_points_in_pillar),
            persistent=False)
        self.register_buffer('bev_reference_points', self._normalised_cell_centers(),
                             persistent=False)

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.normal_(self.cams_embeds)
        nn.init.normal_(self.level_embeds)

    def _normalised_cell_centers(self) -> Tensor:
        x_min, y_min, _, x_max, y_max, _ = self.point_cloud_range
        centers = bev_cell_centers(self.bev_h, self.bev_w, self.point_cloud_range)
        return (centers - centers.new_tensor([x_min, y_min])) / centers.new_tensor(
            [x_max - x_min, y_max - y_min])

    def forward(self, img_feats: List[Tensor], lidar2img: Tensor, image_hw: Tensor,
                input_hw: Tuple[int, int], previous_bev: Optional[Tensor] = None,
                current2previous: Optional[Tensor] = None,
                has_previous: Optional[Tensor] = None) -> Tensor:
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

        Returns:
            (bs, Q, C) the current BEV, Q = bev_h * bev_w, row-major (h along y, w along x).
        """
        feats, spatial_shapes, level_start_index = self._flatten_image_features(img_feats)
        bs = feats.shape[0]
        bev_query = self.bev_embedding.weight.to(feats.dtype)[None].expand(bs, -1, -1)
        grid_mask = feats.new_zeros(bs, self.bev_h, self.bev_w)
        bev_pos = self.positional_encoding(grid_mask).flatten(2).transpose(1, 2).to(feats.dtype)
        reference_points_cam, bev_mask = project_to_cameras(
            self.pillar_points, lidar2img.to(torch.float32), image_hw, input_hw)
        reference_points_cam = reference_points_cam.to(feats.dtype)
        previous_bev = self._aligned_previous_bev(previous_bev, current2previous)
        bev_hw = torch.tensor([[self.bev_h, self.bev_w]], device=feats.device)
        bev_queries = bev_query
        for layer in self.layers:
            bev_query = layer(bev_query, bev_pos, previous_bev, has_previous,
                              self.bev_reference_points, bev_hw, feats, spatial_shapes,
                              level_start_index, reference_points_cam, bev_mask, bev_queries)
        return bev_query

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

    def _aligned_previous_bev(self, previous_bev: Optional[Tensor],
                              current2previous: Optional[Tensor]) -> Optional[Tensor]:
        """(bs, Q, C) previous BEV resampled onto the current grid (None stays None)."""
        if previous_bev is None:
            return None
        if current2previous is None:
            raise ValueError('previous_bev needs current2previous (bs, 4, 4), the ego motion '
                             'from the current LiDAR frame to the previous one')
        bs, num_queries, channels = previous_bev.shape
        if num_queries != self.bev_h * self.bev_w:
            raise ValueError(f'previous_bev has {num_queries} cells, the grid has '
                             f'{self.bev_h} x {self.bev_w} (bev_h x bev_w)')
        as_map = previous_bev.transpose(1, 2).reshape(bs, channels, self.bev_h, self.bev_w)
        aligned = align_previous_bev(as_map, current2previous, self.point_cloud_range)
        return aligned.flatten(2).transpose(1, 2)
