"""The main job: python tools/quickstart.py [--work-dir DIR] [--cfg-options k=v ...]

Generates the toy COCO set if missing, trains a small-Swin RetinaNet on CPU, evaluates it with
mmdet's CocoMetric, paints predictions (PNG) and prints box AP.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.engine.quickstart import DEFAULT_CONFIG, run_quickstart  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    parser.add_argument('--data-root', help="toy data directory (default: the config's data_root)")
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='config overrides, key=value, e.g. train_cfg.max_epochs=2')
    args = parser.parse_args()
    run_quickstart(args.config, args.work_dir, args.data_root, cfg_options=args.cfg_options)


if __name__ == '__main__':
    main()
