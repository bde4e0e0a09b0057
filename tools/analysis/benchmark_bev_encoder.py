"""Benchmark the BEV encoder at the published BEVFormer sizes: ours against the same encoder on
mmcv's deformable-attention fallback (the op mmcv runs on CPU), side by side in one process.

For each size (batch 1, six cameras of the real nuScenes rig at the model's image scale, random
features and weights), prints per part (temporal self-attention, spatial cross-attention, one
layer, the whole encoder forward, and forward + backward) the median time and the peak memory
growth of both ops and their ratios. Then shows that spatial cross-attention's cost follows the
number of (camera, query) hits: the same attention with the hits limited to the BEV cells within
a radius, against every camera attending with every query. ``--profile N`` adds the N ops that
took the most time in each encoder (torch.profiler's self CPU time).

    python tools/analysis/benchmark_bev_encoder.py --sizes tiny small --repeats 3
    python tools/analysis/benchmark_bev_encoder.py --sizes tiny --profile 15
"""
import argparse
import os
import sys
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mmengine.config import Config  # noqa: E402

from projects.bevformer import BEVFormerEncoder  # noqa: E402
from projects.bevformer.geometry import project_to_cameras  # noqa: E402
from projects.bevformer.rig import nuscenes_rig_lidar2img  # noqa: E402
from projects.common.benchmark import format_mib, measure_interleaved  # noqa: E402
from projects.common.pretrained import init_weights_quietly

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENCODERS = os.path.join(REPO, 'configs', '_base_', 'bev_encoders.py')
# size -> (config variable, image (H, W) the model sees, feature stride of each level)
SIZES = {
    'tiny': ('bevformer_tiny_encoder', (450, 800), (32, )),
    'small': ('bevformer_small_encoder', (720, 1280), (32, )),
    'base': ('bevformer_base_encoder', (900, 1600), (8, 16, 32, 64)),
}
OPS = ('fast', 'mmcv_pytorch')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', choices=sorted(SIZES), default=['tiny', 'small'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: all)')
    parser.add_argument('--skip-backward', action='store_true',
                        help='leave out the forward + backward measurement (the slowest)')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='also print the N ops that took the most time (torch.profiler)')
    return parser.parse_args(argv)


def build_encoders(size: str) -> Dict[str, BEVFormerEncoder]:
    """op name -> encoder of that size, all with the same random weights, in eval mode."""
    cfg = Config.fromfile(ENCODERS)[SIZES[size][0]].to_dict()
    cfg.pop('type')
    encoders = {}
    for op in OPS:
        layer_cfg = dict(cfg['layer_cfg'])
        layer_cfg['self_attn_cfg'] = dict(layer_cfg['self_attn_cfg'], sampling_op=op)
        layer_cfg['cross_attn_cfg'] = dict(layer_cfg['cross_attn_cfg'], sampling_op=op)
        encoders[op] = BEVFormerEncoder(**dict(cfg, layer_cfg=layer_cfg)).eval()
    torch.manual_seed(0)
    init_weights_quietly(encoders['fast'])
    encoders['mmcv_pytorch'].load_state_dict(encoders['fast'].state_dict())
    return encoders


def make_inputs(size: str, encoder: BEVFormerEncoder) -> dict:
    """Features of the six cameras at the size's image scale and the rig's lidar2img."""
    _, image_hw, strides = SIZES[size]
    pad_hw = tuple(-(-side // 32) * 32 for side in image_hw)
    torch.manual_seed(1)
    feats = [torch.randn(1, 6, encoder.embed_dims, -(-pad_hw[0] // s), -(-pad_hw[1] // s))
             for s in strides]
    lidar2img = torch.from_numpy(nuscenes_rig_lidar2img(image_hw)).float()[None]
    image_hw_t = torch.tensor(image_hw).expand(1, 6, 2)
    can_bus = torch.zeros(1, 18)  # a first frame: no motion (the published encoders take it)
    return dict(img_feats=feats, lidar2img=lidar2img, image_hw=image_hw_t, input_hw=pad_hw,
                can_bus=can_bus)


def layer_inputs(encoder: BEVFormerEncoder, inputs: dict) -> dict:
    """What the encoder hands its first layer (the previous BEV: random, already aligned)."""
    feats, shapes, starts = encoder._flatten_image_features(inputs['img_feats'])
    points_cam, mask = project_to_cameras(encoder.pillar_points, inputs['lidar2img'],
                                          inputs['image_hw'], inputs['input_hw'])
    num_queries = encoder.bev_h * encoder.bev_w
    torch.manual_seed(2)
    return dict(query=torch.randn(1, num_queries, encoder.embed_dims),
                pos=torch.randn(1, num_queries, encoder.embed_dims),
                previous=torch.randn(1, num_queries, encoder.embed_dims),
                ref=encoder.bev_reference_points,
                bev_hw=torch.tensor([[encoder.bev_h, encoder.bev_w]]), feats=feats,
                shapes=shapes, starts=starts, points_cam=points_cam, mask=mask)


def part_calls(encoder: BEVFormerEncoder, inputs: dict, part: str) -> Callable[[], None]:
    layer = encoder.layers[0]
    one_layer_parts = ('temporal self-attn', 'spatial cross-attn', 'one layer')
    x = layer_inputs(encoder, inputs) if part in one_layer_parts else None
    if part == 'temporal self-attn':
        return torch.no_grad()(lambda: layer.self_attn(x['query'], x['pos'], x['previous'],
                                                       x['ref'], x['bev_hw']))
    if part == 'spatial cross-attn':
        return torch.no_grad()(lambda: layer.cross_attn(x['query'], x['feats'], x['shapes'],
                                                        x['starts'], x['points_cam'],
                                                        x['mask']))
    if part == 'one layer':
        return torch.no_grad()(lambda: layer(x['query'], x['pos'], x['previous'], None, x['ref'],
                                             x['bev_hw'], x['feats'], x['shapes'], x['starts'],
                                             x['points_cam'], x['mask']))
    if part == 'encoder forward':
        return torch.no_grad()(lambda: encoder(**inputs))

    def forward_backward() -> None:
        feats = [f.clone().requires_grad_() for f in inputs['img_feats']]
        encoder.train()
        encoder(**dict(inputs, img_feats=feats)).square().mean().backward()
        encoder.zero_grad(set_to_none=True)
        encoder.eval()
    return forward_backward


def compare_ops(size: str, repeats: int, backward: bool) -> None:
    encoders = build_encoders(size)
    inputs = make_inputs(size, encoders['fast'])
    encoder = encoders['fast']
    parts = ['temporal self-attn', 'spatial cross-attn', 'one layer', 'encoder forward']
    if backward:
        parts.append('encoder fwd+bwd')
    print(f'\n== BEVFormer-{size}: BEV {encoder.bev_h}x{encoder.bev_w}, {len(encoder.layers)} '
          f'layers, image {SIZES[size][1][1]}x{SIZES[size][1][0]}, feature levels '
          f'{[tuple(f.shape[-2:]) for f in inputs["img_feats"]]}, batch 1, 6 cameras')
    print(f'{"part":<20} {"ours ms":>9} {"mmcv ms":>9} {"speedup":>8} {"ours peak":>12} '
          f'{"mmcv peak":>12} {"memory":>7}')
    for part in parts:
        calls = {op: part_calls(encoders[op], inputs, part) for op in OPS}
        result = measure_interleaved(calls, repeats=repeats, warmup=1)
        (ours_s, ours_b), (ref_s, ref_b) = result['fast'], result['mmcv_pytorch']
        memory = 'n/a' if not ours_b or ref_b is None else f'{ours_b / ref_b:6.2f}x'
        print(f'{part:<20} {ours_s * 1e3:9.1f} {ref_s * 1e3:9.1f} {ref_s / ours_s:7.2f}x '
              f'{format_mib(ours_b, 1):>12} {format_mib(ref_b, 1):>12} {memory:>7}')


def visible_query_scaling(size: str, repeats: int) -> None:
    """Spatial cross-attention (ours) with the hits limited to cells within a radius, and with
    every camera attending with every query."""
    encoder = build_encoders(size)['fast']
    x = layer_inputs(encoder, make_inputs(size, encoder))
    attn = encoder.layers[0].cross_attn
    centers = encoder.pillar_points[:, 0, :2]  # (Q, 2)
    distance = centers.norm(dim=-1)
    print(f'\n-- BEVFormer-{size} spatial cross-attention vs hits (ours, forward)')
    print(f'{"hits":<34} {"hit pairs":>10} {"rows/cam":>9} {"ms":>8}')
    cases: List = [(f'cells within {r} m', x['mask'] & (distance <= r)[None, None, :, None])
                   for r in (15, 30)]
    cases.append(('projection (all cells)', x['mask']))
    cases.append(('every camera x every query', torch.ones_like(x['mask'])))
    for name, mask in cases:
        call = torch.no_grad()(lambda m=mask: attn(x['query'], x['feats'], x['shapes'],
                                                   x['starts'], x['points_cam'], m))
        seconds, _ = measure_interleaved({name: call}, repeats=repeats, warmup=1)[name]
        hits = mask.any(-1)
        print(f'{name:<34} {int(hits.sum()):>10} {int(hits.sum(-1).max()):>9} '
              f'{seconds * 1e3:8.1f}')


def profile_ops(size: str, backward: bool, top: int) -> None:
    """Where the time goes: torch.profiler's self CPU time per op, per encoder call (the mean of
    two calls after a warm-up), ours beside the mmcv twin, for the forward and, unless skipped,
    forward + backward."""
    from torch.profiler import profile
    encoders = build_encoders(size)
    inputs = make_inputs(size, encoders['fast'])
    parts = ['encoder forward'] + (['encoder fwd+bwd'] if backward else [])
    for part in parts:
        per_op = {}
        for op in OPS:
            call = part_calls(encoders[op], inputs, part)
            call()
            with profile() as prof:
                for _ in range(2):
                    call()
            per_op[op] = {event.key: event.self_cpu_time_total / 2e3
                          for event in prof.key_averages()}  # ms per call
        names = sorted(set(per_op['fast']) | set(per_op['mmcv_pytorch']),
                       key=lambda name: -max(per_op[op].get(name, 0.0) for op in OPS))
        print(f'\n-- BEVFormer-{size} {part}: self CPU time per op (torch.profiler, ms per call)')
        print(f'{"op":<44} {"ours ms":>9} {"mmcv ms":>9}')
        for name in names[:top]:
            print(f'{name[:44]:<44} {per_op["fast"].get(name, 0.0):9.2f} '
                  f'{per_op["mmcv_pytorch"].get(name, 0.0):9.2f}')
        print(f'{"total (every op)":<44} {sum(per_op["fast"].values()):9.2f} '
              f'{sum(per_op["mmcv_pytorch"].values()):9.2f}')


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU')
    for size in args.sizes:
        compare_ops(size, args.repeats, backward=not args.skip_backward)
        visible_query_scaling(size, args.repeats)
        if args.profile:
            profile_ops(size, backward=not args.skip_backward, top=args.profile)


if __name__ == '__main__':
    main()
