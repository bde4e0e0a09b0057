"""The one place that turns official MOA checkpoints into :class:`MOABackbone` weights.

Understood layouts (after :func:`projects.common.pretrained.unwrap_state_dict` has stripped
``module.`` / ``backbone.``):

- official krushi1992/MOA-transformer (``models/MOA_transformer.py``, classification):

  ===================================================  ==========================================
  official                                             ours
  ===================================================  ==========================================
  ``patch_embed.{proj,norm}``                          the same
  ``layers.{i}.blocks.{j}.{norm1,attn,norm2,mlp}.*``   ``stages.{i}.blocks.{j}.*`` (the same below)
  ``layers.{i}.glb_attn.pre_conv``                     ``stages.{i}.moa.attn.reduce``
  ``layers.{i}.glb_attn.{q,kv,proj}``,                 ``stages.{i}.moa.attn.*``
  ``layers.{i}.glb_attn.relative_position_bias_table``
  ``layers.{i}.norm1``                                 ``stages.{i}.moa.norm1``
  ``layers.{i}.{norm2,post_conv}``                     ``stages.{i}.moa.{norm2,post_conv}``
  ``layers.{i}.downsample.{reduction,norm}``           ``stages.{i}.downsample.*``
  ``norm`` (after the last stage)                      ``norm{last}`` where the model has it
  ===================================================  ==========================================

  The classifier ``head`` and the ``relative_position_index`` buffers (we recompute them) are
  dropped. Official checkpoints are for ``moa_style='official'`` (:class:`OfficialMOAModule`,
  whose ``norm2`` and ``post_conv`` they fill); given to a ``moa_style='paper'`` backbone (whose
  ``mlp_norm``, ``mlp`` and ``expand`` they lack), or a paper-style checkpoint to an official
  backbone, they are refused with an error naming the switch. Shapes match wherever the
  configuration does (window 14, overlap 1, reduction 32, ``pretrain_img_size`` 224).
- ours: passed through.
"""
import re
from typing import Dict, Optional

from torch import Tensor, nn

from ..common.pretrained import CLASSIFIER_ONLY, RECOMPUTED_BUFFER, ConvertedStateDict

StateDict = Dict[str, Tensor]

_LAYER = re.compile(r'^layers\.(\d+)\.(.+)$')
_LAYER_RENAMES = (  # below layers.{i}.: official -> ours, first match wins
    ('glb_attn.pre_conv.', 'moa.attn.reduce.'),
    ('glb_attn.', 'moa.attn.'),
    ('norm1.', 'moa.norm1.'),
    ('norm2.', 'moa.norm2.'),
    ('post_conv.', 'moa.post_conv.'),
)
# keys (ours) that only one MOA style has
_STYLE_KEYS = {'official': re.compile(r'\.moa\.(norm2|post_conv)\.'),
               'paper': re.compile(r'\.moa\.(mlp_norm|mlp|expand)\.')}


def checkpoint_layout(state_dict: StateDict) -> str:
    """'official' or 'ours', judged from the key names."""
    return 'official' if any(k.startswith('layers.') for k in state_dict) else 'ours'


def official_key(key: str, last_norm: str) -> Optional[str]:
    """An official key -> ours (``last_norm``: our name of the final norm); None for the
    dropped tensors."""
    if key.startswith('head.') or key.endswith('relative_position_index'):
        return None
    if key.startswith('norm.'):
        return last_norm + key[len('norm'):]
    match = _LAYER.match(key)
    if match is None:
        return key  # patch_embed
    stage, rest = match.groups()
    for old, new in _LAYER_RENAMES:
        if rest.startswith(old):
            rest = new + rest[len(old):]
            break
    return f'stages.{stage}.{rest}'


def check_moa_style(converted: StateDict, model: nn.Module) -> None:
    """ValueError naming ``moa_style`` when the (converted) weights hold MOA modules of the other
    style than ``model``'s."""
    for style, pattern in _STYLE_KEYS.items():
        found = [key for key in converted if pattern.search(key)]
        if found and style != model.moa_style:
            raise ValueError(
                f"the checkpoint's MOA modules are of moa_style='{style}' ({found[:3]}), the "
                f"model's of moa_style='{model.moa_style}': build the backbone with "
                f"moa_style='{style}' for these weights")


def convert_moa_checkpoint(state_dict: StateDict, model: nn.Module) -> ConvertedStateDict:
    """Convert an official or own MOA state dict for ``model``; ValueError naming
    ``moa_style`` when the weights were made for the other MOA style."""
    converted = ConvertedStateDict()
    if checkpoint_layout(state_dict) == 'ours':
        converted.update(state_dict)
        check_moa_style(converted, model)
        return converted
    own = model.state_dict()
    last_norm = f'norm{len(model.stages) - 1}'
    for key, value in state_dict.items():
        new_key = official_key(key, last_norm)
        if new_key is None:
            converted.drop(key, RECOMPUTED_BUFFER if key.endswith('relative_position_index')
                           else CLASSIFIER_ONLY)
        elif new_key.startswith(last_norm + '.') and new_key not in own:
            converted.drop(key, f'final norm: this model has no {last_norm} (out_indices)')
        else:
            converted[new_key] = value
    check_moa_style(converted, model)
    return converted
