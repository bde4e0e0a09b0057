# The generated toy COCO set (tools/data/make_toy_coco.py: 128x128 images of circles, squares,
# triangles and crosses), as variables that toy configs assign:
#     train_dataloader = _base_.toy_train_dataloader
# A config whose mmdet:: base already defines the dataloaders replaces them instead of merging:
#     train_dataloader = dict(_base_.toy_train_dataloader, _delete_=True)
toy_data_root = 'data/toy_coco/'
toy_metainfo = dict(  # projects.datasets.toy_coco.METAINFO
    classes=('circle', 'square', 'triangle', 'cross'),
    palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75), (255, 160, 0)])
toy_image_size = (128, 128)

# 400 images are memorised quickly: the shapes' classes do not change under flips, shifts or
# colour changes, so augment them. `toy_plain_train_pipeline` (horizontal flips only) suits short
# schedules that are still fitting (the 12-epoch toy Deformable DETR; docs/benchmarks.md).
toy_plain_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=toy_image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
_train_pipeline = toy_plain_train_pipeline[:3] + [
    dict(type='RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='RandomShift', prob=0.5, max_shift_px=16),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputs'),
]
_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=toy_image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_dataset = dict(type='CocoDataset', data_root=toy_data_root, metainfo=toy_metainfo)

toy_train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(_dataset, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True),
                 pipeline=_train_pipeline))
toy_val_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_dataset, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), test_mode=True, pipeline=_test_pipeline))
toy_val_evaluator = dict(
    type='CocoMetric', ann_file=toy_data_root + 'annotations/instances_val.json', metric='bbox')
