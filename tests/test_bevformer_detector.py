"""BEVFormerDetector: a training step on a queue, and the test-time BEV memory (kept within a
scene, dropped on a scene change or a jump in ego pose)."""
import numpy as np
import pytest
import torch
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.structures import InstanceData

import projects  # noqa: F401
from projects.bevformer.grid_mask import GridMask
from projects.bevformer.rig import nuscenes_rig_lidar2img
from projects.bevformer.sampler import SceneShardSampler, scene_shards

DEFAULT_SCOPE = 'mmdet3d'
IMAGE_HW = (64, 96)
EMBED = 32


def _tiny_detector(encoder_options=None, **overrides):
    cfg = dict(
        type='BEVFormerDetector',
        img_backbone=dict(type='mmdet.ResNet', depth=18, base_channels=8, num_stages=2,
                          strides=(1, 2), dilations=(1, 1), out_indices=(1, ),
                          norm_cfg=dict(type='BN'), norm_eval=False),
        img_neck=dict(type='mmdet.FPN', in_channels=[16], out_channels=EMBED, num_outs=1),
        encoder=dict(type='BEVFormerEncoder', bev_h=8, bev_w=8,
                     point_cloud_range=[-20, -20, -3, 20, 20, 3], num_layers=1, embed_dims=EMBED,
                     num_feature_levels=1,
                     layer_cfg=dict(feedforward_channels=64, ffn_drop=0.0,
                                    self_attn_cfg=dict(num_heads=2, dropout=0.0),
                                    cross_attn_cfg=dict(num_heads=2, dropout=0.0)),
                     **(encoder_options or {})),
        bbox_head=dict(type='BEVFormerHead', num_classes=3, num_query=12, num_layers=2,
                       embed_dims=EMBED, num_heads=2, feedforward_channels=64, dropout=0.0,
                       point_cloud_range=[-20, -20, -3, 20, 20, 3]),
        max_ego_jump=5.0)
    cfg.update(overrides)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _sample(scene_tokens, x_positions, with_gt=True, frame_tokens=None, prev_token=None):
    """A packed sample: frames at the given ego x positions (metres), oldest first."""
    frames = len(scene_tokens)
    frame_tokens = frame_tokens or [f'{scene}-{x}' for scene, x in zip(scene_tokens, x_positions)]
    ego2global = np.stack([np.eye(4)] * frames)
    ego2global[:, 0, 3] = x_positions
    sample = Det3DDataSample(metainfo=dict(
        num_frames=frames, num_views=6, img_shape=IMAGE_HW, batch_input_shape=IMAGE_HW,
        lidar2img=np.stack([nuscenes_rig_lidar2img(IMAGE_HW)] * frames), ego2global=ego2global,
        lidar2ego=np.stack([np.eye(4)] * frames), scene_token=list(scene_tokens),
        frame_tokens=frame_tokens, token=frame_tokens[-1], prev_token=prev_token,
        box_type_3d=LiDARInstance3DBoxes))
    if with_gt:
        boxes = torch.tensor([[5.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.3, 1.0, 0.0],
                              [-8.0, -3.0, -1.0, 0.8, 0.8, 1.8, 0.0, 0.0, 0.0]])
        sample.gt_instances_3d = InstanceData(bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9),
                                              labels_3d=torch.tensor([0, 2]))
    return sample


def _images(num_samples, frames, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_samples, frames * 6, 3, *IMAGE_HW, generator=generator)


def _encoder_calls(model):
    """Records, for every encoder call, whether a previous BEV was passed (and has_previous)."""
    calls = []

    def hook(module, args, kwargs):
        calls.append((kwargs.get('previous_bev') is not None, kwargs.get('has_previous')))
    model.encoder.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def test_training_step_on_a_queue_learns_through_the_current_frame_only():
    model = _tiny_detector().train()
    calls = _encoder_calls(model)
    samples = [_sample(['a', 'a'], [0.0, 2.0]), _sample(['b', 'c'], [0.0, 1.0])]
    losses = model.loss(dict(imgs=_images(2, 2)), samples)
    assert {'loss_cls', 'loss_bbox', 'd0.loss_cls', 'd0.loss_bbox'} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0
    assert model.encoder.bev_embedding.weight.grad.abs().sum() > 0
    # the oldest frame has no previous BEV; the current one has, usable only within one scene
    assert calls[0] == (False, None)
    assert calls[1][0] and calls[1][1].tolist() == [True, False]


def test_a_frame_repeated_at_a_scene_start_is_not_its_own_predecessor():
    model = _tiny_detector().train()
    calls = _encoder_calls(model)
    repeated = _sample(['a', 'a'], [0.0, 0.0], frame_tokens=['f0', 'f0'])
    model.loss(dict(imgs=_images(2, 2)), [repeated, _sample(['a', 'a'], [0.0, 1.0])])
    assert calls[1][1].tolist() == [False, True]


def test_test_time_memory_is_used_only_for_the_linked_previous_keyframe():
    model = _tiny_detector().eval()
    calls = _encoder_calls(model)
    with torch.no_grad():
        for token, prev in [('k0', ''), ('k1', 'k0'), ('k3', 'k2'), ('k4', 'k3'), ('k4', 'k3')]:
            model.predict(dict(imgs=_images(1, 1)), [_sample(
                ['s'], [0.0], with_gt=False, frame_tokens=[token], prev_token=prev)])
        model.reset_temporal_state()
        model.predict(dict(imgs=_images(1, 1)), [_sample(
            ['s'], [0.0], with_gt=False, frame_tokens=['k5'], prev_token='k4')])
    # k1 follows k0; k3's prev k2 was not seen; k4 follows k3; a second k4 does not follow k4;
    # after the reset nothing is kept
    assert [used for used, _ in calls] == [False, True, False, True, False, False]


def test_test_time_memory_follows_the_scene_and_resets_on_a_change_or_a_jump():
    model = _tiny_detector().eval()
    calls = _encoder_calls(model)
    frames = [(['s1'], [0.0]), (['s1'], [2.0]), (['s2'], [2.5]), (['s2'], [20.0]),
              (['s2'], [21.0])]
    outputs = []
    with torch.no_grad():
        for index, (scene, x) in enumerate(frames):
            result = model.predict(dict(imgs=_images(1, 1, seed=index)),
                                   [_sample(scene, x, with_gt=False)])
            outputs.append(result[0].pred_instances_3d)
    # first frame, same scene, scene change, 17.5 m jump (> max_ego_jump 5 m), same scene
    assert [used for used, _ in calls] == [False, True, False, False, True]
    boxes = outputs[0].bboxes_3d
    assert isinstance(boxes, LiDARInstance3DBoxes) and boxes.tensor.shape[1] == 9
    assert outputs[0].scores_3d.shape == outputs[0].labels_3d.shape


def test_previous_bev_changes_the_predictions():
    model = _tiny_detector().eval()
    images = _images(1, 1, seed=3)
    with torch.no_grad():
        model.predict(dict(imgs=_images(1, 1, seed=4)), [_sample(['s'], [0.0], with_gt=False)])
        with_memory = model.predict(dict(imgs=images), [_sample(['s'], [1.0], with_gt=False)])
        model.video_test_mode = False
        without = model.predict(dict(imgs=images), [_sample(['s'], [1.0], with_gt=False)])
    assert not torch.allclose(with_memory[0].pred_instances_3d.scores_3d,
                              without[0].pred_instances_3d.scores_3d)


def test_a_batch_is_predicted_frame_after_frame():
    """Two consecutive frames of one scene in one batch: the second uses the first's BEV."""
    model = _tiny_detector().eval()
    calls = _encoder_calls(model)
    with torch.no_grad():
        samples = [_sample(['s'], [0.0], with_gt=False), _sample(['s'], [1.0], with_gt=False)]
        model.predict(dict(imgs=_images(2, 1)), samples)
    assert [used for used, _ in calls] == [False, True]


def test_images_not_matching_the_metainfo_are_named():
    model = _tiny_detector()
    with pytest.raises(ValueError, match='num_frames=2 x num_views=6'):
        model.loss(dict(imgs=_images(1, 1)), [_sample(['a', 'a'], [0.0, 1.0])])
    with pytest.raises(KeyError, match='PackBEVInputs'):
        model.loss(dict(points=[]), [_sample(['a'], [0.0])])


def test_encoder_and_head_ranges_must_agree():
    head = dict(type='BEVFormerHead', num_classes=3, num_query=12, num_layers=2, embed_dims=EMBED,
                num_heads=2, feedforward_channels=64, point_cloud_range=[-30, -30, -3, 30, 30, 3])
    with pytest.raises(ValueError, match='bbox_head.point_cloud_range'):
        _tiny_detector(bbox_head=head)


@pytest.mark.parametrize('num_shards', [1, 2, 3, 5])
def test_scene_shards_keep_scenes_whole_contiguous_and_balanced(num_shards):
    scenes = ['a'] * 12 + ['b'] * 12 + ['c'] * 3 + ['d'] * 12 + ['e'] * 1
    shards = scene_shards(scenes, num_shards)
    assert len(shards) == num_shards
    assert sum(shards, []) == list(range(len(scenes)))  # every sample once, in order
    for shard in shards:
        for scene in {scenes[i] for i in shard}:  # a scene is on one shard only
            assert [i for i in shard if scenes[i] == scene] == [
                i for i, s in enumerate(scenes) if s == scene]
    if num_shards == 2:
        assert [len(s) for s in shards] == [24, 16]
    if num_shards == 5:  # scene middles at 6, 18, 25.5, 33, 39.5 of 40: shard 1 gets none
        assert [len(s) for s in shards] == [12, 0, 12, 3, 13]


def test_scene_shard_sampler_refuses_shuffling_and_data_without_scenes():
    class Frames:
        def __init__(self, infos):
            self.infos, self.ann_file = infos, 'infos.pkl'

        def __len__(self):
            return len(self.infos)

        def get_data_info(self, index):
            return self.infos[index]

    sampler = SceneShardSampler(Frames([dict(scene_token='a')] * 3))
    assert list(sampler) == [0, 1, 2] and len(sampler) == 3  # one process: everything, in order
    with pytest.raises(ValueError, match='shuffle=False'):
        SceneShardSampler(Frames([dict(scene_token='a')]), shuffle=True)
    with pytest.raises(ValueError, match='scene_token .*infos.pkl.*--augment'):
        SceneShardSampler(Frames([dict(token='x')]))


def test_grid_mask_keeps_whole_grid_lines_and_masks_only_in_training():
    np.random.seed(0)
    images = torch.rand(4, 3, 48, 64) + 1.0  # no zero pixels of their own
    grid_mask = GridMask(prob=1.0, ratio=0.5)
    masked_fractions = []
    for _ in range(200):
        out = grid_mask(images)
        kept = out != 0
        assert torch.equal(out[kept], images[kept])  # pixels are kept or zeroed, nothing else
        mask = kept[0, 0]
        assert (kept == mask).all()  # one mask for every image and channel
        full_rows, full_cols = mask.all(1), mask.all(0)
        # every kept pixel lies on a kept row or a kept column: a grid of lines
        assert torch.equal(mask, full_rows[:, None] | full_cols[None, :])
        masked_fractions.append(1.0 - float(mask.float().mean()))
    # squares of (1 - ratio) of the period on both axes: about a quarter of the image
    assert 0.15 < np.mean(masked_fractions) < 0.35
    grid_mask.eval()
    assert torch.equal(grid_mask(images), images)
    assert torch.equal(GridMask(prob=0.0)(images), images)
    with pytest.raises(ValueError, match='ratio'):
        GridMask(ratio=1.5)


def _with_can_bus(sample, seed):
    """Absolute per-frame CAN-bus vectors (T, 18), as PackBEVInputs gives them."""
    frames = sample.num_frames
    can_bus = np.random.default_rng(seed).normal(size=(frames, 18)) * 10
    sample.set_metainfo(dict(can_bus=can_bus))
    return can_bus


def _can_bus_inputs(model):
    """The can_bus the encoder gets at every call."""
    inputs = []
    model.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: inputs.append(kwargs['can_bus'].double()), with_kwargs=True)
    return inputs


def _expected_can_bus(current, previous):
    """Translation [0:3] and heading [17] relative to ``previous`` (None: zeros), rest as is."""
    expected = np.array(current, dtype=np.float64)
    relative = [0, 1, 2, 17]
    expected[relative] = 0.0 if previous is None else current[relative] - previous[relative]
    return torch.from_numpy(expected)


def test_can_bus_deltas_follow_the_frame_whose_bev_is_used():
    model = _tiny_detector(encoder_options=dict(use_can_bus=True))
    inputs = _can_bus_inputs(model)
    # training: sample 0 in one scene (deltas to its previous frame), sample 1 across scenes
    same, changed = _sample(['a', 'a'], [0.0, 2.0]), _sample(['b', 'c'], [0.0, 1.0])
    can_same, can_changed = _with_can_bus(same, 0), _with_can_bus(changed, 1)
    model.train().loss(dict(imgs=_images(2, 2)), [same, changed])
    history, current = inputs
    for sample, can_bus in enumerate([can_same, can_changed]):
        torch.testing.assert_close(history[sample].float(),
                                   _expected_can_bus(can_bus[0], None).float())
    torch.testing.assert_close(current[0].float(),
                               _expected_can_bus(can_same[1], can_same[0]).float())
    torch.testing.assert_close(current[1].float(), _expected_can_bus(can_changed[1], None).float())
    # test: relative to the kept frame when it is the linked predecessor, else zero
    inputs.clear()
    model.eval()
    absolute = []
    with torch.no_grad():
        for token, prev, scene in [('k0', '', 's'), ('k1', 'k0', 's'), ('k2', 'k1', 't')]:
            sample = _sample([scene], [0.0], with_gt=False, frame_tokens=[token],
                             prev_token=prev)
            absolute.append(_with_can_bus(sample, len(absolute) + 2)[0])
            model.predict(dict(imgs=_images(1, 1)), [sample])
    expected = [_expected_can_bus(absolute[0], None), _expected_can_bus(absolute[1], absolute[0]),
                _expected_can_bus(absolute[2], None)]  # k2: another scene, no previous BEV
    for got, want in zip(inputs, expected):
        torch.testing.assert_close(got[0].float(), want.float())
