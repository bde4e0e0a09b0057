"""Generate the toy COCO-format shapes dataset (see ``projects/datasets/toy_coco.py``).

    python tools/data/make_toy_coco.py --out-dir data/toy_coco --num-train 400 --num-val 100

An existing dataset made with the same arguments is kept unless ``--force`` is given.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.datasets import CLASSES, prepare_toy_coco  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='data/toy_coco', help='dataset root')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--size', type=int, nargs='+', default=[128], metavar='PX',
                        help='image side, or height and width')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--classes', nargs='+', default=list(CLASSES), choices=CLASSES,
                        help='shapes to draw; category ids follow this order')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if a matching dataset exists')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    image_size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    summary = prepare_toy_coco(args.out_dir, num_train=args.num_train, num_val=args.num_val,
                               image_size=image_size, seed=args.seed, classes=args.classes,
                               force=args.force, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
