# BEVFormer-small (published model; augmentation as in the tiny config): ResNet-101-DCN (caffe)
# C5 -> FPN 256, images at 0.8 scale (1280x720), 150x150 BEV, 3 encoder layers, queue of 3,
# backbone checkpointed. Starts, as the original, from the FCOS3D detector's weights loaded into
# the whole model (`load_from`: its img_backbone / img_neck tensors).
_base_ = './bevformer_tiny_8xb1-24e_nuscenes.py'

_fcos3d = 'https://github.com/zhiqi-li/storage/releases/download/v1.0/r101_dcn_fcos3d_pretrain.pth'
model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0],
                           bgr_to_rgb=False),
    img_backbone=dict(
        depth=101,
        style='caffe',
        with_cp=True,
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, False, True, True),
        init_cfg=None),
    encoder=_base_.bevformer_small_encoder)
load_from = _fcos3d

_scale = 0.8
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadMultiViewImages', to_float32=True),
    dict(type='MultiViewPhotoMetricDistortion'),  # per view, as the official recipe
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range=_base_.point_cloud_range),
    dict(type='ObjectNameFilter', classes=_base_.class_names),
    dict(type='MultiViewResize', scale_factor=_scale),
    dict(type='PackBEVInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d']),
]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadMultiViewImages', to_float32=True),
    dict(type='MultiViewResize', scale_factor=_scale),
    dict(type='PackBEVInputs', keys=['img']),
]))
test_dataloader = val_dataloader
