# DINO 4-scale, R-50, 12 epochs.
# mmdet's config with our deformable attention (projects/deformable_attention) in place of mmcv's
# in every encoder and decoder layer; everything else, weights included, as published.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['projects'], allow_failed_imports=False)

model = dict(type='DINOWithAttention', attention_cfg=dict(type='FastMultiScaleDeformableAttention'))
