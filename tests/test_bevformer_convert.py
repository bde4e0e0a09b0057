"""Official BEVFormer checkpoints -> BEVFormerDetector: a synthetic state dict with the official key
names and shapes (derived from the official modules, not from ours) loads strictly after
conversion, tensors land where they should, the box code goes 0.17 -> 1.x, the command line
round trip, and refusals (non-official input, pickled objects, official weights loaded raw)."""
import argparse
import os
import os.path as osp
import runpy
import sys
from collections import OrderedDict

import pytest
import torch
from mmdet3d.registry import MODELS
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict

import projects  # noqa: F401  (safe checkpoint loading)
import projects.bevformer  # noqa: F401  (registers BEVFormerDetector)
from projects.bevformer.convert import (CONVERTER_COMMAND, OFFICIAL_CLASSES,
                                        OfficialCheckpointError, can_bus_zero_input_output,
                                        convert_official_bevformer,
                                        install_official_checkpoint_guard,
                                        looks_like_official_bevformer, main)
from projects.bevformer.head import convert_head_state_dict_from_v017
from projects.datasets.nuscenes_infos import NUSCENES_CLASSES

DEFAULT_SCOPE = 'mmdet3d'
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools/model_converters/bevformer_official_to_ours.py')

EMBED, HEADS, FFN, BEV_H, BEV_W = 32, 2, 64, 6, 6
ENCODER_LAYERS, DECODER_LAYERS, QUERIES, CLASSES, CAMS, LEVELS = 1, 2, 10, 10, 6, 1
TSA_POINTS, SCA_POINTS, DECODER_POINTS = 4, 8, 4
H, T = 'pts_bbox_head.', 'pts_bbox_head.transformer.'
CAN_BUS_KEYS = [T + f'can_bus_mlp.{m}.{p}' for m in ('0', '2', 'norm') for p in ('weight', 'bias')]


def _detector():
    cfg = dict(
        type='BEVFormerDetector',
        data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        img_backbone=dict(type='mmdet.ResNet', depth=18, num_stages=4, out_indices=(3, ),
                          norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                          style='pytorch'),
        img_neck=dict(type='mmdet.FPN', in_channels=[512], out_channels=EMBED, start_level=0,
                      add_extra_convs='on_output', num_outs=1),
        encoder=dict(type='BEVFormerEncoder', bev_h=BEV_H, bev_w=BEV_W, num_layers=ENCODER_LAYERS,
                     embed_dims=EMBED, num_cams=CAMS, num_feature_levels=LEVELS,
                     layer_cfg=dict(feedforward_channels=FFN,
                                    self_attn_cfg=dict(num_heads=HEADS, num_points=TSA_POINTS),
                                    cross_attn_cfg=dict(num_heads=HEADS, num_points=SCA_POINTS))),
        bbox_head=dict(type='BEVFormerHead', num_classes=CLASSES, num_query=QUERIES,
                       num_layers=DECODER_LAYERS, embed_dims=EMBED, num_heads=HEADS,
                       num_points=DECODER_POINTS, feedforward_channels=FFN))
    return MODELS.build(cfg)


def _official_shapes():
    """Official key -> shape, from the official modules' constructors (PerceptionTransformer,
    TemporalSelfAttention with num_bev_queue=2 and num_levels=1, SpatialCrossAttention around
    MSDeformableAttention3D, mmcv 1.x MultiheadAttention / FFN / BaseTransformerLayer,
    CustomMSDeformableAttention, BEVFormerHead with with_box_refine=True)."""
    C = EMBED
    shapes = {
        H + 'bev_embedding.weight': (BEV_H * BEV_W, C),
        H + 'positional_encoding.row_embed.weight': (BEV_H, C // 2),
        H + 'positional_encoding.col_embed.weight': (BEV_W, C // 2),
        H + 'query_embedding.weight': (QUERIES, 2 * C),
        H + 'code_weights': (10, ),
        T + 'level_embeds': (LEVELS, C),
        T + 'cams_embeds': (CAMS, C),
        T + 'reference_points.weight': (3, C),
        T + 'reference_points.bias': (3, ),
        T + 'can_bus_mlp.0.weight': (C // 2, 18),
        T + 'can_bus_mlp.0.bias': (C // 2, ),
        T + 'can_bus_mlp.2.weight': (C, C // 2),
        T + 'can_bus_mlp.2.bias': (C, ),
        T + 'can_bus_mlp.norm.weight': (C, ),
        T + 'can_bus_mlp.norm.bias': (C, ),
    }

    def linear(prefix, out_features, in_features):
        shapes[prefix + '.weight'] = (out_features, in_features)
        shapes[prefix + '.bias'] = (out_features, )

    def ffn_and_norms(layer):
        linear(layer + 'ffns.0.layers.0.0', FFN, C)
        linear(layer + 'ffns.0.layers.1', C, FFN)
        for n in range(3):
            shapes[layer + f'norms.{n}.weight'] = shapes[layer + f'norms.{n}.bias'] = (C, )

    for i in range(ENCODER_LAYERS):
        layer = T + f'encoder.layers.{i}.'
        tsa, sca = layer + 'attentions.0.', layer + 'attentions.1.'
        linear(tsa + 'sampling_offsets', 2 * HEADS * 1 * TSA_POINTS * 2, 2 * C)
        linear(tsa + 'attention_weights', 2 * HEADS * 1 * TSA_POINTS, 2 * C)
        linear(tsa + 'value_proj', C, C)
        linear(tsa + 'output_proj', C, C)
        linear(sca + 'deformable_attention.sampling_offsets', HEADS * LEVELS * SCA_POINTS * 2, C)
        linear(sca + 'deformable_attention.attention_weights', HEADS * LEVELS * SCA_POINTS, C)
        linear(sca + 'deformable_attention.value_proj', C, C)
        linear(sca + 'output_proj', C, C)
        ffn_and_norms(layer)
    for i in range(DECODER_LAYERS):
        layer = T + f'decoder.layers.{i}.'
        shapes[layer + 'attentions.0.attn.in_proj_weight'] = (3 * C, C)
        shapes[layer + 'attentions.0.attn.in_proj_bias'] = (3 * C, )
        linear(layer + 'attentions.0.attn.out_proj', C, C)
        linear(layer + 'attentions.1.sampling_offsets', HEADS * 1 * DECODER_POINTS * 2, C)
        linear(layer + 'attentions.1.attention_weights', HEADS * 1 * DECODER_POINTS, C)
        linear(layer + 'attentions.1.value_proj', C, C)
        linear(layer + 'attentions.1.output_proj', C, C)
        ffn_and_norms(layer)
        for j in (0, 3):  # cls: Linear, LN, ReLU, Linear, LN, ReLU, Linear
            linear(H + f'cls_branches.{i}.{j}', C, C)
            shapes[H + f'cls_branches.{i}.{j + 1}.weight'] = (C, )
            shapes[H + f'cls_branches.{i}.{j + 1}.bias'] = (C, )
        linear(H + f'cls_branches.{i}.6', CLASSES, C)
        for j in (0, 2):  # reg: Linear, ReLU, Linear, ReLU, Linear
            linear(H + f'reg_branches.{i}.{j}', C, C)
        linear(H + f'reg_branches.{i}.4', 10, C)
    return shapes


def _official_state_dict(seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """Random tensors under the official keys; the backbone and neck under mmdet 2.x's names
    (the same as mmdet 3.x's, taken from our model)."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, value in _detector().state_dict().items():
        if key.startswith(('img_backbone.', 'img_neck.')):
            state[key] = (value.clone() if value.dtype == torch.long else
                          torch.randn(value.shape, generator=generator))
    for key, shape in _official_shapes().items():
        state[key] = torch.randn(shape, generator=generator)
    return state


def test_converted_official_weights_load_strictly_and_land_where_expected():
    official = _official_state_dict()
    converted, report = convert_official_bevformer(official)
    detector = _detector()
    result = detector.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # every official key is either mapped or dropped for a documented reason
    assert len(report.mapped) + len(report.dropped) == len(official)
    assert sorted(k for k, _ in report.dropped) == sorted(CAN_BUS_KEYS + [H + 'code_weights'])
    assert not report.exact

    ours = detector.state_dict()
    landed = {
        T + 'encoder.layers.0.attentions.0.sampling_offsets.weight':
            'encoder.layers.0.self_attn.sampling_offsets.weight',
        T + 'encoder.layers.0.attentions.0.attention_weights.bias':
            'encoder.layers.0.self_attn.attention_weights.bias',
        T + 'encoder.layers.0.attentions.1.deformable_attention.sampling_offsets.weight':
            'encoder.layers.0.cross_attn.sampling_offsets.weight',
        T + 'encoder.layers.0.attentions.1.deformable_attention.value_proj.weight':
            'encoder.layers.0.cross_attn.value_proj.weight',
        T + 'encoder.layers.0.attentions.1.output_proj.weight':
            'encoder.layers.0.cross_attn.output_proj.weight',
        T + 'encoder.layers.0.ffns.0.layers.1.weight': 'encoder.layers.0.ffn.layers.1.weight',
        T + 'encoder.layers.0.norms.2.bias': 'encoder.layers.0.norms.2.bias',
        T + 'decoder.layers.1.attentions.0.attn.in_proj_weight':
            'bbox_head.layers.1.self_attn.attn.in_proj_weight',
        T + 'decoder.layers.0.attentions.0.attn.out_proj.weight':
            'bbox_head.layers.0.self_attn.attn.out_proj.weight',
        T + 'decoder.layers.1.attentions.1.sampling_offsets.bias':
            'bbox_head.layers.1.cross_attn.sampling_offsets.bias',
        T + 'decoder.layers.0.ffns.0.layers.0.0.weight': 'bbox_head.layers.0.ffn.layers.0.0.weight',
        T + 'cams_embeds': 'encoder.cams_embeds',
        T + 'level_embeds': 'encoder.level_embeds',
        T + 'reference_points.weight': 'bbox_head.reference_points.weight',
        H + 'bev_embedding.weight': 'encoder.bev_embedding.weight',
        H + 'positional_encoding.row_embed.weight': 'encoder.positional_encoding.row_embed.weight',
        H + 'positional_encoding.col_embed.weight': 'encoder.positional_encoding.col_embed.weight',
        H + 'query_embedding.weight': 'bbox_head.query_embedding.weight',
        H + 'cls_branches.1.3.weight': 'bbox_head.cls_branches.1.3.weight',
        H + 'reg_branches.0.2.weight': 'bbox_head.reg_branches.0.2.weight',
        # mmdet 2.x ResNet / FPN names, as the official checkpoints have them
        'img_backbone.conv1.weight': 'img_backbone.conv1.weight',
        'img_backbone.layer4.1.bn2.running_var': 'img_backbone.layer4.1.bn2.running_var',
        'img_neck.lateral_convs.0.conv.weight': 'img_neck.lateral_convs.0.conv.weight',
        'img_neck.fpn_convs.0.conv.bias': 'img_neck.fpn_convs.0.conv.bias',
    }
    for official_key, our_key in landed.items():
        assert torch.equal(ours[our_key], official[official_key]), (official_key, our_key)


def test_regression_branches_go_from_the_0_17_to_the_1_x_box_code():
    official = _official_state_dict()
    converted, report = convert_official_bevformer(official)
    assert sorted(report.box_code_keys) == sorted(
        f'bbox_head.reg_branches.{i}.4.{p}' for i in range(DECODER_LAYERS)
        for p in ('weight', 'bias'))
    renamed_only = OrderedDict(
        (new, official[old]) for old, new in report.mapped)
    expected = convert_head_state_dict_from_v017(renamed_only, prefix='bbox_head.')
    for i in range(DECODER_LAYERS):
        for p in ('weight', 'bias'):
            final = f'bbox_head.reg_branches.{i}.4.{p}'
            raw = official[H + f'reg_branches.{i}.4.{p}']
            assert torch.equal(converted[final], expected[final])
            assert torch.equal(converted[final][2], raw[3])  # log sizes swapped
            assert torch.equal(converted[final][6], -raw[7])  # sin yaw = -cos yaw'
            assert torch.equal(converted[final][[0, 1, 4, 8, 9]], raw[[0, 1, 4, 8, 9]])
        hidden = f'bbox_head.reg_branches.{i}.2.weight'
        assert torch.equal(converted[hidden], official[H + f'reg_branches.{i}.2.weight'])


def test_can_bus_drop_is_reported_with_its_consequence():
    official = _official_state_dict()
    _, report = convert_official_bevformer(official)
    text = report.summary()
    assert 'CAN-bus' in text and 'not an exact reproduction' in text
    assert 'pts_bbox_head.transformer.can_bus_mlp.0.weight' in text
    # the MLP's output for a zero CAN-bus vector: not zero (its bias path), as reported
    mlp = torch.nn.Sequential(torch.nn.Linear(18, EMBED // 2), torch.nn.ReLU(),
                              torch.nn.Linear(EMBED // 2, EMBED), torch.nn.ReLU(),
                              torch.nn.LayerNorm(EMBED))
    mlp.load_state_dict({k.replace(T + 'can_bus_mlp.', '').replace('norm.', '4.'): official[k]
                         for k in CAN_BUS_KEYS})
    with torch.no_grad():
        reference = mlp(torch.zeros(18))
    torch.testing.assert_close(can_bus_zero_input_output(official), reference)
    assert report.can_bus_zero_norm == pytest.approx(float(reference.norm()), rel=1e-5)
    assert report.can_bus_zero_norm > 0

    # a source config with use_can_bus=False never used the MLP: dropping it is exact
    meta = dict(config="transformer=dict(type='PerceptionTransformer', use_can_bus=False)")
    _, unused = convert_official_bevformer(official, meta=meta)
    assert unused.exact and 'changes nothing' in unused.summary()


def test_non_official_checkpoints_are_rejected_and_recognised():
    official = _official_state_dict()
    ours = _detector().state_dict()
    assert looks_like_official_bevformer(official)
    assert looks_like_official_bevformer(dict(state_dict=official, meta={}))
    assert looks_like_official_bevformer({'module.' + k: v for k, v in official.items()})
    assert not looks_like_official_bevformer(ours)
    detr3d_like = {k: v for k, v in official.items() if 'encoder' not in k
                   and 'bev_embedding' not in k and 'can_bus' not in k}
    assert not looks_like_official_bevformer(detr3d_like)
    with pytest.raises(OfficialCheckpointError, match='does not look like an official BEVFormer'):
        convert_official_bevformer(ours)
    # a bare official head (no "pts_bbox_head.") converts too
    head_only = {k[len(H):]: v for k, v in official.items() if k.startswith(H)}
    converted, _ = convert_official_bevformer(head_only)
    assert 'encoder.layers.0.cross_attn.output_proj.weight' in converted


def test_guarded_model_refuses_raw_official_weights_naming_the_converter():
    detector = _detector()
    install_official_checkpoint_guard(detector)
    official = _official_state_dict()
    for load in (lambda: detector.load_state_dict(official, strict=False),
                 lambda: mmengine_load_state_dict(detector, official, strict=False)):
        with pytest.raises(OfficialCheckpointError) as error:
            load()
        assert CONVERTER_COMMAND in str(error.value)
    converted, _ = convert_official_bevformer(official)
    detector.load_state_dict(converted, strict=True)


def _run_tool(argv, monkeypatch):
    """The command-line script in this process (its __main__ block), exit status returned."""
    monkeypatch.setattr(sys, 'argv', [TOOL, *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(TOOL, run_name='__main__')
    return exit_info.value.code


def test_command_line_round_trip(tmp_path, monkeypatch, capsys):
    official = _official_state_dict()
    src, dst = str(tmp_path / 'bevformer_tiny_epoch_24.pth'), str(tmp_path / 'out/converted.pth')
    meta = dict(config='use_can_bus=True', CLASSES=OFFICIAL_CLASSES, epoch=24, iter=100)
    torch.save(dict(state_dict=official, meta=meta), src)
    assert _run_tool([src, dst, '--report'], monkeypatch) == 0
    out = capsys.readouterr().out
    assert f'mapped {len(official) - 7} tensors, dropped 7' in out
    assert 'pts_bbox_head.transformer.encoder.layers.0.attentions.1.output_proj.weight -> ' \
           'encoder.layers.0.cross_attn.output_proj.weight' in out
    assert os.listdir(tmp_path / 'out') == ['converted.pth']  # no temporary file left

    saved = torch.load(dst, map_location='cpu', weights_only=True)
    expected, _ = convert_official_bevformer(official)
    assert list(saved['state_dict']) == list(expected)
    assert all(torch.equal(saved['state_dict'][k], v) for k, v in expected.items())
    assert saved['meta']['converted_from'] == src
    assert {d['key'] for d in saved['meta']['dropped']} == set(CAN_BUS_KEYS + [H + 'code_weights'])
    assert saved['meta']['dataset_meta'] == dict(classes=list(NUSCENES_CLASSES))
    _detector().load_state_dict(saved['state_dict'], strict=True)

    # refusals, each naming what is wrong
    assert main([dst, str(tmp_path / 'again.pth')]) == 1
    assert 'does not look like an official BEVFormer' in capsys.readouterr().err
    assert main([src, src]) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err
    assert main([str(tmp_path / 'missing.pth'), dst]) == 1
    assert 'missing.pth' in capsys.readouterr().err


def test_pickled_objects_need_unsafe_pickle(tmp_path, capsys):
    src, dst = str(tmp_path / 'odd.pth'), str(tmp_path / 'converted.pth')
    meta = dict(args=argparse.Namespace(epochs=24))  # not loadable with weights_only=True
    torch.save(dict(state_dict=_official_state_dict(), meta=meta), src)
    assert main([src, dst]) == 1
    assert '--unsafe-pickle' in capsys.readouterr().err and not osp.exists(dst)
    assert main([src, dst, '--unsafe-pickle']) == 0
    assert osp.isfile(dst)


def test_layout_that_ours_cannot_mean_is_named():
    official = _official_state_dict()
    key = T + 'encoder.layers.0.attentions.0.sampling_offsets.weight'
    official[key] = torch.zeros(official[key].shape[0], EMBED)  # a single-frame TSA
    with pytest.raises(ValueError, match='2 \\* embed_dims'):
        convert_official_bevformer(official)


def test_class_rows_go_from_the_official_order_to_mmdet3d_order():
    source = _official_state_dict()
    converted, report = convert_official_bevformer(source)
    last = max(int(k.split('.')[3]) for k in source
               if k.startswith('pts_bbox_head.cls_branches.0.') and k.endswith('.weight'))
    official = source[f'pts_bbox_head.cls_branches.0.{last}.weight']
    ours = converted[f'bbox_head.cls_branches.0.{last}.weight']
    for name in ('barrier', 'traffic_cone', 'car'):
        assert torch.equal(ours[NUSCENES_CLASSES.index(name)],
                           official[OFFICIAL_CLASSES.index(name)])
    assert f'bbox_head.cls_branches.0.{last}.bias' in report.class_order_keys
