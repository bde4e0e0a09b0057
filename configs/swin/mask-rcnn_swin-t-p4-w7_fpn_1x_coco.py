# Mask R-CNN, Swin-T, 1x schedule (12 epochs, AdamW 1e-4): the Swin paper's detection setting.
# mmdet's config with our backbone in place of mmdet's SwinTransformer; everything else as
# published.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    '../_base_/backbones/swin.py',
]

model = dict(backbone=_base_.swin_t)
