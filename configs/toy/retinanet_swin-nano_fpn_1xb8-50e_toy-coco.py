# Quickstart: RetinaNet with a small Swin (ours, trained from scratch) on the generated toy COCO set
# (tools/data/make_toy_coco.py: 128x128 images of coloured shapes). Learns on 2 CPU cores in
# minutes.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/backbones/swin.py',
    '../_base_/datasets/toy_coco.py',
]

model = dict(
    backbone=_base_.swin_nano,
    # strides 8, 16, 32 only (a 128x128 image has nothing for 64 and 128), anchors of 16-101 px
    # for objects of 19-64 px
    neck=dict(in_channels=[64, 128, 256], out_channels=64, start_level=0, num_outs=3),
    # GroupNorm in the head: trained from scratch, it converges much faster with it
    bbox_head=dict(num_classes=len(_base_.toy_metainfo['classes']), in_channels=64,
                   feat_channels=64, stacked_convs=2, norm_cfg=dict(type='GN', num_groups=16),
                   anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32])))

train_dataloader = _base_.toy_train_dataloader
val_dataloader = _base_.toy_val_dataloader
test_dataloader = val_dataloader
val_evaluator = _base_.toy_val_evaluator
test_evaluator = val_evaluator

max_epochs = 50
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    # fused: one kernel per step for all parameters (the per-tensor loop was ~10% of a CPU step)
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, fused=True),
    paramwise_cfg=dict(custom_keys={'relative_position_bias_table': dict(decay_mult=0.),
                                    'norm': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10, norm_type=2))
# Warm-up over 250 iterations (5 epochs). Trained from scratch, the detector first sits on a plateau
# (loss_cls ~0.6, background everywhere) and leaves it at a random point; the final AP follows,
# and the longer warm-up makes it leave early in every run (docs/benchmarks.md).
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=250),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2),
    visualization=dict(interval=10))  # with --show-dir: paint every 10th val image
# Prediction pictures draw each object's best guess on top (mmdet draws the weakest last)
visualizer = dict(type='ScoreOrderedDetVisualizer')
log_processor = dict(window_size=10)
auto_scale_lr = dict(enable=False, base_batch_size=8)
