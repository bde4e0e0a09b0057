"""Swin Transformer v1 / v2 backbones (registered in mmdet's MODELS as ``SwinBackbone`` and
``SwinV2Backbone``) and the converter of official / mmdet checkpoints."""
from .convert import convert_swin_checkpoint
from .swin import SwinBackbone, SwinV2Backbone

__all__ = ['SwinBackbone', 'SwinV2Backbone', 'convert_swin_checkpoint']
