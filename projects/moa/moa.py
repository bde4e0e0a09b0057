"""MOA backbone for MMDetection 3.x: local window attention plus multi-resolution overlapped
attention between stages.

"Aggregating Global Features into Local Vision Transformer" (Patel et al., ICPR 2022,
arXiv 2201.12903). Each stage runs window-attention blocks (non-shifted windows, relative
position bias; the blocks of :mod:`projects.swin`). Every stage but the last then runs the MOA
module before its patch merging, as the paper describes it:

1. ``local = LayerNorm(x)``; a 1x1 convolution reduces its channels C to C / R;
2. queries: the non-overlapping window-sized patches of the reduced map, flattened and projected
   to C; keys/values: patches ``overlap`` pixels larger on every side, stride one window (zeros
   beyond the map), flattened and projected to C;
3. multi-head attention of every query patch to every key patch with a relative position bias
   over the patch grid, output projection, residual onto the query embedding; then an MLP with
   GELU, LayerNorm and residual: one token per window (patch);
4. a 1x1 convolution over the patch grid back to the hidden dim gives each window its global
   feature, added to every token of the window: ``x = x + global feature of x's window``
   (stochastic depth on that branch).

The official code (krushi1992/MOA-transformer, classification only) differs from the paper in
the places below. ``moa_style='paper'`` (default) computes the paper's module as described above;
``moa_style='official'`` (:class:`OfficialMOAModule`) computes what the official code computes,
quirks included, so that the official ImageNet weights (trained on it) load whole and give the
official network's stage outputs (compared with the official code in docs/official_differences.md):

- the MOA block: after the attention it has no MLP and no 1x1 convolution back; it computes
  ``LayerNorm(x + local + global)`` followed by a residual 3x3 convolution (``norm2``,
  ``post_conv``); the attention's output is not added to the query embedding.
- token maps: the official reshapes the (B, H*W, C) tokens to (B, C, H, W) with ``view`` /
  ``reshape`` and no permute before the 1x1 reduction, so it convolves a scrambled grid of
  channel values; ours permutes (:func:`~projects.common.layers.tokens_to_map`).
- patch tokens: the official views the (B, D, gh, gw) query patches and the (B, D, gh*gw)
  ``nn.Unfold`` key patches as (B, gh*gw, D) without a transpose, so a "patch token" mixes
  features of many patches; ours transposes, so token p holds exactly patch p. The features keep
  the official orders: (row, col, channel) for queries (the official ``Rearrange``), (channel,
  row, col) for keys (``nn.Unfold``).
- broadcast: the official views the raster tokens as (B, nW, ws, ws, C), which makes "window" k
  the raster tokens k*ws*ws ... (k+1)*ws*ws - 1 (a band of rows); ours adds patch (i, j)'s global
  feature to the tokens of window (i, j), the window its query was taken from.
- sizes: the official is built for one input size (window 14, key stride fixed at 14 with one
  pixel of overlap, a square grid, no MOA where a map is smaller than a window, the local window
  shrunk to such a map); an 800x1216 image fails its input-size assertion. Both styles take any
  window, overlap, reduction and input size, by one rule that changes nothing at the official
  size: every stage's map is zero-padded at the bottom/right to whole windows (as Swin's
  detection code does: padding takes part in attention; the official-style MOA block runs on the
  padded map, layouts included, and is cropped after), key patches stride one window, and each
  MOA's bias table covers the patch grid of a ``pretrain_img_size`` image; offsets of larger
  grids are clipped to the table's edge.

Official checkpoints convert name for name and shape for shape into ``moa_style='official'``
(:mod:`projects.moa.convert`); a checkpoint of the other style is refused naming the switch. The
window-attention blocks and patch mergings are the same function in both styles and as the
official ones.

Layout: inside a stage the tokens are an unpadded raster map (B, H*W, C), as in
:mod:`projects.swin`.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..common.backbone import StagedBackbone, check_stage_indices
from ..common.export import cache_unless_exporting
from ..common.layers import attention, drop_path, map_to_tokens, tokens_to_map
from ..common.window_ops import gather_tokens, window_layout
from ..swin.swin import Mlp, PatchEmbed, PatchMerging, SwinBlock, WindowAttention
from .convert import checkpoint_layout as moa_checkpoint_layout
from .convert import convert_moa_checkpoint

MOA_ARCHS: Dict[str, dict] = {  # the paper's three-stage classification models
    'tiny': dict(embed_dims=96, depths=(2, 2, 8), num_heads=(3, 6, 12), window_size=14),
    'small': dict(embed_dims=96, depths=(2, 2, 20), num_heads=(3, 6, 12), window_size=14),
    'base': dict(embed_dims=128, depths=(2, 2, 20), num_heads=(4, 8, 16), window_size=14),
}
GLOBAL_DROP_PATH_RATE = 0.2  # official: MOA stochastic depth rises from 0 to this over the stages


@cache_unless_exporting(maxsize=64)
def patch_offset_index(grid_hw: Tuple[int, int], table_side: int,
                       device: torch.device) -> Tensor:
    """(N, N) row of the (2G-1)^2 bias table for each query/key patch pair of a gh x gw grid
    (N = gh*gw, G = ``table_side``); offsets beyond +-(G-1) are clipped to the table's edge."""
    gh, gw = grid_hw
    coords = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw),
                                        indexing='ij')).flatten(1)  # (2, N)
    offsets = coords[:, :, None] - coords[:, None, :]  # (2, N, N) query minus key
    offsets = offsets.clamp(-(table_side - 1), table_side - 1) + table_side - 1  # in [0, 2G-2]
    return (offsets[0] * (2 * table_side - 1) + offsets[1]).to(device)


@cache_unless_exporting(maxsize=64)
def window_of_tokens(hw: Tuple[int, int], window_size: int, device: torch.device) -> Tensor:
    """(H*W,) raster index, in the ceil(H/ws) x ceil(W/ws) window grid, of each token's window."""
    H, W = hw
    rows = torch.arange(H) // window_size  # (H,)
    cols = torch.arange(W) // window_size  # (W,)
    return (rows[:, None] * math.ceil(W / window_size) + cols[None, :]).flatten().to(device)


def query_patches(x: Tensor, window_size: int) -> Tensor:
    """(B, c, Hp, Wp) map of whole windows -> (B, gh*gw, ws*ws*c) tokens, one per window, its
    pixels in (row, col, channel) order."""
    B, c, Hp, Wp = x.shape
    x = x.view(B, c, Hp // window_size, window_size, Wp // window_size, window_size)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, ws, ws, c)
    return x.reshape(B, -1, window_size * window_size * c)


def key_patches(x: Tensor, window_size: int, overlap: int) -> Tensor:
    """(B, c, Hp, Wp) map of whole windows -> (B, gh*gw, c*k*k) tokens, k = ws + 2 * overlap:
    each window grown by ``overlap`` on every side (zeros beyond the map), (channel, row, col)
    order."""
    patches = F.unfold(x, window_size + 2 * overlap, padding=overlap,
                       stride=window_size)  # (B, c*k*k, gh*gw)
    return patches.transpose(1, 2)


class OverlappedPatchAttention(nn.Module):
    """Multi-head attention of window-sized query patches to overlapping key/value patches of a
    channel-reduced map, with a relative position bias over the patch grid: one global feature
    per window.

    ``official``: the official code's layouts (module doc): the (B, D, N) patch features are
    viewed as (B, N, D) without a transpose, and the output is the attention alone (the paper
    adds it to the query embedding).
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, overlap: int,
                 reduction: int, table_side: int, qkv_bias: bool = True,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 official: bool = False):
        super().__init__()
        self.official = official
        reduced_dims = embed_dims // reduction
        key_size = window_size + 2 * overlap
        self.num_heads = num_heads
        self.window_size = window_size
        self.overlap = overlap
        self.table_side = table_side
        self.attn_drop_rate = attn_drop_rate
        self.reduce = nn.Conv2d(embed_dims, reduced_dims, 1)
        self.q = nn.Linear(reduced_dims * window_size**2, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(reduced_dims * key_size**2, 2 * embed_dims, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * table_side - 1)**2, num_heads))  # ((2G-1)^2, heads), official: 0
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def position_bias(self, grid_hw: Tuple[int, int]) -> Tensor:
        """(1, heads, N, N) additive bias of each query/key patch pair of the grid."""
        index = patch_offset_index(grid_hw, self.table_side,
                                   self.relative_position_bias_table.device)
        return self.relative_position_bias_table.t()[:, index].unsqueeze(0)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """(B, C, H, W) map -> (B, gh*gw, C) patch tokens (query embedding + attention output),
        gh = ceil(H / ws), and the patch grid (gh, gw)."""
        B, C, H, W = x.shape
        ws = self.window_size
        reduced = F.pad(self.reduce(x), (0, -W % ws, 0, -H % ws))  # (B, C/R, Hp, Wp)
        grid_hw = (reduced.shape[2] // ws, reduced.shape[3] // ws)
        N = grid_hw[0] * grid_hw[1]
        query_features = query_patches(reduced, ws)  # (B, N, D)
        key_features = key_patches(reduced, ws, self.overlap)  # (B, N, D')
        if self.official:  # (B, D, N) memory read as (B, N, D)
            query_features = query_features.transpose(1, 2).reshape(B, N, -1)
            key_features = key_features.transpose(1, 2).reshape(B, N, -1)
        queries = self.q(query_features)  # (B, N, C)
        q = queries.view(B, N, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, d)
        kv = self.kv(key_features).view(B, N, 2, self.num_heads, -1)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d) each
        out = attention(q, k, v, self.position_bias(grid_hw).to(q.dtype),
                        dropout_p=self.attn_drop_rate if self.training else 0.0)  # like q
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
        return (out if self.official else queries + out), grid_hw


def _add_norm_and_attention(module: nn.Module, embed_dims: int, num_heads: int, window_size: int,
                            overlap: int, reduction: int, table_side: int, qkv_bias: bool,
                            drop_rate: float, attn_drop_rate: float, drop_path_rate: float,
                            official: bool) -> None:
    """What both MOA styles begin with: ``norm1`` and the patch attention (``official``: its
    layouts), with the window size and the stochastic depth of the block."""
    module.window_size = window_size
    module.drop_path_rate = drop_path_rate
    module.norm1 = nn.LayerNorm(embed_dims)
    module.attn = OverlappedPatchAttention(embed_dims, num_heads, window_size, overlap, reduction,
                                           table_side, qkv_bias, attn_drop_rate, drop_rate,
                                           official=official)


class MOAModule(nn.Module):
    """The MOA module after a stage's blocks: global attention among the window-sized patches
    (:class:`OverlappedPatchAttention`), an MLP with GELU, LayerNorm and residual over the patch
    tokens, a 1x1 convolution back to the hidden dim, and each window's global feature added to
    the window's tokens."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, overlap: int,
                 reduction: int, table_side: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        _add_norm_and_attention(self, embed_dims, num_heads, window_size, overlap, reduction,
                                table_side, qkv_bias, drop_rate, attn_drop_rate, drop_path_rate,
                                official=False)
        self.mlp_norm = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop_rate)
        # zero at the start, also where an official checkpoint (which lacks it) fills the rest:
        # the module begins as the identity and the global features grow in as they are learned
        # (from PyTorch's default init the window-constant features disturb the local ones, and
        # pretrained ones, from the first step)
        self.expand = nn.Conv2d(embed_dims, embed_dims, 1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C)."""
        patches, grid_hw = self.attn(tokens_to_map(self.norm1(x), hw))  # (B, gh*gw, C)
        patches = patches + self.mlp(self.mlp_norm(patches))
        global_features = map_to_tokens(self.expand(tokens_to_map(patches, grid_hw)))
        window_features = gather_tokens(global_features,
                                        window_of_tokens(hw, self.window_size, x.device))
        return x + drop_path(window_features, self.drop_path_rate, self.training)


class OfficialMOAModule(nn.Module):
    """The official code's MOA block (``moa_style='official'``), computed on the official
    layouts (module doc) so that official weights compute what they were trained for.

    On (B, H*W, C) raster tokens, the map zero-padded to whole windows first (cropped after):
    ``n = norm1(x)``; global features ``g`` (one per window) from the attention on ``n``'s
    buffer read as a (B, C, H, W) map; ``y = norm2(x + drop_path(n + g[band]))``, where token t
    takes the feature of band ``t // ws**2`` of the raster order; ``y + drop_path(post_conv(y's
    buffer read as (B, C, H, W)))`` with the 3x3 convolution's output read back as tokens.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, overlap: int,
                 reduction: int, table_side: int, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        _add_norm_and_attention(self, embed_dims, num_heads, window_size, overlap, reduction,
                                table_side, qkv_bias, drop_rate, attn_drop_rate, drop_path_rate,
                                official=True)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.post_conv = nn.Conv2d(embed_dims, embed_dims, 3, padding=1)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """(B, H*W, C) raster tokens -> (B, H*W, C)."""
        B, _, C = x.shape
        H, W = hw
        ws = self.window_size
        Hp, Wp = H + -H % ws, W + -W % ws
        if (Hp, Wp) != (H, W):  # zero tokens beyond the map, as Swin pads for its windows
            x = map_to_tokens(F.pad(tokens_to_map(x, hw), (0, Wp - W, 0, Hp - H)))
        normed = self.norm1(x)
        global_features, _ = self.attn(normed.reshape(B, C, Hp, Wp))  # (B, N, C)
        band = torch.arange(Hp * Wp, device=x.device) // (ws * ws)
        y = self.norm2(x + drop_path(normed + global_features[:, band], self.drop_path_rate,
                                     self.training))
        post = self.post_conv(y.reshape(B, C, Hp, Wp)).reshape(B, Hp * Wp, C)
        y = y + drop_path(post, self.drop_path_rate, self.training)
        if (Hp, Wp) != (H, W):
            y = map_to_tokens(tokens_to_map(y, (Hp, Wp))[:, :, :H, :W].contiguous())
        return y


MOA_STYLES = {'paper': MOAModule, 'official': OfficialMOAModule}


class MOAStage(nn.Module):
    """Window-attention blocks (non-shifted), the MOA module (None in the last stage) and the
    patch merging (None in the last stage)."""

    def __init__(self, blocks: List[SwinBlock], window_size: int, moa: Optional[MOAModule],
                 downsample: Optional[PatchMerging], with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.moa = moa
        self.downsample = downsample
        self.window_size = window_size
        self.with_cp = with_cp

    def run(self, module: nn.Module, *args) -> Tensor:
        """``module(*args)``, under activation checkpointing when ``with_cp`` and computing
        gradients."""
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Optional[Tensor], tuple]:
        """(B, H*W, C) raster tokens -> the stage output (B, H*W, C), the downsampled
        (B, h*w, 2C) tokens (None in the last stage) and their (h, w)."""
        layout = window_layout(hw, self.window_size, 0, x.device, x.dtype)
        for block in self.blocks:
            x = self.run(block, x, layout)
        if self.moa is not None:
            x = self.run(self.moa, x, hw)
        if self.downsample is None:
            return x, None, hw
        return (x, *self.downsample(x, hw))


@MODELS.register_module()
class MOABackbone(StagedBackbone):
    """MOA Transformer backbone returning NCHW features of the stages in ``out_indices``.

    The paper's models have three stages (strides 4, 8, 16, window 14); give four ``depths`` /
    ``num_heads`` for the detection layout (strides 4, 8, 16, 32). Stage ``i`` has
    ``embed_dims * 2**i`` channels; every stage but the last ends with the MOA module and a patch
    merging. Any input size works (maps are zero-padded to whole windows). Each output stage
    ``i`` has its own LayerNorm ``norm{i}``.

    Args:
        arch: 'tiny', 'small' or 'base' (the paper's MOA-T/S/B); its ``embed_dims``, ``depths``,
            ``num_heads`` and ``window_size`` apply where the argument is None.
        embed_dims: channels of the first stage; doubled by each patch merging.
        depths: blocks per stage.
        num_heads: attention heads per stage (blocks and MOA); ``embed_dims * 2**i`` must divide
            by them.
        window_size: side of the local attention windows and of the MOA query patches.
        moa_style: 'paper' (:class:`MOAModule`, the paper's MOA module, our default) or
            'official' (:class:`OfficialMOAModule`, what the official code computes: use it
            with the official ImageNet weights, which were trained on it).
        overlap: pixels by which an MOA key/value patch exceeds its window on every side
            (official: 1), in [0, window_size).
        reduction: channel reduction R of the MOA's 1x1 convolution (official: 32); must divide
            the channels of every stage that has an MOA module.
        mlp_ratio: MLP hidden width relative to the channels (blocks and MOA).
        qkv_bias: learn biases for the query/key/value projections (blocks and MOA).
        patch_size: side of the non-overlapping patches of the embedding.
        in_channels: image channels.
        pretrain_img_size: image side whose window grids set the size of the MOA bias tables
            (official: 224); offsets of larger grids share the table's edge.
        drop_rate: dropout after the attention projections and in the MLP.
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth of the last block; it rises linearly from 0 at the first.
        global_drop_path_rate: stochastic depth of the last MOA module; it rises linearly from 0
            at the first (official: 0.2).
        out_indices: stages whose (normalised) output is returned, in [0, len(depths));
            None: all.
        frozen_stages: freeze the patch embedding (>= 0) and stages 1..frozen_stages (with their
            MOA, patch merging and output norm), keeping them in eval mode; -1 freezes nothing.
        norm_eval: mmdet's convention: keep BatchNorm layers in eval mode while training. MOA has
            only LayerNorms, which hold no running statistics, so this changes nothing here; it is
            accepted so that detector configs written for other backbones carry over.
        with_cp: activation checkpointing per block and MOA module while training.
        pretrained: checkpoint to load in ``init_weights`` (official krushi1992/MOA-transformer
            layout, detector checkpoints or ours); same as
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: mmengine init config; ``Pretrained`` loads through our converter.
        allow_partial_checkpoint: load state dicts (e.g. a detector checkpoint) that leave some
            of our tensors unfilled or hold tensors without a place here, with a warning; by
            default that is an error. ``pretrained`` weights may always lack the output norms.
    """

    checkpoint_converter = staticmethod(convert_moa_checkpoint)
    checkpoint_layout = staticmethod(moa_checkpoint_layout)
    # window padding and the window index plan are computed from the map sizes as Python ints
    onnx_free_input_size = False

    def __init__(self,
                 arch: str = 'tiny',
                 embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 window_size: Optional[int] = None,
                 moa_style: str = 'paper',
                 overlap: int = 1,
                 reduction: int = 32,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 patch_size: int = 4,
                 in_channels: int = 3,
                 pretrain_img_size: int = 224,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 global_drop_path_rate: float = GLOBAL_DROP_PATH_RATE,
                 out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None,
                 allow_partial_checkpoint: bool = False):
        sizes = self._arch_sizes(arch, embed_dims=embed_dims, depths=depths,
                                 num_heads=num_heads, window_size=window_size)
        num_stages = len(sizes['depths'])
        out_indices = tuple(range(num_stages) if out_indices is None else out_indices)
        if moa_style not in MOA_STYLES:
            raise ValueError(f'moa_style must be one of {sorted(MOA_STYLES)}, got {moa_style!r}')
        self._check_config(sizes, overlap, reduction, pretrain_img_size, out_indices,
                           frozen_stages)
        self.moa_style = moa_style
        super().__init__(pretrained, init_cfg, allow_partial_checkpoint)
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        ws = sizes['window_size']
        self.num_features = [sizes['embed_dims'] * 2**i for i in range(num_stages)]

        self.patch_embed = PatchEmbed(in_channels, sizes['embed_dims'], patch_size)
        block_rates = torch.linspace(0, drop_path_rate, sum(sizes['depths'])).split(
            sizes['depths'])
        moa_rates = torch.linspace(0, global_drop_path_rate, max(num_stages - 1, 1)).tolist()
        grid = math.ceil(pretrain_img_size / patch_size)  # stage map side at pretrain_img_size
        self.stages = nn.ModuleList()
        for i, (rates, heads, dims) in enumerate(zip(block_rates, sizes['num_heads'],
                                                     self.num_features)):
            blocks = [
                SwinBlock(dims, heads, ws, shift=False, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                          drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                          drop_path_rate=rate)
                for rate in rates.tolist()
            ]
            last = i == num_stages - 1
            paper_only = dict(mlp_ratio=mlp_ratio) if moa_style == 'paper' else {}
            moa = None if last else MOA_STYLES[moa_style](
                dims, heads, ws, overlap, reduction, table_side=math.ceil(grid / ws),
                qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                drop_path_rate=moa_rates[i], **paper_only)
            downsample = None if last else PatchMerging(dims)
            self.stages.append(MOAStage(blocks, ws, moa, downsample, with_cp))
            grid = math.ceil(grid / 2)
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))

    @staticmethod
    def _arch_sizes(arch: str, **overrides) -> dict:
        """The paper's sizes of ``arch``, with the overrides that are not None."""
        if arch not in MOA_ARCHS:
            raise ValueError(f'arch must be one of {sorted(MOA_ARCHS)}, got {arch!r}')
        sizes = dict(MOA_ARCHS[arch])
        sizes.update({k: v for k, v in overrides.items() if v is not None})
        sizes['depths'], sizes['num_heads'] = tuple(sizes['depths']), tuple(sizes['num_heads'])
        return sizes

    @staticmethod
    def _check_config(sizes: dict, overlap: int, reduction: int, pretrain_img_size: int,
                      out_indices: Tuple[int, ...], frozen_stages: int) -> None:
        """Raise ValueError naming the first inconsistent argument."""
        ws, depths, num_heads = sizes['window_size'], sizes['depths'], sizes['num_heads']
        if not isinstance(ws, int) or ws <= 0:
            raise ValueError(f'window_size must be a positive int, got {ws!r}')
        if not isinstance(overlap, int) or not 0 <= overlap < ws:
            raise ValueError(f'overlap must be an int in [0, window_size={ws}), got {overlap!r}')
        if len(depths) != len(num_heads):
            raise ValueError(f'depths ({len(depths)} stages) and num_heads ({len(num_heads)} '
                             f'stages) must have the same length')
        if not depths or any(d <= 0 for d in depths):
            raise ValueError(f'depths must be non-empty and positive, got {depths}')
        for i, heads in enumerate(num_heads):
            dims = sizes['embed_dims'] * 2**i
            if heads <= 0 or dims % heads:
                raise ValueError(f'embed_dims={sizes["embed_dims"]} gives {dims} channels in '
                                 f'stage {i}, which num_heads[{i}]={heads} does not divide')
            if i < len(depths) - 1 and (reduction <= 0 or dims % reduction):
                raise ValueError(f'reduction={reduction} must divide the {dims} channels of '
                                 f'stage {i} (embed_dims={sizes["embed_dims"]})')
        if pretrain_img_size <= 0:
            raise ValueError(f'pretrain_img_size must be positive, got {pretrain_img_size!r}')
        check_stage_indices(out_indices, frozen_stages, len(depths))

    def forward(self, x: Tensor) -> List[Tensor]:
        """(B, in, H, W) images -> (B, C_i, H_i, W_i) features of the stages in ``out_indices``."""
        x, hw = self.patch_embed(x)  # (B, h * w, C)
        outs = []
        for i, stage in enumerate(self.stages[:max(self.out_indices) + 1]):
            out, x, next_hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)  # (B, h * w, C_i)
                outs.append(tokens_to_map(out, hw).contiguous())
            hw = next_hw
        return outs

    def _init_from_scratch(self) -> None:
        """Truncated-normal Linear weights and window bias tables, zero MOA bias tables, unit
        LayerNorms, zero biases; convolutions keep their initialisation (PyTorch's default; zero
        for the MOA's 1x1 convolution back, see :class:`MOAModule`)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                m.reset_parameters()
            elif isinstance(m, OverlappedPatchAttention):
                nn.init.zeros_(m.relative_position_bias_table)
