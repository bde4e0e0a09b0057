"""Draws BEVFormer's reference points and the ground-truth boxes into the six cameras of a frame.

    python tools/analysis/visualize_bev_projection.py [--data-root DIR] [--info PKL] [--index 0]
        [--out bev_projection.png] [--bev-size 50 50] [--num-heights 4]
        [--point-cloud-range -51.2 -51.2 -5 51.2 51.2 3] [--scale-factor 1.0] [--flip] [--dpi 100]

One PNG contact sheet: the six camera images (2 x 3) with the BEV grid's pillar reference points
(``projects.bevformer.geometry.pillar_points`` projected by ``project_to_cameras``, coloured by
height) and the ground-truth boxes as wireframes (``+`` marks each box centre), and a bird's-eye
panel with the grid, the boxes, the ego car and the camera frusta. The frame goes through the
training data path (``BEVNuScenesDataset``, ``LoadMultiViewImages``, optional
``MultiViewResize`` / ``MultiViewFlip``, ``PackBEVInputs``), so the markers landing on their
objects checks the ``lidar2img`` the model gets. Logic: ``projects/bevformer/visualization/cli.py``.

Defaults: the real nuScenes v1.0-mini keyframe in ../shared/data/nuscenes_demo (its one .pkl).
nuScenes data is (c) Motional, licensed CC BY-NC-SA 4.0 (non-commercial use only); the PNG's
caption carries this notice.
"""
import argparse
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.bevformer.visualization import DEFAULT_POINT_CLOUD_RANGE  # noqa: E402
from projects.bevformer.visualization import visualize_bev_projection

# the team's real demo frame, beside the repository (any nuScenes-style root works)
DEFAULT_DATA_ROOT = osp.normpath(osp.join(osp.dirname(osp.abspath(__file__)), '..', '..', '..',
                                          'shared', 'data', 'nuscenes_demo'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Project BEV reference points and GT boxes into the cameras of a nuScenes '
        'frame (nuScenes data: (c) Motional, CC BY-NC-SA 4.0).')
    parser.add_argument('--data-root', default=DEFAULT_DATA_ROOT,
                        help='images, flat or in samples/CAM_X (default: %(default)s)')
    parser.add_argument('--info', default=None,
                        help='mmdet3d 1.x nuScenes info .pkl (default: the only .pkl in '
                        '--data-root)')
    parser.add_argument('--index', type=int, default=0, help='sample index in the info file')
    parser.add_argument('--out', default='bev_projection.png', help='PNG to write')
    parser.add_argument('--bev-size', type=int, nargs=2, default=(50, 50),
                        metavar=('BEV_H', 'BEV_W'))
    parser.add_argument('--num-heights', type=int, default=4, help='reference points per pillar')
    parser.add_argument('--point-cloud-range', type=float, nargs=6,
                        default=DEFAULT_POINT_CLOUD_RANGE,
                        metavar=('X_MIN', 'Y_MIN', 'Z_MIN', 'X_MAX', 'Y_MAX', 'Z_MAX'))
    parser.add_argument('--scale-factor', type=float, default=1.0,
                        help='MultiViewResize factor applied before drawing')
    parser.add_argument('--flip', action='store_true', help='apply MultiViewFlip(prob=1)')
    parser.add_argument('--dpi', type=int, default=100)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isdir(args.data_root):
        sys.exit(f'--data-root {args.data_root} is not a directory')
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()

    def progress(message: str) -> None:
        print(f'[{time.perf_counter() - start:6.1f} s] {message}', flush=True)

    visualize_bev_projection(
        args.data_root, args.out, info_path=args.info, index=args.index,
        point_cloud_range=args.point_cloud_range, bev_size=tuple(args.bev_size),
        num_heights=args.num_heights, scale_factor=args.scale_factor, flip=args.flip,
        progress=progress, dpi=args.dpi)
    progress(f'done: {args.out}')


if __name__ == '__main__':
    main()
