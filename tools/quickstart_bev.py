"""The 3D main job: python tools/quickstart_bev.py [--work-dir DIR] [--cfg-options k=v ...]

Generates the toy nuScenes world if missing, reports the nuScenes metrics (NDS, mAP) of the
untrained model, trains a CPU-sized BEVFormer, evaluates it with mmdet3d's NuScenesMetric
(nuscenes-devkit), draws predictions and ground truth (PNG) and prints both rows of metrics.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.engine.quickstart_bev import DEFAULT_BEV_CONFIG, run_bev_quickstart  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_BEV_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/quickstart_bev')
    parser.add_argument('--data-root', help="toy world directory (default: the config's data_root)")
    parser.add_argument('--num-train-scenes', type=int, default=8,
                        help='train scenes of the world (1-8, the devkit mini_train names)')
    parser.add_argument('--samples-per-scene', type=int, default=12, help='keyframes per scene')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='config overrides, key=value, e.g. train_cfg.max_epochs=2')
    args = parser.parse_args()
    run_bev_quickstart(args.config, args.work_dir, args.data_root, args.num_train_scenes,
                       args.samples_per_scene, cfg_options=args.cfg_options)


if __name__ == '__main__':
    main()
