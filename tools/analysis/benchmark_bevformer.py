"""Latency and peak memory of a BEVFormer detector, split into image backbone + neck, BEV encoder
and detection head (decoder + box decoding), and the time and memory of one training step.

Inputs are synthetic (random images of the config's size, the real nuScenes rig's cameras, random
weights): the figures are the model's cost, not its accuracy. Batch 1, six cameras.

    # inference of BEVFormer-tiny (800x450 images)
    python tools/analysis/benchmark_bevformer.py \
        configs/bevformer/bevformer_tiny_8xb1-24e_nuscenes.py
    # one training step of the toy config (its image size, queue and batch size)
    python tools/analysis/benchmark_bevformer.py \
        configs/bevformer/bevformer_nano_1xb2-24e_toy-nuscenes.py --train --image-size 224 400
"""
import argparse
import os
import sys
from typing import Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mmdet3d.registry import MODELS  # noqa: E402
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

import projects  # noqa: E402,F401
from projects.bevformer.rig import nuscenes_rig_lidar2img  # noqa: E402
from projects.common.benchmark import format_mib, measure  # noqa: E402
from projects.datasets.can_bus import frame_can_bus  # noqa: E402

# image (H, W) the published configs feed the network, by their resize scale of 1600x900
DEFAULT_IMAGE_SIZE = (450, 800)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--image-size', type=int, nargs=2, default=DEFAULT_IMAGE_SIZE,
                        metavar=('H', 'W'), help='image size the network sees (default 450 800)')
    parser.add_argument('--train', action='store_true',
                        help='measure a training step (queue from the config) instead')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='training batch size (default: the config\'s)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    return parser.parse_args(argv)


def make_batch(image_hw: Tuple[int, int], num_frames: int, batch_size: int,
               with_gt: bool) -> dict:
    """A packed-and-preprocessed batch: imgs (B, T * 6, 3, H', W') and its data samples."""
    height, width = image_hw
    pad_hw = (-(-height // 32) * 32, -(-width // 32) * 32)
    lidar2img = nuscenes_rig_lidar2img(image_hw)
    generator = torch.Generator().manual_seed(0)
    samples = []
    for index in range(batch_size):
        poses = np.stack([np.eye(4)] * num_frames)
        poses[:, 0, 3] = np.arange(num_frames) * 2.0  # 2 m per frame forward in x
        sample = Det3DDataSample(metainfo=dict(
            num_frames=num_frames, num_views=6, lidar2img=np.stack([lidar2img] * num_frames),
            img_shape=image_hw, batch_input_shape=pad_hw, ego2global=poses,
            lidar2ego=np.stack([np.eye(4)] * num_frames), scene_token=['scene'] * num_frames,
            can_bus=np.stack([frame_can_bus(np.zeros(18), pose) for pose in poses]),
            box_type_3d=LiDARInstance3DBoxes, sample_idx=index))
        if with_gt:
            boxes = torch.rand(20, 9, generator=generator)
            boxes[:, :2] = boxes[:, :2] * 60 - 30
            boxes[:, 2] = -1.5
            boxes[:, 3:6] = boxes[:, 3:6] * 3 + 0.5
            boxes[:, 6] = boxes[:, 6] * 6.28
            sample.gt_instances_3d = InstanceData(
                bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9),
                labels_3d=torch.randint(0, 10, (20, ), generator=generator))
        samples.append(sample)
    imgs = torch.randn(batch_size, num_frames * 6, 3, *pad_hw, generator=generator)
    return dict(inputs=dict(imgs=imgs), data_samples=samples)


def benchmark_inference(model, image_hw, repeats: int) -> None:
    batch = make_batch(image_hw, num_frames=1, batch_size=1, with_gt=False)
    metas = [s.metainfo for s in batch['data_samples']]
    imgs = batch['inputs']['imgs']
    model.eval()
    with torch.no_grad():
        feats = model.extract_img_feat(imgs)  # (1, 6, 3, H, W): one frame
        bev = model._encode(feats, metas, 0, None)
        parts = {
            'backbone + neck': lambda: model.extract_img_feat(imgs),
            'BEV encoder': lambda: model._encode(feats, metas, 0, None),
            'head (decoder + decoding)': lambda: model.bbox_head.predict_by_feat(
                *model.bbox_head(bev, model._bev_hw(bev)), metas),
            'whole predict': lambda: model.predict(batch['inputs'], batch['data_samples']),
        }
        print(f'{"inference (batch 1, 6 cameras)":<30} {"ms":>9} {"peak memory":>12}')
        for name, call in parts.items():
            seconds, peak = measure(call, repeats=repeats, warmup=1)
            print(f'{name:<30} {seconds * 1e3:9.1f} {format_mib(peak):>12}')


def benchmark_training(model, cfg: Config, image_hw, batch_size, repeats: int) -> None:
    num_frames = cfg.train_dataloader.dataset.get('queue_length', 1)
    batch_size = batch_size or cfg.train_dataloader.batch_size
    batch = make_batch(image_hw, num_frames=num_frames, batch_size=batch_size, with_gt=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        losses = model.loss(batch['inputs'], batch['data_samples'])
        loss = sum(v for v in losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds, peak = measure(step, repeats=repeats, warmup=1)
    print(f'training step (batch {batch_size}, queue {num_frames}, 6 cameras, '
          f'{image_hw[1]}x{image_hw[0]}): {seconds * 1e3:.0f} ms, peak memory {format_mib(peak)}')


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        model = MODELS.build(cfg.model)
    # the modules' own random initialisation; init_weights() is not called (no pretrained download)
    image_hw = tuple(args.image_size)
    print(f'{args.config}: torch {torch.__version__}, {torch.get_num_threads()} threads, CPU')
    if args.train:
        benchmark_training(model, cfg, image_hw, args.batch_size, args.repeats)
    else:
        benchmark_inference(model, image_hw, args.repeats)


if __name__ == '__main__':
    main()
