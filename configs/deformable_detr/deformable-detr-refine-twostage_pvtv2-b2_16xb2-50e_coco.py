# Deformable DETR with box refinement, two-stage, PVTv2-b2 (ImageNet-1k pretrained), 50 epochs.
# mmdet's R-50 config with our PVTv2-b2 backbone and our deformable attention; the optimizer (AdamW,
# backbone lr x0.1) and schedule as published for R-50.
_base_ = [
    'mmdet::deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py',
    '../_base_/backbones/pvt.py',
]

model = dict(
    type='DeformableDETRWithAttention',
    attention_cfg=dict(type='FastMultiScaleDeformableAttention'),
    backbone=dict(_base_.pvtv2_b2, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[128, 320, 512]))
