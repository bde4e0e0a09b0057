# A CPU-sized BEVFormer for the toy nuScenes world (`python tools/data/make_toy_nuscenes.py`):
# six 400x224 cameras, a ResNet-18 at 1/4 width (no pretrained weights) with C3 + C4 -> FPN 64,
# a 32x32 BEV over +-32 m, 1 encoder layer, 3 decoder layers, 100 queries, a queue of 2 keyframes
# (one previous BEV), the CAN-bus input (the world writes a CAN bus expansion), our exact temporal
# alignment. Evaluated with mmdet3d's NuScenesMetric on the toy world's mini_val scenes.
_base_ = ['../_base_/datasets/nuscenes_bev.py', 'mmdet3d::_base_/default_runtime.py']
custom_imports = dict(imports=['projects'], allow_failed_imports=False)
default_scope = 'mmdet3d'

data_root = 'data/toy_nuscenes/'
point_cloud_range = [-32.0, -32.0, -5.0, 32.0, 32.0, 3.0]
embed_dims = 64

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
        depth=18,
        base_channels=16,
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(1, 2),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch'),
    img_neck=dict(
        type='mmdet.FPN',
        in_channels=[32, 64],
        out_channels=embed_dims,
        num_outs=2),
    encoder=dict(
        type='BEVFormerEncoder',
        bev_h=32,
        bev_w=32,
        point_cloud_range=point_cloud_range,
        num_layers=1,
        embed_dims=embed_dims,
        num_cams=6,
        num_feature_levels=2,
        num_points_in_pillar=4,
        use_can_bus=True,
        temporal_alignment='exact',
        layer_cfg=dict(
            feedforward_channels=2 * embed_dims,
            ffn_drop=0.0,
            self_attn_cfg=dict(num_heads=4, num_points=4, dropout=0.0),
            cross_attn_cfg=dict(num_heads=4, num_points=8, dropout=0.0))),
    bbox_head=dict(
        type='BEVFormerHead',
        num_classes=10,
        num_query=100,
        num_layers=3,
        embed_dims=embed_dims,
        num_heads=4,
        num_points=4,
        feedforward_channels=2 * embed_dims,
        dropout=0.0,
        point_cloud_range=point_cloud_range,
        post_center_range=[-40.0, -40.0, -10.0, 40.0, 40.0, 10.0],
        max_num=100),
    video_test_mode=True)

# the world is a v1.0-mini database: NuScenesMetric reads the version from the dataset's metainfo
_metainfo = dict(classes=_base_.class_names, version='v1.0-mini')
_train_pipeline = [
    dict(type='LoadMultiViewImages'),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=_base_.class_names),
    dict(type='PackBEVInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d']),
]
_test_pipeline = [
    dict(type='LoadMultiViewImages'),
    dict(type='PackBEVInputs', keys=['img']),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=_metainfo, pipeline=_train_pipeline,
                 queue_length=2, with_can_bus=True))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=_metainfo, pipeline=_test_pipeline,
                 with_can_bus=True))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01, fused=True),  # one kernel per step
    clip_grad=dict(max_norm=35, norm_type=2))
max_epochs = 24
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=1e-2, convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=4, max_keep_ckpts=2),
    visualization=dict(type='BEVVisualizationHook', draw=False, score_threshold=0.3))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
