# RetinaNet, PVTv2-b2, 1x schedule (AdamW 1e-4).
# mmdet's config with our backbone in place of mmdet's PyramidVisionTransformerV2; everything
# else as published.
_base_ = ['mmdet::pvt/retinanet_pvtv2-b2_fpn_1x_coco.py', '../_base_/backbones/pvt.py']

model = dict(backbone=_base_.pvtv2_b2)
