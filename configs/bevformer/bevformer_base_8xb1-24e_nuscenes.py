# BEVFormer-base (published model; augmentation as in the tiny config): ResNet-101-DCN (caffe,
# FCOS3D weights via load_from) C3-C5 -> FPN 256 x 4
# levels, full 1600x900 images, 200x200 BEV, 6 encoder layers, a queue of 4.
_base_ = './bevformer_small_8xb1-24e_nuscenes.py'

model = dict(
    img_backbone=dict(out_indices=(1, 2, 3), with_cp=False),
    img_neck=dict(in_channels=[512, 1024, 2048], num_outs=4),
    encoder=_base_.bevformer_base_encoder)

train_dataloader = dict(dataset=dict(
    queue_length=4,
    pipeline=[
        dict(type='LoadMultiViewImages', to_float32=True),
        dict(type='MultiViewPhotoMetricDistortion'),  # per view, as the official recipe
        dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True,
             with_attr_label=False),
        dict(type='ObjectRangeFilter', point_cloud_range=_base_.point_cloud_range),
        dict(type='ObjectNameFilter', classes=_base_.class_names),
        dict(type='PackBEVInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d']),
    ]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadMultiViewImages', to_float32=True),
    dict(type='PackBEVInputs', keys=['img']),
]))
test_dataloader = val_dataloader
