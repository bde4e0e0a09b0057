"""Generate the toy nuScenes-format world (see the ``projects/datasets/toy_nuscenes`` package).

    python tools/data/make_toy_nuscenes.py --out-dir data/toy_nuscenes --num-train-scenes 4 \
        --samples-per-scene 8 --image-size 224 400

Writes the v1.0-mini tables, camera images, LiDAR sweeps and the mmdet3d info files
``nuscenes_infos_{train,val}.pkl``. An existing world made with the same arguments is kept unless
``--force`` is given. The sensor rig is nuScenes' (c) Motional, CC BY-NC-SA 4.0.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.datasets.toy_nuscenes import prepare_toy_nuscenes  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='data/toy_nuscenes', help='dataset root')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train-scenes', type=int, default=4,
                        help='how many of the 8 mini_train scenes to make (the 2 mini_val '
                        'scenes are always made)')
    parser.add_argument('--samples-per-scene', type=int, default=8,
                        help='keyframes per scene, 0.5 s apart (2-12)')
    parser.add_argument('--image-size', type=int, nargs=2, default=[224, 400],
                        metavar=('HEIGHT', 'WIDTH'), help='camera image size')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if a matching world exists')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress output')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        summary = prepare_toy_nuscenes(
            args.out_dir, num_train_scenes=args.num_train_scenes,
            samples_per_scene=args.samples_per_scene, image_size=tuple(args.image_size),
            seed=args.seed, force=args.force, progress=not args.no_progress)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
