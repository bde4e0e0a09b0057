# BEVFormer-tiny with our Swin-T (projects/swin, ImageNet-1K weights; the same settings as
# `swin_t` in configs/_base_/backbones/swin.py) as the image backbone: its last stage (768
# channels, stride 32) -> FPN 256, everything else as BEVFormer-tiny.
_base_ = './bevformer_tiny_8xb1-24e_nuscenes.py'

_swin = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
model = dict(
    img_backbone=dict(
        _delete_=True,
        type='mmdet.SwinBackbone',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(3, ),
        init_cfg=dict(type='Pretrained', checkpoint=_swin + 'swin_tiny_patch4_window7_224.pth')),
    img_neck=dict(in_channels=[768]))
