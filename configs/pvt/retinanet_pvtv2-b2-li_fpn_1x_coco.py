# RetinaNet, PVTv2-b2-li (linear spatial-reduction attention), 1x schedule (AdamW 1e-4).
# mmdet has no '-li' variant: its PVTv2-b2 config with our linear backbone in its place.
_base_ = ['mmdet::pvt/retinanet_pvtv2-b2_fpn_1x_coco.py', '../_base_/backbones/pvt.py']

model = dict(backbone=_base_.pvtv2_b2_li)
