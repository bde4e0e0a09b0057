# Mask R-CNN, MOA-T (four stages, window 7), 1x schedule (12 epochs, AdamW 1e-4): mmdet's Swin-T
# config (the Swin paper's detection setting) with our backbone in place of mmdet's
# SwinTransformer. No pretrained weights exist for this layout: the backbone starts from scratch.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '../_base_/backbones/moa.py']

model = dict(backbone=_base_.moa_t, neck=dict(in_channels=[96, 192, 384, 768]))
