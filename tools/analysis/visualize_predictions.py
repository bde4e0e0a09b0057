"""Draws a BEVFormer checkpoint's predictions and the ground truth into the six cameras of chosen
test samples, plus a bird's-eye panel; one PNG per sample.

    python tools/analysis/visualize_predictions.py CONFIG CHECKPOINT [--index 0 ...]
        [--out-dir prediction_vis] [--score-threshold 0.3] [--data-root DIR] [--ann-file PKL]
        [--history 0] [--dpi 100] [--cfg-options key=value ...]

The model is built from CONFIG and loaded from CHECKPOINT; the samples come from the config's
test dataset (``test_dataloader.dataset``, its test pipeline) or, with ``--data-root`` /
``--ann-file``, from another mmdet3d nuScenes info file, e.g. the real keyframe in
../shared/data/nuscenes_demo::

    python tools/analysis/visualize_predictions.py \\
        configs/bevformer/bevformer_nano_1xb2-24e_toy-nuscenes.py CKPT \\
        --data-root ../shared/data/nuscenes_demo \\
        --ann-file ../shared/data/nuscenes_demo/n015-2018-07-24-11-22-45+0800.pkl \\
        --cfg-options model.encoder.use_can_bus=False test_dataloader.dataset.with_can_bus=False

(that info, made by mmdet3d, has no CAN bus: the model of CKPT must be one without the CAN-bus
input, or the info must first get one with ``tools/data/create_nuscenes_infos.py --augment``).

Predictions are drawn in their class colour (solid wireframes, score in the BEV panel), the
ground truth (``eval_ann_info`` of the test dataset) white and dashed. ``--history N`` first runs
the N keyframes before each sample in its scene so that the temporal model has a previous BEV
(-1: all of them, as ``tools/test.py`` does). Logic: ``projects/bevformer/visualization/cli.py``
(``visualize_predictions``); ``tools/test.py --show-dir DIR`` draws the same pictures for a whole
test run with ``BEVVisualizationHook``.

nuScenes data is (c) Motional, licensed CC BY-NC-SA 4.0 (non-commercial use only); the PNG's
caption carries this notice.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402

import projects  # noqa: E402,F401  (registers modules, installs checkpoint I/O)
from projects.bevformer.visualization import visualize_predictions  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw BEVFormer predictions and ground truth into the cameras of test '
        'samples (nuScenes data: (c) Motional, CC BY-NC-SA 4.0).')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--index', type=int, nargs='+', default=[0],
                        help='dataset indices to draw (default: 0)')
    parser.add_argument('--out-dir', default='prediction_vis',
                        help='directory of the PNGs, <sample token>.png (default: %(default)s)')
    parser.add_argument('--score-threshold', type=float, default=0.3,
                        help='lowest prediction score drawn (default: %(default)s)')
    parser.add_argument('--data-root', default=None,
                        help="another data root for the config's test dataset (images flat, "
                        'or in samples/CAM_X)')
    parser.add_argument('--ann-file', default=None,
                        help='another info .pkl (a path, or relative to the data root)')
    parser.add_argument('--history', type=int, default=0,
                        help='earlier keyframes of the scene run first (-1: all; default 0)')
    parser.add_argument('--dpi', type=int, default=100, help='pixels per inch of the PNGs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()

    def progress(message: str) -> None:
        print(f'[{time.perf_counter() - start:6.1f} s] {message}', flush=True)

    try:
        paths = visualize_predictions(
            args.config, args.checkpoint, indices=args.index, out_dir=args.out_dir,
            data_root=args.data_root, ann_file=args.ann_file,
            score_threshold=args.score_threshold, history=args.history,
            cfg_options=args.cfg_options, progress=progress, dpi=args.dpi)
    except (FileNotFoundError, IndexError) as error:
        sys.exit(f'error: {error}')
    progress(f'done: {len(paths)} picture(s) in {args.out_dir}')


if __name__ == '__main__':
    main()
