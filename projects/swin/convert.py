"""The one place that turns foreign Swin checkpoints into :class:`SwinBackbone` /
:class:`SwinV2Backbone` weights.

Understood layouts (after :func:`projects.common.pretrained.unwrap_state_dict` has stripped
``module.`` / ``backbone.``):

- official microsoft v1 / v2 (classification and detection): ``layers.{i}.blocks.{j}.attn.qkv``,
  ``patch_embed.proj``, ``layers.{i}.downsample.{reduction,norm}``, v2's ``logit_scale``,
  ``cpb_mlp``, ``q_bias`` / ``v_bias``. Our module names mirror these, under ``stages``.
- mmdet's ``SwinTransformer``: ``stages.{i}.blocks.{j}.attn.w_msa.*``, ``ffn.layers.0.0`` /
  ``ffn.layers.1``, ``patch_embed.projection``, and patch-merging weights in ``nn.Unfold`` order.
- ours: passed through.

Classification-only tensors (``head``, the final ``norm``) and buffers that we recompute
(``relative_position_index``, ``relative_coords_table``, ``attn_mask``) are dropped. Relative
position bias tables of another window size are resized bicubically.
"""
import math
import re
from typing import Dict, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ..common.pretrained import CLASSIFIER_ONLY, RECOMPUTED_BUFFER, ConvertedStateDict

StateDict = Dict[str, Tensor]

_DROPPED = ((re.compile(r'^(head|norm)\.'), CLASSIFIER_ONLY),
            (re.compile(r'(relative_position_index|relative_coords_table|attn_mask)$'),
             RECOMPUTED_BUFFER))
_MMDET_RENAMES = (
    ('.attn.w_msa.', '.attn.'),
    ('.ffn.layers.0.0.', '.mlp.fc1.'),
    ('.ffn.layers.1.', '.mlp.fc2.'),
    ('patch_embed.projection.', 'patch_embed.proj.'),
)
_MERGING = re.compile(r'^stages\.\d+\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$')


def checkpoint_layout(state_dict: StateDict) -> str:
    """'official', 'mmdet' or 'ours', judged from the key names."""
    if any('.w_msa.' in k or k.startswith('patch_embed.projection.') for k in state_dict):
        return 'mmdet'
    if any(k.startswith('layers.') for k in state_dict):
        return 'official'
    return 'ours'


def unfold_to_concat_order(weight: Tensor) -> Tensor:
    """Reorder the 4C input features of a patch merging from mmdet's ``nn.Unfold`` order to
    the official concatenation order.

    ``nn.Unfold(2, stride=2)`` lists features channel-major: index ``c * 4 + 2 * dy + dx`` for
    the 2x2 offset (dy, dx). The official code concatenates x0..x3 = offsets (0, 0), (1, 0),
    (0, 1), (1, 1): index ``(2 * dx + dy) * C + c``. Works on the last dimension, so for the
    (2C, 4C) reduction weight and the (4C,) norm weight and bias alike.
    """
    channels = weight.shape[-1] // 4
    unfolded = weight.unflatten(-1, (channels, 2, 2))  # (..., c, dy, dx)
    return unfolded.movedim(-3, -1).transpose(-3, -2).flatten(-3)  # (..., dx, dy, c)


def resize_bias_table(table: Tensor, rows: int) -> Tensor:
    """((2w-1)^2, heads) relative position bias table -> (rows, heads), bicubic over the
    (2w-1) x (2w-1) grid of offsets."""
    side, new_side = math.isqrt(table.shape[0]), math.isqrt(rows)
    grid = table.t().reshape(1, -1, side, side)  # (1, heads, 2w-1, 2w-1)
    resized = F.interpolate(grid.float(), size=(new_side, new_side), mode='bicubic',
                            align_corners=False)
    return resized.reshape(table.shape[1], rows).t().contiguous().to(table.dtype)


def rename_key(key: str, layout: str) -> str:
    """A checkpoint key of ``layout`` -> our key."""
    if layout == 'official' and key.startswith('layers.'):
        return 'stages.' + key[len('layers.'):]
    if layout == 'mmdet':
        for old, new in _MMDET_RENAMES:
            key = key.replace(old, new)
    return key


def dropped_reason(key: str) -> Optional[str]:
    """Why a checkpoint key has no counterpart in our model; None if it has one."""
    return next((reason for pattern, reason in _DROPPED if pattern.search(key)), None)


def convert_swin_checkpoint(state_dict: StateDict, model: nn.Module) -> ConvertedStateDict:
    """Convert an official, mmdet or own Swin state dict for ``model`` (v1 or v2)."""
    layout = checkpoint_layout(state_dict)
    own = model.state_dict()
    converted = ConvertedStateDict()
    for key, value in state_dict.items():
        reason = dropped_reason(key)
        if reason is not None:
            converted.drop(key, reason)
            continue
        key = rename_key(key, layout)
        if layout == 'mmdet' and _MERGING.match(key):
            value = unfold_to_concat_order(value)
        if (key.endswith('relative_position_bias_table') and key in own
                and value.shape[1] == own[key].shape[1] and value.shape[0] != own[key].shape[0]):
            value = resize_bias_table(value, own[key].shape[0])
        converted[key] = value
    return converted
