"""Pyramid Vision Transformer v1 / v2 backbones (registered in mmdet's MODELS as ``PVTBackbone``
and ``PVTV2Backbone``) and the converter of official / mmdet checkpoints."""
from .convert import convert_pvt_checkpoint
from .pvt import PVTBackbone, PVTV2Backbone

__all__ = ['PVTBackbone', 'PVTV2Backbone', 'convert_pvt_checkpoint']
