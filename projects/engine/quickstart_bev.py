"""The 3D main job: toy nuScenes world if missing -> nuScenes metrics of the untrained model ->
train BEVFormer on the CPU -> nuScenes metrics (mAP, NDS) of the trained one -> pictures.

``python tools/quickstart_bev.py`` runs it with the toy config; training and testing go through
the same ``train`` / ``test`` entry points as ``tools/train.py`` / ``tools/test.py``, and the
metric is mmdet3d's ``NuScenesMetric`` (nuscenes-devkit's ``DetectionEval``) on the world's
mini_val scenes.
"""
import glob
import math
import os.path as osp
import time
from typing import List, Optional

from projects.datasets import prepare_toy_nuscenes
from projects.engine.launch import test, train
from projects.engine.quickstart import data_root_and_options, evaluate_untrained, latest_checkpoint

DEFAULT_BEV_CONFIG = 'configs/bevformer/bevformer_nano_1xb2-24e_toy-nuscenes.py'
METRIC_PREFIX = 'NuScenes metric/pred_instances_3d_NuScenes/'
SUMMARY_KEYS = ('NDS', 'mAP', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE')


def _data_root_options(data_root: str) -> List[str]:
    """--cfg-options that move the toy config's datasets and evaluators to ``data_root``."""
    val_infos = osp.join(data_root, 'nuscenes_infos_val.pkl')
    splits = ('train', 'val', 'test')
    return ([f'{split}_dataloader.dataset.data_root={data_root}' for split in splits]
            + [f'{split}_evaluator.{key}={value}' for split in ('val', 'test')
               for key, value in (('data_root', data_root), ('ann_file', val_infos))])


def summary(metrics: dict) -> dict:
    """NDS, mAP and the true-positive errors from NuScenesMetric's output; ValueError naming the
    metric if one is missing or not finite (nuscenes-devkit gives finite values, 1.0 for the
    errors of a model without true positives)."""
    values = {key: metrics.get(METRIC_PREFIX + key) for key in SUMMARY_KEYS}
    bad = [key for key, value in values.items() if value is None or not math.isfinite(value)]
    if bad:
        raise ValueError(f'nuScenes metrics {bad} are missing or not finite in {metrics}')
    return values


def run_bev_quickstart(config: str = DEFAULT_BEV_CONFIG, work_dir: str = 'work_dirs/quickstart_bev',
                       data_root: Optional[str] = None, num_train_scenes: int = 8,
                       samples_per_scene: int = 12,
                       cfg_options: Optional[List[str]] = None) -> dict:
    """Train and evaluate ``config`` on the toy world; returns the trained model's metrics
    (``summary`` keys) with ``untrained/`` copies of the baseline's."""
    start = time.time()
    data_root, options = data_root_and_options(config, data_root, cfg_options,
                                               _data_root_options)
    print(f'[1/4] toy nuScenes world in {data_root}')
    world = prepare_toy_nuscenes(data_root, num_train_scenes=num_train_scenes,
                                 samples_per_scene=samples_per_scene)
    print(f'      {"generated" if world.get("generated") else "already there"}')

    print('[2/4] nuScenes metrics of the untrained model (the baseline)')
    untrained = summary(evaluate_untrained(config, osp.join(work_dir, 'untrained'), options))

    print(f'[3/4] training {config} (work dir {work_dir})')
    train([config, '--work-dir', work_dir, *options])
    train_seconds = time.time() - start

    print('[4/4] testing the last checkpoint, drawing predictions')
    checkpoint = latest_checkpoint(work_dir)
    trained = summary(test([config, checkpoint, '--work-dir', work_dir, '--show-dir',
                            'predictions', *options]))
    pictures = sorted(glob.glob(osp.join(work_dir, '*', 'predictions', '*.png')))
    print('')
    print(f'{"":<10}' + ''.join(f'{key:>8}' for key in SUMMARY_KEYS))
    for name, values in (('untrained', untrained), ('trained', trained)):
        print(f'{name:<10}' + ''.join(f'{values[key]:8.4f}' for key in SUMMARY_KEYS))
    print(f'checkpoint  {checkpoint}')
    print(f'pictures    {len(pictures)} under '
          f'{osp.dirname(pictures[0]) if pictures else "- (no visualisation hook configured)"}')
    print(f'time        {train_seconds:.0f} s to the end of training, '
          f'{time.time() - start:.0f} s in all')
    return {**trained, **{f'untrained/{key}': value for key, value in untrained.items()}}
