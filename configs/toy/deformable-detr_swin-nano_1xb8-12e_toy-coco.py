# Deformable DETR with box refinement, a small Swin (ours, trained from scratch) and our deformable
# attention on the generated toy COCO set (tools/data/make_toy_coco.py: 128x128 images of coloured
# shapes). Small enough for 2 CPU cores (~0.25 s/iter at batch 8 on idle cores): 64-d transformer,
# 2 encoder and 2 decoder layers, 30 queries, 4 levels (16x16 down to 2x2). Not two-stage: mmdet's
# two-stage proposal embedding is fixed at 4 x 128 dims, i.e. needs a 256-d transformer.
_base_ = [
    'mmdet::deformable_detr/deformable-detr-refine_r50_16xb2-50e_coco.py',
    '../_base_/backbones/swin.py',
    '../_base_/datasets/toy_coco.py',
]

embed_dims = 64
num_queries = 30

_attention = dict(embed_dims=embed_dims, num_heads=4, dropout=0.0)
_ffn = dict(embed_dims=embed_dims, feedforward_channels=4 * embed_dims, ffn_drop=0.0)
model = dict(
    type='DeformableDETRWithAttention',
    attention_cfg=dict(type='FastMultiScaleDeformableAttention'),
    num_queries=num_queries,
    backbone=_base_.swin_nano,
    neck=dict(in_channels=[64, 128, 256], out_channels=embed_dims,
              norm_cfg=dict(type='GN', num_groups=16)),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=_attention, ffn_cfg=_ffn)),
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(self_attn_cfg=_attention, cross_attn_cfg=_attention, ffn_cfg=_ffn)),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(num_classes=len(_base_.toy_metainfo['classes']), embed_dims=embed_dims),
    test_cfg=dict(max_per_img=num_queries))

# mmdet's COCO dataloaders (with DETR's augmentation) replaced by the toy set's
# (12 epochs are still fitting: the plain pipeline, not the toy set's augmentation)
train_dataloader = dict(
    _base_.toy_train_dataloader, _delete_=True,
    dataset=dict(_base_.toy_train_dataloader['dataset'],
                 pipeline=_base_.toy_plain_train_pipeline))
val_dataloader = dict(_base_.toy_val_dataloader, _delete_=True)
test_dataloader = val_dataloader
val_evaluator = dict(_base_.toy_val_evaluator, _delete_=True)
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4, fused=True),  # fused: one AdamW kernel per step
    # from scratch: the backbone at the full learning rate (mmdet's pretrained R-50 gets x0.1)
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=1.0))))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2),
    visualization=dict(interval=10))  # with --show-dir: paint every 10th val image
visualizer = dict(type='ScoreOrderedDetVisualizer')  # each object's best guess drawn on top
log_processor = dict(window_size=10)
auto_scale_lr = dict(base_batch_size=8)
