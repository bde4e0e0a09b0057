# The quickstart's toy RetinaNet with a small MOA (ours, trained from scratch) in place of the small
# Swin: the same sizes (32 channels, two blocks per stage, window 4), reduction 8 so that the MOA
# keeps 4 channels in the first stage. The backbone is written out rather than taken from
# ../_base_/backbones/moa.py: inheriting that file beside the Swin toy config would define
# `custom_imports` twice among the bases.
_base_ = './retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='MOABackbone',
        embed_dims=32,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        window_size=4,
        overlap=1,
        reduction=8,
        pretrain_img_size=128,  # the toy images: one bias per patch offset
        drop_path_rate=0.1,
        out_indices=(1, 2, 3),
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256]))

# Trained from scratch, this MOA first sits on a plateau (background everywhere) and leaves it at
# a random point; the 250-iteration warm-up (the base config's) makes it leave early and reliably.
