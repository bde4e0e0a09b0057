"""Small layers shared by the backbone families."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .export import is_exporting


def tokens_to_map(x: Tensor, hw: Tuple[int, int]) -> Tensor:
    """(B, h*w, C) raster tokens -> (B, C, h, w) map, a channels-last view (no copy)."""
    return x.unflatten(1, hw).permute(0, 3, 1, 2)


def map_to_tokens(x: Tensor) -> Tensor:
    """(B, C, h, w) map -> (B, h*w, C) raster tokens (a view of a channels-last map)."""
    return x.flatten(2).transpose(1, 2)


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop a residual branch (B, ...) per sample with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    kept = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
    return x * kept / keep


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
              scale: Optional[float] = None, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T * scale + mask) v: q (..., N, d), k and v (..., M, d), mask broadcasting to
    (..., N, M) -> (..., N, d); ``scale`` None: 1 / sqrt(d).

    ``scaled_dot_product_attention``, except while exporting: there the two products and the
    softmax are written out (the exporter's decomposition of SDPA gives strides that break the
    reshape after it).
    """
    if is_exporting():
        scale = q.shape[-1]**-0.5 if scale is None else scale
        scores = torch.matmul(q * scale, k.transpose(-2, -1))  # (..., N, M)
        return (scores if mask is None else scores + mask).softmax(-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                          dropout_p=dropout_p)


def softmax_last_dim(x: Tensor) -> Tensor:
    """``x.softmax(-1)``. On CPU, for float32 / float64 and a last dimension under 16 (the
    deformable attentions' 4 or 8 weights per head), computed as exp(x - max) / sum by
    whole-tensor ops: PyTorch's CPU kernel goes row by row, which is 2-4x slower for rows that
    short (and faster from 16 on)."""
    if (x.device.type != 'cpu' or x.shape[-1] >= 16 or is_exporting()
            or x.dtype not in (torch.float32, torch.float64)):
        return x.softmax(-1)
    return _ShortRowSoftmax.apply(x)


class _ShortRowSoftmax(torch.autograd.Function):
    """softmax over the last dimension, forward and backward written with whole-tensor ops."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = (x - x.amax(-1, keepdim=True)).exp_()
        y = y.div_(y.sum(-1, keepdim=True))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor) -> Tensor:
        y, = ctx.saved_tensors
        grad_x = grad_y * y  # d softmax: y * (g - <g, y>)
        return grad_x.sub_(y * grad_x.sum(-1, keepdim=True))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (zero each element with probability p, scale the rest by 1 / (1 - p)) with
    its mask drawn by ``rand_like`` instead of ``bernoulli_``: on CPU, PyTorch's dropout draws
    element by element, ``rand_like`` in vectorised blocks. Same distribution and the same saved
    float mask as PyTorch's; another random stream."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        mask = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # 0 or 1 / (1 - p)
        return x.mul_(mask) if self.inplace else x * mask


def use_fast_dropout_(module: nn.Module) -> nn.Module:
    """Replaces every ``nn.Dropout`` in ``module`` (mmcv's FFN, attention layers) by
    :class:`Dropout` with the same probability, in place; dropout holds no weights, so state
    dicts are unchanged."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, Dropout(child.p, child.inplace))
        else:
            use_fast_dropout_(child)
    return module
