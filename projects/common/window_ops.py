"""The speed machinery of window attention, shared by Swin (:mod:`projects.swin`) and MOA
(:mod:`projects.moa`): what makes the blocks fast on CPU, kept apart from the architecture.

- index plans (:func:`window_layout`, cached per feature size and shift): where the (shifted,
  padded) windows of a block lie in an unpadded (B, H*W, C) raster token map, and the shift mask;
- reordering (:func:`gather_windows` / :func:`scatter_windows`): raster order <-> padded window
  order with one gather each way (padding slots zeroed), with an autograd Function whose backward
  is a gather too, instead of padding, rolling, partitioning, reversing and cropping;
- chunking (:func:`chunk_rows`, :func:`token_chunks`): token-wise layers run in chunks of tokens;
- products: without autograd on CPU, linear layers run in oneDNN (:func:`linear`) and window
  attention as batched products per head (:func:`window_attention`); otherwise
  ``F.linear`` and ``scaled_dot_product_attention``.

While the model is traced for ONNX (:func:`projects.common.export.is_exporting`), each of these
takes its plain formulation: ``F.linear``, the attention products written out, the index plan
computed in the graph and plain gathers (one per chunk, :func:`gather_window_chunks`); the chunks
stay (smaller ones, :data:`EXPORT_CHUNK_ROWS`).
"""
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .export import cache_unless_exporting, is_exporting
from .layers import attention

SHIFT_MASK_VALUE = -100.0  # what the reference adds between tokens of different shifted regions
# Token-wise layers (attention over windows, MLP) run in chunks of about this many tokens: their
# wide intermediates (q/k/v, the 4x MLP hidden) then stay cache-resident and are recycled by the
# allocator instead of being faulted in afresh per call. Tokens are independent, so the chunks
# give the same result as one call.
CHUNK_ROWS = 8192
# While exporting, chunks of this many tokens: ONNX Runtime does best with smaller ones (its
# memory plan holds every intermediate of the graph; docs/deployment.md has the measurements).
EXPORT_CHUNK_ROWS = 4096
# oneDNN's fused linear (an op PyTorch registers for its compiler), used by :func:`linear`
ONEDNN_LINEAR = (torch.backends.mkldnn.is_available()
                 and hasattr(torch.ops.mkldnn, '_linear_pointwise'))


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) map, H and W multiples of the window -> (B * nW, ws * ws, C) windows."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """(B * nW, ws * ws, C) windows -> (B, H, W, C) map; inverse of :func:`window_partition`."""
    C = windows.shape[-1]
    x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, C)


def window_token_grid(padded_hw: Tuple[int, int], window_size: int, shift: int) -> Tensor:
    """(Hp * Wp,) padded-map position of each token, in (shifted) window order."""
    Hp, Wp = padded_hw
    grid = torch.arange(Hp * Wp).view(1, Hp, Wp, 1)
    grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
    return window_partition(grid, window_size).flatten()


def grid_window_token(padded_hw: Tuple[int, int], window_size: int, shift: int) -> Tensor:
    """(Hp * Wp,) window-order token at each padded-map position; inverse of
    :func:`window_token_grid`."""
    Hp, Wp = padded_hw
    tokens = torch.arange(Hp * Wp).view(-1, window_size * window_size, 1)
    grid = window_reverse(tokens, window_size, Hp, Wp)  # (1, Hp, Wp, 1)
    return torch.roll(grid, shifts=(shift, shift), dims=(1, 2)).flatten()


def shift_window_mask(padded_hw: Tuple[int, int], window_size: int, shift: int) -> Tensor:
    """(nW, 1, N, N) additive mask keeping attention inside the regions a cyclic shift glued
    together: the last window row/column holds pieces of up to three bands of the unshifted map."""
    Hp, Wp = padded_hw
    rows = torch.arange(Hp)
    cols = torch.arange(Wp)
    row_band = (rows >= Hp - window_size).long() + (rows >= Hp - shift).long()  # (Hp,) 0, 1, 2
    col_band = (cols >= Wp - window_size).long() + (cols >= Wp - shift).long()  # (Wp,)
    region = (row_band[:, None] * 3 + col_band[None, :]).view(1, Hp, Wp, 1)
    region = window_partition(region, window_size).squeeze(-1)  # (nW, N)
    different = region[:, :, None] != region[:, None, :]  # (nW, N, N)
    return (different.float() * SHIFT_MASK_VALUE).unsqueeze(1)


class WindowLayout(NamedTuple):
    """Where the windows of one block lie in an H x W raster token map."""
    window_tokens: Tensor  # (Hp*Wp,) raster token in each window slot; padding slots: token 0
    inside: Tensor  # (Hp*Wp,) bool, False at the window slots in the padding
    pad_slots: Optional[Tensor]  # (P,) window slots in the padding; None without padding or
    # while exporting (a data-dependent size)
    raster_slots: Tensor  # (H*W,) window slot of each raster token
    shift_mask: Optional[Tensor]  # (nW, 1, N, N) additive mask; None for unshifted windows


@cache_unless_exporting(maxsize=32)  # 8 entries per input size (4 stages x 2 shifts)
def window_layout(hw: Tuple[int, int], window_size: int, shift: int, device: torch.device,
                  dtype: torch.dtype) -> WindowLayout:
    """The (cached) index plan of (shifted) windows over an H x W map padded to whole windows."""
    H, W = hw
    padded_hw = (math.ceil(H / window_size) * window_size, math.ceil(W / window_size) * window_size)
    slot_grid = window_token_grid(padded_hw, window_size, shift)  # (Hp*Wp,)
    rows, cols = slot_grid // padded_hw[1], slot_grid % padded_hw[1]
    inside = (rows < H) & (cols < W)  # (Hp*Wp,)
    pad_slots = None if is_exporting() else torch.nonzero(~inside).flatten()
    grid_slots = grid_window_token(padded_hw, window_size, shift).view(padded_hw)
    return WindowLayout(
        window_tokens=torch.where(inside, rows * W + cols, 0).to(device),
        inside=inside.to(device),
        pad_slots=pad_slots.to(device) if pad_slots is not None and len(pad_slots) else None,
        raster_slots=grid_slots[:H, :W].flatten().to(device),
        shift_mask=(shift_window_mask(padded_hw, window_size, shift).to(device, dtype)
                    if shift else None))


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, gelu: bool = False) -> Tensor:
    """``F.linear`` of (..., C_in) -> (..., C_out), followed by the exact (erf) GELU when ``gelu``.

    Without autograd, on CPU in float32, the product runs in oneDNN with bias and GELU fused into
    it (faster on CPU than the MKL sgemm behind ``F.linear``), to float32 rounding the same result.
    oneDNN's kernel has no backward, so training takes ``F.linear``, and no ONNX function, so
    export does too.
    """
    if (ONEDNN_LINEAR and x.device.type == 'cpu' and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not is_exporting()):
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias,
                                                 'gelu' if gelu else 'none', [], 'none')
        return out.view(*x.shape[:-1], -1)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def window_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: Optional[float] = None,
                     dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T * scale + mask) v in each window: q, k, v (nW, heads, N, d), mask
    (nW or 1, heads, N, N) -> (nW, heads, N, d); ``scale`` None: 1 / sqrt(d).

    :func:`projects.common.layers.attention` (SDPA; written out while exporting) in general.
    Without autograd on CPU, three batched calls per head instead (scores with bias, softmax,
    values), on strided views of q, k and v, to float32 rounding the same: SDPA's CPU kernel
    (flash-style blocks) spends more on bookkeeping than on the products of 49-token windows, so
    the per-head loop is the faster path for window-sized attention.
    """
    if (q.device.type != 'cpu' or torch.is_grad_enabled() or dropout_p > 0
            or is_exporting()):
        return attention(q, k, v, mask, scale, dropout_p)
    nW, heads, N, d = q.shape
    scale = d**-0.5 if scale is None else scale
    out = q.new_empty(nW, N, heads, d)
    for head in range(heads):
        scores = torch.baddbmm(mask[:, head], q[:, head], k[:, head].transpose(1, 2),
                               alpha=scale)  # (nW, N, N)
        out[:, :, head] = torch.bmm(scores.softmax(-1), v[:, head])
    return out.transpose(1, 2)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """(B, L, C) tokens -> (B, len(index), C) tokens ``x[:, index]``.

    Gathers rows of the (B * L, C) matrix, a memcpy per token, which is faster than
    ``index_select`` along dim 1 of the 3-D tensor.
    """
    B, L, C = x.shape
    rows = index + L * torch.arange(B, device=index.device)[:, None]  # (B, len(index))
    return x.reshape(B * L, C).index_select(0, rows.flatten()).view(B, -1, C)


def _gather_and_zero(x: Tensor, index: Tensor, zero_slots: Optional[Tensor]) -> Tensor:
    """``gather_tokens(x, index)`` with the tokens at ``zero_slots`` (if any) set to zero."""
    out = gather_tokens(x, index)
    return out if zero_slots is None else out.index_fill_(1, zero_slots, 0.0)


class _WindowReorder(torch.autograd.Function):
    """Raster order <-> window order of one layout. Each direction's gradient is the other
    direction applied to the output gradient, so the backward is a gather as well, not the
    scatter-add (``index_add``) that autograd would run for ``index_select``."""

    @staticmethod
    def forward(ctx, x: Tensor, layout: WindowLayout, to_windows: bool) -> Tensor:
        ctx.layout, ctx.to_windows = layout, to_windows
        if to_windows:  # (B, H*W, C) -> (B, Hp*Wp, C), zero in the padding
            return _gather_and_zero(x, layout.window_tokens, layout.pad_slots)
        return gather_tokens(x, layout.raster_slots)  # (B, Hp*Wp, C) -> (B, H*W, C)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None, None]:
        layout = ctx.layout
        if ctx.to_windows:
            return gather_tokens(grad, layout.raster_slots), None, None
        return _gather_and_zero(grad, layout.window_tokens, layout.pad_slots), None, None


def gather_windows(x: Tensor, layout: WindowLayout) -> Tensor:
    """(B, H*W, C) raster tokens -> (B, Hp*Wp, C) tokens in window order, zero in the padding."""
    if is_exporting():  # autograd Functions do not export
        return gather_window_chunks(x, layout, layout.inside.shape[0])[0]
    return _WindowReorder.apply(x, layout, True)


def gather_window_chunks(x: Tensor, layout: WindowLayout, rows: int) -> List[Tensor]:
    """(B, H*W, C) raster tokens -> :func:`gather_windows` in chunks of ``rows`` window slots
    ((B, rows, C) each, the last one shorter).

    Eagerly, views of one gather. While exporting, one gather per chunk from the tokens with a
    zero token appended, which the padding slots gather: no Slice of the gathered windows and no
    Where over them (ONNX Runtime's broadcasting Where is a slow pass over every slot).
    """
    if not is_exporting():
        return token_chunks(gather_windows(x, layout), rows)
    B, L, C = x.shape
    with_zero = torch.cat((x, x.new_zeros(B, 1, C)), dim=1)  # (B, L + 1, C)
    slot_tokens = torch.where(layout.inside, layout.window_tokens, L)  # (Hp*Wp,)
    return [gather_tokens(with_zero, index) for index in token_chunks(slot_tokens, rows, dim=0)]


def scatter_windows(windows: Tensor, layout: WindowLayout) -> Tensor:
    """(B, Hp*Wp, C) tokens in window order -> (B, H*W, C) raster tokens, the padding dropped."""
    if is_exporting():
        return gather_tokens(windows, layout.raster_slots)
    return _WindowReorder.apply(windows, layout, False)


def chunk_rows() -> int:
    """Tokens per chunk of the token-wise layers: :data:`CHUNK_ROWS`, or
    :data:`EXPORT_CHUNK_ROWS` while exporting."""
    return EXPORT_CHUNK_ROWS if is_exporting() else CHUNK_ROWS


def token_chunks(x: Tensor, rows: int, dim: int = 1) -> List[Tensor]:
    """Chunks of ``rows`` along ``dim`` (the last one shorter), e.g. (B, L, C) tokens along L.
    Slices with fixed bounds: exported, they are Slice ops (ONNX Runtime rejects an uneven
    Split)."""
    length = x.shape[dim]
    return [x.narrow(dim, start, min(rows, length - start)) for start in range(0, length, rows)]


def cat_tokens(parts: List[Tensor]) -> Tensor:
    """(B, L_i, C) chunks -> (B, sum L_i, C); a single chunk is returned as it is."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
