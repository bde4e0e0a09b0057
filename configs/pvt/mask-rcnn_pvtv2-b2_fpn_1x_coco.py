# Mask R-CNN, PVTv2-b2, 1x schedule (12 epochs, steps at 8 and 11; AdamW lr 1e-4, weight decay
# 1e-4): the PVT papers' detection setting. mmdet has no PVT Mask R-CNN config: its ResNet-50 one
# with our backbone in place of the ResNet.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../_base_/backbones/pvt.py']

model = dict(backbone=_base_.pvtv2_b2, neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
