"""What ``tools/deployment/export_onnx.py`` and ``tools/deployment/test_onnx.py`` do."""
import argparse
import json
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

import projects  # noqa: F401  (registers our modules)
from .onnx_export import (DEFAULT_OPSET, DEFAULT_TOLERANCE, EXPORTERS, PARTS, ExportError,
                          export_detector)


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Export a detector to ONNX')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: random, e.g. to time)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: the test pipeline\'s Resize '
                        'scale, padded as the data preprocessor pads)')
    parser.add_argument('--part', choices=PARTS, default='detector',
                        help='the network up to the raw head outputs, or backbone and neck')
    parser.add_argument('--exporter', choices=EXPORTERS,
                        help='default: dynamo; torchscript for the DETR family')
    parser.add_argument('--dynamic', action='store_true',
                        help='leave height and width free in the graph (where the model allows)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset')
    parser.add_argument('--verify', action='store_true',
                        help='run the file in ONNX Runtime and compare with PyTorch')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                        help='largest allowed difference, relative to the output scale')
    return _with_cfg_options(parser)


def export_main(argv: Optional[List[str]] = None) -> None:
    args = export_parser().parse_args(argv)
    config = _load_config(args)
    try:
        difference = export_detector(config, args.out, args.checkpoint,
                                     tuple(args.shape) if args.shape else None, args.part,
                                     args.exporter, args.opset, args.dynamic, args.verify,
                                     args.tolerance)
    except ExportError as error:
        raise SystemExit(f'export_onnx: {error}') from None
    if difference is not None:
        print_log(f'ONNX Runtime vs PyTorch: max abs difference {difference:.3g}',
                  logger='current')


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Evaluate an exported detector in ONNX Runtime')
    parser.add_argument('config', help='the config the file was exported from')
    parser.add_argument('onnx_file', help='the .onnx file (exported with --part detector)')
    parser.add_argument('--out', help='write the metrics to this JSON file')
    parser.add_argument('--threads', type=int, help='ONNX Runtime intra-op threads')
    return _with_cfg_options(parser)


def _with_cfg_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser


def _load_config(args: argparse.Namespace) -> Config:
    """The config file with the --cfg-options applied."""
    config = Config.fromfile(args.config)
    if args.cfg_options:
        config.merge_from_dict(args.cfg_options)
    return config


def test_main(argv: Optional[List[str]] = None) -> dict:
    from .onnx_runtime import evaluate_onnx
    args = test_parser().parse_args(argv)
    config = _load_config(args)
    metrics = evaluate_onnx(config, args.onnx_file, args.threads)
    print_log(f'metrics: {json.dumps(metrics)}', logger='current')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(metrics, f, indent=2)
    return metrics
