"""BEVFormer head: box code against mmdet3d's box geometry, decoder refinement, Hungarian matching
against brute force, learning on a tiny target, NMS-free decoding against a sort of all pairs,
the mmdet3d 0.17 -> 1.x weight conversion against a 0.17-convention decoder, and config errors."""
import itertools
import math

import pytest
import torch
from mmdet3d.registry import MODELS
from mmdet3d.structures import CameraInstance3DBoxes, LiDARInstance3DBoxes
from mmengine.structures import InstanceData

import projects.bevformer.head  # noqa: F401  (registers BEVFormerHead, BoxCodeL1Cost)
from projects.bevformer.box_coder import decode_boxes, encode_boxes
from projects.bevformer.head import BEVFormerHead, convert_head_state_dict_from_v017
from projects.deformable_attention.module import FastMultiScaleDeformableAttention

DEFAULT_SCOPE = 'mmdet3d'
PC_RANGE = [-10.0, -8.0, -3.0, 10.0, 8.0, 3.0]
BEV_H, BEV_W, EMBED, NUM_QUERY, NUM_CLASSES = 8, 8, 32, 20, 3


def _head(**overrides) -> BEVFormerHead:
    cfg = dict(type='BEVFormerHead', num_classes=NUM_CLASSES, num_query=NUM_QUERY, num_layers=2,
               embed_dims=EMBED, num_heads=2, feedforward_channels=64, dropout=0.0,
               point_cloud_range=PC_RANGE, post_center_range=None)
    cfg.update(overrides)
    return MODELS.build(cfg)


def _randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def _bev(bs: int = 2, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(bs, BEV_H * BEV_W, EMBED, generator=generator).to(dtype)


def _random_boxes(n: int, seed: int = 2, box_dim: int = 9) -> LiDARInstance3DBoxes:
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    centre = rand(n, 3) * 12 - 6
    size = rand(n, 3) * 4 + 0.5
    yaw = (rand(n, 1) * 2 - 1) * (math.pi - 0.01)
    velocity = rand(n, 2) * 4 - 2
    tensor = torch.cat([centre, size, yaw, velocity], dim=1)[:, :box_dim]
    return LiDARInstance3DBoxes(tensor, box_dim=box_dim)


def _gt(boxes: LiDARInstance3DBoxes, labels) -> InstanceData:
    return InstanceData(bboxes_3d=boxes, labels_3d=torch.as_tensor(labels, dtype=torch.long))


def _empty_gt() -> InstanceData:
    return _gt(LiDARInstance3DBoxes(torch.zeros(0, 9), box_dim=9), [])


# ---- box code -----------------------------------------------------------------------------------
def test_code_matches_mmdet3d_box_geometry():
    """Centre = gravity centre, exp(slot 2) = extent along the heading (cos yaw, sin yaw) and
    exp(slot 3) across it, measured on mmdet3d's own corners."""
    boxes = _random_boxes(6)
    code = encode_boxes(boxes)
    assert code.shape == (6, 10)
    corners = boxes.corners  # (n, 8, 3)
    yaw = boxes.tensor[:, 6]
    heading = torch.stack([yaw.cos(), yaw.sin()], -1)
    across = torch.stack([-yaw.sin(), yaw.cos()], -1)

    def extent(direction):
        projection = (corners[..., :2] * direction[:, None]).sum(-1)
        return projection.max(1).values - projection.min(1).values

    torch.testing.assert_close(code[:, [0, 1, 4]], boxes.gravity_center)
    torch.testing.assert_close(code[:, 2].exp(), extent(heading))
    torch.testing.assert_close(code[:, 3].exp(), extent(across))
    torch.testing.assert_close(code[:, 5].exp(), corners[..., 2].max(1).values -
                               corners[..., 2].min(1).values)
    torch.testing.assert_close(code[:, 6:8], torch.stack([yaw.sin(), yaw.cos()], -1))
    torch.testing.assert_close(code[:, 8:], boxes.tensor[:, 7:])


def test_encode_decode_round_trip():
    boxes = _random_boxes(8)
    torch.testing.assert_close(decode_boxes(encode_boxes(boxes)), boxes.tensor)
    no_velocity = encode_boxes(_random_boxes(3, box_dim=7))
    assert torch.isnan(no_velocity[:, 8:]).all() and torch.isfinite(no_velocity[:, :8]).all()
    with pytest.raises(TypeError, match='boxes'):
        encode_boxes(CameraInstance3DBoxes(torch.zeros(1, 7)))


# ---- forward ------------------------------------------------------------------------------------
def test_forward_shapes_and_refinement():
    head = _head()
    head.init_weights()
    assert all(isinstance(layer.cross_attn, FastMultiScaleDeformableAttention)
               for layer in head.layers)
    references = []  # the reference points each layer's cross-attention received
    hooks = [layer.cross_attn.register_forward_pre_hook(
        lambda module, args, kwargs: references.append(kwargs['reference_points']),
        with_kwargs=True) for layer in head.layers]
    bev = _bev()
    all_cls, all_bbox = head(bev, torch.tensor([[BEV_H, BEV_W]]))
    for hook in hooks:
        hook.remove()
    assert all_cls.shape == (2, 2, NUM_QUERY, NUM_CLASSES)
    assert all_bbox.shape == (2, 2, NUM_QUERY, 10)
    low, high = torch.tensor(PC_RANGE[:3]), torch.tensor(PC_RANGE[3:])
    centres = all_bbox[..., [0, 1, 4]]
    assert ((centres >= low) & (centres <= high)).all()
    # Layer 0 attends around sigmoid(Linear(query_pos)); layer 1 around layer 0's refined centre.
    query_pos = head.query_embedding.weight[:, :EMBED]
    initial = head.reference_points(query_pos).sigmoid()[None, :, None, :2].expand(2, -1, -1, -1)
    torch.testing.assert_close(references[0], initial)
    refined_xy = (all_bbox[0, ..., :2] - low[:2]) / (high[:2] - low[:2])
    torch.testing.assert_close(references[1], refined_xy[:, :, None])
    # bev_hw as a tuple gives the same; the batch samples are independent.
    again = head(bev[1:], (BEV_H, BEV_W))
    torch.testing.assert_close(again[1][:, 0], all_bbox[:, 1], rtol=1e-4, atol=1e-4)


def test_shared_branches():
    head = _head(share_branches=True)
    assert head.cls_branches[0] is head.cls_branches[1]
    assert head.reg_branches[0] is head.reg_branches[1]
    separate = _head()
    assert (sum(p.numel() for p in separate.parameters()) >
            sum(p.numel() for p in head.parameters()))


def test_default_config_is_bevformer_tiny():
    head = MODELS.build(dict(type='BEVFormerHead'))
    assert (head.num_query, head.num_layers, head.embed_dims, head.num_classes) == (900, 6, 256, 10)
    layer = head.layers[0]
    assert layer.cross_attn.num_heads == 8 and layer.cross_attn.num_points == 4
    assert layer.cross_attn.num_levels == 1 and layer.ffn.feedforward_channels == 512
    assert head.code_weights.tolist() == pytest.approx([1.0] * 8 + [0.2, 0.2])
    assert head.max_num == 300
    assert head.post_center_range == (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    assert head.point_cloud_range == (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)


# ---- training -----------------------------------------------------------------------------------
def _focal_cost(logits, labels, alpha=0.25, gamma=2.0):
    p = logits.sigmoid()[:, labels]  # (queries, gts)
    return alpha * (1 - p) ** gamma * -p.log() - (1 - alpha) * p ** gamma * -(1 - p).log()


def test_hungarian_assignment_is_the_minimum_cost_matching():
    head = _head()
    generator = torch.Generator().manual_seed(3)
    num_preds, num_gts = 5, 3
    logits = torch.randn(num_preds, NUM_CLASSES, generator=generator)
    codes = torch.randn(num_preds, 10, generator=generator)
    gt_codes = torch.randn(num_gts, 10, generator=generator)
    gt_labels = torch.tensor([2, 0, 2])
    queries, matched = head.assign(logits, codes, gt_codes, gt_labels)

    l1 = torch.cdist(codes[:, :8], gt_codes[:, :8], p=1)
    cost = 2.0 * _focal_cost(logits, gt_labels) + 0.25 * l1
    best = min(itertools.permutations(range(num_preds), num_gts),
               key=lambda rows: sum(cost[row, gt] for gt, row in enumerate(rows)))
    assert sorted(zip(matched.tolist(), queries.tolist())) == list(enumerate(best))


def test_loss_names_and_learning():
    torch.manual_seed(0)
    head = _head()
    head.init_weights()
    bev = _bev()
    gts = [_gt(_random_boxes(2, seed=4), [0, 2]), _gt(_random_boxes(1, seed=5), [1])]
    losses = head.loss_by_feat(*head(bev, (BEV_H, BEV_W)), gts)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'd0.loss_cls', 'd0.loss_bbox'}
    optimizer = torch.optim.AdamW(head.parameters(), lr=5e-3)
    history = []  # (total, last layer's box loss)
    for _ in range(15):
        losses = head.loss_by_feat(*head(bev, (BEV_H, BEV_W)), gts)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append((total.item(), losses['loss_bbox'].item()))
    assert history[-1][0] < 0.6 * history[0][0], history
    assert history[-1][1] < 0.8 * history[0][1], history


def test_sample_without_ground_truth_and_missing_velocity():
    head = _head()
    head.init_weights()
    all_cls, all_bbox = head(_bev(), (BEV_H, BEV_W))
    all_bbox.retain_grad()
    losses = head.loss_by_feat(all_cls, all_bbox, [_empty_gt(), _empty_gt()])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bbox'] == 0 and losses['loss_cls'] > 0
    # One sample without GT, one whose box has no velocity: finite, velocity slots untrained.
    gts = [_empty_gt(), _gt(_random_boxes(2, box_dim=7), [0, 1])]
    losses = head.loss_by_feat(all_cls, all_bbox, gts)
    assert all(torch.isfinite(v) for v in losses.values()) and losses['loss_bbox'] > 0
    sum(losses.values()).backward()
    assert (all_bbox.grad[..., 8:] == 0).all() and all_bbox.grad[..., :8].abs().sum() > 0


def test_diverged_predictions_are_an_error_not_a_zero_loss():
    head = _head()
    head.init_weights()
    all_cls, all_bbox = head(_bev(), (BEV_H, BEV_W))
    gts = [_gt(_random_boxes(2, seed=4), [0, 2]), _gt(_random_boxes(1, seed=5), [1])]
    diverged = all_bbox.detach().clone()  # (layers, bs, queries, 10)
    diverged[-1, 0, 3, 0] = float('nan')
    with pytest.raises(FloatingPointError, match='1 non-finite values in bbox_preds'):
        head.loss_by_feat(all_cls, diverged, gts)
    with pytest.raises(FloatingPointError, match='non-finite values in cls_scores'):
        head.loss_by_feat(all_cls.detach() * float('inf'), all_bbox, gts)


# ---- inference ----------------------------------------------------------------------------------
def test_predictions_against_sorting_all_pairs():
    head = _head(max_num=25)
    _randomize(head)
    all_cls, all_bbox = head(_bev(), (BEV_H, BEV_W))
    results = head.predict_by_feat(all_cls, all_bbox, [dict(box_type_3d=LiDARInstance3DBoxes), {}])
    for sample, result in enumerate(results):
        assert isinstance(result.bboxes_3d, LiDARInstance3DBoxes)
        assert result.bboxes_3d.tensor.shape == (25, 9)
        scores = all_cls[-1, sample].sigmoid()
        order = scores.flatten().argsort(descending=True)[:25]
        torch.testing.assert_close(result.scores_3d, scores.flatten()[order])
        torch.testing.assert_close(result.labels_3d, order % NUM_CLASSES)
        expected = decode_boxes(all_bbox[-1, sample][order // NUM_CLASSES])
        torch.testing.assert_close(result.bboxes_3d.tensor, expected)

    window = (-4.0, -4.0, -3.0, 4.0, 4.0, 3.0)
    head.post_center_range, head.score_threshold = window, 0.3
    result = head.predict_by_feat(all_cls, all_bbox, [{}, {}])[0]
    scores = all_cls[-1, 0].sigmoid().flatten()
    order = scores.argsort(descending=True)[:25]
    centre = all_bbox[-1, 0][order // NUM_CLASSES][:, [0, 1, 4]]
    inside = ((centre >= torch.tensor(window[:3])) & (centre <= torch.tensor(window[3:]))).all(1)
    keep = order[inside & (scores[order] > 0.3)]
    assert 0 < len(keep) < 25
    torch.testing.assert_close(result.scores_3d, scores[keep])
    assert ((result.bboxes_3d.gravity_center.abs() <= 4.0 + 1e-5).all())


# ---- mmdet3d 0.17 checkpoints -------------------------------------------------------------------
def _v017_boxes(code: torch.Tensor):
    """Corners (n, 8, 3), heading (n, 2) and velocity (n, 2) of codes read as mmdet3d 0.17 did:
    BEVFormer's denormalize_bbox (cx, cy, log w, log l, cz, log h, sin, cos, vx, vy) -> the 0.17
    box (x, y, z, w, l, h, yaw) with x_size = w, y_size = l; bottom z = cz - h / 2; 0.17's
    corners: unit corners times (x_size, y_size, h) about the bottom centre, rotated by
    rotation_3d_in_axis(axis=2), i.e. corners @ [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]
    (clockwise by yaw). 0.17's front at yaw = 0 is -y, at yaw = -pi/2 +x ("decreases from -y to
    +x"; nuScenes infos stored yaw = -yaw_nuscenes - pi/2): heading (-sin yaw, -cos yaw)."""
    width, length, height = code[:, 2].exp(), code[:, 3].exp(), code[:, 5].exp()
    yaw = torch.atan2(code[:, 6], code[:, 7])
    bottom = torch.stack([code[:, 0], code[:, 1], code[:, 4] - height / 2], -1)
    unit = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1],
                         [1, 1, 1], [1, 1, 0]], dtype=code.dtype) - code.new_tensor([0.5, 0.5, 0])
    local = torch.stack([width, length, height], -1)[:, None] * unit  # (n, 8, 3)
    cos, sin, zero, one = yaw.cos(), yaw.sin(), torch.zeros_like(yaw), torch.ones_like(yaw)
    rot_t = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1),
                         torch.stack([zero, zero, one], -1)], -2)  # (n, 3, 3)
    corners = local @ rot_t + bottom[:, None]
    heading = torch.stack([-sin, -cos], -1)
    return corners, heading, code[:, 8:10]


def test_v017_conversion_predicts_the_same_boxes():
    old = _head().double()
    _randomize(old, seed=7)
    bev = _bev(dtype=torch.float64)
    old_cls, old_bbox = old(bev, (BEV_H, BEV_W))

    new = _head().double()
    new.load_state_dict(convert_head_state_dict_from_v017(old.state_dict()))
    new_cls, new_bbox = new(bev, (BEV_H, BEV_W))
    torch.testing.assert_close(new_cls, old_cls)

    # mmdet3d's boxes hold float32: compare in float32, to a tolerance of a few float32 steps.
    old_corners, old_heading, old_velocity = (
        t.float() for t in _v017_boxes(old_bbox.reshape(-1, 10)))
    boxes = LiDARInstance3DBoxes(decode_boxes(new_bbox.reshape(-1, 10)), box_dim=9)
    new_corners = boxes.corners
    # The same 8 corners (as a set: the two conventions number them differently) ...
    distance = torch.cdist(new_corners, old_corners)  # (n, 8, 8)
    assert distance.min(-1).values.max() < 1e-4 and distance.min(-2).values.max() < 1e-4
    # ... and not trivially so: the boxes are mostly far from square.
    assert (boxes.dims[:, 0] - boxes.dims[:, 1]).abs().median() > 0.05
    yaw = boxes.tensor[:, 6]
    torch.testing.assert_close(torch.stack([yaw.cos(), yaw.sin()], -1), old_heading)
    torch.testing.assert_close(boxes.tensor[:, 7:9], old_velocity)
    # Read without conversion, the old head's outputs are different boxes.
    unconverted = LiDARInstance3DBoxes(decode_boxes(old_bbox.reshape(-1, 10)), box_dim=9)
    assert torch.cdist(unconverted.corners, old_corners).min(-1).values.max() > 1e-2


def test_v017_conversion_keys():
    head = _head()
    _randomize(head, seed=8)
    detector_state = {f'bbox_head.{k}': v for k, v in head.state_dict().items()}
    detector_state['img_backbone.conv1.weight'] = torch.randn(10, 3)
    converted = convert_head_state_dict_from_v017(detector_state, prefix='bbox_head.')
    changed = {k for k in detector_state if not torch.equal(detector_state[k], converted[k])}
    assert changed == {f'bbox_head.reg_branches.{i}.4.{kind}' for i in range(2)
                       for kind in ('weight', 'bias')}
    weight = detector_state['bbox_head.reg_branches.0.4.weight']
    new_weight = converted['bbox_head.reg_branches.0.4.weight']
    torch.testing.assert_close(new_weight[[0, 1, 4, 5, 8, 9]], weight[[0, 1, 4, 5, 8, 9]])
    torch.testing.assert_close(new_weight[[2, 3, 6, 7]], torch.stack(
        [weight[3], weight[2], -weight[7], -weight[6]]))
    twice = convert_head_state_dict_from_v017(converted, prefix='bbox_head.')
    assert all(torch.equal(twice[k], v) for k, v in detector_state.items())
    with pytest.raises(KeyError, match='prefix'):
        convert_head_state_dict_from_v017(detector_state, prefix='pts_bbox_head.')


# ---- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize('overrides, name', [
    (dict(code_weights=[1.0] * 9), 'code_weights'),
    (dict(num_query=0), 'num_query'),
    (dict(num_layers=0), 'num_layers'),
    (dict(point_cloud_range=[0, 0, 0, 1, 1]), 'point_cloud_range'),
    (dict(post_center_range=[1, 0, 0, 0, 1, 1]), 'post_center_range'),
    (dict(loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False)), 'loss_cls'),
])
def test_bad_config_names_the_parameter(overrides, name):
    with pytest.raises(ValueError, match=name):
        _head(**overrides)


def test_bad_inputs_name_the_parameter():
    head = _head()
    with pytest.raises(ValueError, match='bev_hw'):
        head(_bev(), (BEV_H, BEV_W + 1))
    all_cls, all_bbox = head(_bev(), (BEV_H, BEV_W))
    with pytest.raises(ValueError, match='labels_3d'):
        head.loss_by_feat(all_cls, all_bbox, [_gt(_random_boxes(1), [NUM_CLASSES]), _empty_gt()])
    with pytest.raises(ValueError, match='box_type_3d'):
        head.predict_by_feat(all_cls, all_bbox, [dict(box_type_3d=CameraInstance3DBoxes), {}])
