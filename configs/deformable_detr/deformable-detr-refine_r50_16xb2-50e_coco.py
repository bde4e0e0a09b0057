# Deformable DETR with iterative box refinement, R-50, 50 epochs.
# mmdet's config with our deformable attention (projects/deformable_attention) in place of mmcv's
# in every encoder and decoder layer; everything else, weights included, as published.
_base_ = 'mmdet::deformable_detr/deformable-detr-refine_r50_16xb2-50e_coco.py'
custom_imports = dict(imports=['projects'], allow_failed_imports=False)

model = dict(type='DeformableDETRWithAttention',
             attention_cfg=dict(type='FastMultiScaleDeformableAttention'))
