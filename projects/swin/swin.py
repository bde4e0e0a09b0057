"""Swin Transformer v1 and v2 backbones for MMDetection 3.x.

v1: "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (Liu et al., 2021),
window attention with a learned relative-position bias table.
v2: "Swin Transformer V2: Scaling Up Capacity and Resolution" (Liu et al., 2022), scaled cosine
attention, a continuous position bias from an MLP over log-spaced relative coordinates and
res-post-norm.

Numerics follow the detection variant of Swin (official detection code, SwinTransformer/Swin-
Transformer-Object-Detection, and mmdet's ``SwinTransformer``; the classification code and weights:
microsoft/Swin-Transformer): every block pads its input with zeros to whole windows (padded tokens
take part in attention, unmasked), shifts windows by half a window with the usual -100 mask, and
crops.

Layout: the residual stream stays an unpadded raster token map (B, H*W, C); nothing per token
(norms, MLP, residual adds) runs on padding. A block does not pad, roll, partition, reverse, roll
back and crop: its attention gathers the tokens straight into padded (shifted) window order with
one index (padding slots zeroed: the reference's zero padding), and gathers the attended tokens
back to raster order with another. The indices and the shift mask depend only on the feature size
and the shift and are cached. Attention runs with the position bias and the shift mask folded into
one additive mask; attention and MLP run in chunks of tokens. That machinery (index plans,
gathers, chunking, oneDNN products, the CPU attention loop) and its plain formulation while the
model is traced for ONNX live in :mod:`projects.common.window_ops`, shared with MOA.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..common.backbone import StagedBackbone, check_stage_indices
from ..common.export import is_exporting
from ..common.layers import drop_path, map_to_tokens, tokens_to_map
from ..common.window_ops import (WindowLayout, cat_tokens, chunk_rows, gather_window_chunks, linear,
                                 scatter_windows, token_chunks, window_attention, window_layout)
from .convert import checkpoint_layout as swin_checkpoint_layout
from .convert import convert_swin_checkpoint

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # v2 clamps the learned attention temperature at 100
CPB_HIDDEN = 512  # hidden width of the v2 continuous position bias MLP
SWIN_T_DEPTHS = (2, 2, 6, 2)


def relative_position_index(window_size: int) -> Tensor:
    """(N, N) row of the (2ws-1)^2 relative-offset table for each query/key pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                        indexing='ij')).flatten(1)  # (2, N)
    offsets = coords[:, :, None] - coords[:, None, :] + window_size - 1  # (2, N, N) in [0, 2ws-2]
    return offsets[0] * (2 * window_size - 1) + offsets[1]


def log_spaced_relative_coords(window_size: int, pretrained_window_size: int) -> Tensor:
    """((2ws-1)^2, 2) relative (dy, dx) offsets, scaled to +-8 and log-spaced (Swin v2).

    Offsets are normalised by the pre-training window when given (> 0), so a bias MLP trained on
    one window extrapolates smoothly to a larger one. A window of 1 has only the offset 0.
    """
    reference = pretrained_window_size if pretrained_window_size > 0 else window_size
    span = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
    coords = torch.stack(torch.meshgrid(span, span, indexing='ij'), dim=-1)  # (2ws-1, 2ws-1, 2)
    coords = coords * (8.0 / max(reference - 1, 1))
    coords = torch.sign(coords) * torch.log2(coords.abs() + 1.0) / math.log2(8)
    return coords.view(-1, 2)


def attention_mask(position_bias: Tensor, shift_mask: Optional[Tensor], batch_size: int) -> Tensor:
    """(1, heads, N, N) bias + (nW, 1, N, N) shift mask -> one additive mask for B * nW windows."""
    if shift_mask is None:
        return position_bias  # broadcast over windows
    mask = position_bias + shift_mask  # (nW, heads, N, N)
    return mask.repeat(batch_size, 1, 1, 1) if batch_size > 1 else mask


class Mlp(nn.Module):
    """Per-token feed-forward: Linear, GELU, Linear; run in chunks of :func:`chunk_rows` tokens."""

    def __init__(self, embed_dims: int, hidden_dims: int, drop_rate: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop_rate)

    def feed_forward(self, x: Tensor) -> Tensor:
        """(B, L, C) -> (B, L, C)."""
        hidden = self.drop(linear(x, self.fc1.weight, self.fc1.bias, gelu=True))  # (B, L, hidden)
        return self.drop(linear(hidden, self.fc2.weight, self.fc2.bias))

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, C) tokens -> (B, L, C)."""
        parts = token_chunks(x, max(1, chunk_rows() // x.shape[0]))
        return cat_tokens([self.feed_forward(part) for part in parts])


class WindowAttentionBase(nn.Module):
    """Self-attention inside (shifted) windows of a raster token map; v1 and v2 differ in how
    queries meet keys and in the position bias."""

    logit_scale_factor: Optional[float] = None  # scale of q.k in attention; None: 1/sqrt(d)

    def __init__(self, embed_dims: int, num_heads: int, window_size: int,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.window_area = window_size * window_size
        self.attn_drop_rate = attn_drop_rate
        self.register_buffer('relative_position_index', relative_position_index(window_size),
                             persistent=False)  # (N, N)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def project_heads(self, windows: Tensor, weight: Tensor,
                      bias: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """(B, L, C) window-ordered tokens, (3C, C) qkv projection -> q, k, v (B * nW, heads, N, d).

        One product, split into views; while exporting, three products (ONNX Runtime would copy
        the strided q, k and v out of one before transposing them)."""
        B, L, C = windows.shape
        if is_exporting():  # fixed slices of the weights, which the exporter folds (not a Split)
            biases = (None, ) * 3 if bias is None else token_chunks(bias, C, dim=0)
            return tuple(
                linear(windows, w, b).view(-1, self.window_area, self.num_heads,
                                           C // self.num_heads).transpose(1, 2)
                for w, b in zip(token_chunks(weight, C, dim=0), biases))
        qkv = linear(windows, weight, bias).view(B * L // self.window_area, self.window_area, 3,
                                                 self.num_heads, C // self.num_heads)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def attend(self, windows: Tensor, mask: Tensor) -> Tensor:
        """(B, n*N, C) tokens of n windows -> (B, n*N, C) attended and projected."""
        q, k, v = self.queries_keys_values(windows)  # (B * n, heads, N, d) each
        dropout_p = self.attn_drop_rate if self.training else 0.0
        out = window_attention(q, k, v, mask, self.logit_scale_factor, dropout_p)  # like q
        return linear(out.transpose(1, 2).reshape(windows.shape), self.proj.weight, self.proj.bias)

    def forward(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C) attended within the layout's windows, in
        chunks of about :func:`chunk_rows` tokens."""
        per_chunk = max(1, chunk_rows() // (x.shape[0] * self.window_area))  # windows
        parts = gather_window_chunks(x, layout, per_chunk * self.window_area)  # (B, n*N, C) each
        if layout.shift_mask is None:
            shift_masks = [None] * len(parts)
        else:  # the masks of each chunk's windows
            shift_masks = token_chunks(layout.shift_mask, per_chunk, dim=0)
        bias = self.position_bias()  # (1, heads, N, N)
        out = cat_tokens([self.attend(part, attention_mask(bias, shift_mask, x.shape[0]))
                          for part, shift_mask in zip(parts, shift_masks)])  # (B, Hp*Wp, C)
        return self.proj_drop(scatter_windows(out, layout))


class WindowAttention(WindowAttentionBase):
    """Multi-head self-attention in windows with a relative position bias table (v1)."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0):
        super().__init__(embed_dims, num_heads, window_size, attn_drop_rate, proj_drop_rate)
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * window_size - 1)**2, num_heads))  # ((2ws-1)^2, heads)
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> Tensor:
        """(1, heads, N, N) additive bias of each query/key pair."""
        return self.relative_position_bias_table.t()[:, self.relative_position_index].unsqueeze(0)

    def queries_keys_values(self, windows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(B, Hp*Wp, C) window-ordered tokens -> q, k, v (B * nW, heads, N, d)."""
        return self.project_heads(windows, self.qkv.weight, self.qkv.bias)


class WindowAttentionV2(WindowAttentionBase):
    """Scaled cosine attention in windows with a continuous position bias (v2): the logits are
    cos(q, k) times a learned per-head temperature."""

    logit_scale_factor = 1.0  # the temperature is folded into the normalised queries

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 pretrained_window_size: int = 0):
        super().__init__(embed_dims, num_heads, window_size, attn_drop_rate, proj_drop_rate)
        self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1))  # (heads, 1, 1) log temp.
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, CPB_HIDDEN), nn.ReLU(inplace=True),
            nn.Linear(CPB_HIDDEN, num_heads, bias=False))
        self.register_buffer('relative_coords_table',
                             log_spaced_relative_coords(window_size, pretrained_window_size),
                             persistent=False)  # ((2ws-1)^2, 2)
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=False)
        self.q_bias = nn.Parameter(torch.empty(embed_dims)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.empty(embed_dims)) if qkv_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.logit_scale, math.log(10.0))
        if self.q_bias is not None:
            nn.init.zeros_(self.q_bias)
            nn.init.zeros_(self.v_bias)

    def position_bias(self) -> Tensor:
        """(1, heads, N, N) bias 16 * sigmoid(MLP(log-spaced offset)) of each query/key pair."""
        table = 16 * torch.sigmoid(self.cpb_mlp(self.relative_coords_table))  # ((2ws-1)^2, heads)
        return table.t()[:, self.relative_position_index].unsqueeze(0)

    def qkv_bias(self) -> Optional[Tensor]:
        """(3C,) projection bias: learned for queries and values, zero for keys."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def queries_keys_values(self, windows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(B, Hp*Wp, C) -> unit keys, unit queries times the temperature, values
        (B * nW, heads, N, d)."""
        q, k, v = self.project_heads(windows, self.qkv.weight, self.qkv_bias())
        temperature = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # (heads, 1, 1)
        return F.normalize(q, dim=-1) * temperature, F.normalize(k, dim=-1), v


class SwinBlock(nn.Module):
    """Pre-norm Swin block (v1): x + attn(norm1(x)), then x + mlp(norm2(x))."""

    attention_type = WindowAttention

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift: bool,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, **attn_kwargs):
        """``attn_kwargs``: extra arguments of the attention (v2: ``pretrained_window_size``)."""
        super().__init__()
        self.shift_size = window_size // 2 if shift else 0
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = self.attention_type(embed_dims, num_heads, window_size, qkv_bias,
                                        attn_drop_rate, drop_rate, **attn_kwargs)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop_rate)

    def forward(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C)."""
        x = x + drop_path(self.attn(self.norm1(x), layout), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class SwinBlockV2(SwinBlock):
    """Res-post-norm Swin block (v2): x + norm1(attn(x)), then x + norm2(mlp(x))."""

    attention_type = WindowAttentionV2

    def reset_parameters(self) -> None:
        """Post-norms start at zero, so that every block starts as the identity."""
        for norm in (self.norm1, self.norm2):
            nn.init.zeros_(norm.weight)
            nn.init.zeros_(norm.bias)

    def forward(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C)."""
        x = x + drop_path(self.norm1(self.attn(x, layout)), self.drop_path_rate, self.training)
        return x + drop_path(self.norm2(self.mlp(x)), self.drop_path_rate, self.training)


class PatchEmbed(nn.Module):
    """Non-overlapping patches (zero-padded at the bottom/right) to tokens."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """(B, in, H, W) image -> (B, h * w, C) raster tokens and (h, w)."""
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            x = F.pad(x, (0, -W % self.patch_size, 0, -H % self.patch_size))
        x = self.proj(x)  # (B, C, h, w)
        return self.norm(map_to_tokens(x)), tuple(x.shape[-2:])


class PatchMerging(nn.Module):
    """2x2 neighbourhoods (zero-padded to even size) to one token of twice the channels.

    The 4C features are concatenated as in the official code: offsets (row, col) = (0, 0),
    (1, 0), (0, 1), (1, 1). v1 normalises the 4C features before the reduction, v2 the 2C after.
    """

    def __init__(self, in_channels: int, norm_after: bool = False):
        super().__init__()
        self.norm_after = norm_after
        self.reduction = nn.Linear(4 * in_channels, 2 * in_channels, bias=False)
        self.norm = nn.LayerNorm(2 * in_channels if norm_after else 4 * in_channels)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
        """(B, H * W, C) raster tokens -> (B, ceil(H/2) * ceil(W/2), 2C) and the new (h, w)."""
        B, _, C = x.shape
        H, W = hw
        x = x.view(B, H, W, C)
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        h, w = x.shape[1] // 2, x.shape[2] // 2
        x = x.view(B, h, 2, w, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, h * w, 4 * C)
        if self.norm_after:
            return self.norm(linear(x, self.reduction.weight)), (h, w)
        return linear(self.norm(x), self.reduction.weight), (h, w)


class SwinStage(nn.Module):
    """Blocks alternating regular and shifted windows, then an optional patch merging."""

    def __init__(self, blocks: List[SwinBlock], window_size: int,
                 downsample: Optional[PatchMerging], with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.window_size = window_size
        self.with_cp = with_cp

    def run_block(self, block: SwinBlock, x: Tensor, layout: WindowLayout) -> Tensor:
        """One block, under activation checkpointing when ``with_cp`` and computing gradients."""
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(block, x, layout, use_reentrant=False)
        return block(x, layout)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Optional[Tensor], tuple]:
        """(B, H*W, C) raster tokens -> the stage output (B, H*W, C), the downsampled
        (B, h*w, 2C) tokens (None in the last stage) and their (h, w)."""
        for block in self.blocks:
            layout = window_layout(hw, self.window_size, block.shift_size, x.device, x.dtype)
            x = self.run_block(block, x, layout)
        if self.downsample is None:
            return x, None, hw
        return (x, *self.downsample(x, hw))


def _per_stage(value: Union[int, Sequence[int]], num_stages: int, name: str) -> Tuple[int, ...]:
    """An int for every stage, or one per stage."""
    values = (value, ) * num_stages if isinstance(value, int) else tuple(value)
    if len(values) != num_stages:
        raise ValueError(f'{name} must be an int or have one entry per stage ({num_stages}), '
                         f'got {value!r}')
    return values


@MODELS.register_module()
class SwinBackbone(StagedBackbone):
    """Swin Transformer v1 backbone returning NCHW features of the stages in ``out_indices``.

    Any input size works: the image is padded to the patch size, every stage's map to whole
    windows (inputs smaller than one window included). Each output stage ``i`` has its own
    LayerNorm ``norm{i}``.

    Args:
        embed_dims: channels of the first stage; doubled by each patch merging.
        depths: blocks per stage.
        num_heads: attention heads per stage; ``embed_dims * 2**i`` must divide by them.
        window_size: side of the square attention windows.
        mlp_ratio: MLP hidden width relative to the channels.
        qkv_bias: learn biases for the query/key/value projection.
        patch_size: side of the non-overlapping patches of the embedding.
        in_channels: image channels.
        drop_rate: dropout after the attention projection and in the MLP.
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth of the last block; it rises linearly from 0 at the first.
        out_indices: stages whose (normalised) output is returned, in [0, len(depths)).
        frozen_stages: freeze the patch embedding (>= 0) and stages 1..frozen_stages (with their
            output norms), keeping them in eval mode; -1 freezes nothing.
        norm_eval: mmdet's convention: keep BatchNorm layers in eval mode while training. Swin has
            only LayerNorms, which hold no running statistics, so this changes nothing here; it is
            accepted so that detector configs written for other backbones carry over.
        with_cp: activation checkpointing per block while training (saves memory, costs time).
        pretrained: checkpoint to load in ``init_weights`` (official microsoft v1/v2 layout,
            mmdet's ``SwinTransformer`` layout, detector checkpoints or ours); same as
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: mmengine init config; ``Pretrained`` loads through our converter.
        allow_partial_checkpoint: load state dicts (e.g. a detector checkpoint) that leave some
            of our tensors unfilled or hold tensors without a place here, with a warning; by
            default that is an error. ``pretrained`` weights may always lack the output norms.
    """

    checkpoint_converter = staticmethod(convert_swin_checkpoint)
    checkpoint_layout = staticmethod(swin_checkpoint_layout)

    merging_norm_after = False
    # window padding and the window index plan are computed from the map sizes as Python ints
    onnx_free_input_size = False

    def __init__(self,
                 embed_dims: int = 96,
                 depths: Sequence[int] = SWIN_T_DEPTHS,
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 patch_size: int = 4,
                 in_channels: int = 3,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None,
                 allow_partial_checkpoint: bool = False):
        self._check_config(embed_dims, depths, num_heads, window_size, out_indices, frozen_stages)
        super().__init__(pretrained, init_cfg, allow_partial_checkpoint)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.num_features = [embed_dims * 2**i for i in range(len(depths))]

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size)
        drop_path_rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, (depth, heads, dims) in enumerate(zip(depths, num_heads, self.num_features)):
            first = sum(depths[:i])
            blocks = [
                self.make_block(i, dims, heads, window_size, shift=j % 2 == 1, mlp_ratio=mlp_ratio,
                                qkv_bias=qkv_bias, drop_rate=drop_rate,
                                attn_drop_rate=attn_drop_rate,
                                drop_path_rate=drop_path_rates[first + j])
                for j in range(depth)
            ]
            downsample = (PatchMerging(dims, self.merging_norm_after)
                          if i < len(depths) - 1 else None)
            self.stages.append(SwinStage(blocks, window_size, downsample, with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))

    def make_block(self, stage: int, *args, **kwargs) -> SwinBlock:
        """A block of stage ``stage`` (v2's blocks depend on the stage's pre-training window)."""
        return SwinBlock(*args, **kwargs)

    @staticmethod
    def _check_config(embed_dims, depths, num_heads, window_size, out_indices, frozen_stages):
        """Raise ValueError naming the first inconsistent argument."""
        if not isinstance(window_size, int) or window_size <= 0:
            raise ValueError(f'window_size must be a positive int, got {window_size!r}')
        if len(depths) != len(num_heads):
            raise ValueError(f'depths ({len(depths)} stages) and num_heads ({len(num_heads)} '
                             f'stages) must have the same length')
        if any(d <= 0 for d in depths):
            raise ValueError(f'depths must be positive, got {tuple(depths)}')
        for i, heads in enumerate(num_heads):
            if heads <= 0 or (embed_dims * 2**i) % heads:
                raise ValueError(
                    f'embed_dims={embed_dims} gives {embed_dims * 2**i} channels in stage {i}, '
                    f'which num_heads[{i}]={heads} does not divide')
        check_stage_indices(out_indices, frozen_stages, len(depths))

    def forward(self, x: Tensor) -> List[Tensor]:
        """(B, in, H, W) images -> (B, C_i, H_i, W_i) features of the stages in ``out_indices``."""
        x, hw = self.patch_embed(x)  # (B, h * w, C)
        outs = []
        for i, stage in enumerate(self.stages):
            out, x, next_hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)  # (B, h * w, C_i)
                outs.append(tokens_to_map(out, hw).contiguous())
            hw = next_hw
        return outs

    def _init_from_scratch(self) -> None:
        """Truncated-normal Linear weights, unit LayerNorms, then the Swin-specific parameters."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (WindowAttention, WindowAttentionV2, SwinBlockV2)):
                m.reset_parameters()  # bias tables, temperatures, v2's zero post-norms


@MODELS.register_module()
class SwinV2Backbone(SwinBackbone):
    """Swin Transformer v2 backbone: scaled cosine attention, log-spaced continuous position
    bias, res-post-norm blocks and patch merging that normalises after the reduction.

    Args:
        pretrained_window_size: window of the checkpoint's pre-training, an int or one per
            stage; the position-bias MLP sees offsets normalised by it (0: by ``window_size``).
        **kwargs: as :class:`SwinBackbone`.
    """

    merging_norm_after = True

    def __init__(self, *, pretrained_window_size: Union[int, Sequence[int]] = 0, **kwargs):
        num_stages = len(kwargs.get('depths', SWIN_T_DEPTHS))
        sizes = _per_stage(pretrained_window_size, num_stages, 'pretrained_window_size')
        if any(s < 0 for s in sizes):
            raise ValueError(f'pretrained_window_size must be >= 0, got {pretrained_window_size!r}')
        self.pretrained_window_sizes = sizes  # read by make_block while the base class builds
        super().__init__(**kwargs)

    def make_block(self, stage: int, *args, **kwargs) -> SwinBlockV2:
        """A v2 block whose position-bias MLP sees offsets in units of the stage's pre-training
        window."""
        return SwinBlockV2(*args, pretrained_window_size=self.pretrained_window_sizes[stage],
                           **kwargs)
