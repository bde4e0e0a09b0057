"""Multi-scale deformable attention (Deformable DETR, BEVFormer): one fast op on every device,
``FastMultiScaleDeformableAttention``, mmcv's module running on it, and mmdet's Deformable DETR /
DINO with the attention chosen in the config (all registered on import)."""
from .detr import DeformableDETRWithAttention, DINOWithAttention, swap_deformable_attention
from .module import FastMultiScaleDeformableAttention
from .ops import multi_scale_deformable_attention

__all__ = [
    'DINOWithAttention', 'DeformableDETRWithAttention', 'FastMultiScaleDeformableAttention',
    'multi_scale_deformable_attention', 'swap_deformable_attention'
]
