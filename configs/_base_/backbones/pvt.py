# Our PVT backbones (projects/pvt), as variables that detector configs drop into
# `model.backbone`: `model = dict(backbone=_base_.pvtv2_b2)`. `_delete_` discards the backbone of
# the mmdet:: base config (mmdet's own PyramidVisionTransformer(V2) or ResNet) instead of merging
# into it. Weights: the official ImageNet-1K checkpoints of whai362/PVT, converted on loading.
custom_imports = dict(imports=['projects'], allow_failed_imports=False)

_releases = 'https://github.com/whai362/PVT/releases/download/v2/'

pvt_s = dict(
    _delete_=True,
    type='PVTBackbone',
    arch='small',
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    with_cp=False,
    init_cfg=dict(type='Pretrained', checkpoint=_releases + 'pvt_small.pth'))

pvtv2_b0 = dict(
    _delete_=True,
    type='PVTV2Backbone',
    arch='b0',
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    with_cp=False,
    init_cfg=dict(type='Pretrained', checkpoint=_releases + 'pvt_v2_b0.pth'))

pvtv2_b2 = dict(
    pvtv2_b0,
    arch='b2',
    init_cfg=dict(type='Pretrained', checkpoint=_releases + 'pvt_v2_b2.pth'))

# '-li': keys/values from 7x7 average pooling (attention linear in the image area), ReLU MLP.
pvtv2_b2_li = dict(
    pvtv2_b2,
    linear=True,
    init_cfg=dict(type='Pretrained', checkpoint=_releases + 'pvt_v2_b2_li.pth'))
