# Mask R-CNN 1x with MOA-T as the official code builds it (three stages, window 14,
# moa_style='official'), starting from the official ImageNet-1k weights: put the file the authors
# send at checkpoints/moa_tiny_patch4_window14_224.pth (or set model.backbone.init_cfg.checkpoint).
# The FPN adds strides 32 and 64 by max pooling over the three stages.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '../_base_/backbones/moa.py']

model = dict(backbone=_base_.moa_t_official, neck=dict(in_channels=[96, 192, 384]))
