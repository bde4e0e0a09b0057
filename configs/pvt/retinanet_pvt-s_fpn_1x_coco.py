# RetinaNet, PVT-Small, 1x schedule (AdamW 1e-4).
# mmdet's config with our backbone in place of mmdet's PyramidVisionTransformer; everything else
# as published.
_base_ = ['mmdet::pvt/retinanet_pvt-s_fpn_1x_coco.py', '../_base_/backbones/pvt.py']

model = dict(backbone=_base_.pvt_s)
