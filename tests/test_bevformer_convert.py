"""Official BEVFormer checkpoints -> BEVFormerDetector: a synthetic state dict with the official key
names and shapes (derived from the official modules, not from ours) loads strictly after
conversion, tensors land where they should, the box code goes 0.17 -> 1.x, the command line
round trip, and refusals (non-official input, pickled objects, official weights loaded raw)."""
import argparse
import os
import os.path as osp
import runpy
import sys
import warnings
from collections import OrderedDict

import pytest
import torch
from mmdet3d.registry import MODELS
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from official_bevformer_reference import (HEAD, TRANSFORMER, OfficialSizes,
                                          random_official_state_dict, small_detector_cfg)

import projects  # noqa: F401  (safe checkpoint loading)
import projects.bevformer  # noqa: F401  (registers BEVFormerDetector)
from projects.bevformer.convert import (CONVERTER_COMMAND, OFFICIAL_CLASSES,
                                        OFFICIAL_WEIGHTS_MARKER, OfficialCheckpointError,
                                        convert_official_bevformer,
                                        install_official_checkpoint_guard,
                                        looks_like_official_bevformer, main)
from projects.bevformer.head import convert_head_state_dict_from_v017
from projects.datasets.nuscenes_infos import NUSCENES_CLASSES

DEFAULT_SCOPE = 'mmdet3d'
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools/model_converters/bevformer_official_to_ours.py')

SIZES = OfficialSizes()
H, T = HEAD, TRANSFORMER
CAN_BUS_KEYS = [T + f'can_bus_mlp.{m}.{p}' for m in ('0', '2', 'norm') for p in ('weight', 'bias')]


def _detector(**encoder_options):
    return MODELS.build(small_detector_cfg(SIZES, **encoder_options))


def _official_state_dict(seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """Random tensors under the official keys; the backbone and neck under mmdet 2.x's names
    (the same as mmdet 3.x's, taken from our model)."""
    image_part = {k: v for k, v in _detector().state_dict().items()
                  if k.startswith(('img_backbone.', 'img_neck.'))}
    return random_official_state_dict(image_part, SIZES, seed)


def test_converted_official_weights_load_strictly_and_land_where_expected():
    official = _official_state_dict()
    converted, report = convert_official_bevformer(official)
    detector = _detector()
    result = detector.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # every official key is either mapped or dropped for a documented reason
    assert len(report.mapped) + len(report.dropped) == len(official)
    assert [k for k, _ in report.dropped] == [H + 'code_weights']
    assert report.exact

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
        T + 'can_bus_mlp.0.weight': 'encoder.can_bus_mlp.0.weight',
        T + 'can_bus_mlp.norm.bias': 'encoder.can_bus_mlp.norm.bias',
    }
    for official_key, our_key in landed.items():
        assert torch.equal(ours[our_key], official[official_key]), (official_key, our_key)
    # the official transformer keeps 4 level embeddings; the one-level model used row 0
    assert official[T + 'level_embeds'].shape[0] == 4
    assert torch.equal(ours['encoder.level_embeds'], official[T + 'level_embeds'][:1])
    assert [key for key, _ in report.cut] == ['encoder.level_embeds']
    assert 'rows 0..0 of 4' in report.summary()


def test_regression_branches_go_from_the_0_17_to_the_1_x_box_code():
    official = _official_state_dict()
    converted, report = convert_official_bevformer(official)
    assert sorted(report.box_code_keys) == sorted(
        f'bbox_head.reg_branches.{i}.4.{p}' for i in range(SIZES.decoder_layers)
        for p in ('weight', 'bias'))
    renamed_only = OrderedDict(
        (new, official[old]) for old, new in report.mapped)
    expected = convert_head_state_dict_from_v017(renamed_only, prefix='bbox_head.')
    for i in range(SIZES.decoder_layers):
        for p in ('weight', 'bias'):
            final = f'bbox_head.reg_branches.{i}.4.{p}'
            raw = official[H + f'reg_branches.{i}.4.{p}']
            assert torch.equal(converted[final], expected[final])
            assert torch.equal(converted[final][2], raw[3])  # log sizes swapped
            assert torch.equal(converted[final][6], -raw[7])  # sin yaw = -cos yaw'
            assert torch.equal(converted[final][[0, 1, 4, 8, 9]], raw[[0, 1, 4, 8, 9]])
        hidden = f'bbox_head.reg_branches.{i}.2.weight'
        assert torch.equal(converted[hidden], official[H + f'reg_branches.{i}.2.weight'])


def test_can_bus_mlp_is_dropped_only_where_the_source_never_used_it():
    official = _official_state_dict()
    meta = dict(config="transformer=dict(type='PerceptionTransformer', use_can_bus=False)")
    converted, unused = convert_official_bevformer(official, meta=meta)
    assert sorted(k for k, _ in unused.dropped) == sorted(CAN_BUS_KEYS + [H + 'code_weights'])
    assert unused.exact and 'changes nothing' in unused.summary()
    assert not any('can_bus' in key for key in converted)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # set as the source was: no warning
        _detector(use_can_bus=False).load_state_dict(converted, strict=True)
    with pytest.warns(UserWarning, match='set use_can_bus=False'):
        _detector(use_can_bus=True).load_state_dict(converted, strict=False)


def test_official_weights_in_an_encoder_set_otherwise_warn_naming_the_switches():
    converted, _ = convert_official_bevformer(_official_state_dict())
    assert OFFICIAL_WEIGHTS_MARKER in converted
    detector = _detector(temporal_alignment='exact', hit_area='image')
    for load in (lambda: detector.load_state_dict(converted, strict=True),
                 lambda: mmengine_load_state_dict(detector, converted, strict=True)):
        with pytest.warns(UserWarning, match="temporal_alignment='official', hit_area='padded'"):
            load()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _detector().load_state_dict(converted, strict=True)  # set as official: silent
    assert OFFICIAL_WEIGHTS_MARKER in converted  # the loaders did not change the caller's dict


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
    assert f'mapped {len(official) - 1} tensors, dropped 1' in out
    assert 'pts_bbox_head.transformer.encoder.layers.0.attentions.1.output_proj.weight -> ' \
           'encoder.layers.0.cross_attn.output_proj.weight' in out
    assert os.listdir(tmp_path / 'out') == ['converted.pth']  # no temporary file left

    saved = torch.load(dst, map_location='cpu', weights_only=True)
    expected, _ = convert_official_bevformer(official)
    assert list(saved['state_dict']) == list(expected)
    assert all(torch.equal(saved['state_dict'][k], v) for k, v in expected.items())
    assert saved['meta']['converted_from'] == src
    assert {d['key'] for d in saved['meta']['dropped']} == {H + 'code_weights'}
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
    official[key] = torch.zeros(official[key].shape[0], SIZES.embed)  # a single-frame TSA
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
