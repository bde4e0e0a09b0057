"""The one place that turns foreign PVT checkpoints into :class:`PVTBackbone` /
:class:`PVTV2Backbone` weights.

Understood layouts (after :func:`projects.common.pretrained.unwrap_state_dict` has stripped
``module.`` / ``backbone.``):

- official whai362/PVT, v1 and v2, classification and detection: ``patch_embed{n}.{proj,norm}``,
  ``pos_embed{n}`` (v1; stage 4's starts with the class token's embedding),
  ``block{n}.{j}.{norm1,attn.{q,kv,sr,norm,proj},norm2,mlp.{fc1,dwconv.dwconv,fc2}}``,
  ``norm{n}`` (v2's stage norms). Our module names mirror these, under ``stages.{n-1}``.
  Classification-only tensors (``cls_token``, the final ``norm``, ``head``) are dropped.
- mmdet's ``PyramidVisionTransformer(V2)``: ``layers.{i}.0.{projection,norm}`` (patch
  embedding), ``layers.{i}.1.0.pos_embed`` (v1, whose blocks then start at ``layers.{i}.1.1``),
  ``layers.{i}.1.{j}.attn.attn.in_proj_{weight,bias}`` (nn.MultiheadAttention: queries, keys and
  values packed; keys and values are the official ``kv`` rows), ``attn.attn.out_proj``,
  ``attn.{sr,norm}``, ``ffn.layers.{0,1,3|4}`` (fc1, depthwise convolution, fc2 as 1x1 / 3x3
  convolutions), ``layers.{i}.2`` (v2's stage norm).
- ours: passed through.
"""
import re
from typing import Dict, Iterator, Optional, Tuple

from torch import Tensor, nn

from ..common.pretrained import CLASSIFIER_ONLY, ConvertedStateDict

StateDict = Dict[str, Tensor]

_OFFICIAL = re.compile(r'^(patch_embed|pos_embed|block|norm)(\d+)(.*)$')
_MMDET = re.compile(r'^layers\.(\d+)\.([012])\.(.+)$')
_MMDET_POS_EMBED = re.compile(r'^layers\.\d+\.1\.0\.pos_embed$')
_MMDET_BLOCK_RENAMES = (
    ('attn.attn.out_proj.', 'attn.proj.'),
    ('ffn.layers.0.', 'mlp.fc1.'),
    ('ffn.layers.1.', 'mlp.dwconv.'),
    ('ffn.layers.3.', 'mlp.fc2.'),  # v1: fc1, GELU, dropout, fc2
    ('ffn.layers.4.', 'mlp.fc2.'),  # v2: fc1, depthwise convolution, GELU, dropout, fc2
)


def checkpoint_layout(state_dict: StateDict) -> str:
    """'official', 'mmdet' or 'ours', judged from the key names."""
    if any(k.startswith('layers.') for k in state_dict):
        return 'mmdet'
    if any(re.match(r'(patch_embed|block)\d', k) for k in state_dict):
        return 'official'
    return 'ours'


def official_key(key: str) -> Optional[str]:
    """An official key -> ours; None for the classification-only tensors."""
    match = _OFFICIAL.match(key)
    if match is None:
        return None  # cls_token, the final norm, head
    kind, stage, rest = match.groups()
    kind = {'block': 'blocks'}.get(kind, kind)
    return f'stages.{int(stage) - 1}.{kind}{rest.replace(".dwconv.dwconv.", ".dwconv.")}'


def mmdet_block_items(prefix: str, key: str, value: Tensor) -> Iterator[Tuple[str, Tensor]]:
    """One tensor of an mmdet block (``key`` below ``layers.{i}.1.{j}.``) -> our (key, tensor)
    pairs under ``prefix``: packed projections are split, 1x1 convolutions become Linears."""
    if key.startswith('attn.attn.in_proj_'):
        param = key[len('attn.attn.in_proj_'):]
        channels = value.shape[0] // 3
        yield prefix + 'attn.q.' + param, value[:channels]
        yield prefix + 'attn.kv.' + param, value[channels:]
        return
    for old, new in _MMDET_BLOCK_RENAMES:
        key = key.replace(old, new)
    if key.startswith(('mlp.fc1.', 'mlp.fc2.')) and value.dim() == 4:
        value = value.flatten(1)  # (out, in, 1, 1) -> (out, in)
    yield prefix + key, value


def mmdet_items(key: str, value: Tensor, block_offset: int) -> Iterator[Tuple[str, Tensor]]:
    """One mmdet tensor -> our (key, tensor) pairs; ``block_offset``: 1 where a position
    embedding module precedes each stage's blocks (v1)."""
    match = _MMDET.match(key)
    if match is None:
        yield key, value
        return
    stage, part, rest = int(match.group(1)), match.group(2), match.group(3)
    prefix = f'stages.{stage}.'
    if part == '0':
        yield prefix + 'patch_embed.' + rest.replace('projection.', 'proj.'), value
    elif part == '2':
        yield prefix + 'norm.' + rest, value
    elif rest == '0.pos_embed':
        yield prefix + 'pos_embed', value
    else:
        block, sub_key = rest.split('.', 1)
        yield from mmdet_block_items(f'{prefix}blocks.{int(block) - block_offset}.', sub_key,
                                     value)


def drop_class_token(state_dict: ConvertedStateDict, model: nn.Module) -> ConvertedStateDict:
    """Position embeddings with one token more than the model's lose their first (the official
    v1 class token's)."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if (key.endswith('pos_embed') and key in own
                and value.shape[1] == own[key].shape[1] + 1):
            state_dict[key] = value[:, 1:]
            state_dict.drop(f'{key}[:, 0]', "the class token's position embedding")
    return state_dict


def convert_pvt_checkpoint(state_dict: StateDict, model: nn.Module) -> ConvertedStateDict:
    """Convert an official, mmdet or own PVT (v1 or v2) state dict for ``model``."""
    layout = checkpoint_layout(state_dict)
    converted = ConvertedStateDict()
    if layout == 'official':
        for key, value in state_dict.items():
            new_key = official_key(key)
            if new_key is None:
                converted.drop(key, CLASSIFIER_ONLY)
            else:
                converted[new_key] = value
    elif layout == 'mmdet':
        block_offset = int(any(_MMDET_POS_EMBED.match(k) for k in state_dict))
        for key, value in state_dict.items():
            converted.update(mmdet_items(key, value, block_offset))
    else:
        converted.update(state_dict)
    return drop_class_token(converted, model)
