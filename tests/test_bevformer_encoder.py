"""BEV encoder: attentions against slow obvious implementations on mmcv's op, BEV alignment
against geometry, and the errors for bad configs."""
import math

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from mmdet3d.registry import MODELS

from projects.bevformer import BEVSpatialCrossAttention, BEVTemporalSelfAttention
from projects.bevformer.attention import _pack_hits, _sampling_locations
from projects.bevformer.geometry import (align_previous_bev, bev_cell_centers,
                                         current_to_previous_lidar, lidar_to_global, pillar_points,
                                         project_to_cameras)

DEFAULT_SCOPE = 'mmdet3d'
PC_RANGE = [-10.0, -8.0, -3.0, 10.0, 8.0, 3.0]


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def _level_inputs(bs, num_cams, channels, shapes, seed=1):
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(bs, num_cams, sum(h * w for h, w in shapes), channels,
                        generator=generator)
    spatial_shapes = torch.tensor(shapes)
    sizes = spatial_shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return feats, spatial_shapes, starts


def _slow_cross_attention(attn, query, feats, shapes, points_cam, mask):
    """Every (sample, camera, query) on its own through mmcv's op, then masked, summed over
    cameras and divided by the cameras that saw the query."""
    bs, num_queries, channels = query.shape
    num_cams = feats.shape[1]
    heads, levels, points, heights = attn.num_heads, attn.num_levels, attn.num_points, \
        attn.num_heights
    out = torch.zeros_like(query)
    for b in range(bs):
        total = torch.zeros(num_queries, channels)
        seen = torch.zeros(num_queries)
        q = query[b]
        for cam in range(num_cams):
            value = attn.value_proj(feats[b, cam]).view(1, -1, heads, channels // heads)
            offsets = attn.sampling_offsets(q).view(num_queries, heads, levels,
                                                    points // heights, heights, 2)
            size_xy = shapes.flip(-1).float()[None, None, :, None, None, :]
            ref = points_cam[b, cam][:, None, None, None, :, :]  # (Q, 1, 1, 1, D, 2)
            loc = (ref + offsets / size_xy).reshape(1, num_queries, heads, levels, points, 2)
            weights = attn.attention_weights(q).view(num_queries, heads, levels * points)
            weights = weights.softmax(-1).view(1, num_queries, heads, levels, points)
            sampled = multi_scale_deformable_attn_pytorch(value, shapes, loc, weights)[0]
            hit = mask[b, cam].any(-1).float()
            total += sampled * hit[:, None]
            seen += hit
        out[b] = attn.output_proj(total / seen.clamp(min=1)[:, None]) + query[b]
    return out


def test_spatial_cross_attention_matches_per_camera_reference_for_batch_of_two():
    torch.manual_seed(0)
    channels, shapes = 16, [(6, 10), (3, 5)]
    attn = BEVSpatialCrossAttention(embed_dims=channels, num_heads=2, num_levels=2, num_points=4,
                                    num_heights=2, dropout=0.0).eval()
    _randomize(attn)
    bs, num_cams, num_queries = 2, 3, 12
    feats, spatial_shapes, starts = _level_inputs(bs, num_cams, channels, shapes)
    query = torch.randn(bs, num_queries, channels)
    points_cam = torch.rand(bs, num_cams, num_queries, 2, 2) * 1.2 - 0.1
    # different hits per sample (the original code used sample 0's for all), query 0 hit by none
    mask = torch.rand(bs, num_cams, num_queries, 2) > 0.5
    mask[:, :, 0] = False
    mask[1, 2] = False
    with torch.no_grad():
        ours = attn(query, feats, spatial_shapes, starts, points_cam, mask)
        reference = _slow_cross_attention(attn, query, feats, spatial_shapes, points_cam, mask)
    assert torch.allclose(ours, reference, atol=1e-5)
    # a query no camera sees gets only the output bias added
    assert torch.allclose(ours[:, 0], query[:, 0] + attn.output_proj.bias, atol=1e-6)


def test_spatial_cross_attention_ignores_cameras_a_query_does_not_hit():
    channels = 8
    attn = BEVSpatialCrossAttention(embed_dims=channels, num_heads=2, num_levels=1, num_points=2,
                                    num_heights=1, dropout=0.0).eval()
    _randomize(attn)
    feats, shapes, starts = _level_inputs(1, 2, channels, [(5, 5)])
    query = torch.randn(1, 4, channels)
    points_cam = torch.full((1, 2, 4, 1, 2), 0.5)
    mask = torch.zeros(1, 2, 4, 1, dtype=torch.bool)
    mask[0, 0, :2] = True  # queries 0, 1 see camera 0 only; queries 2, 3 see camera 1 only
    mask[0, 1, 2:] = True
    changed = feats.clone()
    changed[0, 1] += 5.0  # camera 1's features change
    with torch.no_grad():
        before = attn(query, feats, shapes, starts, points_cam, mask)
        after = attn(query, changed, shapes, starts, points_cam, mask)
    assert torch.equal(before[0, :2], after[0, :2])
    assert not torch.allclose(before[0, 2:], after[0, 2:])


def test_pack_hits_rows_follow_the_visible_queries():
    hits = torch.zeros(2, 6, 1000, dtype=torch.bool)
    hits[0, 3, [5, 17, 900]] = True
    hits[1, 0, [2, 4]] = True
    index, valid = _pack_hits(hits)
    assert index.shape == (2, 6, 3)  # rows = the most hits of any (sample, camera)
    assert index[0, 3].tolist() == [5, 17, 900] and valid[0, 3].tolist() == [1, 1, 1]
    assert index[1, 0, :2].tolist() == [2, 4] and valid[1, 0].tolist() == [1, 1, 0]
    assert valid[0, 0].sum() == 0


def _slow_temporal_attention(attn, query, query_pos, previous, current, ref, bev_hw):
    """Offsets and weights from [previous, query + pos]; values [previous, current]."""
    bs, num_queries, channels = query.shape
    heads, points = attn.num_heads, attn.num_points
    out = torch.zeros_like(query)
    for b in range(bs):
        offset_input = torch.cat([previous[b], query[b] + query_pos[b]], -1)
        offsets = attn.sampling_offsets(offset_input).view(num_queries, heads, 2, points, 2)
        weights = attn.attention_weights(offset_input).view(num_queries, heads, 2, points)
        weights = weights.softmax(-1)
        size_xy = bev_hw.flip(-1).float()
        sampled = []
        for frame, bev in enumerate([previous[b], current[b]]):
            value = attn.value_proj(bev).view(1, num_queries, heads, channels // heads)
            loc = (ref[:, None, None, :] + offsets[:, :, frame] / size_xy)[None, :, :, None]
            sampled.append(multi_scale_deformable_attn_pytorch(
                value, bev_hw, loc, weights[:, :, frame][None, :, :, None])[0])
        out[b] = attn.output_proj((sampled[0] + sampled[1]) / 2) + query[b]
    return out


def test_temporal_self_attention_matches_reference_and_stands_in_the_query():
    """With a previous BEV: [previous, the encoder's input queries]; without: [query, query]."""
    channels, bev_h, bev_w = 16, 4, 5
    attn = BEVTemporalSelfAttention(embed_dims=channels, num_heads=4, num_points=3,
                                    dropout=0.0).eval()
    _randomize(attn)
    bs, num_queries = 2, bev_h * bev_w
    query = torch.randn(bs, num_queries, channels)
    query_pos = torch.randn(bs, num_queries, channels)
    previous = torch.randn(bs, num_queries, channels)
    bev_queries = torch.randn(bs, num_queries, channels)
    ref = torch.rand(num_queries, 2)
    bev_hw = torch.tensor([[bev_h, bev_w]])
    has_previous = torch.tensor([True, False])
    with torch.no_grad():
        ours = attn(query, query_pos, previous, ref, bev_hw, has_previous, bev_queries)
        reference = _slow_temporal_attention(
            attn, query, query_pos, torch.stack([previous[0], query[1]]),
            torch.stack([bev_queries[0], query[1]]), ref, bev_hw)
        without = attn(query, query_pos, None, ref, bev_hw, bev_queries=bev_queries)
        reference_without = _slow_temporal_attention(attn, query, query_pos, query, query, ref,
                                                     bev_hw)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(without, reference_without, atol=1e-5)


def _tiny_encoder(**kwargs):
    cfg = dict(type='BEVFormerEncoder', bev_h=6, bev_w=8, point_cloud_range=PC_RANGE,
               num_layers=2, embed_dims=16, num_cams=2, num_feature_levels=2,
               num_points_in_pillar=2,
               layer_cfg=dict(feedforward_channels=32, ffn_drop=0.0,
                              self_attn_cfg=dict(num_heads=2, num_points=2, dropout=0.0),
                              cross_attn_cfg=dict(num_heads=2, num_points=4, dropout=0.0)))
    cfg.update(kwargs)
    encoder = MODELS.build(cfg)
    encoder.init_weights()
    return encoder.eval()


def _two_cameras(bs=1):
    """Cameras at the origin looking along +x and -x (z up), 64x48 pixels, focal 40."""
    cam2img = torch.tensor([[40.0, 0, 32, 0], [0, 40.0, 24, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    forward = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    backward = torch.tensor([[0.0, 1, 0, 0], [0, 0, -1, 0], [-1, 0, 0, 0], [0, 0, 0, 1]])
    lidar2img = torch.stack([cam2img @ forward, cam2img @ backward])
    return lidar2img[None].expand(bs, 2, 4, 4), torch.tensor([48, 64]).expand(bs, 2, 2)


def test_encoder_runs_both_ops_alike_and_learns_through_the_fast_one():
    torch.manual_seed(0)
    fast = _tiny_encoder()
    reference = _tiny_encoder(layer_cfg=dict(
        feedforward_channels=32, ffn_drop=0.0,
        self_attn_cfg=dict(num_heads=2, num_points=2, dropout=0.0, sampling_op='mmcv_pytorch'),
        cross_attn_cfg=dict(num_heads=2, num_points=4, dropout=0.0, sampling_op='mmcv_pytorch')))
    _randomize(fast)
    reference.load_state_dict(fast.state_dict())
    lidar2img, image_hw = _two_cameras(bs=2)
    feats = [torch.randn(2, 2, 16, 6, 8, requires_grad=True), torch.randn(2, 2, 16, 3, 4)]
    previous = torch.randn(2, 48, 16)
    motion = torch.eye(4).expand(2, 4, 4).clone()
    motion[:, 0, 3] = 1.5
    args = (feats, lidar2img, image_hw, (48, 64))
    kwargs = dict(previous_bev=previous, current2previous=motion,
                  has_previous=torch.tensor([True, False]))
    ours = fast(*args, **kwargs)
    theirs = reference(*args, **kwargs)
    assert ours.shape == (2, 48, 16)
    assert torch.allclose(ours, theirs, atol=1e-4)
    (ours * torch.randn_like(ours)).sum().backward()
    assert feats[0].grad.abs().sum() > 0
    assert fast.bev_embedding.weight.grad.abs().sum() > 0


def _marker_map(bev_h, bev_w, cell):
    bev = torch.zeros(1, 1, bev_h, bev_w)
    bev[0, 0, cell[0], cell[1]] = 1.0
    return bev


def _yaw_transform(yaw, tx, ty):
    transform = torch.eye(4, dtype=torch.float64)
    transform[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)],
                                      [math.sin(yaw), math.cos(yaw)]])
    transform[0, 3], transform[1, 3] = tx, ty
    return transform


@pytest.mark.parametrize('yaw_deg, move', [(0.0, (2.0, 0.0)), (90.0, (1.0, -2.0)),
                                           (30.0, (1.3, 0.7))])
def test_aligned_previous_bev_puts_a_marker_where_geometry_says(yaw_deg, move):
    """The ego drives ``move`` metres and turns ``yaw_deg`` (in the previous LiDAR frame): a
    marker seen before must appear at the marker's world position seen from the new pose."""
    pc_range, bev_h, bev_w = [-8.0, -8.0, -3.0, 8.0, 8.0, 3.0], 16, 16  # 1 m cells
    lidar2ego = _yaw_transform(0.2, 0.9, 0.1)
    previous_ego2global = _yaw_transform(1.1, 400.0, 1100.0)
    # the LiDAR moves by `move` and turns by yaw in its own previous frame
    previous_lidar2global = lidar_to_global(previous_ego2global, lidar2ego)
    current_lidar2global = previous_lidar2global @ _yaw_transform(math.radians(yaw_deg), *move)
    current_ego2global = current_lidar2global @ torch.linalg.inv(lidar2ego)
    current2previous = current_to_previous_lidar(lidar_to_global(current_ego2global, lidar2ego),
                                                 previous_lidar2global)
    marker_cell = (10, 5)
    aligned = align_previous_bev(_marker_map(bev_h, bev_w, marker_cell),
                                 current2previous[None].float(), pc_range)[0, 0]
    centers = bev_cell_centers(bev_h, bev_w, pc_range).double()
    marker_previous = centers[marker_cell[0] * bev_w + marker_cell[1]]
    marker_world = previous_lidar2global @ torch.tensor([*marker_previous, 0.0, 1.0],
                                                        dtype=torch.float64)
    marker_current = torch.linalg.inv(current_lidar2global) @ marker_world
    distances = (centers - marker_current[:2]).norm(dim=-1)
    expected_cell = divmod(int(distances.argmin()), bev_w)
    assert divmod(int(aligned.argmax()), bev_w) == expected_cell
    if distances.min() < 1e-6:  # the marker lands on a cell centre: it moves whole
        assert aligned.max() == pytest.approx(1.0, abs=1e-5)
        assert aligned.sum() == pytest.approx(1.0, abs=1e-5)


def test_pillar_points_project_into_the_camera_that_sees_them():
    lidar2img, image_hw = _two_cameras()
    points = pillar_points(4, 4, [-8.0, -8.0, -1.0, 8.0, 8.0, 1.0], 2)  # (16, 2, 3)
    points_cam, mask = project_to_cameras(points, lidar2img, image_hw, (64, 64))
    ahead = points[..., 0] > 0
    assert torch.equal(mask[0, 0] & ~ahead, torch.zeros_like(ahead))
    assert torch.equal(mask[0, 1] & ahead, torch.zeros_like(ahead))
    # a point straight ahead at height 0 lands on the principal point (32, 24) of camera 0
    centre, centre_mask = project_to_cameras(torch.tensor([[5.0, 0.0, 0.0]]), lidar2img,
                                             image_hw, (64, 64))
    assert centre_mask[0, 0, 0] and not centre_mask[0, 1, 0]
    assert torch.allclose(centre[0, 0, 0], torch.tensor([32 / 64, 24 / 64]))


@pytest.mark.parametrize('cfg, message', [
    (dict(bev_h=0), 'bev_h and bev_w'),
    (dict(point_cloud_range=[0, 0, 0, -1, 1, 1]), 'point_cloud_range'),
    (dict(embed_dims=15, layer_cfg=dict(self_attn_cfg=dict(num_heads=5))), 'even'),
    (dict(layer_cfg=dict(cross_attn_cfg=dict(num_points=3))), 'multiple of num_heights'),
    (dict(layer_cfg=dict(self_attn_cfg=dict(num_heads=3))), 'divisible by num_heads'),
    (dict(layer_cfg=dict(self_attn_cfg=dict(sampling_op='cuda'))), 'sampling_op'),
    (dict(temporal_alignment='ego'), 'temporal_alignment must be one of'),
    (dict(hit_area='content'), 'hit_area must be one of'),
    (dict(rotate_center=[1, 2, 3]), 'rotate_center must be'),
])
def test_bad_encoder_configs_are_named(cfg, message):
    with pytest.raises(ValueError, match=message):
        _tiny_encoder(**cfg)


def test_wrong_feature_levels_or_cameras_are_named():
    encoder = _tiny_encoder()
    lidar2img, image_hw = _two_cameras()
    with pytest.raises(ValueError, match='num_feature_levels=2'):
        encoder([torch.randn(1, 2, 16, 6, 8)], lidar2img, image_hw, (48, 64))
    with pytest.raises(ValueError, match='num_cams, embed_dims'):
        encoder([torch.randn(1, 3, 16, 6, 8)] * 2, lidar2img, image_hw, (48, 64))


@pytest.mark.parametrize('options', [dict(use_can_bus=True), dict(temporal_alignment='official')])
def test_an_encoder_that_needs_the_can_bus_says_so(options):
    encoder = _tiny_encoder(**options)
    lidar2img, image_hw = _two_cameras()
    feats = [torch.randn(1, 2, 16, 6, 8), torch.randn(1, 2, 16, 3, 4)]
    with pytest.raises(ValueError, match='can_bus .*--can-bus-root'):
        encoder(feats, lidar2img, image_hw, (48, 64))
    with pytest.raises(ValueError, match=r'can_bus must be \(bs, 18\)'):
        encoder(feats, lidar2img, image_hw, (48, 64), can_bus=torch.zeros(1, 16))
    assert encoder(feats, lidar2img, image_hw, (48, 64), can_bus=torch.zeros(1, 18)).shape == (
        1, 48, 16)


def test_padded_hit_area_counts_the_padding_strip_as_the_official_code():
    """Camera 0 sees 64x48 pixels of content in a 64x64 padded input: a point projecting to row
    56 (in the bottom padding strip) hits only with hit_area='padded'; the image border pixel
    (column 0) hits only with 'image' (the official test is strict: 0 < u)."""
    lidar2img, image_hw = _two_cameras()
    # camera 0 (looking along +x): u = 32 - 40 y / x, v = 24 - 40 z / x
    below = torch.tensor([[5.0, 0.0, -(56 - 24) * 5.0 / 40]])  # v = 24 + 40 * (-z) / x = 56
    left_edge = torch.tensor([[5.0, 32 * 5.0 / 40, 0.0]])  # u = 32 - 40 * y / x = 0
    for points, padded_hit, image_hit in [(below, True, False), (left_edge, False, True)]:
        _, padded = project_to_cameras(points, lidar2img, image_hw, (64, 64), 'padded')
        _, image = project_to_cameras(points, lidar2img, image_hw, (64, 64), 'image')
        assert bool(padded[0, 0, 0]) == padded_hit and bool(image[0, 0, 0]) == image_hit


def test_encoder_benchmark_tool_runs_every_part(capsys):
    """tools/analysis/benchmark_bev_encoder.py at the tiny size, one repeat, forward parts, the
    spatial cross-attention's cost against its hits and the top 3 ops of the profile."""
    import importlib.util
    import os.path as osp
    tool_file = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'analysis',
                         'benchmark_bev_encoder.py')
    spec = importlib.util.spec_from_file_location('benchmark_bev_encoder', tool_file)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--sizes', 'tiny', '--repeats', '1', '--skip-backward', '--profile', '3'])
    printed = capsys.readouterr().out
    assert 'encoder forward' in printed and 'every camera x every query' in printed
    profile = printed[printed.index('self CPU time per op'):].splitlines()
    assert len(profile) == 1 + 1 + 3 + 1 and profile[-1].startswith('total (every op)')


@pytest.mark.parametrize('num_refs', [1, 4])
def test_sampling_locations_are_reference_plus_offset_over_map_size(num_refs):
    """Against the obvious loop: point (p, r) of level l of head h is reference r + offset /
    (W_l, H_l), for maps of different sizes per level; float32 for half offsets."""
    rows, heads, levels, per_ref = 5, 3, 2, 2
    reference = torch.rand(rows, num_refs, 2)
    offsets = torch.randn(rows, heads, levels, per_ref, num_refs, 2) * 4
    map_size_xy = torch.tensor([[25, 15], [13, 8]])
    locations = _sampling_locations(reference, offsets, map_size_xy)
    assert locations.shape == (rows, heads, levels, per_ref * num_refs, 2)
    for n in range(rows):
        for h in range(heads):
            for level in range(levels):
                for p in range(per_ref):
                    for r in range(num_refs):
                        expected = reference[n, r] + offsets[n, h, level, p, r] / map_size_xy[level]
                        assert torch.allclose(locations[n, h, level, p * num_refs + r], expected,
                                              atol=1e-6)
    half = _sampling_locations(reference, offsets.half(), map_size_xy)
    assert half.dtype == torch.float32
