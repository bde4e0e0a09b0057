"""Multi-scale deformable attention (Deformable DETR, BEVFormer): one fast op on every device,
``FastMultiScaleDeformableAttention``, mmcv's module running on it, and mmdet's Deformable DETR /
DINO with the attention chosen in the config (all registered on import)."""
from .detr import DeformableDETRWithAttention, DINOWithAttention, swap_deformable_attention
from .module import FastMultiScaleDeformableAttention
from .ops import SAMPLING_OPS, get_sampling_op, multi_scale_deformable_attention

__all__ = [
    'DINOWithAttention', 'DeformableDETRWithAttention', 'FastMultiScaleDeformableAttention',
    'SAMPLING_OPS', 'get_sampling_op', 'multi_scale_deformable_attention',
    'swap_deformable_attention'
]
