"""``FastMultiScaleDeformableAttention``: mmcv's ``MultiScaleDeformableAttention`` on our op.

A subclass of mmcv's module that overrides only ``forward``: constructor arguments, weight init,
state-dict keys (sampling_offsets, attention_weights, value_proj, output_proj), the error for
embed_dims not divisible by num_heads and ``isinstance`` checks (mmdet's DeformableDETR
re-initialises its MultiScaleDeformableAttention modules) are mmcv's. The sampling is
``multi_scale_deformable_attention`` on every device, instead of mmcv's grid_sample fallback on CPU
and its compiled kernel on CUDA.

Registered in mmengine's root ``MODELS`` (where mmcv registers its own), so that both ``mmdet::``
and ``mmdet3d::`` configs find it: ``dict(type='FastMultiScaleDeformableAttention', ...)``.
"""
from typing import Optional

import torch
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention
from mmengine.registry import MODELS
from mmengine.utils import deprecated_api_warning
from torch import Tensor

from ..common.layers import softmax_last_dim
from .ops import multi_scale_deformable_attention

__all__ = ['FastMultiScaleDeformableAttention']


@MODELS.register_module()
class FastMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """Drop-in for mmcv's ``MultiScaleDeformableAttention`` (same arguments and weights)."""

    @deprecated_api_warning({'residual': 'identity'},
                            cls_name='FastMultiScaleDeformableAttention')
    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """As mmcv's. query (num_queries, bs, embed_dims), or (bs, num_queries, embed_dims) with
        batch_first; value likewise with num_keys = sum of H*W (default: query); key is unused;
        identity is added to the output (default: query); key_padding_mask (bs, num_keys) is True
        at padding; reference_points (bs, num_queries, num_levels, 2) normalised (x, y), or 4 with
        a box's (w, h); spatial_shapes (num_levels, 2) as (H, W); level_start_index (num_levels,).
        Returns the query's shape."""
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)  # batch first
        bs, num_queries, _ = query.shape
        value = self.value_proj(value)  # (bs, num_keys, value_dims)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, value.shape[1], self.num_heads, -1)  # (bs, keys, heads, head_dims)
        attention_weights = softmax_last_dim(self.attention_weights(query).view(
            bs, num_queries, self.num_heads, self.num_levels * self.num_points))
        attention_weights = attention_weights.view(bs, num_queries, self.num_heads,
                                                   self.num_levels, self.num_points)
        sampling_locations = self._sampling_locations(query, reference_points, spatial_shapes)
        output = multi_scale_deformable_attention(value, spatial_shapes, level_start_index,
                                                  sampling_locations, attention_weights)
        output = self.output_proj(output)  # (bs, num_queries, embed_dims)
        if not self.batch_first:
            output = output.transpose(0, 1)
        return self.dropout(output) + identity

    def _sampling_locations(self, query: Tensor, reference_points: Tensor,
                            spatial_shapes: Tensor) -> Tensor:
        """(bs, num_queries, heads, levels, points, 2) normalised (x, y): the reference point plus
        the predicted offsets, in pixels of each level (2-d reference points) or in halves of the
        reference box's size per point (4-d reference boxes)."""
        bs, num_queries, _ = query.shape
        offsets = self.sampling_offsets(query).view(bs, num_queries, self.num_heads,
                                                    self.num_levels, self.num_points, 2)
        reference = reference_points[:, :, None, :, None, :]  # (bs, queries, 1, levels, 1, 2|4)
        if reference_points.shape[-1] == 2:
            level_size_xy = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            return reference + offsets / level_size_xy[None, None, None, :, None, :]
        if reference_points.shape[-1] == 4:
            return reference[..., :2] + offsets / self.num_points * reference[..., 2:] * 0.5
        raise ValueError('reference_points must end in 2 (x, y) or 4 (x, y, w, h), got shape '
                         f'{tuple(reference_points.shape)}')
