"""Our backbone against the toolbox's own, side by side in one process, with the same weights.

    python tools/analysis/benchmark_backbone.py --arch swin-t [--shape 1 3 800 1216]
        [--repeats 5] [--warmup 2] [--threads 2]

Builds both backbones from mmdet's registry, copies the reference's weights into ours through
our converter, checks that the outputs agree, then times a forward pass (no grad) of each and
measures its peak memory (:func:`projects.common.benchmark.measure_interleaved`: the two
alternate call by call; median time, resident-set growth on CPU), and prints both with the
ratios reference / ours. The machine may be shared: the load average before and after the
measurement is printed with the figures. Add an architecture to ``ARCHS``.
"""
import argparse
import os
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.common.benchmark import format_mib, measure_interleaved  # noqa: E402
from projects.common.pretrained import Converter  # noqa: E402
from projects.pvt import convert_pvt_checkpoint  # noqa: E402  (registers our backbones)
from projects.swin import convert_swin_checkpoint  # noqa: E402


@dataclass(frozen=True)
class Arch:
    """One architecture built twice: ours and the toolbox's (reference) implementation."""
    ours: dict  # registry config of our backbone
    reference: dict  # registry config of the toolbox's backbone
    convert: Converter  # reference state dict -> ours


SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
              drop_path_rate=0.0)
# mmdet builds every PVT LayerNorm with eps 1e-6; ours (as the official code) keeps 1e-5 in the
# patch embeddings and key/value reductions, which alone moves the outputs at initial weights by
# ~3e-4. The reference gets 1e-5 throughout (its blocks' norms then differ within the check; no
# effect on timing).
PVTV2_B2_MMDET = dict(embed_dims=64, num_layers=[3, 4, 6, 3], drop_path_rate=0.0,
                      norm_cfg=dict(type='LN', eps=1e-5))
ARCHS: Dict[str, Arch] = {
    'swin-t': Arch(ours=dict(type='SwinBackbone', **SWIN_T),
                   reference=dict(type='SwinTransformer', **SWIN_T),
                   convert=convert_swin_checkpoint),
    'pvtv2-b2': Arch(ours=dict(type='PVTV2Backbone', arch='b2', drop_path_rate=0.0),
                     reference=dict(type='PyramidVisionTransformerV2', **PVTV2_B2_MMDET),
                     convert=convert_pvt_checkpoint),
}


def build_pair(arch: Arch) -> Tuple[nn.Module, nn.Module]:
    """(ours, reference) in eval mode, ours holding the reference's (initialised) weights."""
    reference = MODELS.build(arch.reference)
    reference.init_weights()
    ours = MODELS.build(arch.ours)
    missing, _ = ours.load_state_dict(arch.convert(reference.state_dict(), ours), strict=False)
    if missing:
        raise RuntimeError(f'converted reference weights leave keys of ours missing: {missing}')
    ours.eval()
    reference.eval()  # not chained: mmdet's SwinTransformer.train() returns None
    return ours, reference


def max_difference(ours: List[torch.Tensor], reference: List[torch.Tensor]) -> float:
    """Largest absolute difference over all output feature maps (which must match in shape)."""
    shapes = [tuple(o.shape) for o in ours], [tuple(r.shape) for r in reference]
    if shapes[0] != shapes[1]:
        raise RuntimeError(f'output shapes differ: ours {shapes[0]}, reference {shapes[1]}')
    return max((o - r).abs().max().item() for o, r in zip(ours, reference))


def load_average() -> str:
    """The 1, 5 and 15 minute load averages of the machine."""
    return ' '.join(f'{load:.2f}' for load in os.getloadavg())


def forward_fn(model: nn.Module, images: torch.Tensor) -> Callable[[], object]:
    """A no-grad forward pass of ``model`` on ``images``, for :func:`measure`."""

    def run():
        with torch.no_grad():
            return model(images)

    return run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', choices=sorted(ARCHS), default='swin-t')
    parser.add_argument('--shape', type=int, nargs=4, default=(1, 3, 800, 1216),
                        metavar=('B', 'C', 'H', 'W'), help='input batch shape')
    parser.add_argument('--repeats', type=int, default=5, help='timed forward passes')
    parser.add_argument('--warmup', type=int, default=2, help='untimed passes first')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='torch intra-op threads')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest output difference accepted')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    register_all_modules()
    torch.manual_seed(0)
    ours, reference = build_pair(ARCHS[args.arch])
    images = torch.randn(*args.shape)
    difference = max_difference(forward_fn(ours, images)(), forward_fn(reference, images)())
    print(f'arch {args.arch}, input {"x".join(map(str, args.shape))}, threads {args.threads}, '
          f'{args.repeats} repeats after {args.warmup} warm-up, '
          f'load average {load_average()}')
    print(f'outputs agree: max |ours - reference| = {difference:.2e} (atol {args.atol:g})')
    if difference > args.atol:
        raise SystemExit(f'outputs differ by {difference:.2e} > --atol {args.atol:g}')
    results = measure_interleaved({'reference': forward_fn(reference, images),
                                   'ours': forward_fn(ours, images)}, args.repeats, args.warmup)
    for name, model in (('reference', reference), ('ours', ours)):
        seconds, peak = results[name]
        print(f'{name:>9}: {seconds:8.3f} s/forward  {format_mib(peak, 1):>12} peak  '
              f'({type(model).__name__})')
    (ref_s, ref_peak), (our_s, our_peak) = results['reference'], results['ours']
    memory = f'{ref_peak / our_peak:.2f}x' if ref_peak and our_peak else 'n/a'
    print(f'ratio reference / ours: time {ref_s / our_s:.2f}x, peak memory {memory}; '
          f'load average now {load_average()}')


if __name__ == '__main__':
    main()
