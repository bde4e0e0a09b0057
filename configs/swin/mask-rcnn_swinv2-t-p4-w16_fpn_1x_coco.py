# Mask R-CNN, Swin V2-T (window 16, pretrained at window 8), 1x schedule.
# mmdet's config with our backbone in place of mmdet's SwinTransformer; everything else as
# published.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    '../_base_/backbones/swin.py',
]

model = dict(backbone=_base_.swinv2_t)
