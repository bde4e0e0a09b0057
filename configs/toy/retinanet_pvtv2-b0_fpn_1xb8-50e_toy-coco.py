# The quickstart's toy RetinaNet with a PVTv2-b0 (ours, trained from scratch) in place of the small
# Swin. The backbone is written out rather than taken from ../_base_/backbones/pvt.py: inheriting
# that file beside the Swin toy config would define `custom_imports` twice among the bases.
_base_ = './retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTV2Backbone',
        arch='b0',
        drop_path_rate=0.1,
        out_indices=(1, 2, 3),
        init_cfg=None),
    neck=dict(in_channels=[64, 160, 256]))

# PVTv2 leaves the start steadily (no plateau): a 100-iteration warm-up is enough.
param_scheduler = [dict(_base_.param_scheduler[0], end=100), _base_.param_scheduler[1]]
