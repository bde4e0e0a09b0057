# Mask R-CNN, Swin-B (ImageNet-22K pretrained), 3x schedule with multi-scale and crop augmentation.
# mmdet's config with our backbone in place of mmdet's SwinTransformer; everything else as
# published.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
    '../_base_/backbones/swin.py',
]

model = dict(backbone=_base_.swin_b, neck=dict(in_channels=[128, 256, 512, 1024]))
