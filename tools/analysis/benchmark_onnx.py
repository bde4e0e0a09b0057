"""Latency and peak memory of a detector's network in ONNX Runtime against PyTorch, side by side
in one process (the same part, the same random inputs and weights, the same threads, CPU).

The part is what ``tools/deployment/export_onnx.py`` exports: a detector up to its raw head
outputs (a two-stage detector: its first file, up to the RPN's outputs), or one BEVFormer frame
(backbone, encoder with a previous BEV, head). The file is
exported and checked against PyTorch first. ONNX Runtime runs without its memory arena, so that
both return their memory after each call and the peaks compare.

    python tools/analysis/benchmark_onnx.py configs/swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py \
        --shape 800 1216
    python tools/analysis/benchmark_onnx.py configs/bevformer/bevformer_tiny_8xb1-24e_nuscenes.py \
        --shape 480 800
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mmengine.config import Config  # noqa: E402

import projects  # noqa: E402,F401
from projects.common.benchmark import (format_mib, interleaved_samples, round_ratios,  # noqa: E402
                                       summarize)
from projects.deploy.onnx_export import (PARTS, export_onnx, exported_network,  # noqa: E402
                                         verify_onnx)
from projects.deploy.onnx_runtime import OnnxRuntimeNetwork  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the test pipeline\'s)')
    parser.add_argument('--part', choices=PARTS, default='detector',
                        help='the network up to the raw head outputs, or backbone and neck')
    parser.add_argument('--repeats', type=int, default=11,
                        help='rounds, each one timed call of both (default: 11)')
    parser.add_argument('--threads', type=int, default=None,
                        help='threads for both (default: torch\'s)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = Config.fromfile(args.config)
    with tempfile.TemporaryDirectory() as folder:
        onnx_file = os.path.join(folder, 'model.onnx')
        network, inputs = exported_network(config,
                                           input_hw=tuple(args.shape) if args.shape else None,
                                           part=args.part)
        reference = export_onnx(network, inputs, onnx_file)
        named = dict(zip(network.input_names, inputs))
        difference = verify_onnx(onnx_file, named, reference)
        session = OnnxRuntimeNetwork(onnx_file, torch.get_num_threads(), memory_arena=False)
        arrays = {name: tensor.numpy() for name, tensor in named.items()}
        with torch.no_grad():
            samples = interleaved_samples({
                'PyTorch (ours)': lambda: network(*inputs),
                'ONNX Runtime': lambda: session.run_named(arrays),
            }, repeats=args.repeats, warmup=1)
    shape = 'x'.join(str(size) for size in inputs[0].shape)
    part = args.part
    if getattr(network, 'roi_branches', None):  # the RoI stages' input is NMS output
        part += ': a two-stage detector\'s first file (backbone, neck, RPN head)'
    print(f'{args.config} ({part}): input {shape}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, CPU; ONNX Runtime vs PyTorch max abs difference '
          f'{difference:.2g}')
    print(f'{"":<16} {"ms (median)":>12} {"peak memory":>12}')
    results = {name: summarize(runs) for name, runs in samples.items()}
    for name, (seconds, peak) in results.items():
        print(f'{name:<16} {seconds * 1e3:12.1f} {format_mib(peak):>12}')
    (_, torch_peak), (_, ort_peak) = results.values()
    memory = (f', peak memory {ort_peak / torch_peak:.2f}x PyTorch\'s'
              if torch_peak and ort_peak is not None else '')
    low, speed, high = round_ratios(*samples.values())
    print(f'ONNX Runtime: {speed:.2f}x the speed of PyTorch (median of the {args.repeats} '
          f'rounds\' time ratios, quartiles {low:.2f}-{high:.2f}x){memory}')


if __name__ == '__main__':
    main()
