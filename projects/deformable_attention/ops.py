"""Multi-scale deformable attention, written once for Deformable DETR and BEVFormer.

"Deformable DETR: Deformable Transformers for End-to-End Object Detection" (Zhu et al., ICLR 2021;
fundamentalvision/Deformable-DETR); the reference we match is mmcv's port of its op.

Semantics are exactly those of mmcv's ``multi_scale_deformable_attn_pytorch``: every query, head,
level and point bilinearly samples its level's value map at a normalised location (x, y) in
[0, 1] (pixel coordinate ``loc * size - 0.5``, i.e. ``grid_sample(align_corners=False)``, zeros
outside the map) and the samples are summed with the attention weights.

How it is computed, without ``grid_sample`` and without any (queries, points, dims) tensor:

* forward: ``_pad_levels`` puts every level's map into a zero border (1 pixel before, 2 after, in
  y and x), so that a location clamped to just outside the map reads only zeros and every corner
  index is valid. ``_sampling_corners`` gives each sampling point the rows of its four bilinear
  corners in the flattened padded value, ``_corner_weights`` their weights (bilinear x attention),
  and one ``F.embedding_bag`` sums ``weight * row`` per (batch, query, head).
* backward, written out (embedding_bag's own CPU backward is slow: a BLAS call per sample and a
  sort of every sample): ``_scatter_corner_sums`` sends the output gradient to the value rows with
  transposed embedding_bags over the points sorted by row; ``_corner_dot_products`` gives the dot
  products <grad_output, corner row>, from which ``_point_gradients`` forms the location and
  attention-weight gradients analytically.

On CUDA, float32 / float16 / bfloat16 values go through the Triton kernels of
``triton_kernels.py`` (same semantics, float32 accumulation, atomic adds for the value gradient)
when Triton is importable; the PyTorch path above serves the CPU and every other case. While the
model is traced for ONNX (:func:`projects.common.export.is_exporting`), the op is one
``grid_sample`` per level (``_grid_sample_attention``): autograd Functions do not export, and
``embedding_bag`` exports as a slow ONNX Loop.

Non-finite inputs are never hidden, on every path: a NaN or infinite sampling location or
attention weight makes the whole output of its (batch, query, head) non-finite (a non-finite
location's point gets a NaN weight before dispatch, as mmcv's grid_sample gives NaN there; an
infinite weight gives +-inf), and a NaN value pixel makes NaN every output that samples it with a
non-zero bilinear weight (the CPU path may also spread it to outputs that reach the pixel with
weight exactly 0).
"""
import importlib.util
import warnings
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..common.export import is_exporting

__all__ = ['multi_scale_deformable_attention', 'get_sampling_op', 'SAMPLING_OPS']

# CUDA values go through the Triton kernels when Triton is importable; False forces the PyTorch
# path below on every device (for comparisons).
USE_TRITON = True
_TRITON_AVAILABLE = importlib.util.find_spec('triton') is not None
# Zero border around each level's map: 1 pixel before (corner x0 = -1), 2 after (x0 = W, x1 = W+1).
_PAD_BEFORE, _PAD_AFTER = 1, 2
# Bags per chunk when the dot products are gathered explicitly (devices other than CPU).
_DOT_CHUNK = 8192

LevelShapes = List[Tuple[int, int]]  # (H, W) per level


def multi_scale_deformable_attention(value: Tensor, spatial_shapes: Tensor,
                                     level_start_index: Tensor, sampling_locations: Tensor,
                                     attention_weights: Tensor) -> Tensor:
    """Samples every level of ``value`` at ``sampling_locations``, sums with ``attention_weights``.

    Args:
        value: (bs, num_keys, num_heads, head_dims), the levels' maps flattened row-major and
            concatenated along num_keys.
        spatial_shapes: (num_levels, 2) integer (H, W) of each level.
        level_start_index: (num_levels,) offset of each level along num_keys.
        sampling_locations: (bs, num_queries, num_heads, num_levels, num_points, 2) normalised
            (x, y).
        attention_weights: (bs, num_queries, num_heads, num_levels, num_points).

    Returns:
        (bs, num_queries, num_heads * head_dims) in ``value``'s dtype. Differentiable in value,
        sampling_locations and attention_weights. Locations are resolved in float32 (float64 for a
        float64 value); float16 / bfloat16 values are summed in float32 on CPU and by the CUDA
        (Triton) kernels, in their own dtype elsewhere.
    """
    level_shapes = _check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                 attention_weights)
    bs, _, num_heads, head_dims = value.shape
    # a non-finite location would be clamped or masked away; its NaN weight keeps it visible:
    # 0 * (x + y) is 0 where x and y are finite, NaN where either is not (3 passes; isfinite and
    # where take 6)
    with torch.no_grad():
        nan_where_not_finite = (sampling_locations[..., 0] + sampling_locations[..., 1]).mul_(0.0)
    attention_weights = attention_weights + nan_where_not_finite.to(attention_weights.dtype)
    if is_exporting():
        output = _grid_sample_attention(value, level_shapes, sampling_locations,
                                        attention_weights)
    elif _uses_triton(value):
        from .triton_kernels import TritonDeformableAttention
        output = TritonDeformableAttention.apply(value, spatial_shapes, level_start_index,
                                                 sampling_locations.float(),
                                                 attention_weights.float())
    else:
        compute_dtype = _compute_dtype(value)
        coord_dtype = torch.promote_types(compute_dtype, torch.float32)
        output = _DeformableAttention.apply(value.to(compute_dtype),
                                            sampling_locations.to(coord_dtype),
                                            attention_weights.to(coord_dtype), level_shapes)
    return output.view(bs, sampling_locations.shape[1], num_heads * head_dims).to(value.dtype)


def _grid_sample_attention(value: Tensor, level_shapes: LevelShapes, sampling_locations: Tensor,
                           attention_weights: Tensor) -> Tensor:
    """The export path: one ``grid_sample`` per level (ONNX GridSample; embedding_bag would export
    as a Loop), then the weighted sum over levels and points. Shapes as
    ``multi_scale_deformable_attention``; returns (bs, num_queries, heads * dims)."""
    bs, _, num_heads, head_dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    level_maps = value.split([h * w for h, w in level_shapes], dim=1)
    grids = 2 * sampling_locations.transpose(1, 2) - 1  # (bs, heads, queries, levels, points, 2)
    samples = []
    for level, (level_map, (h, w)) in enumerate(zip(level_maps, level_shapes)):
        level_map = level_map.permute(0, 2, 3, 1).reshape(bs * num_heads, head_dims, h, w)
        grid = grids[:, :, :, level].reshape(bs * num_heads, num_queries, num_points, 2)
        samples.append(F.grid_sample(level_map, grid, mode='bilinear', padding_mode='zeros',
                                     align_corners=False))  # (bs*heads, dims, queries, points)
    samples = torch.stack(samples, dim=3).flatten(3)  # (bs*heads, dims, queries, levels*points)
    weights = attention_weights.transpose(1, 2).reshape(bs * num_heads, 1, num_queries,
                                                        num_levels * num_points)
    output = (samples * weights).sum(-1).view(bs, num_heads * head_dims, num_queries)
    return output.transpose(1, 2)


def _mmcv_pytorch(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """mmcv's grid_sample fallback (the reference we are measured against), our signature."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                               attention_weights)


# Name -> op with the signature of ``multi_scale_deformable_attention``, for modules whose op is
# chosen in a config (``sampling_op='fast'``) and benchmarks that run both side by side.
SAMPLING_OPS = {'fast': multi_scale_deformable_attention, 'mmcv_pytorch': _mmcv_pytorch}


def get_sampling_op(name: str):
    """The op registered as ``name`` in ``SAMPLING_OPS``; ValueError naming the choices."""
    if name not in SAMPLING_OPS:
        raise ValueError(f'sampling_op must be one of {sorted(SAMPLING_OPS)}, got {name!r}')
    return SAMPLING_OPS[name]


def _check_inputs(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor) -> LevelShapes:
    """Raises ValueError naming the first bad argument; returns the levels' (H, W) as ints."""
    if value.dim() != 4:
        raise ValueError('value must have shape (bs, num_keys, num_heads, head_dims), '
                         f'got {tuple(value.shape)}')
    bs, num_keys, num_heads, _ = value.shape
    if (spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2
            or spatial_shapes.is_floating_point()):
        raise ValueError('spatial_shapes must be an integer tensor of shape (num_levels, 2) '
                         f'holding (H, W), got {spatial_shapes.dtype} '
                         f'{tuple(spatial_shapes.shape)}')
    num_levels = spatial_shapes.shape[0]
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError('sampling_locations must have shape (bs, num_queries, num_heads, '
                         'num_levels, num_points, 2) with (x, y) last, got '
                         f'{tuple(sampling_locations.shape)}')
    if sampling_locations.shape[3] != num_levels:
        raise ValueError(f'sampling_locations has {sampling_locations.shape[3]} levels (dim 3 of '
                         f'{tuple(sampling_locations.shape)}) but spatial_shapes has {num_levels}')
    expected = (bs, sampling_locations.shape[1], num_heads, num_levels, sampling_locations.shape[4])
    if tuple(sampling_locations.shape[:5]) != expected:
        raise ValueError(f'sampling_locations must have shape {expected + (2, )} = (bs, '
                         'num_queries, num_heads, num_levels, num_points, 2) for value of shape '
                         f'{tuple(value.shape)}, got {tuple(sampling_locations.shape)}')
    if tuple(attention_weights.shape) != expected:
        raise ValueError(f'attention_weights must have shape {expected} (bs, num_queries, '
                         'num_heads, num_levels, num_points), got '
                         f'{tuple(attention_weights.shape)}')
    level_shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    level_sizes = [h * w for h, w in level_shapes]
    if sum(level_sizes) != num_keys:
        raise ValueError(f'value has num_keys={num_keys} but spatial_shapes {level_shapes} sum '
                         f'to {sum(level_sizes)} keys')
    starts = [sum(level_sizes[:level]) for level in range(num_levels)]
    if tuple(level_start_index.shape) != (num_levels, ) or level_start_index.tolist() != starts:
        raise ValueError(f'level_start_index must be {starts} (shape ({num_levels},), the '
                         f'cumulative sum of H*W), got {level_start_index.tolist()}')
    return level_shapes


def _uses_triton(value: Tensor) -> bool:
    """Whether ``value`` goes through the Triton kernels (``triton_kernels.py``): float32 /
    float16 / bfloat16 on CUDA, with Triton importable and ``USE_TRITON`` on."""
    return (USE_TRITON and value.is_cuda and _TRITON_AVAILABLE
            and value.dtype in (torch.float32, torch.float16, torch.bfloat16))


def _compute_dtype(value: Tensor) -> torch.dtype:
    """float32 for half types on CPU (no fast half kernels there), the input dtype otherwise."""
    if value.device.type == 'cpu' and value.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return value.dtype


class _DeformableAttention(torch.autograd.Function):
    """value (bs, num_keys, heads, dims), sampling_locations (bs, queries, heads, levels, points,
    2), attention_weights (bs, queries, heads, levels, points) -> (bs*queries*heads, dims)."""

    @staticmethod
    def forward(ctx, value: Tensor, sampling_locations: Tensor, attention_weights: Tensor,
                level_shapes: LevelShapes) -> Tensor:
        bs, _, num_heads, head_dims = value.shape
        padded_value = _pad_levels(value, level_shapes)  # (bs, padded_keys, heads, dims)
        index_dtype = _index_dtype(padded_value, sampling_locations)
        slots = _slot_constants(level_shapes, sampling_locations.shape[4], bs, num_heads,
                                padded_value.shape[1], sampling_locations.dtype, index_dtype,
                                value.device)
        rows, frac_xy, inside_xy = _sampling_corners(sampling_locations, slots,
                                                     with_inside=ctx.needs_input_grad[1])
        attention_weights = attention_weights.reshape(rows.shape[0], rows.shape[2])  # (n, slots)
        weights = _corner_weights(frac_xy, attention_weights).to(value.dtype)  # (n, 4, slots)
        table = padded_value.view(-1, head_dims)  # (bs*padded_keys*heads, dims)
        ctx.save_for_backward(table, rows, weights, frac_xy, inside_xy, attention_weights)
        ctx.map_size_xy, ctx.level_shapes = slots.map_size_xy, level_shapes
        ctx.padded_shape, ctx.locations_shape = padded_value.shape, sampling_locations.shape
        return _embedding_bag_sum(table, rows, weights)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tuple[Optional[Tensor], ...]:
        table, rows, weights, frac_xy, inside_xy, attention_weights = ctx.saved_tensors
        grad_output = grad_output.contiguous()  # (n, dims)
        grad_value = grad_locations = grad_attention = None
        if ctx.needs_input_grad[0]:
            grad_table = _scatter_corner_sums(rows, weights, grad_output, ctx.padded_shape,
                                              ctx.level_shapes)
            grad_value = _unpad_levels(grad_table.view(ctx.padded_shape), ctx.level_shapes)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dots = _corner_dot_products(rows, grad_output, table).to(frac_xy.dtype)
            grad_locations, grad_attention = _point_gradients(dots, frac_xy, inside_xy,
                                                              attention_weights, ctx.map_size_xy)
            grad_attention = grad_attention.view(ctx.locations_shape[:-1])
            if ctx.needs_input_grad[1]:
                grad_locations = grad_locations.view(ctx.locations_shape)
        return grad_value, grad_locations, grad_attention, None


def _pad_levels(value: Tensor, level_shapes: LevelShapes) -> Tensor:
    """(bs, num_keys, heads, dims) -> (bs, padded_keys, heads, dims), each map in a zero border."""
    bs, _, num_heads, head_dims = value.shape
    padded = value.new_empty(bs, _padded_keys(level_shapes), num_heads, head_dims)
    level_maps = value.split([h * w for h, w in level_shapes], dim=1)
    for level, level_map, (h, w) in zip(_levels(padded, level_shapes), level_maps, level_shapes):
        # only the border is zeroed: the interior is written once, by the copy
        level[:, :_PAD_BEFORE].zero_()
        level[:, _PAD_BEFORE + h:].zero_()
        level[:, _PAD_BEFORE:_PAD_BEFORE + h, :_PAD_BEFORE].zero_()
        level[:, _PAD_BEFORE:_PAD_BEFORE + h, _PAD_BEFORE + w:].zero_()
        level[:, _PAD_BEFORE:_PAD_BEFORE + h, _PAD_BEFORE:_PAD_BEFORE + w].copy_(
            level_map.view(bs, h, w, num_heads, head_dims))
    return padded


def _unpad_levels(padded: Tensor, level_shapes: LevelShapes) -> Tensor:
    """(bs, padded_keys, heads, dims) -> (bs, num_keys, heads, dims), the maps without border."""
    bs, _, num_heads, head_dims = padded.shape
    interiors = _interiors(padded, level_shapes)
    return torch.cat([interior.reshape(bs, -1, num_heads, head_dims) for interior in interiors], 1)


def _levels(padded: Tensor, level_shapes: LevelShapes) -> List[Tensor]:
    """Views (bs, H + 3, W + 3, heads, dims) of every padded level in (bs, padded_keys, heads,
    dims)."""
    bs, _, num_heads, head_dims = padded.shape
    pad = _PAD_BEFORE + _PAD_AFTER
    levels = padded.split([(h + pad) * (w + pad) for h, w in level_shapes], dim=1)
    return [level.view(bs, h + pad, w + pad, num_heads, head_dims)
            for level, (h, w) in zip(levels, level_shapes)]


def _interiors(padded: Tensor, level_shapes: LevelShapes) -> List[Tensor]:
    """Views (bs, H, W, heads, dims) of every level's map in (bs, padded_keys, heads, dims)."""
    return [level[:, _PAD_BEFORE:_PAD_BEFORE + h, _PAD_BEFORE:_PAD_BEFORE + w]
            for level, (h, w) in zip(_levels(padded, level_shapes), level_shapes)]


def _padded_keys(level_shapes: LevelShapes) -> int:
    pad = _PAD_BEFORE + _PAD_AFTER
    return sum((h + pad) * (w + pad) for h, w in level_shapes)


def _index_dtype(padded_value: Tensor, sampling_locations: Tensor) -> torch.dtype:
    """int32 unless a row index or the number of corners could overflow it."""
    num_rows = padded_value.shape[0] * padded_value.shape[1] * padded_value.shape[2]
    num_corners = sampling_locations[..., 0].numel() * 4
    return torch.int32 if max(num_rows, num_corners) < 2**31 else torch.int64


class _SlotConstants(NamedTuple):
    """Constants per sampling slot, i.e. per (level, point) flattened to slots = levels*points."""
    map_size_xy: Tensor  # (2*slots,) the level's W, H interleaved as the locations' (x, y)
    line_stride: Tensor  # (slots,) rows between two image lines of the padded level
    first_row: Tensor  # (bs, 1, heads, slots) the padded level's first row for that batch, head
    corner_offsets: Tensor  # (4, slots) rows from the top-left corner to y0x0, y0x1, y1x0, y1x1


def _slot_constants(level_shapes: LevelShapes, num_points: int, bs: int, num_heads: int,
                    padded_keys: int, coord_dtype: torch.dtype, index_dtype: torch.dtype,
                    device: torch.device) -> _SlotConstants:
    """Rows of the flattened padded value: (batch * padded_keys + key) * heads + head."""
    pad = _PAD_BEFORE + _PAD_AFTER
    level_starts = [_padded_keys(level_shapes[:level]) for level in range(len(level_shapes))]

    def per_slot(values: list, dtype: torch.dtype) -> Tensor:  # (levels, ...) -> (slots, ...)
        per_level = torch.tensor(values, dtype=dtype, device=device)
        return per_level.repeat_interleave(num_points, dim=0)

    map_size_xy = per_slot([[w, h] for h, w in level_shapes], coord_dtype).view(-1)
    line_stride = per_slot([(w + pad) * num_heads for _, w in level_shapes], index_dtype)
    index = dict(dtype=index_dtype, device=device)
    batch_head = (torch.arange(0, bs * padded_keys * num_heads, padded_keys * num_heads,
                               **index).view(bs, 1, 1, 1)
                  + torch.arange(num_heads, **index).view(1, 1, num_heads, 1))
    first_row = batch_head + per_slot([start * num_heads for start in level_starts], index_dtype)
    right = torch.full_like(line_stride, num_heads)
    corner_offsets = torch.stack([torch.zeros_like(right), right, line_stride, line_stride + right])
    return _SlotConstants(map_size_xy, line_stride, first_row, corner_offsets)


def _sampling_corners(sampling_locations: Tensor, slots: _SlotConstants,
                      with_inside: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Where every sampling point reads the flattened padded value.

    Every tensor here keeps the locations' own layout, (x, y) interleaved per slot: elementwise
    work on it is contiguous (a de-interleaved (2, n, slots) view runs several times slower on CPU).

    Returns, with n = bs * queries * heads:
        rows: (n, 4, slots) rows of the corners y0x0, y0x1, y1x0, y1x1.
        frac_xy: (n, 2*slots) the point's fractional position (x, y) between its corners.
        inside_xy: (n, 2*slots) bool, False where the location was clamped (zero gradient
            there); None unless with_inside.
    """
    bs, num_queries, num_heads, num_levels, num_points, _ = sampling_locations.shape
    n, num_slots = bs * num_queries * num_heads, num_levels * num_points
    locations = sampling_locations.reshape(n, 2 * num_slots)
    # pixel coordinate loc * size - 0.5, in the padded map; beyond [-1, size] all corners are
    # zero, so clamping there keeps the result and makes every corner a row of the padded map
    shift = locations.new_tensor(_PAD_BEFORE - 0.5)
    padded_xy = torch.addcmul(shift, locations, slots.map_size_xy)  # (n, 2*slots)
    low, high = locations.new_tensor(_PAD_BEFORE - 1.0), slots.map_size_xy + _PAD_BEFORE
    inside_xy = (padded_xy >= low) & (padded_xy <= high) if with_inside else None
    padded_xy = padded_xy.clamp_(min=low, max=high)
    # the floor, as it is >= 0; a NaN coordinate (clamp keeps it) casts to the integer minimum,
    # which clamp_min_ makes row 0, a valid row (its point's NaN weight keeps the NaN visible)
    corner_xy = padded_xy.to(slots.line_stride.dtype).clamp_min_(0)  # (n, 2*slots)
    top_left = torch.mul(corner_xy[:, 1::2], slots.line_stride)  # (n, slots)
    top_left.add_(corner_xy[:, 0::2], alpha=num_heads)
    top_left.view(bs, num_queries, num_heads, num_slots).add_(slots.first_row)
    rows = top_left.new_empty(n, 4, num_slots)
    for corner, offset in enumerate(slots.corner_offsets):
        torch.add(top_left, offset, out=rows[:, corner])
    return rows, padded_xy.sub_(corner_xy), inside_xy


def _corner_weights(frac_xy: Tensor, attention_weights: Tensor) -> Tensor:
    """(n, 2*slots) fractions (x, y interleaved), (n, slots) attention -> (n, 4, slots) corner
    weights."""
    frac_x, frac_y = frac_xy[:, 0::2], frac_xy[:, 1::2]
    attention_y1 = attention_weights * frac_y  # (n, slots)
    attention_y0 = attention_weights - attention_y1  # (n, slots)
    frac_x0 = 1 - frac_x  # (n, slots)
    weights = frac_x.new_empty(frac_x.shape[0], 4, frac_x.shape[1])
    corner_factors = ((attention_y0, frac_x0), (attention_y0, frac_x), (attention_y1, frac_x0),
                      (attention_y1, frac_x))  # y0x0, y0x1, y1x0, y1x1
    for corner, (weight_y, weight_x) in enumerate(corner_factors):
        torch.mul(weight_y, weight_x, out=weights[:, corner])
    return weights


def _embedding_bag_sum(table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
    """output[n] = sum_s weights[n, s] * table[rows[n, s]]: (num_rows, dims) table, (n, 4, slots)
    rows and weights -> (n, dims)."""
    return F.embedding_bag(rows.flatten(1), table, mode='sum',
                           per_sample_weights=weights.flatten(1))


def _scatter_corner_sums(rows: Tensor, weights: Tensor, grad_output: Tensor,
                         padded_shape: torch.Size, level_shapes: LevelShapes) -> Tensor:
    """Transpose of ``_embedding_bag_sum``: grad_table[r] = sum of weights[n, c, s] *
    grad_output[n] over the (n, c, s) with rows[n, c, s] == r; (n, 4, slots) rows and weights,
    (n, dims) grad_output -> (bs * padded_keys * heads, dims) for a padded value of padded_shape.

    The points are sorted once by top-left row; one embedding_bag per corner sums the corner's
    weighted output gradients per top-left row, and the sums are added to the table shifted by
    the corner's offset from the top-left row, level by level (it depends on the level's width).
    """
    bs, padded_keys, num_heads, head_dims = padded_shape
    num_corners, num_slots = rows.shape[1:]
    top_left = rows[:, 0].reshape(-1)  # (n*slots,)
    order = torch.sort(top_left, stable=True)[1]  # (n*slots,) points by top-left row
    bag_of_point = order // num_slots  # (n*slots,) the output row each sorted point belongs to
    counts = torch.bincount(top_left, minlength=bs * padded_keys * num_heads)  # (rows,)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # (rows + 1,)
    point_weights = weights.transpose(1, 2).reshape(-1, num_corners)  # (n*slots, 4)
    sorted_weights = point_weights.index_select(0, order)  # (n*slots, 4)
    grad_table = grad_output.new_zeros(bs, padded_keys * num_heads, head_dims)
    for corner in range(num_corners):
        corner_sums = F.embedding_bag(bag_of_point, grad_output, offsets, mode='sum',
                                      per_sample_weights=sorted_weights[:, corner].contiguous(),
                                      include_last_offset=True)  # (rows, dims) at top-left rows
        corner_sums = corner_sums.view(grad_table.shape)
        for (first, end), offset in _level_row_offsets(level_shapes, num_heads, corner):
            grad_table[:, first + offset:end].add_(corner_sums[:, first:end - offset])
    return grad_table.view(-1, head_dims)


def _level_row_offsets(level_shapes: LevelShapes, num_heads: int,
                       corner: int) -> List[Tuple[Tuple[int, int], int]]:
    """Per level: its (first, end) row within one batch element of the padded value, and how many
    rows the corner (0..3 = y0x0, y0x1, y1x0, y1x1) lies after the top-left one."""
    pad = _PAD_BEFORE + _PAD_AFTER
    ranges, first = [], 0
    for h, w in level_shapes:
        end = first + (h + pad) * (w + pad) * num_heads
        ranges.append(((first, end), (corner // 2 * (w + pad) + corner % 2) * num_heads))
        first = end
    return ranges


def _corner_dot_products(rows: Tensor, grad_output: Tensor, table: Tensor) -> Tensor:
    """(n, 4, slots) rows, (n, dims) grad_output, (num_rows, dims) table -> (n, 4, slots) dot
    products <grad_output[n], table[rows[n, c, s]]>, a sampled dense-dense product on CPU."""
    if table.device.type != 'cpu':
        return _gathered_dot_products(rows, grad_output, table)
    num_bags, num_samples = rows.shape[0], rows.shape[1] * rows.shape[2]
    row_starts = torch.arange(0, num_bags * num_samples + 1, num_samples, dtype=rows.dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'Sparse CSR tensor support is in beta state')
        # beta=0 still reads the pattern's values (as 0 * value): they must be finite, zeros
        dots = torch.sparse_csr_tensor(row_starts, rows.view(-1),
                                       table.new_zeros(num_bags * num_samples),
                                       size=(num_bags, table.shape[0]), check_invariants=False)
        torch.sparse.sampled_addmm(dots, grad_output, table.t(), beta=0.0, out=dots)
    return dots.values().view(rows.shape)


def _gathered_dot_products(rows: Tensor, grad_output: Tensor, table: Tensor) -> Tensor:
    """``_corner_dot_products`` by gathering the rows, chunk by chunk, in float32 or better."""
    dot_dtype = torch.promote_types(table.dtype, torch.float32)
    chunks = []
    for rows_chunk, grad_chunk in zip(rows.split(_DOT_CHUNK), grad_output.split(_DOT_CHUNK)):
        corners = table[rows_chunk.long()].to(dot_dtype)  # (chunk, 4, slots, dims)
        chunks.append((corners * grad_chunk.to(dot_dtype)[:, None, None]).sum(-1))
    return torch.cat(chunks)


def _point_gradients(dots: Tensor, frac_xy: Tensor, inside_xy: Optional[Tensor],
                     attention_weights: Tensor,
                     map_size_xy: Tensor) -> Tuple[Optional[Tensor], Tensor]:
    """Gradients of the locations (n, slots, 2), None without inside_xy, and of the attention
    weights (n, slots) from the dot products (n, 4, slots) of the output gradient with the
    corners y0x0, y0x1, y1x0, y1x1 (frac_xy, inside_xy: (n, 2*slots), map_size_xy: (2*slots,),
    x and y interleaved)."""
    frac_x, frac_y = frac_xy[:, 0::2], frac_xy[:, 1::2]
    top_left, top_right, bottom_left, bottom_right = dots.unbind(1)  # (n, slots) each
    top_dx, bottom_dx = top_right - top_left, bottom_right - bottom_left  # along each line
    top = torch.addcmul(top_left, frac_x, top_dx)  # x-interpolated top line
    bottom_minus_top = torch.addcmul(bottom_left, frac_x, bottom_dx).sub_(top)
    grad_attention = torch.addcmul(top, frac_y, bottom_minus_top)  # <grad_output, sample>
    if inside_xy is None:
        return None, grad_attention
    grad_x = torch.addcmul(top_dx, frac_y, bottom_dx.sub_(top_dx)).mul_(attention_weights)
    grad_y = bottom_minus_top.mul_(attention_weights)
    grad_locations = torch.stack([grad_x, grad_y], dim=-1)  # (n, slots, 2)
    # d(pixel)/d(location) = size, 0 where clamped
    grad_locations.view(inside_xy.shape).mul_(inside_xy * map_size_xy)
    return grad_locations, grad_attention
