"""Create mmdet3d 1.4 nuScenes info files with temporal fields (see
``projects/datasets/nuscenes_infos.py``).

    # one <prefix>_infos_<split>.pkl per split (mini_train -> nuscenes_infos_train.pkl), with
    # official BEVFormer's 18-value can_bus read from the CAN bus expansion (data/can_bus/...)
    python tools/data/create_nuscenes_infos.py --data-root data/nuscenes --version v1.0-mini \
        --out-dir data/nuscenes --splits mini_train mini_val --can-bus-root data

    # add scene_token, scene_name, prev, next, frame_idx and can_bus to infos mmdet3d already made
    python tools/data/create_nuscenes_infos.py --data-root data/nuscenes --can-bus-root data \
        --augment data/nuscenes/nuscenes_infos_train.pkl data/nuscenes/nuscenes_infos_val.pkl

Without ``--can-bus-root`` the ``can_bus`` accel / rotation-rate / velocity slots are zeros (a
warning says so); with ``--augment`` entries that already have a ``can_bus`` then keep it.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.datasets.can_bus import CanBusReader  # noqa: E402
from projects.datasets.nuscenes_infos import (  # noqa: E402
    augment_nuscenes_infos, create_nuscenes_infos, load_nuscenes)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', required=True,
                        help='nuScenes root: the folder holding <version>/ (the JSON tables)')
    parser.add_argument('--version', default='v1.0-mini',
                        help='database version, e.g. v1.0-mini or v1.0-trainval')
    parser.add_argument('--out-dir', default=None,
                        help='where to write (default: --data-root; with --augment: next to '
                        'each input, overwriting it)')
    parser.add_argument('--splits', nargs='+', default=None,
                        help='devkit split names (default: mini_train mini_val for v1.0-mini, '
                        'train val for v1.0-trainval)')
    parser.add_argument('--prefix', default='nuscenes', help='info file name prefix')
    parser.add_argument('--augment', nargs='+', default=None, metavar='PKL',
                        help='existing mmdet3d 1.x info pkls to add the temporal fields to, '
                        'instead of creating infos')
    parser.add_argument('--can-bus-root', default=None, metavar='DIR',
                        help='the folder holding the nuScenes CAN bus expansion\'s can_bus/ '
                        '(can_bus/scene-XXXX_pose.json, ...): can_bus is read from it, as '
                        'official BEVFormer does (default: none, accel/rotation-rate/velocity '
                        'zeros)')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress output')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        can_bus_reader = CanBusReader(args.can_bus_root)  # checks the folder before the tables
        nusc = load_nuscenes(args.data_root, args.version, verbose=not args.no_progress)
        if not args.no_progress and args.can_bus_root:
            print(f'CAN bus: {osp.join(args.can_bus_root, "can_bus")}')
        if args.augment:
            written = {}
            added = 'temporal fields and can_bus' + (' (from the CAN bus expansion)'
                                                     if args.can_bus_root else '')
            for info_path in args.augment:
                out_path = (osp.join(args.out_dir, osp.basename(info_path))
                            if args.out_dir else info_path)
                written[info_path] = augment_nuscenes_infos(
                    info_path, args.data_root, out_path=out_path, nusc=nusc,
                    can_bus_reader=can_bus_reader)
                print(f'{info_path}: {added} added -> {written[info_path]}')
            return written
        return create_nuscenes_infos(args.data_root, out_dir=args.out_dir, version=args.version,
                                     splits=args.splits, prefix=args.prefix,
                                     progress=not args.no_progress, nusc=nusc,
                                     can_bus_reader=can_bus_reader)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'error: {error}')


if __name__ == '__main__':
    main()
