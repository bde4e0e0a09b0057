"""Whole-detector checkpoints of other layouts load into our configs through mmengine's
``load_checkpoint`` (what ``tools/test.py CKPT`` and ``load_from`` use) and predict what the
detector they were saved from predicts; checkpoints that do not fit are errors.

The reference is always mmdet's own detector: for mmdet 3.x checkpoints, mmdet's config of the
same name; for the official repositories' checkpoints (mmdet 2.x files, official backbone names,
no installable reference), mmdet's detector whose backbone is loaded through mmdet's own
official->mmdet converter (``swin_converter``, ``pvt_convert``) from the same official tensors.
"""
import os.path as osp

import mmdet
import pytest
import torch
from backbone_helpers import randomize_
from mmdet.models.backbones.pvt import pvt_convert
from mmdet.models.backbones.swin import swin_converter
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.fileio import load
from mmengine.runner import load_checkpoint
from numeric_helpers import assert_relative_close
from official_layouts import official_pvt_state_dict, official_swin_state_dict

from projects.common.backbone import CheckpointMismatchError
from projects.datasets import prepare_toy_coco
from projects.engine import launch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
PVTV2_B2 = dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3))
# mmdet's own backbone in a detector config of ours, for the references of official checkpoints
MMDET_PVTV2_B2 = dict(_delete_=True, type='mmdet.PyramidVisionTransformerV2', embed_dims=64,
                      num_layers=[3, 4, 6, 3])
MMDET_PVT_S = dict(_delete_=True, type='mmdet.PyramidVisionTransformer', num_layers=[3, 4, 6, 3])
MMDET_SWIN_T = dict(_delete_=True, type='mmdet.SwinTransformer', embed_dims=96,
                    depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                    drop_path_rate=0.2, convert_weights=False)


def _config(path: str, backbone: dict = None) -> Config:
    cfg = Config.fromfile(path)
    if backbone is not None:
        cfg.merge_from_dict(dict(model=dict(backbone=backbone)))
    cfg.model.backbone.init_cfg = None  # no download: the weights come from the checkpoint
    if 'rcnn' in cfg.model.test_cfg:  # an untrained model: keep low-score detections, 20
        cfg.model.test_cfg.rcnn.score_thr, cfg.model.test_cfg.rcnn.max_per_img = 0.0, 20
    return cfg


def _model(path: str, backbone: dict = None):
    register_all_modules(init_default_scope=False)
    return MODELS.build(_config(path, backbone).model).eval()


def randomize_detector_(model) -> None:
    """Random weights everywhere: the backbone as the backbone tests do, the neck and heads at
    unit gain (std 1/sqrt(fan-in)), so that box deltas stay finite."""
    randomize_(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith('backbone.') and param.dim() > 1:
                param.normal_(0.0, param[0].numel() ** -0.5)


def _predict(model, images: torch.Tensor) -> list:
    """``model.predict`` on a batch of unpadded, unscaled images."""
    h, w = images.shape[-2:]
    samples = [DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                           scale_factor=(1.0, 1.0), pad_shape=(h, w),
                                           batch_input_shape=(h, w)))
               for _ in range(len(images))]
    with torch.no_grad():
        return [sample.pred_instances for sample in model.predict(images, samples)]


def assert_same_outputs(ours, reference, images: torch.Tensor) -> None:
    """Single-stage detectors: the head's raw outputs (scores and box deltas of every anchor,
    from which mmdet's own code makes the predictions) within 1e-4 of their scale. Two-stage
    detectors: the predictions: same labels, scores within 1e-4, boxes within 1e-4 of their
    scale, binary masks differing in at most 1e-4 of their pixels (pixels at probability 0.5
    within float error)."""
    if not hasattr(reference, 'roi_head'):
        with torch.no_grad():
            our_outputs = ours.bbox_head(ours.extract_feat(images))
            reference_outputs = reference.bbox_head(reference.extract_feat(images))
        for our, ref in zip(sum(our_outputs, []), sum(reference_outputs, [])):
            assert_relative_close(our, ref, 1e-4)
        return
    for our, ref in zip(_predict(ours, images), _predict(reference, images)):
        assert len(ref) > 0 and len(our) == len(ref)
        assert torch.equal(our.labels, ref.labels)
        assert (our.scores - ref.scores).abs().max() <= 1e-4
        assert_relative_close(our.bboxes, ref.bboxes, 1e-4)
        assert (our.masks != ref.masks).float().mean() <= 1e-4


def _images() -> torch.Tensor:
    return torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('config', [
    'swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py',
    pytest.param('swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', marks=pytest.mark.slow),
    'pvt/retinanet_pvt-s_fpn_1x_coco.py',
    'pvt/retinanet_pvtv2-b2_fpn_1x_coco.py',
])
def test_mmdet_checkpoint_predicts_the_same_through_our_config(config, tmp_path):
    reference = _model(osp.join(MMDET_CONFIGS, config))
    randomize_detector_(reference)
    path = str(tmp_path / 'mmdet_detector.pth')
    torch.save(dict(state_dict=reference.state_dict(), meta=dict(mmdet_version='3.3.0')), path)
    ours = _model(osp.join(REPO, 'configs', config))
    assert type(ours.backbone).__module__.startswith('projects.')
    load_checkpoint(ours, path, map_location='cpu', strict=True)
    assert_same_outputs(ours, reference, _images())


def _save_official(path: str, backbone: dict, reference) -> None:
    """A detector as the official repositories save it (mmdet 2.x): official backbone names,
    mmdet's neck and head names, mmdet 2.x metadata."""
    state_dict = {'backbone.' + key: value for key, value in backbone.items()}
    state_dict.update((k, v) for k, v in reference.state_dict().items()
                      if not k.startswith('backbone.'))
    meta = dict(mmdet_version='2.11.0', CLASSES=tuple(f'class{i}' for i in range(80)))
    torch.save(dict(meta=meta, state_dict=state_dict), path)


def _official_swin_detection_backbone() -> dict:
    """Official Swin-Transformer-Object-Detection backbone tensors of Swin-T: the classification
    layout without its head and final norm, with the output norms ``norm0..3``."""
    weights = official_swin_state_dict(SWIN_T)
    for key in ('norm.weight', 'norm.bias', 'head.weight', 'head.bias'):
        del weights[key]
    generator = torch.Generator().manual_seed(2)
    for i in range(4):
        channels = 96 * 2**i
        weights[f'norm{i}.weight'] = 1 + 0.1 * torch.randn(channels, generator=generator)
        weights[f'norm{i}.bias'] = 0.1 * torch.randn(channels, generator=generator)
    return weights


def _official_pvtv2_detection_backbone() -> dict:
    """Official whai362/PVT detection backbone tensors of PVTv2-b2: the classification layout
    without its head (v2 keeps its stage norms ``norm1..4``)."""
    weights = official_pvt_state_dict(PVTV2_B2, version=2)
    return {k: v for k, v in weights.items() if not k.startswith('head.')}


def _official_pvt_s_detection_backbone() -> dict:
    """Official whai362/PVT detection backbone tensors of PVT-S (v1): position embeddings (stage
    4's with the class token's row, which the official forward skips), no class token, no norms."""
    weights = official_pvt_state_dict(PVTV2_B2, version=1)  # PVT-S: the same widths and depths
    return {k: v for k, v in weights.items() if not k.startswith(('head.', 'norm.', 'cls_token'))}


def _mmdet_pvt_converter(weights: dict) -> dict:
    return {'backbone.' + k: v for k, v in pvt_convert(weights).items()}


@pytest.mark.parametrize('config, mmdet_backbone, official_backbone, mmdet_converter', [
    ('swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', MMDET_SWIN_T, _official_swin_detection_backbone,
     swin_converter),
    pytest.param('pvt/mask-rcnn_pvtv2-b2_fpn_1x_coco.py', MMDET_PVTV2_B2,
                 _official_pvtv2_detection_backbone, _mmdet_pvt_converter,
                 marks=pytest.mark.slow),
    ('pvt/retinanet_pvt-s_fpn_1x_coco.py', MMDET_PVT_S, _official_pvt_s_detection_backbone,
     _mmdet_pvt_converter),
])
def test_official_repository_checkpoint_predicts_the_same_through_our_config(
        config, mmdet_backbone, official_backbone, mmdet_converter, tmp_path):
    reference = _model(osp.join(REPO, 'configs', config), mmdet_backbone)
    randomize_detector_(reference)
    official = official_backbone()
    mmdet_weights = {k: v for k, v in mmdet_converter(official).items()
                     if not k.endswith(('relative_position_index', 'attn_mask'))}  # recomputed
    missing, unexpected = reference.load_state_dict(mmdet_weights, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith('backbone.')
                                   and not k.endswith('relative_position_index')]
    path = str(tmp_path / 'official_detector.pth')
    _save_official(path, official, reference)
    ours = _model(osp.join(REPO, 'configs', config))
    load_checkpoint(ours, path, map_location='cpu', strict=True)
    assert_same_outputs(ours, reference, _images())


SWIN_CONFIG = osp.join(REPO, 'configs/swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py')


def test_checkpoint_of_another_size_is_an_error_naming_the_misfit(tmp_path):
    swin_s = _model(osp.join(REPO, 'configs/swin/retinanet_swin-s-p4-w7_fpn_1x_coco.py'))
    path = str(tmp_path / 'swin-s.pth')
    torch.save(dict(state_dict=swin_s.state_dict()), path)
    with pytest.raises(CheckpointMismatchError,
                       match=r"ours layout.* 0 of our .* unfilled.* 156 of its tensors have no "
                             r"place here \['stages.2.blocks.1"):
        load_checkpoint(_model(SWIN_CONFIG), path, map_location='cpu')


def test_checkpoint_of_another_family_is_an_error(tmp_path):
    pvt = _model(osp.join(REPO, 'configs/pvt/retinanet_pvtv2-b2_fpn_1x_coco.py'))
    path = str(tmp_path / 'pvt.pth')
    torch.save(dict(state_dict=pvt.state_dict()), path)
    with pytest.raises(CheckpointMismatchError, match='SwinBackbone.* unfilled .*no place here'):
        load_checkpoint(_model(SWIN_CONFIG), path, map_location='cpu')


def test_partial_checkpoint_loads_when_allowed(tmp_path):
    reference = _model(osp.join(MMDET_CONFIGS, 'swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'))
    randomize_detector_(reference)
    path = str(tmp_path / 'without_norm3.pth')
    torch.save(dict(state_dict={k: v for k, v in reference.state_dict().items()
                                if not k.startswith('backbone.norm3.')}), path)
    with pytest.raises(CheckpointMismatchError, match=r"2 of our .* unfilled \['norm3.bias'"):
        load_checkpoint(_model(SWIN_CONFIG), path, map_location='cpu')
    ours = _model(SWIN_CONFIG)
    ours.backbone.allow_partial_checkpoint = True
    load_checkpoint(ours, path, map_location='cpu')
    loaded = ours.backbone.stages[0].blocks[0].attn.proj.weight
    assert torch.equal(loaded, reference.backbone.stages[0].blocks[0].attn.w_msa.proj.weight)


@pytest.fixture(scope='module')
def toy_test_options(tmp_path_factory):
    """``tools/test.py`` options for the toy Swin RetinaNet on a tiny generated toy COCO."""
    root = str(tmp_path_factory.mktemp('toy_coco'))
    prepare_toy_coco(root, num_train=2, num_val=2, progress=False)
    return ['--cfg-options', f'test_dataloader.dataset.data_root={root}',
            f'test_evaluator.ann_file={osp.join(root, "annotations/instances_val.json")}',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']


def _toy_pvt_detector() -> dict:
    config = osp.join(REPO, 'configs/toy/retinanet_pvtv2-b0_fpn_1xb8-50e_toy-coco.py')
    return _model(config).state_dict()


@pytest.mark.parametrize('kind, state_dict, expected', [
    ('another family', _toy_pvt_detector,
     r"'.*another family.pth' \(a detector checkpoint; its tensors are under backbone.*"
     r"SwinBackbone .*no place here"),
    ('a BEVFormer', lambda: {'img_backbone.conv1.weight': torch.zeros(64, 3, 7, 7),
                             'pts_bbox_head.query_embedding.weight': torch.zeros(900, 512)},
     r"multi-view 3D .*img_backbone.*holds no tensor under 'backbone.'"),
    ('a classification', lambda: official_swin_state_dict(SWIN_T),
     r"backbone-only \(classification.*init_cfg=dict\(type='Pretrained'.*under layers. "),
])
def test_test_tool_names_the_checkpoint_that_does_not_fit_and_what_it_holds(
        kind, state_dict, expected, toy_test_options, tmp_path):
    config = osp.join(REPO, 'configs/toy/retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py')
    path = str(tmp_path / f'{kind}.pth')
    torch.save(dict(state_dict=state_dict(), meta=dict()), path)
    with pytest.raises(CheckpointMismatchError, match=expected):
        launch.test([config, path, '--work-dir', str(tmp_path / 'work'), *toy_test_options])


def test_testing_a_trained_checkpoint_does_not_need_the_pretrained_file(toy_test_options, tmp_path):
    config = osp.join(REPO, 'configs/toy/retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py')
    trained = _model(config)
    path = str(tmp_path / 'trained.pth')
    torch.save(dict(state_dict=trained.state_dict(), meta=dict()), path)
    missing = str(tmp_path / 'imagenet_weights_not_here.pth')
    out = str(tmp_path / 'predictions.pkl')
    launch.test([config, path, '--work-dir', str(tmp_path / 'work'), '--out', out,
                 *toy_test_options, f'model.backbone.pretrained={missing}'])
    assert len(load(out)) == 2  # both toy val images predicted
