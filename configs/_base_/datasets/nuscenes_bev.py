# nuScenes, six cameras, for BEVFormer (projects/bevformer): mmdet3d 1.4 infos with the temporal
# fields added by `python tools/data/create_nuscenes_infos.py` (scene_token, prev, next), a
# queue of previous keyframes for training, mmdet3d's NuScenesMetric (nuscenes-devkit's
# DetectionEval) for evaluation. The images are resized by `bev_image_scale` (BEVFormer-tiny: 0.5,
# i.e. 800x450); normalisation and padding to 32 happen in the model's Det3DDataPreprocessor.

dataset_type = 'BEVNuScenesDataset'
data_root = 'data/nuscenes/'
class_names = [
    'car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle',
    'pedestrian', 'traffic_cone', 'barrier'
]
metainfo = dict(classes=class_names)
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
input_modality = dict(use_lidar=False, use_camera=True)
camera_prefixes = dict(
    CAM_FRONT='samples/CAM_FRONT',
    CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT',
    CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
    CAM_BACK='samples/CAM_BACK',
    CAM_BACK_LEFT='samples/CAM_BACK_LEFT',
    CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT')
bev_image_scale = 0.5
# images resized in float32, as the official pipeline (it normalised before resizing; the
# normalisation is affine per channel, so it commutes with the bilinear resize, uint8 rounding not)
bev_queue_length = 3
backend_args = None

train_pipeline = [
    dict(type='LoadMultiViewImages', to_float32=True, backend_args=backend_args),
    dict(type='MultiViewPhotoMetricDistortion'),  # per view, as the official recipe
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='MultiViewResize', scale_factor=bev_image_scale),
    dict(type='PackBEVInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d']),
]
test_pipeline = [
    dict(type='LoadMultiViewImages', to_float32=True, backend_args=backend_args),
    dict(type='MultiViewResize', scale_factor=bev_image_scale),
    dict(type='PackBEVInputs', keys=['img']),
]

train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='nuscenes_infos_train.pkl',
        data_prefix=camera_prefixes,
        pipeline=train_pipeline,
        metainfo=metainfo,
        modality=input_modality,
        queue_length=bev_queue_length,
        test_mode=False,
        use_valid_flag=True,  # train on boxes with LiDAR or radar points, as BEVFormer
        box_type_3d='LiDAR',
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    # in order, whole scenes per process: the model carries each scene's BEV from one keyframe
    # to the next (mmengine's DefaultSampler would deal the frames out round-robin)
    sampler=dict(type='SceneShardSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='nuscenes_infos_val.pkl',
        data_prefix=camera_prefixes,
        pipeline=test_pipeline,
        metainfo=metainfo,
        modality=input_modality,
        queue_length=1,
        test_mode=True,
        box_type_3d='LiDAR',
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='NuScenesMetric',
    data_root=data_root,
    ann_file=data_root + 'nuscenes_infos_val.pkl',
    metric='bbox',
    backend_args=backend_args)
test_evaluator = val_evaluator
