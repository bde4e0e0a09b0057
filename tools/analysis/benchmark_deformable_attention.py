"""Benchmark our multi-scale deformable attention op against mmcv's, side by side in one process.

Default shape: the Deformable DETR encoder (bs 2; levels 100x150, 50x75, 25x38, 13x19; 8 heads;
32 dims per head; 4 points; every pixel of every level is a query). Compared:

* ``mmcv-pytorch``: mmcv's ``multi_scale_deformable_attn_pytorch`` (the grid_sample fallback mmcv
  uses on CPU),
* ``mmcv-cuda``: mmcv's compiled ``MultiScaleDeformableAttnFunction``, only on CUDA when mmcv's ops
  are built with CUDA.

The implementations run in rounds (each once per round, after one warm-up call each) so that load
changes on a shared machine hit all of them alike; times are medians over rounds, peaks the maximum.
Peak memory is measured by ``projects.common.benchmark.measure`` (CPU: resident-set high-water mark
above the pre-call baseline; CUDA: ``max_memory_allocated``).

    python tools/analysis/benchmark_deformable_attention.py --repeats 3
    python tools/analysis/benchmark_deformable_attention.py --device cuda --dtype bfloat16
"""
import argparse
import math
import os
import statistics
import sys
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
from projects.common.benchmark import format_mib, measure  # noqa: E402
from projects.deformable_attention import SAMPLING_OPS, multi_scale_deformable_attention  # noqa

ENCODER_LEVELS = '100x150,50x75,25x38,13x19'
OP_ARGUMENTS = ('value', 'spatial_shapes', 'level_start_index', 'sampling_locations',
                'attention_weights')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3, help='timed rounds per implementation')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1, ...')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch's CPU threads (default: torch's default)")
    parser.add_argument('--levels', default=ENCODER_LEVELS, help='HxW per level, comma separated')
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--head-dims', type=int, default=32)
    parser.add_argument('--points', type=int, default=4)
    parser.add_argument('--locations', default='encoder', choices=['encoder', 'uniform'],
                        help='encoder: each query samples around its own pixel (offsets of a '
                        'few pixels, as in a Deformable DETR encoder); uniform: anywhere in '
                        '[-0.1, 1.1]')
    return parser.parse_args(argv)


def make_inputs(args: argparse.Namespace) -> Dict[str, torch.Tensor]:
    """The op's arguments by name (OP_ARGUMENTS); the queries are every pixel of every level."""
    generator = torch.Generator().manual_seed(0)
    level_shapes = [tuple(int(n) for n in level.split('x')) for level in args.levels.split(',')]
    spatial_shapes = torch.tensor(level_shapes)  # (levels, 2) as (H, W)
    level_sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([level_sizes.new_zeros(1), level_sizes.cumsum(0)[:-1]])
    num_keys = int(level_sizes.sum())
    bs, heads, levels, points = args.batch_size, args.heads, len(level_shapes), args.points
    value = torch.randn(bs, num_keys, heads, args.head_dims, generator=generator)
    sample_shape = (bs, num_keys, heads, levels, points)
    if args.locations == 'uniform':
        sampling_locations = torch.rand(*sample_shape, 2, generator=generator) * 1.2 - 0.1
    else:
        directions = _head_directions(heads)[:, None, None, :]  # (heads, 1, 1, 2)
        pixel_offsets = directions * torch.arange(1.0, points + 1)[:, None]  # (heads, 1, points, 2)
        pixel_offsets = pixel_offsets + torch.randn(*sample_shape, 2, generator=generator)
        level_size_xy = spatial_shapes.flip(-1).float()[:, None, :]  # (levels, 1, 2)
        centres = _pixel_centres(level_shapes)[:, None, None, None, :]  # (queries, 1, 1, 1, 2)
        sampling_locations = centres + pixel_offsets / level_size_xy  # (*sample_shape, 2)
    attention_weights = torch.rand(*sample_shape, generator=generator)
    attention_weights = attention_weights / attention_weights.sum((-1, -2), keepdim=True)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    return dict(value=value.to(device, dtype), spatial_shapes=spatial_shapes.to(device),
                level_start_index=level_start_index.to(device),
                sampling_locations=sampling_locations.to(device, dtype),
                attention_weights=attention_weights.to(device, dtype))


def _head_directions(heads: int) -> torch.Tensor:
    """(heads, 2) unit-max-norm directions, one per head, as a Deformable DETR's offsets start."""
    angles = torch.arange(heads) * (2 * math.pi / heads)
    directions = torch.stack([angles.cos(), angles.sin()], -1)
    return directions / directions.abs().max(-1, keepdim=True)[0]


def _pixel_centres(level_shapes: List[Tuple[int, int]]) -> torch.Tensor:
    """(sum of H*W, 2) normalised (x, y) centre of every pixel of every level, level by level."""
    centres = []
    for h, w in level_shapes:
        y, x = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w,
                              indexing='ij')
        centres.append(torch.stack([x, y], -1).view(-1, 2))
    return torch.cat(centres)


def implementations(device: torch.device) -> Dict[str, Callable[..., torch.Tensor]]:
    """Name -> fn(*OP_ARGUMENTS)."""
    impls = {'ours': multi_scale_deformable_attention}
    try:
        from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    except (ImportError, OSError) as error:
        print(f'mmcv.ops is not importable ({error}): benchmarking ours alone')
        return impls
    impls['mmcv-pytorch'] = SAMPLING_OPS['mmcv_pytorch']
    if device.type == 'cuda':
        impls['mmcv-cuda'] = lambda value, shapes, starts, locations, weights: \
            MultiScaleDeformableAttnFunction.apply(value, shapes, starts, locations, weights, 64)
    return impls


def usable(impls: Dict[str, Callable], args: argparse.Namespace) -> Dict[str, Callable]:
    """The implementations that run forward and backward on a tiny input of the benchmark's
    device and dtype (mmcv's fallback lacks CPU half kernels, its CUDA op may be missing or lack
    bfloat16)."""
    tiny = make_inputs(argparse.Namespace(**{**vars(args), 'batch_size': 1, 'levels': '2x3,1x2'}))
    working = {}
    for name, fn in impls.items():
        try:
            run_step(fn, tiny, backward=True)()
        except (RuntimeError, NotImplementedError) as error:
            reason = str(error).splitlines()[0]
            print(f'skipping {name}: it fails on {args.device} {args.dtype} ({reason})')
            continue
        working[name] = fn
    return working


def run_step(fn: Callable, inputs: Dict[str, torch.Tensor], backward: bool) -> Callable[[], None]:
    """A no-argument callable: forward only (no_grad), or forward + backward into value,
    sampling_locations and attention_weights."""
    args = [inputs[name] for name in OP_ARGUMENTS]
    if not backward:
        def forward() -> None:
            with torch.no_grad():
                fn(*args)
        return forward
    for index in (0, 3, 4):
        args[index] = args[index].detach().requires_grad_()
    grad_output = torch.randn(args[3].shape[:2] + (args[0].shape[2] * args[0].shape[3],),
                              generator=torch.Generator().manual_seed(1)).to(args[0])

    def forward_backward() -> None:
        fn(*args).backward(grad_output)
        for index in (0, 3, 4):
            args[index].grad = None
    return forward_backward


def benchmark(impls: Dict[str, Callable], inputs: Dict[str, torch.Tensor], repeats: int,
              device: torch.device) -> Dict[Tuple[str, str], Tuple[float, int]]:
    """(implementation, 'forward' | 'forward+backward') -> (median seconds, max peak bytes)."""
    results = {}
    for step in ('forward', 'forward+backward'):
        backward = step == 'forward+backward'
        calls = {name: run_step(fn, inputs, backward) for name, fn in impls.items()}
        for name, call in calls.items():
            print(f'[{step}] warm-up {name}', flush=True)
            call()
        samples = {name: [] for name in calls}
        for round_index in range(repeats):
            for name, call in calls.items():
                seconds, peak = measure(call, repeats=1, warmup=0, device=device)
                samples[name].append((seconds, peak))
                print(f'[{step}] round {round_index + 1}/{repeats} {name}: {seconds * 1e3:.2f} ms, '
                      f'peak {format_mib(peak)}', flush=True)
        for name, runs in samples.items():
            peaks = [peak for _, peak in runs if peak is not None]
            seconds = statistics.median(seconds for seconds, _ in runs)
            results[name, step] = (seconds, max(peaks) if peaks else None)
    return results


def print_table(results: Dict[Tuple[str, str], Tuple[float, int]], names: List[str]) -> None:
    """One row per step and measure, one column per implementation, and ours / reference (< 1: ours
    is faster or smaller) against mmcv's CUDA op where it runs, else mmcv's fallback."""
    reference = next((name for name in ('mmcv-cuda', 'mmcv-pytorch') if name in names), None)
    header = f'{"":<36}' + ''.join(f'{name:>14}' for name in names)
    if reference:
        header += f'{"ours / " + reference:>22}'
    print(header)
    for step in ('forward', 'forward+backward'):
        for column, label, fmt in ((0, 'time (ms)', lambda seconds: f'{seconds * 1e3:.2f}'),
                                   (1, 'peak memory', format_mib)):
            row = f'{step + " " + label:<36}' + ''.join(
                f'{fmt(results[name, step][column]):>14}' for name in names)
            if reference:
                ours, theirs = results['ours', step][column], results[reference, step][column]
                row += f'{ours / theirs:>22.2f}' if ours is not None and theirs else f'{"n/a":>22}'
            print(row)


def max_abs_difference(impls: Dict[str, Callable], inputs: Dict[str, torch.Tensor],
                       other: str) -> float:
    args = [inputs[name] for name in OP_ARGUMENTS]
    with torch.no_grad():
        return (impls['ours'](*args).float() - impls[other](*args).float()).abs().max().item()


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ', '.join(f'{x:.2f}' for x in os.getloadavg()) if hasattr(os, 'getloadavg') else 'n/a'
    print(f'torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, '
          f'{os.cpu_count()} cpus, load average {load}')
    inputs = make_inputs(args)
    print(f'value {tuple(inputs["value"].shape)}, sampling_locations '
          f'{tuple(inputs["sampling_locations"].shape)}, {args.dtype}, {args.locations} locations')
    impls = usable(implementations(device), args)
    for other in impls:
        if other != 'ours':
            print(f'max |ours - {other}| forward: {max_abs_difference(impls, inputs, other):.2e}')
    results = benchmark(impls, inputs, args.repeats, device)
    print_table(results, list(impls))
    if hasattr(os, 'getloadavg'):
        print('load average after: ' + ', '.join(f'{x:.2f}' for x in os.getloadavg()))


if __name__ == '__main__':
    main()
