# Our MOA backbone (projects/moa), as variables that detector configs drop into `model.backbone`:
# `model = dict(backbone=_base_.moa_t)`. `_delete_` discards the backbone of the mmdet:: base
# config instead of merging into it.
custom_imports = dict(imports=['projects'], allow_failed_imports=False)

# MOA-T in the four-stage detection layout (strides 4, 8, 16, 32): the paper's MOA-T stages
# (96 channels, depths 2, 2, 8) plus a fourth stage, window 7 as Swin's detectors use. The official
# weights exist only for the paper's three-stage classification model with window 14; no
# checkpoint exists for this layout, so it trains from scratch (init_cfg None). For the official
# weights: arch='tiny' with its defaults (three stages, window 14) and
# init_cfg=dict(type='Pretrained', checkpoint='<official MOA-T .pth>').
moa_t = dict(
    _delete_=True,
    type='MOABackbone',
    arch='tiny',
    depths=[2, 2, 8, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    overlap=1,
    reduction=32,
    mlp_ratio=4,
    qkv_bias=True,
    drop_rate=0.,
    attn_drop_rate=0.,
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3),
    with_cp=False,
    init_cfg=None)

# MOA-T as the official code builds it, for its ImageNet-1k weights (krushi1992/MOA-transformer;
# sent by the authors on request, no public URL): three stages (strides 4, 8, 16), window 14,
# moa_style='official' (the official MOA block and layouts, which those weights were trained on).
moa_t_official = dict(
    _delete_=True,
    type='MOABackbone',
    arch='tiny',
    moa_style='official',
    drop_path_rate=0.2,
    out_indices=(0, 1, 2),
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/moa_tiny_patch4_window14_224.pth'))
