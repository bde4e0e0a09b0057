"""Converted official BEVFormer weights compute what the official code computes: our encoder
layer, whole encoder and head's decoded boxes, the encoder set to the official code path
(``use_can_bus``, ``temporal_alignment='official'``, ``hit_area='padded'``), against the slow
re-implementation of the official code in ``official_bevformer_reference.py``, in float64, on the
real nuScenes camera rig, with random weights converted from an official-layout state dict."""
import math
import os.path as osp
import runpy

import numpy as np
import pytest
import torch
from mmdet3d.registry import MODELS
from official_bevformer_reference import (OfficialSizes, bev_positional_encoding, encoder_layer,
                                          get_bev_features, head_outputs, nms_free_decode,
                                          point_sampling, random_official_state_dict,
                                          small_detector_cfg, torchvision_rotate_nearest)

import projects.bevformer  # noqa: F401  (registers the models)
from projects.bevformer.convert import OFFICIAL_CLASSES, convert_official_bevformer
from projects.bevformer.geometry import rotate_bev_like_torchvision
from projects.bevformer.rig import nuscenes_rig_lidar2img
from projects.datasets.nuscenes_infos import NUSCENES_CLASSES

DEFAULT_SCOPE = 'mmdet3d'
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIZES = OfficialSizes(embed=32, heads=4, ffn=48, bev_h=12, bev_w=14, encoder_layers=2,
                      decoder_layers=1, levels=2)
PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
CONTENT_HW, PADDED_HW = (90, 160), (96, 160)  # 1600x900 at 0.1, padded to 32
LEVEL_SHAPES = [(6, 10), (3, 5)]
TOLERANCE = 1e-4  # the target in float64; the differences seen are ~1e-13


def _models(**encoder_options):
    """(official state dict float64, our detector float64 with the converted weights)."""
    detector = MODELS.build(small_detector_cfg(SIZES, **encoder_options))
    image_part = {k: v for k, v in detector.state_dict().items()
                  if k.startswith(('img_backbone.', 'img_neck.'))}
    official = random_official_state_dict(image_part, SIZES, seed=3, scale=0.3)
    converted, report = convert_official_bevformer(official)
    assert report.exact
    detector.load_state_dict(converted, strict=True)
    official = {k: v.double() if v.is_floating_point() else v for k, v in official.items()}
    return official, detector.double().eval()


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, SIZES.cams, SIZES.embed, h, w, generator=generator,
                         dtype=torch.float64) for h, w in LEVEL_SHAPES]
    lidar2img = torch.from_numpy(nuscenes_rig_lidar2img(CONTENT_HW))[None]  # (1, 6, 4, 4)
    image_hw = torch.tensor(CONTENT_HW).expand(1, SIZES.cams, 2)
    return feats, lidar2img, image_hw


def _can_bus(delta_xy=(0.0, 0.0), yaw=0.7, delta_yaw_deg=0.0):
    """(1, 18) as the official detector hands it over: deltas since the previous frame."""
    can_bus = np.zeros((1, 18))
    can_bus[0, :2] = delta_xy
    can_bus[0, 3:7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
    can_bus[0, 7:16] = np.linspace(-1, 1, 9)  # accel, rotation rate, velocity
    can_bus[0, 16], can_bus[0, 17] = yaw, delta_yaw_deg
    return can_bus


def test_torchvision_rotation_matches_the_pixel_by_pixel_reference():
    generator = torch.Generator().manual_seed(0)
    bev = torch.randn(2, 3, 8, 10, generator=generator, dtype=torch.float64)
    angles = torch.tensor([7.0, -33.0], dtype=torch.float64)
    for center in [(5, 4), (3.5, 6.0), (100, 100)]:
        ours = rotate_bev_like_torchvision(bev, angles, center)
        for b in range(2):
            reference = torchvision_rotate_nearest(bev[b], float(angles[b]), center)
            assert torch.equal(ours[b], reference), (center, b)
    assert torch.equal(rotate_bev_like_torchvision(bev, torch.zeros(2), (5, 4)), bev)


def test_one_encoder_layer_matches_the_official_layer():
    """A full layer (TSA with pos, norm, SCA without pos, norm, FFN, norm) with a previous BEV and
    a shift on the reference points; real rig geometry with the official hit area."""
    official, detector = _models()
    encoder = detector.encoder
    feats, lidar2img, _ = _inputs()
    generator = torch.Generator().manual_seed(1)
    num_query = SIZES.bev_h * SIZES.bev_w
    query = torch.randn(1, num_query, SIZES.embed, generator=generator, dtype=torch.float64)
    previous = torch.randn(1, num_query, SIZES.embed, generator=generator, dtype=torch.float64)
    bev_queries = torch.randn(1, num_query, SIZES.embed, generator=generator, dtype=torch.float64)
    bev_pos = bev_positional_encoding(official, SIZES.bev_h, SIZES.bev_w)[None]
    shift = torch.tensor([[0.013, -0.021]], dtype=torch.float64)
    reference_2d = encoder.bev_reference_points.double()[None] + shift[:, None]  # (1, Q, 2)
    points_cam, mask = point_sampling(PC_RANGE, SIZES.bev_h, SIZES.bev_w, 4, lidar2img,
                                      PADDED_HW)  # (cams, 1, Q, D, 2), (cams, 1, Q, D)
    assert mask.any() and not mask.all()
    flat, spatial_shapes, level_start = encoder._flatten_image_features(feats)

    with torch.no_grad():
        ours = encoder.layers[0](query, bev_pos, previous, None, reference_2d,
                                 torch.tensor([[SIZES.bev_h, SIZES.bev_w]]), flat,
                                 spatial_shapes, level_start, points_cam.transpose(0, 1),
                                 mask.transpose(0, 1), bev_queries)
        value = torch.stack([previous, bev_queries], 1).reshape(2, num_query, SIZES.embed)
        hybrid = reference_2d[:, None, :, None, :].expand(1, 2, num_query, 1, 2).reshape(
            2, num_query, 1, 2)
        official_feats = flat.permute(1, 2, 0, 3)  # (cams, keys, bs, C)
        reference = encoder_layer(official, 0, query, bev_pos, value, hybrid, official_feats,
                                  spatial_shapes, points_cam, mask, SIZES.bev_h, SIZES.bev_w,
                                  SIZES.heads, SIZES.tsa_points, SIZES.sca_points)
    assert (ours - reference).abs().max() < TOLERANCE


@pytest.mark.parametrize('motion', ['static', 'moving'])
@pytest.mark.parametrize('rotate_center', [(6, 5), (100, 100)])
def test_encoder_matches_the_official_encoder(motion, rotate_center):
    """Two frames: the first without a previous BEV, the second with it (ego static, or moved
    4.3 m and turned 12 degrees); the official rotation centre and one inside this small grid."""
    official, detector = _models(rotate_center=rotate_center)
    encoder = detector.encoder
    first_feats, lidar2img, image_hw = _inputs(seed=0)
    second_feats, _, _ = _inputs(seed=1)
    first_can_bus = _can_bus()
    second_can_bus = (_can_bus() if motion == 'static' else
                      _can_bus(delta_xy=(3.9, -1.8), yaw=0.8, delta_yaw_deg=12.0))
    kwargs = dict(padded_hw=PADDED_HW, bev_h=SIZES.bev_h, bev_w=SIZES.bev_w, pc_range=PC_RANGE,
                  num_layers=SIZES.encoder_layers, num_heads=SIZES.heads,
                  tsa_points=SIZES.tsa_points, sca_points=SIZES.sca_points,
                  rotate_center=rotate_center)
    with torch.no_grad():
        first = encoder(first_feats, lidar2img, image_hw, PADDED_HW,
                        can_bus=torch.from_numpy(first_can_bus))
        second = encoder(second_feats, lidar2img, image_hw, PADDED_HW, previous_bev=first,
                         can_bus=torch.from_numpy(second_can_bus))
        reference_first = get_bev_features(official, first_feats, first_can_bus, lidar2img,
                                           **kwargs)
        reference_second = get_bev_features(official, second_feats, second_can_bus, lidar2img,
                                            prev_bev=reference_first, **kwargs)
    assert (first - reference_first).abs().max() < TOLERANCE
    assert (second - reference_second).abs().max() < TOLERANCE
    if motion == 'moving' and rotate_center == (6, 5):  # the rotation moves cells here
        first_map = first.transpose(1, 2).reshape(1, SIZES.embed, SIZES.bev_h, SIZES.bev_w)
        turned = rotate_bev_like_torchvision(first_map, torch.tensor([12.0]), rotate_center)
        assert (turned != first_map).any() and (turned != 0).any()
    # the previous BEV matters (a test that passes without it would prove nothing)
    with torch.no_grad():
        alone = encoder(second_feats, lidar2img, image_hw, PADDED_HW,
                        can_bus=torch.from_numpy(second_can_bus))
    assert (alone - second).abs().max() > 1e-2


def test_decoded_boxes_match_the_official_head_in_the_1_x_box_convention():
    """Converted head (regression rows to the 1.x code, class rows to mmdet3d's order): the same
    top boxes, scores and classes as the official head + NMS-free decoding, once the official
    0.17 boxes are written in 1.x parameters (l and w swapped, yaw = -yaw' - pi / 2)."""
    sizes = OfficialSizes(embed=32, heads=4, ffn=48, bev_h=12, bev_w=14, encoder_layers=1,
                          decoder_layers=3, queries=40, levels=1)
    detector = MODELS.build(small_detector_cfg(sizes))
    image_part = {k: v for k, v in detector.state_dict().items()
                  if k.startswith(('img_backbone.', 'img_neck.'))}
    official = random_official_state_dict(image_part, sizes, seed=5, scale=0.3)
    converted, _ = convert_official_bevformer(official)
    detector.load_state_dict(converted, strict=True)
    head = detector.double().eval().bbox_head
    official = {k: v.double() for k, v in official.items() if v.is_floating_point()}
    bev = torch.randn(1, sizes.bev_h * sizes.bev_w, sizes.embed, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = head.predict_by_feat(*head(bev, (sizes.bev_h, sizes.bev_w)), [{}])[0]
        cls_scores, codes = head_outputs(official, bev, sizes.bev_h, sizes.bev_w, PC_RANGE,
                                         sizes.decoder_layers, sizes.heads,
                                         sizes.decoder_points)
        boxes, scores, labels = nms_free_decode(cls_scores[-1, 0], codes[-1, 0], head.max_num,
                                                head.post_center_range)
    assert len(scores) > 100  # most of the 300 best pairs survive the centre range
    torch.testing.assert_close(ours.scores_3d, scores, atol=1e-10, rtol=0)
    our_labels = [NUSCENES_CLASSES.index(OFFICIAL_CLASSES[int(label)]) for label in labels]
    assert ours.labels_3d.tolist() == our_labels
    expected = boxes[:, [0, 1, 2, 4, 3, 5, 6, 7, 8]].clone()  # (w, l) -> (l, w)
    expected[:, 6] = -boxes[:, 6] - math.pi / 2
    ours_boxes = ours.bboxes_3d.tensor.double()  # mmdet3d keeps boxes in float32
    torch.testing.assert_close(ours_boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]],
                               expected[:, [0, 1, 2, 3, 4, 5, 7, 8]], atol=1e-4, rtol=0)
    yaw_error = torch.remainder(ours_boxes[:, 6] - expected[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert yaw_error.abs().max() < 1e-5


def test_alignment_picture_tool_shows_the_official_rotation_off_for_tiny_only(tmp_path):
    """tools/analysis/visualize_temporal_alignment.py: the exact alignment puts the previous
    BEV's landmarks where they are; the official one too for base (rotation about its grid
    centre), not for tiny (rotation about a pixel far outside its grid)."""
    tool = runpy.run_path(osp.join(REPO, 'tools/analysis/visualize_temporal_alignment.py'))

    def error(size, which):
        exact, official, truth = tool['panels'](size, 4.0, 5.0)
        truth = torch.nn.functional.avg_pool2d(truth[None, None], 4)[0, 0]  # on the grid
        image = exact if which == 'exact' else official
        return float((image - truth).abs().mean() / truth.abs().mean())

    tiny_official, base_official = error(50, 'official'), error(200, 'official')
    assert error(50, 'exact') < 0.5 * tiny_official
    assert error(200, 'exact') < base_official < 0.3 * tiny_official  # nearest neighbour only
    out = tmp_path / 'alignment.png'
    assert tool['main'](['--out', str(out)]) == 0 and out.stat().st_size > 10_000
