"""Multi-scale deformable attention (Deformable DETR, BEVFormer): one fast op on every device, and
``FastMultiScaleDeformableAttention``, mmcv's module running on it (registered on import)."""
from .module import FastMultiScaleDeformableAttention
from .ops import multi_scale_deformable_attention

__all__ = ['FastMultiScaleDeformableAttention', 'multi_scale_deformable_attention']
