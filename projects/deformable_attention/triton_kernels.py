"""CUDA kernels (Triton) of the multi-scale deformable attention op in ``ops.py``.

Same semantics as ``ops.multi_scale_deformable_attention``; used by it for float32 / float16 /
bfloat16 values on CUDA when Triton is importable. One program handles ``BLOCK_ROWS`` rows
n = (batch, query, head) and all of a head's dims; it walks the levels and points, reads the four
bilinear corners of each sampling point straight from ``value`` (a corner outside its map reads
zero) and accumulates in float32:

* forward: ``output[n] = sum over (level, point, corner) of attention * bilinear * value[corner]``.
* backward: the value gradient is scattered with atomic adds into a float32 buffer (many queries
  read the same pixel); the attention-weight and location gradients come from the dot products
  <grad_output[n], value[corner]>, as in ``ops._point_gradients``.

This module imports Triton at import time; ``ops`` imports it only for CUDA tensors.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ['TritonDeformableAttention']

# Rows per program and warps, from a sweep on an H100 at the Deformable DETR encoder shape
# (32 dims per head): the backward kernel, bound by its atomic adds, wants more warps.
_BLOCK_ROWS = 32
_FORWARD_WARPS, _BACKWARD_WARPS = 4, 8


@triton.jit
def _corner(value_ptr, row_base, pixel_y, pixel_x, height, width, level_start, num_heads,
            head_dims, dims, row_mask, dims_mask):
    """(BLOCK_ROWS, BLOCK_DIMS) float32 value rows of pixel (y, x) of the level, zero where the
    pixel lies outside the map; and its (BLOCK_ROWS,) row offsets and mask for writing back."""
    inside = row_mask & (pixel_x >= 0) & (pixel_x < width) & (pixel_y >= 0) & (pixel_y < height)
    key = level_start + pixel_y.to(tl.int64) * width + pixel_x
    offsets = (row_base + key * num_heads) * head_dims  # (BLOCK_ROWS,)
    mask = inside[:, None] & dims_mask[None, :]
    rows = tl.load(value_ptr + offsets[:, None] + dims[None, :], mask=mask, other=0.0)
    return rows.to(tl.float32), offsets, mask


@triton.jit
def _sampling_point(locations_ptr, attention_ptr, shapes_ptr, starts_ptr, rows, row_mask,
                    slot_index, num_levels: tl.constexpr, num_points: tl.constexpr):
    """Sampling point ``slot_index`` = level * num_points + point of every row: its flat index
    into attention_weights, attention weight, top-left corner, fractions, level geometry."""
    level = slot_index // num_points
    slot = rows * (num_levels * num_points) + slot_index  # (BLOCK_ROWS,)
    x = tl.load(locations_ptr + slot * 2, mask=row_mask, other=0.0).to(tl.float32)
    y = tl.load(locations_ptr + slot * 2 + 1, mask=row_mask, other=0.0).to(tl.float32)
    attention = tl.load(attention_ptr + slot, mask=row_mask, other=0.0).to(tl.float32)
    height = tl.load(shapes_ptr + 2 * level)
    width = tl.load(shapes_ptr + 2 * level + 1)
    level_start = tl.load(starts_ptr + level)
    # pixel coordinate loc * size - 0.5; beyond [-1, size] every corner is outside (zero), so
    # clamping there changes nothing and keeps the integer conversion in range
    pixel_x = tl.minimum(tl.maximum(x * width - 0.5, -2.0), width + 1.0)
    pixel_y = tl.minimum(tl.maximum(y * height - 0.5, -2.0), height + 1.0)
    x0, y0 = tl.floor(pixel_x), tl.floor(pixel_y)
    return (slot, attention, x0.to(tl.int32), y0.to(tl.int32), pixel_x - x0, pixel_y - y0,
            height, width, level_start)


@triton.jit
def _program_rows(num_rows, num_queries, num_heads, num_keys, head_dims,
                  BLOCK_ROWS: tl.constexpr, BLOCK_DIMS: tl.constexpr):
    """This program's rows n = (batch, query, head) and their masks, each row's value row of
    (batch, key 0, head) (a key adds key * num_heads), and the offsets and mask of the
    (BLOCK_ROWS, BLOCK_DIMS) tile of output (or grad_output) rows."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = rows < num_rows
    dims = tl.arange(0, BLOCK_DIMS)
    dims_mask = dims < head_dims
    row_base = (rows // (num_queries * num_heads)) * num_keys * num_heads + rows % num_heads
    tile_offsets = rows[:, None] * head_dims + dims[None, :]
    tile_mask = row_mask[:, None] & dims_mask[None, :]
    return rows, row_mask, dims, dims_mask, row_base, tile_offsets, tile_mask


@triton.jit
def _forward_kernel(value_ptr, shapes_ptr, starts_ptr, locations_ptr, attention_ptr, output_ptr,
                    num_rows, num_queries, num_heads, num_keys, head_dims,
                    num_levels: tl.constexpr, num_points: tl.constexpr,
                    BLOCK_ROWS: tl.constexpr, BLOCK_DIMS: tl.constexpr):
    rows, row_mask, dims, dims_mask, row_base, tile_offsets, tile_mask = _program_rows(
        num_rows, num_queries, num_heads, num_keys, head_dims, BLOCK_ROWS, BLOCK_DIMS)
    output = tl.zeros((BLOCK_ROWS, BLOCK_DIMS), dtype=tl.float32)
    for slot_index in range(num_levels * num_points):  # a loop, not unrolled: faster here
        _, attention, x0, y0, frac_x, frac_y, height, width, level_start = _sampling_point(
            locations_ptr, attention_ptr, shapes_ptr, starts_ptr, rows, row_mask, slot_index,
            num_levels, num_points)
        weight_y0, weight_y1 = attention * (1 - frac_y), attention * frac_y
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                corner, _, _ = _corner(value_ptr, row_base, y0 + dy, x0 + dx, height, width,
                                       level_start, num_heads, head_dims, dims, row_mask,
                                       dims_mask)
                weight = (weight_y1 if dy else weight_y0) * (frac_x if dx else 1 - frac_x)
                output += weight[:, None] * corner
    tl.store(output_ptr + tile_offsets, output.to(output_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def _backward_kernel(value_ptr, shapes_ptr, starts_ptr, locations_ptr, attention_ptr,
                     grad_output_ptr, grad_value_ptr, grad_locations_ptr, grad_attention_ptr,
                     num_rows, num_queries, num_heads, num_keys, head_dims,
                     num_levels: tl.constexpr, num_points: tl.constexpr,
                     BLOCK_ROWS: tl.constexpr, BLOCK_DIMS: tl.constexpr):
    rows, row_mask, dims, dims_mask, row_base, tile_offsets, tile_mask = _program_rows(
        num_rows, num_queries, num_heads, num_keys, head_dims, BLOCK_ROWS, BLOCK_DIMS)
    grad_output = tl.load(grad_output_ptr + tile_offsets, mask=tile_mask, other=0.0)
    grad_output = grad_output.to(tl.float32)  # (BLOCK_ROWS, BLOCK_DIMS)
    for slot_index in range(num_levels * num_points):
        slot, attention, x0, y0, frac_x, frac_y, height, width, level_start = _sampling_point(
            locations_ptr, attention_ptr, shapes_ptr, starts_ptr, rows, row_mask, slot_index,
            num_levels, num_points)
        grad_bilinear = tl.zeros_like(frac_x)  # <grad_output, bilinear sample>
        grad_frac_x = tl.zeros_like(frac_x)
        grad_frac_y = tl.zeros_like(frac_x)
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                corner, offsets, mask = _corner(value_ptr, row_base, y0 + dy, x0 + dx, height,
                                                width, level_start, num_heads, head_dims, dims,
                                                row_mask, dims_mask)
                weight_x = frac_x if dx else 1 - frac_x
                weight_y = frac_y if dy else 1 - frac_y
                tl.atomic_add(grad_value_ptr + offsets[:, None] + dims[None, :],
                              (attention * weight_x * weight_y)[:, None] * grad_output, mask=mask,
                              sem='relaxed')  # only the sums matter, not their order
                dot = tl.sum(grad_output * corner, axis=1)  # (BLOCK_ROWS,)
                grad_bilinear += weight_x * weight_y * dot
                grad_frac_x += (weight_y if dx else -weight_y) * dot
                grad_frac_y += (weight_x if dy else -weight_x) * dot
        tl.store(grad_attention_ptr + slot, grad_bilinear, mask=row_mask)
        # d pixel / d location = the map's size
        tl.store(grad_locations_ptr + slot * 2, attention * grad_frac_x * width, mask=row_mask)
        tl.store(grad_locations_ptr + slot * 2 + 1, attention * grad_frac_y * height,
                 mask=row_mask)


def _launch_arguments(value: Tensor, sampling_locations: Tensor) -> Tuple[tuple, dict]:
    """(grid, shared keyword arguments) for both kernels."""
    bs, num_keys, num_heads, head_dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    num_rows = bs * num_queries * num_heads
    grid = (triton.cdiv(num_rows, _BLOCK_ROWS), )
    return grid, dict(num_rows=num_rows, num_queries=num_queries, num_heads=num_heads,
                      num_keys=num_keys, head_dims=head_dims, num_levels=num_levels,
                      num_points=num_points, BLOCK_ROWS=_BLOCK_ROWS,
                      BLOCK_DIMS=triton.next_power_of_2(head_dims))


class TritonDeformableAttention(torch.autograd.Function):
    """value (bs, num_keys, heads, dims), spatial_shapes (levels, 2) int64, level_start_index
    (levels,) int64, sampling_locations (bs, queries, heads, levels, points, 2) float32,
    attention_weights (bs, queries, heads, levels, points) float32 -> (bs*queries*heads, dims) in
    value's dtype. All on one CUDA device."""

    @staticmethod
    def forward(ctx, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        value, sampling_locations, attention_weights = (
            value.contiguous(), sampling_locations.contiguous(), attention_weights.contiguous())
        spatial_shapes = spatial_shapes.to(value.device, torch.long)
        level_start_index = level_start_index.to(value.device, torch.long)
        grid, sizes = _launch_arguments(value, sampling_locations)
        output = value.new_empty(sizes['num_rows'], sizes['head_dims'])
        _forward_kernel[grid](value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, output, num_warps=_FORWARD_WARPS, **sizes)
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights)
        return output

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tuple[Tensor, None, None, Tensor, Tensor]:
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = \
            ctx.saved_tensors
        grid, sizes = _launch_arguments(value, sampling_locations)
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_locations = torch.empty_like(sampling_locations)
        grad_attention = torch.empty_like(attention_weights)
        _backward_kernel[grid](value, spatial_shapes, level_start_index, sampling_locations,
                               attention_weights, grad_output.contiguous(), grad_value,
                               grad_locations, grad_attention, num_warps=_BACKWARD_WARPS,
                               **sizes)
        return grad_value.to(value.dtype), None, None, grad_locations, grad_attention
