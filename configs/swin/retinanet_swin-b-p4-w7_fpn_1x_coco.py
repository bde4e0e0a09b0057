# RetinaNet, Swin-B (ImageNet-22K pretrained), 1x schedule.
# mmdet's config with our backbone in place of mmdet's SwinTransformer; everything else as
# published.
_base_ = [
    'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py',
    '../_base_/backbones/swin.py',
]

# Only the stages FPN uses, so that no parameter goes unused under DDP.
model = dict(
    backbone=dict(_base_.swin_b, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[256, 512, 1024]))
