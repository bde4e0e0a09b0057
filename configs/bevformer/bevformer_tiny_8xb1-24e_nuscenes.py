# BEVFormer-tiny with the published model and recipe: ResNet-50 (torchvision weights) C5 -> FPN
# 256, images at 0.5 scale (800x450), 50x50 BEV, 3 encoder layers, 6 decoder layers, 900 queries,
# a queue of 3 keyframes (the current one and 2 of the 3 before it), GridMask, AdamW 2e-4
# (backbone x0.1), 24 epochs (cosine per epoch, evaluated every epoch), 8 GPUs x 1 sample. The
# encoder runs the official code path (configs/_base_/bev_encoders.py), so converted official
# checkpoints compute what the official model computes.
_base_ = [
    '../_base_/datasets/nuscenes_bev.py', '../_base_/bev_encoders.py',
    'mmdet3d::_base_/default_runtime.py'
]
custom_imports = dict(imports=['projects'], allow_failed_imports=False)
default_scope = 'mmdet3d'

model = dict(
    type='BEVFormerDetector',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    img_backbone=dict(
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    img_neck=dict(
        type='mmdet.FPN',
        in_channels=[2048],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=1,
        relu_before_extra_convs=True),
    encoder=_base_.bevformer_tiny_encoder,
    bbox_head=dict(
        type='BEVFormerHead',
        num_classes=10,
        num_query=900,
        num_layers=6,
        embed_dims=256,
        num_heads=8,
        num_points=4,
        feedforward_channels=512,
        point_cloud_range=_base_.point_cloud_range),
    grid_mask=dict(prob=0.7, ratio=0.5),
    video_test_mode=True)

# the encoder's CAN-bus input: infos made with tools/data/create_nuscenes_infos.py --can-bus-root
# the official recipe: 2 of the 3 keyframes before the current one, one dropped at random
train_dataloader = dict(dataset=dict(queue_length=3, queue_sampling='official', with_can_bus=True))
val_dataloader = dict(dataset=dict(with_can_bus=True))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2))
max_epochs = 24
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    # stepped once per epoch, as mmcv 1.x's CosineAnnealingLrUpdaterHook did for the release
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=1e-3)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    # `tools/test.py --show-dir DIR`: predictions and ground truth in the six cameras and in BEV
    visualization=dict(type='BEVVisualizationHook', draw=False, score_threshold=0.3))
# 8 GPUs x 1 sample in the release: `--auto-scale-lr` rescales lr for other batch sizes
auto_scale_lr = dict(enable=False, base_batch_size=8)
