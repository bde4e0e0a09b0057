# Our Swin backbones (projects/swin), as variables that detector configs drop into
# `model.backbone`: `model = dict(backbone=_base_.swin_t)`. `_delete_` discards the backbone of
# the mmdet:: base config (mmdet's own SwinTransformer or ResNet) instead of merging into it.
custom_imports = dict(imports=['projects'], allow_failed_imports=False)

_v1 = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
_v2 = 'https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'

swin_t = dict(
    _delete_=True,
    type='SwinBackbone',
    embed_dims=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4,
    qkv_bias=True,
    drop_rate=0.,
    attn_drop_rate=0.,
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3),
    with_cp=False,
    init_cfg=dict(type='Pretrained', checkpoint=_v1 + 'swin_tiny_patch4_window7_224.pth'))

# A small Swin for the toy COCO configs (trained from scratch: no pretrained weights).
swin_nano = dict(
    swin_t,
    embed_dims=32,
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 4, 8],
    window_size=4,
    drop_path_rate=0.1,
    out_indices=(1, 2, 3),
    init_cfg=None)

swin_s = dict(
    swin_t,
    depths=[2, 2, 18, 2],
    drop_path_rate=0.3,
    init_cfg=dict(type='Pretrained', checkpoint=_v1 + 'swin_small_patch4_window7_224.pth'))

swin_b = dict(
    swin_t,
    embed_dims=128,
    depths=[2, 2, 18, 2],
    num_heads=[4, 8, 16, 32],
    drop_path_rate=0.3,
    init_cfg=dict(type='Pretrained', checkpoint=_v1 + 'swin_base_patch4_window7_224_22k.pth'))

# Swin V2-T pretrained at 256x256 with window 8; detection uses window 16, the continuous position
# bias transfers across window sizes through the log-spaced coordinates.
swinv2_t = dict(
    swin_t,
    type='SwinV2Backbone',
    window_size=16,
    pretrained_window_size=8,
    init_cfg=dict(type='Pretrained', checkpoint=_v2 + 'swinv2_tiny_patch4_window8_256.pth'))
