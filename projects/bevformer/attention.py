"""The two attentions of the BEV encoder, both sampling through the shared deformable op.

* ``BEVTemporalSelfAttention``: each BEV query samples the previous BEV (already aligned to the
  current ego pose) and the current one around its own cell, and averages the two.
* ``BEVSpatialCrossAttention``: each BEV query samples the image features of the cameras its
  pillar hits, around the pillar's projections, and averages over those cameras. Only the queries
  that hit a camera are computed for it, so the cost follows the number of hits.

Both predict sampling offsets (in feature-map pixels) and softmax attention weights from the
query, as Deformable DETR does; ``sampling_op`` picks the op (``'fast'``: ours, ``'mmcv_pytorch'``:
mmcv's grid_sample fallback, for benchmarks). Tensors are batch first.
"""
import math
from typing import Optional

import torch
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule, constant_init, xavier_init
from torch import Tensor, nn

from projects.common.export import is_exporting
from projects.common.layers import softmax_last_dim
from projects.deformable_attention import get_sampling_op

__all__ = ['BEVTemporalSelfAttention', 'BEVSpatialCrossAttention']


def init_sampling_offsets_(offsets: nn.Linear, num_heads: int, num_groups: int,
                           num_points: int) -> None:
    """Deformable DETR's start: zero weights, and biases that put head h's point p at (p + 1)
    pixels in direction 2 pi h / num_heads (scaled so the longer axis is 1), for every group
    (level, frame) alike. The bias is laid out (heads, groups, points, 2)."""
    constant_init(offsets, 0.0)
    angles = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    directions = torch.stack([angles.cos(), angles.sin()], -1)
    directions = directions / directions.abs().max(-1, keepdim=True)[0]  # (heads, 2)
    steps = torch.arange(1, num_points + 1, dtype=torch.float32)
    bias = directions[:, None, None, :] * steps[None, None, :, None]  # (heads, 1, points, 2)
    bias = bias.expand(num_heads, num_groups, num_points, 2)
    with torch.no_grad():
        offsets.bias.copy_(bias.reshape(-1))


class _DeformableProjections(BaseModule):
    """The layers every deformable attention has, and their initialisation.

    value_proj: embed_dims -> embed_dims; sampling_offsets: query_dims -> heads * groups * points
    * 2; attention_weights: query_dims -> heads * groups * points; output_proj: embed_dims ->
    embed_dims. ``groups`` is the number of maps a query samples (levels x frames).
    """

    def __init__(self, embed_dims: int, num_heads: int, num_groups: int, num_points: int,
                 query_dims: int, dropout: float, sampling_op: str,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        self.embed_dims, self.num_heads, self.num_points = embed_dims, num_heads, num_points
        self.num_groups = num_groups
        self.sampling_op = get_sampling_op(sampling_op)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.sampling_offsets = nn.Linear(query_dims, num_heads * num_groups * num_points * 2)
        self.attention_weights = nn.Linear(query_dims, num_heads * num_groups * num_points)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)

    def init_weights(self) -> None:
        init_sampling_offsets_(self.sampling_offsets, self.num_heads, self.num_groups,
                               self.num_points)
        constant_init(self.attention_weights, val=0.0, bias=0.0)
        xavier_init(self.value_proj, distribution='uniform', bias=0.0)
        xavier_init(self.output_proj, distribution='uniform', bias=0.0)
        self._is_init = True

    def _split_heads(self, value: Tensor) -> Tensor:
        """(n, keys, embed_dims) -> projected (n, keys, heads, head_dims)."""
        return self.value_proj(value).view(*value.shape[:2], self.num_heads, -1)


@MODELS.register_module()
class BEVTemporalSelfAttention(_DeformableProjections):
    """Deformable attention of the BEV queries over [previous BEV, current BEV], averaged.

    The offsets and weights are predicted from the previous BEV and the query side by side
    (query_dims = 2 * embed_dims). The previous BEV must already be aligned to the current frame
    (``geometry.align_previous_bev``); where there is none, the query (this layer's input) stands
    in for both maps, as in BEVFormer.
    Differs from the original code, which builds that input from the first ``bs`` rows of its
    frame-interleaved value tensor (sample 0's previous and current BEV when bs > 1): here every
    sample uses its own previous BEV.
    """

    NUM_FRAMES = 2  # previous, current

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_points: int = 4,
                 dropout: float = 0.1, sampling_op: str = 'fast',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dims, num_heads, self.NUM_FRAMES, num_points,
                         query_dims=self.NUM_FRAMES * embed_dims, dropout=dropout,
                         sampling_op=sampling_op, init_cfg=init_cfg)

    def forward(self, query: Tensor, query_pos: Tensor, previous_bev: Optional[Tensor],
                reference_points: Tensor, bev_hw: Tensor,
                has_previous: Optional[Tensor] = None,
                bev_queries: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            query: (bs, Q, C) this layer's input, Q = bev_h * bev_w.
            query_pos: (bs, Q, C) its positional embedding.
            previous_bev: (bs, Q, C) aligned previous BEV, or None for none in the batch.
            reference_points: (Q, 2) or (bs, Q, 2) normalised (x, y) in the BEV map around
                which both maps are sampled (the cell centres; shifted by the ego motion under
                the official temporal alignment).
            bev_hw: (1, 2) long tensor [[bev_h, bev_w]].
            has_previous: (bs,) bool, False where a sample's previous BEV is unusable (first
                frame, scene change).
            bev_queries: (bs, Q, C) the encoder's input queries (default: ``query``).

        The two maps sampled are, as in BEVFormer: with a previous BEV, [previous BEV,
        ``bev_queries``] (the same in every layer); without one, [``query``, ``query``].

        Returns:
            (bs, Q, C): the attention output plus ``query``.
        """
        bs, num_queries, _ = query.shape
        current = query if bev_queries is None else bev_queries
        if previous_bev is None:
            previous_bev, current = query, query
        elif has_previous is not None:
            usable = has_previous[:, None, None]
            previous_bev = torch.where(usable, previous_bev, query)
            current = torch.where(usable, current, query)
        frames = self.NUM_FRAMES
        # the two maps are the op's two levels (of one shape): value (bs, 2 * Q, heads, dims)
        values = self._split_heads(torch.cat([previous_bev, current], dim=1))
        query_with_pos = query + query_pos
        offset_input = torch.cat([previous_bev, query_with_pos], dim=-1)  # (bs, Q, 2C)
        offsets = self.sampling_offsets(offset_input).view(bs * num_queries, self.num_heads,
                                                           frames, self.num_points, 1, 2)
        reference_points = reference_points.expand(bs, num_queries, 2)
        spatial_shapes = bev_hw.expand(frames, 2)  # (2, 2) (H, W) of both maps
        locations = _sampling_locations(reference_points.reshape(bs * num_queries, 1, 2),
                                        offsets, spatial_shapes.flip(-1))
        locations = locations.view(bs, num_queries, self.num_heads, frames, self.num_points, 2)
        # softmax over each map's points; the op's sum over both maps, with the weights
        # halved, is the mean of the two maps' samples
        weights = softmax_last_dim(self.attention_weights(offset_input).view(
            bs, num_queries, self.num_heads, frames, self.num_points)) / frames
        level_start = torch.stack([bev_hw.new_zeros(()), bev_hw[0].prod()])
        sampled = self.sampling_op(values, spatial_shapes, level_start, locations, weights)
        return self.dropout(self.output_proj(sampled)) + query


@MODELS.register_module()
class BEVSpatialCrossAttention(_DeformableProjections):
    """Deformable attention of the BEV queries over the image features of the cameras they hit.

    Each query's pillar has ``num_heights`` points; ``num_points`` sampling points per level are
    split evenly among them (``num_points / num_heights`` offsets around each projected height),
    as in BEVFormer. Per (sample, camera), the queries with at least one hit are packed into rows
    (padded to the largest count over the batch), attend to that camera, and their results are
    scattered back and divided by the number of cameras that saw the query.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4,
                 num_points: int = 8, num_heights: int = 4, dropout: float = 0.1,
                 sampling_op: str = 'fast', init_cfg: Optional[dict] = None) -> None:
        if num_points % num_heights != 0:
            raise ValueError(f'num_points ({num_points}) must be a multiple of num_heights '
                             f'({num_heights}), the pillar points each query projects')
        super().__init__(embed_dims, num_heads, num_levels, num_points, query_dims=embed_dims,
                         dropout=dropout, sampling_op=sampling_op, init_cfg=init_cfg)
        self.num_levels, self.num_heights = num_levels, num_heights

    def forward(self, query: Tensor, img_feats: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, reference_points_cam: Tensor,
                bev_mask: Tensor) -> Tensor:
        """
        Args:
            query: (bs, Q, C) BEV queries. No positional embedding is added: the official
                BEVFormer layer gives it to the temporal self-attention only, and the pillar's
                projections already say where a query is.
            img_feats: (bs, num_cams, num_keys, C) every camera's levels flattened and
                concatenated (num_keys = sum of h * w).
            spatial_shapes: (num_levels, 2) long (h, w) per level; level_start_index:
                (num_levels,).
            reference_points_cam: (bs, num_cams, Q, num_heights, 2) normalised (x, y).
            bev_mask: (bs, num_cams, Q, num_heights) bool hits.

        Returns:
            (bs, Q, C): the attention output plus ``query``.
        """
        bs, num_queries, embed_dims = query.shape
        num_cams = img_feats.shape[1]
        if spatial_shapes.shape[0] != self.num_levels:
            raise ValueError(f'spatial_shapes has {spatial_shapes.shape[0]} levels, this '
                             f'attention was built with num_levels={self.num_levels}')
        if reference_points_cam.shape[3] != self.num_heights:
            raise ValueError(f'reference_points_cam has {reference_points_cam.shape[3]} heights '
                             f'per pillar, this attention was built with num_heights='
                             f'{self.num_heights}')
        hits = bev_mask.any(-1)  # (bs, cams, Q)
        hit_index, hit_valid = _pack_hits(hits)  # (bs, cams, M)
        rows = hit_index.shape[-1]
        # rows of the (bs * Q, C) queries: gathered from them directly, not from a per-camera
        # expanded copy (its gradient would be a (bs, cams, Q, C) scatter)
        query_rows = (hit_index + torch.arange(bs, device=query.device)[:, None, None]
                      * num_queries).flatten()  # (bs * cams * M,)
        packed_query = query.reshape(bs * num_queries, embed_dims).index_select(0, query_rows)
        packed_points = _gather_queries(reference_points_cam.flatten(-2), hit_index)
        packed_points = packed_points.view(bs * num_cams, rows, self.num_heights, 2)
        packed_query = packed_query.view(bs * num_cams, rows, embed_dims)

        values = self._split_heads(img_feats.flatten(0, 1))  # (bs * cams, keys, heads, hd)
        per_height = self.num_points // self.num_heights
        offsets = self.sampling_offsets(packed_query).view(
            bs * num_cams * rows, self.num_heads, self.num_levels, per_height, self.num_heights, 2)
        locations = _sampling_locations(packed_points.view(-1, self.num_heights, 2), offsets,
                                        spatial_shapes.flip(-1))
        locations = locations.view(bs * num_cams, rows, self.num_heads, self.num_levels,
                                   self.num_points, 2)
        weights = softmax_last_dim(self.attention_weights(packed_query).view(
            bs * num_cams, rows, self.num_heads, self.num_levels * self.num_points))
        weights = weights.view(bs * num_cams, rows, self.num_heads, self.num_levels,
                               self.num_points)
        sampled = self.sampling_op(values, spatial_shapes, level_start_index, locations, weights)
        sampled = sampled.view(bs, num_cams, rows, embed_dims) * hit_valid[..., None]

        summed = _sum_over_cameras(sampled.to(query.dtype), query_rows, num_queries)
        cameras_seen = hits.sum(1).clamp(min=1).reshape(-1, 1).to(summed.dtype)  # (bs * Q, 1)
        averaged = (summed / cameras_seen).view(bs, num_queries, embed_dims)
        return self.dropout(self.output_proj(averaged)) + query


def _sampling_locations(reference: Tensor, offsets: Tensor, map_size_xy: Tensor) -> Tensor:
    """Normalised sampling locations: reference point + offset / map size.

    Args:
        reference: (N, R, 2) normalised (x, y) of each row's R reference points.
        offsets: (N, heads, levels, points_per_ref, R, 2) offsets in pixels of each level's
            map; point (p, r) of a level is offset from reference point r.
        map_size_xy: (levels, 2) each level's (W, H).

    Returns:
        (N, heads, levels, points_per_ref * R, 2), in float32 (float64 for float64 offsets):
        a half-precision location would be off by a fraction of a pixel on a large map.

    The offsets are divided as contiguous rows by a per-column size: dividing (x, y) pairs by a
    broadcast (W, H) runs several times slower on CPU.
    """
    num_rows, num_heads, num_levels, per_ref, num_refs, _ = offsets.shape
    dtype = torch.promote_types(offsets.dtype, torch.float32)
    column_size = map_size_xy.to(dtype)[:, None, :].expand(num_levels, per_ref * num_refs, 2)
    locations = offsets.reshape(num_rows * num_heads, -1) / column_size.reshape(-1)
    # not in place: the TorchScript ONNX exporter mistraces an in-place add into a view
    locations = (locations.view(num_rows, -1, num_refs * 2)
                 + reference.to(dtype).reshape(num_rows, 1, num_refs * 2))
    return locations.view(num_rows, num_heads, num_levels, per_ref * num_refs, 2)


def _pack_hits(hits: Tensor):
    """Indices of the hit queries per (sample, camera), padded to the largest count.

    Args:
        hits: (bs, num_cams, Q) bool.

    Returns:
        hit_index: (bs, num_cams, M) long query indices, hits first in query order, padding
            rows point at query 0; hit_valid: (bs, num_cams, M) float, 1 for real rows. While
            exporting, M = Q: every query, its miss masked (the same sums).
    """
    if is_exporting():  # every query in every camera, misses masked: no data-dependent size
        return (torch.arange(hits.shape[-1], device=hits.device).expand(hits.shape),
                hits.to(torch.float32))
    counts = hits.sum(-1)  # (bs, cams)
    rows = max(int(counts.max()), 1)
    # a stable sort of "not hit" puts the hit queries first, in their original order
    order = torch.sort((~hits).to(torch.uint8), dim=-1, stable=True).indices[..., :rows]
    hit_valid = torch.arange(rows, device=hits.device) < counts[..., None]
    return order.masked_fill(~hit_valid, 0), hit_valid.to(torch.float32)


def _sum_over_cameras(sampled: Tensor, query_rows: Tensor, num_queries: int) -> Tensor:
    """(bs, cams, M, C) per packed row -> (bs * Q, C) summed per query over the cameras;
    query_rows: (bs * cams * M,) each packed row's row in (bs * Q)."""
    bs, _, _, embed_dims = sampled.shape
    if is_exporting():
        # the rows are the queries (``_pack_hits``); exported, index_add would become a scatter
        # that overwrites repeated indices instead of adding them
        return sampled.sum(1).reshape(bs * num_queries, embed_dims)
    summed = sampled.new_zeros(bs * num_queries, embed_dims)
    return summed.index_add_(0, query_rows, sampled.reshape(-1, embed_dims))


def _gather_queries(per_query: Tensor, index: Tensor) -> Tensor:
    """(bs, cams, Q, C) gathered at (bs, cams, M) query indices -> (bs, cams, M, C)."""
    return torch.gather(per_query, 2, index[..., None].expand(*index.shape, per_query.shape[-1]))
