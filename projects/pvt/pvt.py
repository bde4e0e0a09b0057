"""Pyramid Vision Transformer v1 and v2 backbones for MMDetection 3.x.

v1: "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions"
(Wang et al., 2021): a pyramid of transformer stages, each opened by a non-overlapping patch
embedding and an absolute position embedding; spatial-reduction attention (every token attends to
keys/values computed from the map shrunk by a strided convolution).
v2: "PVT v2: Improved Baselines with Pyramid Vision Transformer" (Wang et al., 2022): overlapping
patch embeddings instead of position embeddings, a 3x3 depthwise convolution inside the MLP, a
LayerNorm closing each stage, and the linear '-li' variant whose keys/values come from a 7x7
average pooling of the map (cost linear in the number of tokens).

Numerics follow the official detection code (whai362/PVT): blocks and stage norms use LayerNorm
eps 1e-6, the patch embeddings' and the key/value reduction's LayerNorms PyTorch's default 1e-5
(mmdet's port uses 1e-6 for all), strided convolutions drop the bottom/right remainder. Where the
references fail, on a map smaller than a non-overlapping kernel (a patch, or the reduction window),
the map is zero-padded at the bottom/right to one kernel, so that any input size works.

Layout: inside a stage the tokens are a raster map (B, h*w, C); stages exchange NCHW maps.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..common.backbone import StagedBackbone, check_stage_indices
from ..common.layers import attention, drop_path, map_to_tokens, tokens_to_map
from .convert import checkpoint_layout as pvt_checkpoint_layout
from .convert import convert_pvt_checkpoint

BLOCK_NORM_EPS = 1e-6  # LayerNorm eps of the official models' blocks and stage norms
LINEAR_POOL_SIZE = 7  # '-li': keys/values come from the map average-pooled to 7 x 7


def _arch(depths: Tuple[int, ...], embed_dims: Tuple[int, ...] = (64, 128, 320, 512),
          mlp_ratios: Tuple[float, ...] = (8, 8, 4, 4)) -> dict:
    """Published sizes share heads (64 channels each, b0: 32) and reduction ratios."""
    return dict(embed_dims=embed_dims, depths=depths, num_heads=(1, 2, 5, 8),
                sr_ratios=(8, 4, 2, 1), mlp_ratios=mlp_ratios)


PVT_ARCHS = {
    'tiny': _arch((2, 2, 2, 2)),
    'small': _arch((3, 4, 6, 3)),
    'medium': _arch((3, 4, 18, 3)),
    'large': _arch((3, 8, 27, 3)),
}
PVTV2_ARCHS = {
    'b0': _arch((2, 2, 2, 2), embed_dims=(32, 64, 160, 256)),
    'b1': _arch((2, 2, 2, 2)),
    'b2': _arch((3, 4, 6, 3)),
    'b3': _arch((3, 4, 18, 3)),
    'b4': _arch((3, 8, 27, 3)),
    'b5': _arch((3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
}


def pad_to_kernel(x: Tensor, size: int) -> Tensor:
    """(B, C, H, W) map -> zero-padded at the bottom/right to at least size x size; a map already
    that large (every map the references accept) is returned as is."""
    H, W = x.shape[-2:]
    if H >= size and W >= size:
        return x
    return F.pad(x, (0, max(size - W, 0), 0, max(size - H, 0)))


def resize_position_embedding(pos_embed: Tensor, grid: Tuple[int, int],
                              hw: Tuple[int, int]) -> Tensor:
    """(1, gh*gw, C) embedding of the pre-training grid -> (1, h*w, C), bilinear."""
    if tuple(hw) == tuple(grid):
        return pos_embed
    table = tokens_to_map(pos_embed, grid)  # (1, C, gh, gw)
    return map_to_tokens(F.interpolate(table, size=hw, mode='bilinear', align_corners=False))


class PatchEmbed(nn.Module):
    """Strided convolution over the map, then LayerNorm over channels (eps 1e-5, as official).

    v1: non-overlapping patches (kernel = stride, no padding); v2: overlapping (kernel
    2 * stride - 1, padding kernel // 2).
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int, stride: int,
                 padding: int = 0):
        super().__init__()
        self.min_size = kernel_size - 2 * padding  # smallest map the convolution accepts
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """(B, in, H, W) map -> (B, h*w, C) raster tokens and (h, w)."""
        x = self.proj(pad_to_kernel(x, self.min_size))  # (B, C, h, w)
        return self.norm(map_to_tokens(x)), tuple(x.shape[-2:])


class SpatialReductionAttention(nn.Module):
    """Multi-head attention of every token to keys/values computed from a reduced map.

    ``sr_ratio > 1``: the map through a convolution with kernel = stride = ``sr_ratio`` and a
    LayerNorm; ``linear`` ('-li'): average-pooled to 7 x 7, then a 1x1 convolution, LayerNorm and
    GELU (``sr_ratio`` unused); otherwise all tokens.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int = 1, linear: bool = False,
                 qkv_bias: bool = True, attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.linear = linear
        self.attn_drop_rate = attn_drop_rate
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)
        if linear or sr_ratio > 1:
            kernel = 1 if linear else sr_ratio
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel, stride=kernel)
            self.norm = nn.LayerNorm(embed_dims)

    def reduce(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """(B, H*W, C) tokens -> (B, M, C) tokens that keys and values are computed from."""
        if self.linear:
            pooled = F.adaptive_avg_pool2d(tokens_to_map(x, hw), LINEAR_POOL_SIZE)  # (B, C, 7, 7)
            return F.gelu(self.norm(map_to_tokens(self.sr(pooled))))
        if self.sr_ratio > 1:
            reduced = self.sr(pad_to_kernel(tokens_to_map(x, hw), self.sr_ratio))  # (B, C, h, w)
            return self.norm(map_to_tokens(reduced))
        return x

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C)."""
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, d)
        kv = self.kv(self.reduce(x, hw)).view(B, -1, 2, self.num_heads, C // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, M, d) each
        out = attention(q, k, v, dropout_p=self.attn_drop_rate if self.training else 0.0)  # like q
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))


class FeedForward(nn.Module):
    """Per-token MLP: fc1, [ReLU ('-li')], [3x3 depthwise convolution over the map (v2)], GELU,
    fc2; dropout after the GELU and after fc2."""

    def __init__(self, embed_dims: int, hidden_dims: int, depthwise: bool = False,
                 relu: bool = False, drop_rate: float = 0.0):
        super().__init__()
        self.relu = relu
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dwconv = (nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1, groups=hidden_dims)
                       if depthwise else None)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C)."""
        x = self.fc1(x)  # (B, H*W, hidden)
        if self.relu:
            x = F.relu(x, inplace=True)
        if self.dwconv is not None:
            x = map_to_tokens(self.dwconv(tokens_to_map(x, hw)))
        return self.drop(self.fc2(self.drop(F.gelu(x))))


class PVTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 linear: bool = False, conv_ffn: bool = False, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(embed_dims, eps=BLOCK_NORM_EPS)
        self.attn = SpatialReductionAttention(embed_dims, num_heads, sr_ratio, linear, qkv_bias,
                                              attn_drop_rate, drop_rate)
        self.norm2 = nn.LayerNorm(embed_dims, eps=BLOCK_NORM_EPS)
        self.mlp = FeedForward(embed_dims, int(embed_dims * mlp_ratio), depthwise=conv_ffn,
                               relu=linear, drop_rate=drop_rate)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C)."""
        x = x + drop_path(self.attn(self.norm1(x), hw), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x), hw), self.drop_path_rate, self.training)


class PVTStage(nn.Module):
    """Patch embedding, [absolute position embedding + dropout (v1)], blocks, [LayerNorm (v2)]."""

    def __init__(self, patch_embed: PatchEmbed, blocks: List[PVTBlock],
                 pos_grid: Optional[Tuple[int, int]] = None, norm: bool = False,
                 drop_rate: float = 0.0, with_cp: bool = False):
        super().__init__()
        embed_dims = patch_embed.proj.out_channels
        self.patch_embed = patch_embed
        self.pos_grid = pos_grid
        self.pos_embed = (nn.Parameter(torch.zeros(1, pos_grid[0] * pos_grid[1], embed_dims))
                          if pos_grid else None)  # (1, gh*gw, C)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dims, eps=BLOCK_NORM_EPS) if norm else None
        self.with_cp = with_cp

    def run_block(self, block: PVTBlock, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """One block, under activation checkpointing when ``with_cp`` and computing gradients."""
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(block, x, hw, use_reentrant=False)
        return block(x, hw)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) map -> (B, C, h, w) map."""
        x, hw = self.patch_embed(x)  # (B, h*w, C)
        if self.pos_embed is not None:
            x = self.pos_drop(x + resize_position_embedding(self.pos_embed, self.pos_grid, hw))
        for block in self.blocks:
            x = self.run_block(block, x, hw)
        if self.norm is not None:
            x = self.norm(x)
        return tokens_to_map(x, hw).contiguous()


def _pair(value: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    """An int or an (h, w) pair -> (h, w)."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f'{name} must be an int or an (h, w) pair, got {value!r}')
    return pair


class PyramidVisionBase(StagedBackbone):
    """What PVT v1 and v2 share: stages of :class:`PVTBlock` s, the arch table, validation,
    freezing, loading. Subclasses choose the patch embeddings, position embeddings, MLP and
    stage norms.

    Args:
        arch: a published size (a key of the subclass's ``archs``); its ``embed_dims``,
            ``depths``, ``num_heads``, ``sr_ratios`` and ``mlp_ratios`` apply where the argument
            is None.
        embed_dims: channels per stage; each must be divisible by the stage's ``num_heads``.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        sr_ratios: spatial reduction per stage: keys/values from a convolution with kernel =
            stride = ratio (1: from all tokens).
        mlp_ratios: MLP hidden width per stage, relative to its channels.
        num_stages: number of stages; every per-stage list must have this length.
        in_channels: image channels.
        qkv_bias: learn biases for the query and key/value projections.
        drop_rate: dropout after the attention projection, in the MLP and (v1) after the
            position embedding.
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth of the last block; it rises linearly from 0 at the first.
        out_indices: stages whose output map is returned, in [0, num_stages); later stages are
            not run.
        frozen_stages: -1 freezes nothing; 0 the first patch embedding (with v1's first position
            embedding); k >= 1 stages 1..k whole. Frozen parts stay in eval mode.
        norm_eval: mmdet's convention: keep BatchNorm layers in eval mode while training. PVT has
            only LayerNorms, which hold no running statistics, so this changes nothing here; it is
            accepted so that detector configs written for other backbones carry over.
        with_cp: activation checkpointing per block while training (saves memory, costs time).
        pretrained: checkpoint to load in ``init_weights`` (official whai362/PVT, mmdet's
            ``PyramidVisionTransformer(V2)``, detector checkpoints or ours); same as
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: mmengine init config; ``Pretrained`` loads through our converter.
        allow_partial_checkpoint: load state dicts (e.g. a detector checkpoint) that leave some
            of our tensors unfilled or hold tensors without a place here, with a warning; by
            default that is an error. ``pretrained`` weights may always lack the output norms.
    """

    checkpoint_converter = staticmethod(convert_pvt_checkpoint)
    checkpoint_layout = staticmethod(pvt_checkpoint_layout)

    archs: Dict[str, dict] = {}
    conv_ffn = False  # v2: 3x3 depthwise convolution in the MLP
    stage_norm = False  # v2: LayerNorm at the end of every stage
    linear = False  # v2 '-li': pooled keys/values, ReLU in the MLP

    def __init__(self,
                 arch: str,
                 embed_dims: Optional[Sequence[int]] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 sr_ratios: Optional[Sequence[int]] = None,
                 mlp_ratios: Optional[Sequence[float]] = None,
                 num_stages: int = 4,
                 in_channels: int = 3,
                 qkv_bias: bool = True,
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
        sizes = self._arch_sizes(arch, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                                 sr_ratios=sr_ratios, mlp_ratios=mlp_ratios)
        self._check_config(sizes, num_stages, out_indices, frozen_stages)
        super().__init__(pretrained, init_cfg, allow_partial_checkpoint)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.num_features = list(sizes['embed_dims'])

        stage_rates = torch.linspace(0, drop_path_rate, sum(sizes['depths'])).split(sizes['depths'])
        self.stages = nn.ModuleList()
        for i, rates in enumerate(stage_rates):
            stage_in = in_channels if i == 0 else self.num_features[i - 1]
            self.stages.append(self.make_stage(i, sizes, stage_in, rates.tolist(), drop_rate,
                                               with_cp, qkv_bias=qkv_bias,
                                               attn_drop_rate=attn_drop_rate))

    def make_stage(self, stage: int, sizes: dict, in_channels: int, drop_path_rates: List[float],
                   drop_rate: float, with_cp: bool, **block_kwargs) -> PVTStage:
        """Stage ``stage`` of the per-stage ``sizes``, one block per drop-path rate."""
        dims = sizes['embed_dims'][stage]
        blocks = [
            PVTBlock(dims, sizes['num_heads'][stage], sizes['mlp_ratios'][stage],
                     sizes['sr_ratios'][stage], linear=self.linear, conv_ffn=self.conv_ffn,
                     drop_rate=drop_rate, drop_path_rate=rate, **block_kwargs)
            for rate in drop_path_rates
        ]
        return PVTStage(self.make_patch_embed(stage, in_channels, dims), blocks,
                        self.position_grid(stage), self.stage_norm, drop_rate, with_cp)

    def make_patch_embed(self, stage: int, in_channels: int, embed_dims: int) -> PatchEmbed:
        """The patch embedding that opens ``stage``: stride 4 in the first, 2 in the others."""
        raise NotImplementedError

    def position_grid(self, stage: int) -> Optional[Tuple[int, int]]:
        """Grid of ``stage``'s absolute position embedding; None: the stage has none."""
        return None

    @classmethod
    def _arch_sizes(cls, arch: str, **overrides) -> dict:
        """The published sizes of ``arch``, with the overrides that are not None."""
        if arch not in cls.archs:
            raise ValueError(f'arch must be one of {sorted(cls.archs)} for {cls.__name__}, '
                             f'got {arch!r}')
        sizes = dict(cls.archs[arch])
        sizes.update({k: tuple(v) for k, v in overrides.items() if v is not None})
        return sizes

    @staticmethod
    def _check_config(sizes: dict, num_stages: int, out_indices: Sequence[int],
                      frozen_stages: int) -> None:
        """Raise ValueError naming the first inconsistent argument."""
        if not isinstance(num_stages, int) or num_stages < 1:
            raise ValueError(f'num_stages must be a positive int, got {num_stages!r}')
        for name, values in sizes.items():
            if len(values) != num_stages:
                raise ValueError(f'{name} must have one entry per stage (num_stages='
                                 f'{num_stages}), got {len(values)}: {values}')
            if any(v <= 0 for v in values):
                raise ValueError(f'{name} must be positive, got {values}')
        for i, (dims, heads) in enumerate(zip(sizes['embed_dims'], sizes['num_heads'])):
            if dims % heads:
                raise ValueError(f'embed_dims[{i}]={dims} is not divisible by '
                                 f'num_heads[{i}]={heads}')
        check_stage_indices(out_indices, frozen_stages, num_stages)

    def forward(self, x: Tensor) -> List[Tensor]:
        """(B, in, H, W) images -> (B, C_i, H_i, W_i) maps of the stages in ``out_indices``."""
        outs = []
        for i, stage in enumerate(self.stages[:max(self.out_indices) + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def frozen_modules(self) -> List[nn.Module]:
        """The first patch embedding and stages 1..frozen_stages (whose output is not normed)."""
        if self.frozen_stages < 0:
            return []
        return [self.stages[0].patch_embed, *self.stages[:self.frozen_stages]]

    def _freeze_stages(self) -> None:
        """As every backbone, plus v1's first position embedding (a bare parameter)."""
        super()._freeze_stages()
        first = self.stages[0]
        if self.frozen_stages >= 0 and first.pos_embed is not None:
            first.pos_embed.requires_grad = False

    def _init_from_scratch(self) -> None:
        """Truncated-normal Linear weights and position embeddings, He-normal (fan-out)
        convolutions, unit LayerNorms, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out)**0.5)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for stage in self.stages:
            if stage.pos_embed is not None:
                nn.init.trunc_normal_(stage.pos_embed, std=0.02)


@MODELS.register_module()
class PVTBackbone(PyramidVisionBase):
    """PVT v1 backbone returning NCHW maps of the stages in ``out_indices``.

    Args:
        arch: 'tiny', 'small', 'medium' or 'large' (the published sizes).
        pretrain_img_size: image size (int or (h, w)) the position embeddings were trained at;
            stage ``i``'s grid is this divided by ``4 * 2**i``. Other input sizes get them
            resized bilinearly.
        **kwargs: as :class:`PyramidVisionBase`.
    """

    archs = PVT_ARCHS

    def __init__(self, arch: str = 'small', pretrain_img_size: Union[int, Sequence[int]] = 224,
                 **kwargs):
        # read by position_grid while the base class builds the stages
        self.pretrain_img_size = _pair(pretrain_img_size, 'pretrain_img_size')
        super().__init__(arch=arch, **kwargs)

    @staticmethod
    def stage_stride(stage: int) -> int:
        """Input pixels per token side in ``stage``."""
        return 4 * 2**stage

    def make_patch_embed(self, stage: int, in_channels: int, embed_dims: int) -> PatchEmbed:
        """Non-overlapping patches: 4 x 4 pixels, then 2 x 2 tokens."""
        size = 4 if stage == 0 else 2
        return PatchEmbed(in_channels, embed_dims, kernel_size=size, stride=size)

    def position_grid(self, stage: int) -> Tuple[int, int]:
        """The token grid of ``stage`` at ``pretrain_img_size``."""
        grid = tuple(s // self.stage_stride(stage) for s in self.pretrain_img_size)
        if min(grid) < 1:
            raise ValueError(f'pretrain_img_size={self.pretrain_img_size} leaves stage {stage} '
                             f'(stride {self.stage_stride(stage)}) no position grid')
        return grid


@MODELS.register_module()
class PVTV2Backbone(PyramidVisionBase):
    """PVT v2 backbone returning NCHW maps of the stages in ``out_indices``.

    Args:
        arch: 'b0' ... 'b5' (the published sizes).
        linear: the '-li' variant: keys/values from the map average-pooled to 7 x 7 (then a 1x1
            convolution, LayerNorm and GELU; ``sr_ratios`` unused) and a ReLU after the MLP's fc1.
        **kwargs: as :class:`PyramidVisionBase`.
    """

    archs = PVTV2_ARCHS
    conv_ffn = True
    stage_norm = True

    def __init__(self, arch: str = 'b0', linear: bool = False, **kwargs):
        self.linear = linear  # read by the blocks while the base class builds
        super().__init__(arch=arch, **kwargs)

    def make_patch_embed(self, stage: int, in_channels: int, embed_dims: int) -> PatchEmbed:
        """Overlapping patches: 7 x 7 kernel at stride 4, then 3 x 3 at stride 2."""
        kernel, stride = (7, 4) if stage == 0 else (3, 2)
        return PatchEmbed(in_channels, embed_dims, kernel, stride, padding=kernel // 2)
