"""mmdet's Deformable DETR and DINO with the deformable attention chosen in the config.

mmdet 3.3 builds the encoder layers' ``self_attn`` and the decoder layers' ``cross_attn`` by
calling mmcv's ``MultiScaleDeformableAttention`` class directly, not through the registry, so a
``type`` in ``self_attn_cfg`` / ``cross_attn_cfg`` is not honoured. ``DeformableDETRWithAttention``
and ``DINOWithAttention`` are mmdet's ``DeformableDETR`` and ``DINO`` (plain, box refinement,
two-stage; every argument, forward and loss theirs) with one more argument, ``attention_cfg``:
after mmdet has built the encoder and decoder, ``swap_deformable_attention`` replaces each of those
mmcv modules by ``MODELS.build({**layer_attention_cfg, **attention_cfg})``, i.e. the module the
layer would have built with ``type`` (and any other key of ``attention_cfg``) added to its own
config. A config inherits mmdet's and changes only the detector type::

    _base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
    custom_imports = dict(imports=['projects'], allow_failed_imports=False)
    model = dict(type='DeformableDETRWithAttention',
                 attention_cfg=dict(type='FastMultiScaleDeformableAttention'))

The replacement must subclass mmcv's ``MultiScaleDeformableAttention`` (mmdet's ``init_weights``
finds the modules to re-initialise by ``isinstance``); with the same constructor arguments it
has the same parameters, so mmdet's checkpoints load unchanged.
"""
import copy
from typing import Iterator, Tuple

from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention
from mmdet.models.detectors import DINO, DeformableDETR
from mmdet.registry import MODELS
from mmdet.utils import ConfigType
from torch import nn

from .module import FastMultiScaleDeformableAttention

__all__ = ['DINOWithAttention', 'DeformableDETRWithAttention', 'swap_deformable_attention']

FAST_ATTENTION = dict(type=FastMultiScaleDeformableAttention.__name__)


def swap_deformable_attention(module: nn.Module, attention_cfg: ConfigType) -> int:
    """Replaces every mmcv ``MultiScaleDeformableAttention`` under ``module`` (exactly that class)
    by one built from the registry; returns how many were replaced.

    Each is rebuilt from the config its parent kept for it (``<name>_cfg``, as mmdet's
    transformer layers keep ``self_attn_cfg`` and ``cross_attn_cfg``) updated with
    ``attention_cfg``, which must name a registered subclass of mmcv's module in ``type``.
    """
    if 'type' not in attention_cfg:
        raise ValueError(f'attention_cfg must name the attention class in "type", e.g. '
                         f'{FAST_ATTENTION}, got {dict(attention_cfg)}')
    replaced = 0
    for qualified_name, parent, name in list(_mmcv_attention_slots(module)):
        setattr(parent, name, _build_attention(qualified_name, parent, name, attention_cfg))
        replaced += 1
    return replaced


def _mmcv_attention_slots(module: nn.Module) -> Iterator[Tuple[str, nn.Module, str]]:
    """(qualified name, parent, attribute name) of each mmcv deformable attention."""
    for parent_name, parent in module.named_modules():
        for name, child in parent.named_children():
            if type(child) is MultiScaleDeformableAttention:
                yield f'{parent_name}.{name}' if parent_name else name, parent, name


def _build_attention(qualified_name: str, parent: nn.Module, name: str,
                     attention_cfg: ConfigType) -> MultiScaleDeformableAttention:
    """The attention ``parent.<name>`` built from ``parent.<name>_cfg`` updated with
    ``attention_cfg``."""
    layer_cfg = getattr(parent, f'{name}_cfg', None)
    if layer_cfg is None:
        raise ValueError(f'cannot replace the deformable attention {qualified_name}: '
                         f'{type(parent).__name__} keeps no {name}_cfg to rebuild it from')
    attention = MODELS.build({**copy.deepcopy(dict(layer_cfg)), **attention_cfg})
    if not isinstance(attention, MultiScaleDeformableAttention):
        raise TypeError(f'attention_cfg type {attention_cfg["type"]!r} built a '
                        f'{type(attention).__name__}, expected a subclass of mmcv\'s '
                        'MultiScaleDeformableAttention (mmdet initialises those by isinstance)')
    return attention


class _AttentionFromConfig:
    """Mixin for a mmdet DETR-like detector: ``attention_cfg`` (default: ours) picks the class of
    the deformable attention modules its ``_init_layers`` builds in ``encoder`` and ``decoder``."""

    def __init__(self, *args, attention_cfg: ConfigType = FAST_ATTENTION, **kwargs) -> None:
        self.attention_cfg = copy.deepcopy(attention_cfg)  # read by _init_layers during __init__
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        replaced = sum(swap_deformable_attention(part, self.attention_cfg)
                       for part in (self.encoder, self.decoder))
        if replaced == 0:
            raise RuntimeError(f'{type(self).__name__}: mmdet built no mmcv '
                               'MultiScaleDeformableAttention in encoder or decoder to replace')


@MODELS.register_module()
class DeformableDETRWithAttention(_AttentionFromConfig, DeformableDETR):
    """mmdet's ``DeformableDETR`` whose deformable attention is ``attention_cfg``."""


@MODELS.register_module()
class DINOWithAttention(_AttentionFromConfig, DINO):
    """mmdet's ``DINO`` whose deformable attention is ``attention_cfg``."""
