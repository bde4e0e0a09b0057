"""mmdet's Deformable DETR and DINO with our deformable attention (``*WithAttention``): the same
predictions, losses and gradients as with mmcv's attention and the same weights; the configs use
ours in every layer; a training step on toy images runs and moves the sampling offsets."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention
from mmdet.registry import DATASETS, MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from numeric_helpers import assert_relative_close
from torch import nn

from projects.datasets import prepare_toy_coco
from projects.deformable_attention import (DeformableDETRWithAttention,
                                           FastMultiScaleDeformableAttention,
                                           swap_deformable_attention)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'deformable_detr')
TOY_CONFIG = osp.join(REPO, 'configs', 'toy', 'deformable-detr_swin-nano_1xb8-12e_toy-coco.py')
DETR_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py'))) + [TOY_CONFIG]
VARIANTS = {  # mmdet's two-stage proposals and DINO's queries need 256-d embeddings
    'plain': 'deformable-detr_r50_16xb2-50e_coco.py',
    'refine': 'deformable-detr-refine_r50_16xb2-50e_coco.py',
    'refine-twostage': 'deformable-detr-refine-twostage_r50_16xb2-50e_coco.py',
    'dino': 'dino-4scale_r50_8xb2-12e_coco.py',
}
MMDET_TYPE = {'DeformableDETRWithAttention': 'DeformableDETR', 'DINOWithAttention': 'DINO'}
SMALL = dict(  # R-18, 1 encoder and 2 decoder layers with narrow FFNs, 20 queries, 4 levels
    num_queries=20,
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[128, 256, 512]),
    encoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=64))),
    decoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=64))),
    bbox_head=dict(num_classes=3),
    test_cfg=dict(max_per_img=20))
IMAGE_SHAPES = ((64, 96), (48, 80))  # the second image padded: exercises the padding mask


def build(model_cfg) -> nn.Module:
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(copy.deepcopy(model_cfg))


def small_model_cfg(variant: str) -> Config:
    cfg = Config.fromfile(osp.join(CONFIG_DIR, VARIANTS[variant]))
    cfg.merge_from_dict(dict(model=SMALL))
    return cfg.model


def build_pair(variant: str, seed: int = 0):
    """(ours, mmdet's with mmcv's attention), the same random weights in both."""
    ours_cfg = small_model_cfg(variant)
    mmcv_cfg = copy.deepcopy(ours_cfg)
    mmcv_cfg.type = MMDET_TYPE[ours_cfg.type]
    mmcv_cfg.pop('attention_cfg')
    torch.manual_seed(seed)
    theirs = build(mmcv_cfg)
    theirs.init_weights()
    with torch.no_grad():  # mmcv's init is a fixed grid with uniform weights: perturb it
        for module in theirs.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                for linear in module.sampling_offsets, module.attention_weights:
                    linear.weight.normal_(std=0.05)
                    linear.bias.add_(torch.randn_like(linear.bias))
    ours = build(ours_cfg)
    ours.load_state_dict(theirs.state_dict())  # strict: mmdet's checkpoints load unchanged
    return ours, theirs


def make_batch(seed: int = 1, with_boxes: bool = False):
    """Inputs (2, 3, 64, 96) normalised images and their data samples (fresh each call)."""
    generator = torch.Generator().manual_seed(seed)
    batch_shape = IMAGE_SHAPES[0]
    inputs = torch.randn(len(IMAGE_SHAPES), 3, *batch_shape, generator=generator)
    samples = []
    for height, width in IMAGE_SHAPES:
        sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             batch_input_shape=batch_shape,
                                             pad_shape=batch_shape, scale_factor=(1.0, 1.0)))
        if with_boxes:
            top_left = torch.rand(3, 2, generator=generator) * 0.5
            size = 0.2 + torch.rand(3, 2, generator=generator) * 0.3
            scale = torch.tensor([width, height] * 2, dtype=torch.float32)
            sample.gt_instances = InstanceData(
                bboxes=torch.cat([top_left, top_left + size], 1) * scale,
                labels=torch.tensor([0, 1, 2]))
        samples.append(sample)
    return inputs, samples


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_same_predictions_as_with_mmcv_attention(variant):
    ours, theirs = build_pair(variant)
    ours.eval(), theirs.eval()
    inputs, _ = make_batch()
    with torch.no_grad():
        expected_outputs = theirs(inputs, make_batch()[1], mode='tensor')
        actual_outputs = ours(inputs, make_batch()[1], mode='tensor')
        expected = theirs.predict(inputs, make_batch()[1], rescale=False)
        actual = ours.predict(inputs, make_batch()[1], rescale=False)
    # every decoder layer's class logits and boxes, for every query
    for name, a, e in zip(('cls_scores', 'bbox_preds'), actual_outputs, expected_outputs):
        assert_relative_close(a, e, 1e-4, min_scale=1.0, what=name)
    for image, (a, e) in enumerate(zip(actual, expected)):
        assert torch.equal(a.pred_instances.labels, e.pred_instances.labels), image
        assert_relative_close(a.pred_instances.scores, e.pred_instances.scores, 1e-4,
                              min_scale=1.0, what=f'scores {image}')
        assert_relative_close(a.pred_instances.bboxes, e.pred_instances.bboxes, 1e-4,
                              min_scale=1.0, what=f'boxes {image}')


@pytest.mark.parametrize('variant', ['refine-twostage', 'dino'])
def test_same_losses_and_gradients_as_with_mmcv_attention(variant):
    ours, theirs = build_pair(variant)
    ours.train(), theirs.train()
    losses = {}
    for name, model in ('ours', ours), ('theirs', theirs):
        torch.manual_seed(2)  # the same dropout masks and (DINO) denoising queries
        inputs, samples = make_batch(with_boxes=True)
        losses[name] = model.loss(inputs, samples)
        sum(value for key, value in losses[name].items() if 'loss' in key).backward()
    for key, expected in losses['theirs'].items():
        assert_relative_close(losses['ours'][key], expected, 1e-4, min_scale=1.0, what=key)
    for (name, parameter), reference in zip(ours.named_parameters(), theirs.parameters()):
        if reference.grad is not None:
            assert_relative_close(parameter.grad, reference.grad, 1e-3, min_scale=1.0,
                                  what=name)


@pytest.mark.parametrize('path', DETR_CONFIGS, ids=[osp.relpath(p, REPO) for p in DETR_CONFIGS])
def test_configs_use_our_attention_in_every_layer(path):
    cfg = Config.fromfile(path)
    model = build(cfg.model)
    attentions = [m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert all(type(m) is FastMultiScaleDeformableAttention for m in attentions)
    assert len(attentions) == cfg.model.encoder.num_layers + cfg.model.decoder.num_layers
    assert type(model).__name__ == cfg.model.type


def test_without_a_type_or_with_another_class_is_refused():
    model_cfg = small_model_cfg('plain')
    with pytest.raises(ValueError, match='attention_cfg must name the attention class'):
        build(dict(model_cfg, attention_cfg=dict(im2col_step=32)))
    with pytest.raises(TypeError, match='expected a subclass of mmcv'):
        build(dict(model_cfg, attention_cfg=dict(type='MultiheadAttention', num_heads=8)))


def test_attention_cfg_keys_reach_every_attention():
    model = build(dict(small_model_cfg('plain'), attention_cfg=dict(
        type='FastMultiScaleDeformableAttention', im2col_step=32)))
    attentions = [m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert attentions and all(m.im2col_step == 32 for m in attentions)
    assert isinstance(model, DeformableDETRWithAttention)


def test_swap_rebuilds_from_the_parent_config():
    holder = nn.Module()
    holder.attention_cfg = dict(embed_dims=32, num_heads=4, num_points=2)
    holder.attention = MultiScaleDeformableAttention(**holder.attention_cfg)
    holder.already_ours = FastMultiScaleDeformableAttention(embed_dims=32, num_heads=4)
    kept = holder.already_ours
    assert swap_deformable_attention(holder, dict(type='FastMultiScaleDeformableAttention')) == 1
    assert type(holder.attention) is FastMultiScaleDeformableAttention
    assert holder.attention.num_points == 2 and holder.already_ours is kept


def test_an_attention_without_its_config_is_named():
    holder = nn.Module()
    holder.layer = nn.Module()
    holder.layer.attention = MultiScaleDeformableAttention(embed_dims=32, num_heads=4)
    with pytest.raises(ValueError, match='layer.attention: Module keeps no attention_cfg'):
        swap_deformable_attention(holder, dict(type='FastMultiScaleDeformableAttention'))


def test_training_step_on_toy_images_moves_the_sampling_offsets(tmp_path):
    prepare_toy_coco(tmp_path, num_train=2, num_val=1, progress=False)
    cfg = Config.fromfile(TOY_CONFIG)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    torch.manual_seed(0)
    model = build(cfg.model)
    model.init_weights()
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    offsets = [m.sampling_offsets.weight for m in model.modules()
               if isinstance(m, FastMultiScaleDeformableAttention)]
    before = [weight.detach().clone() for weight in offsets]
    log_vars = model.train_step(pseudo_collate([dataset[0], dataset[1]]), optim_wrapper)
    assert all(torch.isfinite(value).all() for value in log_vars.values())
    # mmcv's init zeroes these weights: they move only if the gradient reaches them through the op
    assert all(not torch.equal(a, b) for a, b in zip(offsets, before))
