"""ONNX export: each family's export path against its fast path (eager), the exported files in
ONNX Runtime against PyTorch, the tool's errors, and a trained toy detector evaluated through ONNX
Runtime against tools/test.py."""
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
from backbone_helpers import randomize_
from mmengine.config import Config
from torch import nn

from projects.common import window_ops
from projects.common.export import export_mode, is_exporting
from projects.deformable_attention.ops import multi_scale_deformable_attention
from projects.moa import MOABackbone
from projects.pvt import PVTBackbone, PVTV2Backbone
from projects.swin import SwinBackbone, SwinV2Backbone

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
HAS_ONNX = all(importlib.util.find_spec(name) is not None
               for name in ('onnx', 'onnxruntime', 'onnxscript'))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason='the deploy extra (pip install -e '
                                '".[deploy]": onnx, onnxruntime, onnxscript) is not installed')
TOY = osp.join(REPO, 'configs', 'toy')
# Sizes not multiple of the windows at any stage: the padding paths are exported too
ODD_HW = (72, 104)

SMALL_BACKBONES = {
    'swin': lambda: SwinBackbone(embed_dims=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                                 out_indices=(0, 1)),
    'swinv2': lambda: SwinV2Backbone(embed_dims=16, depths=(2, 2), num_heads=(1, 2),
                                     window_size=4, out_indices=(0, 1)),
    'moa': lambda: MOABackbone(embed_dims=16, depths=(1, 1), num_heads=(1, 2), window_size=4,
                               reduction=4),
    'moa_official': lambda: MOABackbone(embed_dims=16, depths=(1, 1), num_heads=(1, 2),
                                        window_size=4, reduction=4, moa_style='official'),
    'pvt': lambda: PVTBackbone(embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2),
                               sr_ratios=(2, 1), mlp_ratios=(2, 2), num_stages=2,
                               out_indices=(0, 1)),
    'pvtv2': lambda: PVTV2Backbone(embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2),
                                   sr_ratios=(2, 1), mlp_ratios=(2, 2), num_stages=2,
                                   out_indices=(0, 1)),
}


# ------------------------------------------------------------------ export paths, eager
@pytest.mark.parametrize('name', sorted(SMALL_BACKBONES))
def test_backbone_export_path_computes_the_fast_path(name, monkeypatch):
    """The formulation taken while exporting (plain linear, products, index plan in the graph,
    chunks of 40 tokens here: an uneven last one, shifted windows' masks split per chunk) gives
    the fast path's features (one chunk), and leaves no traced tensor in the caches."""
    monkeypatch.setattr(window_ops, 'EXPORT_CHUNK_ROWS', 40)
    model = randomize_(SMALL_BACKBONES[name]())
    images = torch.randn(2, 3, *ODD_HW)
    with torch.no_grad():
        fast = model(images)
        with export_mode():
            assert is_exporting()
            exported = model(images)
    assert not is_exporting()
    for a, b in zip(fast, exported):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_deformable_attention_export_path_computes_the_op():
    """``grid_sample`` per level (export) against the embedding-bag op, with locations outside
    the maps, and the same non-finite semantics (a NaN location makes its query's output NaN)."""
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[5, 7], [3, 4]])
    starts = torch.tensor([0, 35])
    value = torch.randn(2, 47, 4, 8, generator=generator)
    locations = torch.rand(2, 11, 4, 2, 3, 2, generator=generator) * 1.4 - 0.2
    weights = torch.rand(2, 11, 4, 2, 3, generator=generator)
    locations[1, 3, 2, 0, 1, 0] = float('nan')
    fast = multi_scale_deformable_attention(value, shapes, starts, locations, weights)
    with export_mode():
        exported = multi_scale_deformable_attention(value, shapes, starts, locations, weights)
    assert torch.equal(torch.isnan(exported), torch.isnan(fast))
    assert torch.isnan(exported[1, 3, 16:24]).all()
    torch.testing.assert_close(exported.nan_to_num(), fast.nan_to_num(), atol=1e-5, rtol=1e-5)


def test_random_weights_for_export_are_initialised_and_reproducible():
    """Without a checkpoint the detector is initialised as for training (mmdet's DETR holds
    uninitialised memory until init_weights), the same under the same seed, no file read."""
    from projects.deploy.onnx_runtime import build_detector
    config = Config.fromfile(osp.join(TOY, 'deformable-detr_swin-nano_1xb8-12e_toy-coco.py'))
    config.model.backbone.init_cfg = dict(type='Pretrained', checkpoint='/nonexistent.pth')
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        weights.append(build_detector(config).state_dict())
    for key, value in weights[0].items():
        assert torch.isfinite(value.float()).all(), key
        assert torch.equal(value, weights[1][key]), key
    assert weights[0]['level_embed'].abs().sum() > 0


# ------------------------------------------------------------------ files in ONNX Runtime
def _export(tmp_path, config, **kwargs):
    from projects.deploy.onnx_export import export_detector
    out = str(tmp_path / 'model.onnx')
    difference = export_detector(Config.fromfile(config), out, verify=True, **kwargs)
    return out, difference


@needs_onnx
@pytest.mark.parametrize('config', [
    'retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py', 'retinanet_pvtv2-b0_fpn_1xb8-50e_toy-coco.py',
    'retinanet_moa-nano_fpn_1xb8-50e_toy-coco.py',
    'retinanet_moa-nano-official_fpn_1xb8-50e_toy-coco.py',
    'deformable-detr_swin-nano_1xb8-12e_toy-coco.py'])
def test_toy_detectors_export_and_match_pytorch_in_onnx_runtime(tmp_path, config):
    """Each family's toy detector, random weights, at a size that pads every stage's windows:
    ONNX Runtime's raw head outputs within 1e-4 (relative to their scale) of PyTorch's."""
    _, difference = _export(tmp_path, osp.join(TOY, config), input_hw=ODD_HW)
    assert difference <= 1e-4


@needs_onnx
@pytest.mark.parametrize('config', ['retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py',
                                    'retinanet_moa-nano_fpn_1xb8-50e_toy-coco.py'])
def test_window_backbones_export_in_chunks(tmp_path, monkeypatch, caplog, config):
    """Exported in chunks of 100 tokens (an uneven last one, shifted windows' masks split per
    chunk, Slice ops in the graph), the toy detector still matches PyTorch (one chunk) in ONNX
    Runtime; the exporter folds every constant (a Split of the q/k/v weights printed a line per
    block)."""
    import onnx
    (tmp_path / 'whole').mkdir()
    (tmp_path / 'chunked').mkdir()
    whole, _ = _export(tmp_path / 'whole', osp.join(TOY, config), input_hw=ODD_HW)
    monkeypatch.setattr(window_ops, 'EXPORT_CHUNK_ROWS', 100)
    chunked, difference = _export(tmp_path / 'chunked', osp.join(TOY, config), input_hw=ODD_HW)
    assert difference <= 1e-4

    def slices(onnx_file):
        return sum(node.op_type == 'Slice' for node in onnx.load(onnx_file).graph.node)
    assert slices(chunked) > slices(whole)
    assert 'Skipping constant folding' not in caplog.text  # onnxscript's warning


@needs_onnx
def test_pvt_exports_with_free_height_and_width(tmp_path):
    """PVTv2 with --dynamic: one file runs at another size, matching PyTorch there."""
    from projects.deploy.onnx_export import ExportedNetwork
    from projects.deploy.onnx_runtime import OnnxRuntimeNetwork
    out, _ = _export(tmp_path, osp.join(TOY, 'retinanet_pvtv2-b0_fpn_1xb8-50e_toy-coco.py'),
                     input_hw=(96, 128), dynamic=True)
    network = OnnxRuntimeNetwork(out)
    assert all(isinstance(size, str) for size in network.input_shapes[0][2:])
    from projects.deploy.onnx_runtime import build_detector
    torch.manual_seed(0)  # the weights export_detector exported
    detector = build_detector(
        Config.fromfile(osp.join(TOY, 'retinanet_pvtv2-b0_fpn_1xb8-50e_toy-coco.py')))
    images = torch.randn(1, 3, 160, 96)
    with torch.no_grad():
        expected = ExportedNetwork(detector).eval()(images)
    for ours, theirs in zip(network.run(images.numpy()), expected):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)


@needs_onnx
@pytest.mark.parametrize('config', ['retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py',
                                    'retinanet_moa-nano_fpn_1xb8-50e_toy-coco.py'])
def test_window_backbones_refuse_free_input_size_naming_themselves(tmp_path, config):
    from projects.deploy.onnx_export import ExportError
    with pytest.raises(ExportError, match=r'RetinaNet: (Swin|MOA)Backbone needs the input size '
                       r'fixed in the graph .* instead of --dynamic'):
        _export(tmp_path, osp.join(TOY, config), input_hw=(64, 64), dynamic=True)


@needs_onnx
def test_another_size_than_exported_is_refused_before_inference(tmp_path):
    from projects.deploy.onnx_runtime import OnnxRuntimeNetwork
    out, _ = _export(tmp_path, osp.join(TOY, 'retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py'),
                     input_hw=(64, 64))
    with pytest.raises(ValueError, match=r'model.onnx takes inputs of shape \(1, 3, 64, 64\), '
                       r'got \(1, 3, 64, 96\); the graph was exported for this size only'):
        OnnxRuntimeNetwork(out).run(np.zeros((1, 3, 64, 96), np.float32))


def _small_mask_rcnn(tmp_path, bbox_roi_layer=None) -> str:
    """Our Swin-T Mask R-CNN config with a one-block-per-stage Swin of 16 channels and 3
    classes (random weights then score above the 0.05 threshold), optionally another RoI layer
    for the box branch."""
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'))
    cfg.model.backbone.update(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1])
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    cfg.model.roi_head.bbox_head.num_classes = 3
    cfg.model.roi_head.mask_head.num_classes = 3
    if bbox_roi_layer:
        cfg.model.roi_head.bbox_roi_extractor.roi_layer = bbox_roi_layer
    cfg.dump(str(tmp_path / 'small.py'))
    return str(tmp_path / 'small.py')


def test_pooled_roi_features_are_mmdets_extractor():
    """Every level pooled and the chosen one kept (export path) = mmdet's SingleRoIExtractor
    indexing each level's RoIs, for RoIs of every level, outside the image and degenerate."""
    from mmdet.models.roi_heads import SingleRoIExtractor

    from projects.deploy.two_stage_onnx import pooled_roi_features
    extractor = SingleRoIExtractor(
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
        out_channels=8, featmap_strides=[4, 8, 16, 32])
    generator = torch.Generator().manual_seed(0)
    features = tuple(torch.randn(2, 8, 256 // s, 320 // s, generator=generator)
                     for s in (4, 8, 16, 32))
    size = 4 * 2 ** (8 * torch.rand(40, 2, generator=generator))  # 4 to 1024 px
    corner = torch.rand(40, 2, generator=generator) * 400 - 40
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=generator).float(), corner,
                      corner + size], 1)
    rois[0, 3:] = rois[0, 1:3]  # empty RoI
    levels = extractor.map_roi_levels(rois, 4)
    assert set(levels.tolist()) == {0, 1, 2, 3}
    torch.testing.assert_close(pooled_roi_features(extractor, features, rois),
                               extractor(features, rois), atol=1e-6, rtol=1e-6)


@needs_onnx
def test_mask_rcnn_exports_as_three_stages_and_predicts_what_pytorch_does(tmp_path):
    """A small Swin Mask R-CNN, random weights: the main file and both RoI stages match PyTorch
    (--verify, RoIs of every FPN level), and through ONNX Runtime with mmdet's NMS between the
    stages (another number of RoIs than exported) the detections and masks are PyTorch's."""
    from mmdet.structures import DetDataSample

    from projects.deploy.onnx_runtime import build_detector
    from projects.deploy.two_stage_onnx import OnnxRuntimeTwoStageDetector
    config = Config.fromfile(_small_mask_rcnn(tmp_path))
    out, difference = _export(tmp_path, config.filename, input_hw=(96, 128))
    assert difference <= 1e-4
    assert osp.exists(tmp_path / 'model.bbox_roi.onnx') and osp.exists(
        tmp_path / 'model.mask_roi.onnx')

    image = torch.randint(0, 256, (3, 96, 128), generator=torch.Generator().manual_seed(1),
                          dtype=torch.uint8)
    meta = dict(img_shape=(96, 128), ori_shape=(192, 256), scale_factor=(0.5, 0.5))

    def batch():
        return dict(inputs=[image.clone()], data_samples=[DetDataSample(metainfo=meta)])

    torch.manual_seed(0)  # the weights export_detector exported
    detector = build_detector(config)
    with torch.no_grad():
        expected = detector.test_step(batch())[0].pred_instances
    ours = OnnxRuntimeTwoStageDetector(out, build_detector(config)).predict(
        batch())[0].pred_instances
    assert len(expected) == len(ours) > 10
    torch.testing.assert_close(ours.scores, expected.scores, atol=1e-4, rtol=0)
    assert torch.equal(ours.labels, expected.labels)
    torch.testing.assert_close(ours.bboxes, expected.bboxes, atol=1e-3, rtol=0)
    assert (ours.masks != expected.masks).float().mean() < 1e-4  # pixels at logit ~0 may flip


@needs_onnx
def test_two_stage_parts_that_cannot_export_are_named_and_the_backbone_exports(tmp_path):
    from projects.deploy.onnx_export import ExportError
    from projects.deploy.two_stage_onnx import OnnxRuntimeTwoStageDetector
    config = _small_mask_rcnn(tmp_path, dict(type='RoIPool', output_size=7))
    with pytest.raises(ExportError, match=r'roi_head.bbox_roi_extractor \(SingleRoIExtractor '
                       r'with RoIPool\) is not .* --part backbone'):
        _export(tmp_path, config, input_hw=(64, 96))
    out, difference = _export(tmp_path, config, input_hw=(64, 96), part='backbone')
    assert difference <= 1e-4
    with pytest.raises(ValueError, match='holds no two-stage detector network'):
        OnnxRuntimeTwoStageDetector(out, None)


class _OneDNNNeck(nn.Module):
    """A module calling an op that has no ONNX function."""

    def forward(self, x):
        weight = torch.ones(2, x.shape[-1])
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, 'none', [], 'none')


class _FakeDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.neck = _OneDNNNeck()

    def extract_feat(self, x):
        return [self.neck(x)]


@needs_onnx
@pytest.mark.skipif(not hasattr(torch.ops.mkldnn, '_linear_pointwise'), reason='no oneDNN')
def test_an_op_without_onnx_function_is_named_with_its_module(tmp_path):
    from projects.deploy.onnx_export import ExportedNetwork, ExportError, export_onnx
    network = ExportedNetwork(_FakeDetector(), part='backbone')
    with pytest.raises(ExportError, match=r'exporting _FakeDetector \(dynamo exporter\) failed in '
                       r'neck \(_OneDNNNeck\): DispatchError: No ONNX function found for .*'
                       'mkldnn._linear_pointwise'):
        export_onnx(network, (torch.randn(3, 8), ), str(tmp_path / 'x.onnx'), exporter='dynamo')


# ------------------------------------------------------------------ evaluation
@needs_onnx
def test_trained_toy_detector_gives_the_same_ap_in_onnx_runtime(tmp_path):
    """The quickstart's toy RetinaNet trained briefly (AP50 well above 0), exported: COCO AP and
    AP50 through ONNX Runtime (tools/deployment/test_onnx.py) within 0.005 of tools/test.py's."""
    from projects.datasets import prepare_toy_coco
    from projects.deploy.cli import export_main, test_main
    from projects.engine import launch
    from projects.engine.quickstart import DEFAULT_CONFIG, latest_checkpoint
    root = str(tmp_path / 'toy')
    prepare_toy_coco(root, num_train=16, num_val=8, progress=False)
    val_json = osp.join(root, 'annotations/instances_val.json')
    options = ['train_cfg.max_epochs=12', 'param_scheduler.0.end=10', 'randomness.seed=0',
               'train_dataloader.batch_size=4', 'model.backbone.depths=[1,1,1,1]',
               *[f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
                 for k in ('num_workers=0', 'persistent_workers=False')],
               *[f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')],
               f'val_evaluator.ann_file={val_json}', f'test_evaluator.ann_file={val_json}']
    config = osp.join(REPO, DEFAULT_CONFIG)
    work_dir = str(tmp_path / 'work')
    launch.train([config, '--work-dir', work_dir, '--cfg-options', *options])
    checkpoint = latest_checkpoint(work_dir)
    pytorch = launch.test([config, checkpoint, '--work-dir', work_dir, '--cfg-options', *options])
    onnx_file = str(tmp_path / 'toy.onnx')
    export_main([config, checkpoint, '--out', onnx_file, '--verify',
                 '--cfg-options', *options])
    onnx = test_main([config, onnx_file, '--cfg-options', *options])
    assert pytorch['coco/bbox_mAP_50'] >= 0.02  # trained: a comparison with teeth
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        assert abs(onnx[key] - pytorch[key]) <= 0.005, key


# ------------------------------------------------------------------ BEVFormer
BEV_CONFIG = osp.join(REPO, 'configs', 'bevformer', 'bevformer_nano_1xb2-24e_toy-nuscenes.py')


@needs_onnx
@pytest.mark.parametrize('alignment', ['exact', 'official'])
def test_bevformer_frame_exports_and_matches_pytorch(tmp_path, alignment):
    """The toy BEVFormer, random weights, one frame on the nuScenes rig with a previous BEV and
    ego motion (our exact alignment, or the official rotation and CAN-bus shift): BEV and head
    outputs within 1e-4 (relative) in ONNX Runtime."""
    from mmengine.registry import DefaultScope
    config = Config.fromfile(BEV_CONFIG)
    config.model.encoder.temporal_alignment = alignment
    config.dump(str(tmp_path / 'bev.py'))
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        _, difference = _export(tmp_path, str(tmp_path / 'bev.py'), input_hw=(96, 160))
    assert difference <= 1e-4


@needs_onnx
def test_bevformer_refuses_free_input_size_before_tracing(tmp_path):
    from mmengine.registry import DefaultScope

    from projects.deploy.onnx_export import ExportError
    with DefaultScope.overwrite_default_scope('mmdet3d'), pytest.raises(
            ExportError, match='BEVFormerDetector exports for one image size .* instead of '
            '--dynamic'):
        _export(tmp_path, BEV_CONFIG, input_hw=(96, 160), exporter='dynamo', dynamic=True)


@needs_onnx
def test_bevformer_through_onnx_runtime_predicts_what_pytorch_does(tmp_path):
    """A toy BEVFormer trained one epoch on a tiny generated world, exported: frame by frame over
    the two val scenes (first frames without a previous BEV, the others with the one the graph
    returned), the predictions of ONNX Runtime are PyTorch's, and tools/deployment/test_onnx.py
    gives tools/test.py's NDS and mAP within 0.005."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from projects.datasets import prepare_toy_nuscenes
    from projects.deploy.bevformer_onnx import OnnxRuntimeBEVFormer
    from projects.deploy.cli import export_main, test_main, test_parser
    from projects.deploy.onnx_runtime import build_detector
    from projects.engine import launch
    from projects.engine.quickstart import latest_checkpoint
    root = str(tmp_path / 'world')
    prepare_toy_nuscenes(root, progress=False, num_train_scenes=1, samples_per_scene=3,
                         image_size=(112, 200))
    val_infos = osp.join(root, 'nuscenes_infos_val.pkl')
    options = ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=1', 'randomness.seed=0',
               'model.bbox_head.num_query=30',
               *[f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
                 for k in ('num_workers=0', 'persistent_workers=False')],
               *[f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')],
               *[f'{s}_evaluator.{k}' for s in ('val', 'test')
                 for k in (f'data_root={root}', f'ann_file={val_infos}')]]
    work_dir = str(tmp_path / 'work')
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        launch.train([BEV_CONFIG, '--work-dir', work_dir, '--cfg-options', *options])
        checkpoint = latest_checkpoint(work_dir)
        pytorch_metrics = launch.test([BEV_CONFIG, checkpoint, '--work-dir', work_dir,
                                       '--cfg-options', *options])
        onnx_file = str(tmp_path / 'bev.onnx')
        export_main([BEV_CONFIG, checkpoint, '--out', onnx_file, '--shape', '128', '224',
                     '--verify', '--cfg-options', *options])
        onnx_metrics = test_main([BEV_CONFIG, onnx_file, '--cfg-options', *options])

        config = Config.fromfile(BEV_CONFIG)
        config.merge_from_dict(test_parser().parse_args(
            [BEV_CONFIG, onnx_file, '--cfg-options', *options]).cfg_options)
        detector = build_detector(config, checkpoint)
        runtime = OnnxRuntimeBEVFormer(onnx_file, build_detector(config, checkpoint))
        frames = 0
        for data in Runner.build_dataloader(config.test_dataloader):
            with torch.no_grad():
                expected = detector.test_step(data)
            for ours, theirs in zip(runtime.predict(data), expected):
                _assert_same_boxes(ours.pred_instances_3d, theirs.pred_instances_3d)
                frames += 1
    assert frames == 6
    for key in pytorch_metrics:
        if key.endswith(('NDS', 'mAP')):
            assert abs(onnx_metrics[key] - pytorch_metrics[key]) <= 0.005, key


def _assert_same_boxes(ours, theirs, tolerance=1e-3):
    """The same predicted boxes, in any order (boxes of nearly equal scores may swap places):
    one to one, same label, score and box values within ``tolerance``."""
    assert len(ours.labels_3d) == len(theirs.labels_3d)
    ours_values = torch.cat([ours.bboxes_3d.tensor, ours.scores_3d[:, None]], 1)
    theirs_values = torch.cat([theirs.bboxes_3d.tensor, theirs.scores_3d[:, None]], 1)
    distance = (ours_values[:, None] - theirs_values[None]).abs().amax(-1)  # (ours, theirs)
    distance[ours.labels_3d[:, None] != theirs.labels_3d[None]] = float('inf')
    closest, match = distance.min(1)
    assert closest.max() <= tolerance, float(closest.max())
    assert len(set(match.tolist())) == len(match)


class _DataDependentNeck(nn.Module):
    """A module whose control flow depends on its input's values."""

    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


class _DataDependentDetector(_FakeDetector):
    def __init__(self):
        super().__init__()
        self.neck = _DataDependentNeck()


@needs_onnx
def test_a_failure_while_tracing_is_named_with_its_module(tmp_path):
    from projects.deploy.onnx_export import ExportedNetwork, ExportError, export_onnx
    network = ExportedNetwork(_DataDependentDetector(), part='backbone')
    with pytest.raises(ExportError, match=r'failed in neck \(_DataDependentNeck\)'):
        export_onnx(network, (torch.randn(3, 8), ), str(tmp_path / 'x.onnx'), exporter='dynamo')


@needs_onnx
def test_benchmark_prints_both_runtimes_and_the_ratio(capsys):
    """tools/analysis/benchmark_onnx.py on the toy PVT RetinaNet, one repeat."""
    import importlib.util as util
    spec = util.spec_from_file_location(
        'benchmark_onnx', osp.join(REPO, 'tools', 'analysis', 'benchmark_onnx.py'))
    tool = util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([osp.join(TOY, 'retinanet_pvtv2-b0_fpn_1xb8-50e_toy-coco.py'), '--shape', '64', '64',
               '--repeats', '1'])
    out = capsys.readouterr().out
    assert 'PyTorch (ours)' in out and 'ONNX Runtime' in out
    assert 'x the speed of PyTorch' in out
