"""What ``tools/train.py`` and ``tools/test.py`` do, with mmdet's command-line interface.

The tools only parse arguments and call :func:`train` / :func:`test`; everything here is
importable and tested. Differences from mmdet's own tools:

- ``projects`` is imported first, so checkpoints load with ``weights_only=True`` on torch >= 2.6
  (see :mod:`projects.common.checkpoint_io`) and our modules are registered.
- Distributed runs work on CPU-only machines: mmengine's ``init_dist`` calls
  ``torch.cuda.set_device`` unconditionally, so without CUDA the process group is initialised
  here with ``gloo`` (mmengine then skips its own init) and DDP gets ``device_ids=None``.
- Training stops at the first non-finite loss term or parameter, before a diverged model can be
  saved, and checkpoints carry the random states that make a resumed run continue as an
  uninterrupted one (:mod:`projects.common.hooks`; added unless the config lists them).
- The process group is destroyed when training or testing ends (mmengine never does), while the
  interpreter is still whole. Left to interpreter exit, gloo's worker threads can still hold
  finished work with tensors whose release then needs the GIL of a dying interpreter: the process
  aborts with "terminate called without an active exception" after saving its results
  (pytorch/pytorch#190489, #179291), and torchrun reports the run as failed.
"""
import argparse
import contextlib
import glob
import itertools
import json
import logging
import os
import os.path as osp
import re
from typing import List, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader

import projects  # noqa: F401  (registers modules, installs checkpoint I/O)
from projects.common.backbone import CheckpointMismatchError
from projects.common.checkpoint_io import is_complete_checkpoint
from projects.common.pretrained import describe_checkpoint
from projects.common.requirements import require_mmdet3d


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='the directory to save logs, checkpoints and metrics')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs, e.g. train_cfg.max_epochs=2 '
        'or key="[a,b]" for lists (no white space)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Train a detector')
    _add_common_arguments(parser)
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a value from the latest checkpoint in '
        'the work directory')
    return parser


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    _add_common_arguments(parser)
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='save painted predictions under '
                        'work_dir/<timestamp>/<show-dir>')
    parser.add_argument('--wait-time', type=float, default=2, help='interval of --show (s)')
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """The config file with ``--cfg-options``, ``--work-dir`` and ``--launcher`` applied."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config!r} does not exist')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    if cfg.get('default_scope') == 'mmdet3d':
        require_mmdet3d(f'{args.config} (default_scope mmdet3d)')
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.launcher != 'none' and not torch.cuda.is_available():
        setup_cpu_distributed(cfg)
    return cfg


# Annotation files up to this size are parsed up front to check they hold images; larger ones
# (COCO train2017 is ~450 MB) only for existence, so as not to parse them twice.
_PARSE_LIMIT_BYTES = 64 * 2**20


def _dataset_configs(dataset: dict, key: str):
    """(config key, dataset config) of a dataset and of those it wraps (Repeat/Concat/...)."""
    yield key, dataset
    if isinstance(dataset.get('dataset'), dict):
        yield from _dataset_configs(dataset['dataset'], f'{key}.dataset')
    for i, inner in enumerate(dataset.get('datasets') or []):
        yield from _dataset_configs(inner, f'{key}.datasets[{i}]')


def check_annotation_file(path: str, key: str) -> None:
    """Raise naming ``key`` and ``path`` if a COCO-style annotation file is missing, empty, not
    JSON or holds no images."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{key}: annotation file {path!r} does not exist')
    size = osp.getsize(path)
    if size == 0:
        raise ValueError(f'{key}: annotation file {path!r} is empty')
    if not path.endswith('.json') or size > _PARSE_LIMIT_BYTES:
        return
    with open(path) as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f'{key}: annotation file {path!r} is not valid JSON: '
                             f'{error}') from None
    if not isinstance(content, dict) or 'images' not in content:
        found = (f'an object with keys {sorted(content)[:5]}' if isinstance(content, dict) else
                 f'a JSON {type(content).__name__}')
        raise ValueError(f'{key}: annotation file {path!r} holds {found}; expected a COCO '
                         'object with "images", "annotations" and "categories"')
    if not content['images']:
        raise ValueError(f'{key}: annotation file {path!r} lists no images; expected a COCO '
                         'file with at least one entry in "images"')


def check_annotation_files(cfg: Config, splits=('train', 'val', 'test')) -> None:
    """Check the local annotation files that the splits' dataloaders and evaluators will read
    (before training, so that a bad val file cannot fail the run after the last epoch)."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or 'dataset' not in loader:
            continue
        for key, dataset in _dataset_configs(loader['dataset'], f'{split}_dataloader.dataset'):
            ann_file = dataset.get('ann_file')
            if ann_file and '://' not in ann_file:
                check_annotation_file(osp.join(dataset.get('data_root') or '', ann_file),
                                      f'{key}.ann_file')
        evaluators = cfg.get(f'{split}_evaluator') or []
        if isinstance(evaluators, dict):
            evaluators = {f'{split}_evaluator': evaluators}
        else:
            evaluators = {f'{split}_evaluator[{i}]': e for i, e in enumerate(evaluators)}
        for key, evaluator in evaluators.items():
            ann_file = evaluator.get('ann_file')
            if ann_file and '://' not in ann_file:
                check_annotation_file(ann_file, f'{key}.ann_file')


def setup_cpu_distributed(cfg: Config) -> None:
    """Initialise a ``gloo`` process group from torchrun's environment and make DDP CPU-ready."""
    if cfg.launcher != 'pytorch':
        raise ValueError(f'--launcher {cfg.launcher} needs CUDA; on CPU use --launcher pytorch '
                         '(tools/dist_train.sh) which runs with gloo')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', init_method='env://')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


@contextlib.contextmanager
def process_group_released():
    """Destroys the default process group (if any) when the block ends: after a barrier when it
    succeeded, so no process tears down while another still talks to it; at once when it raised
    (a barrier would wait for the processes that failed)."""
    def release(barrier: bool) -> None:
        if dist.is_available() and dist.is_initialized():
            if barrier:
                dist.barrier()
            dist.destroy_process_group()

    try:
        yield
    except BaseException:
        release(barrier=False)
        raise
    release(barrier=True)


@contextlib.contextmanager
def checkpoint_named(path: Optional[str], work_dir: str):
    """A :class:`CheckpointMismatchError` raised in the block (by a backbone, which sees neither
    the file nor the rest of the checkpoint) names the checkpoint ``path`` (None: the latest in
    ``work_dir``, resumed) and says what the file holds."""
    try:
        yield
    except CheckpointMismatchError as error:
        if path is None:
            raise CheckpointMismatchError(
                f'the latest checkpoint in {work_dir!r}: {error}') from None
        checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        raise CheckpointMismatchError(f'checkpoint {path!r} ({describe_checkpoint(checkpoint)}): '
                                      f'{error}') from None


def latest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` without a value continues from: the one named in
    ``work_dir/last_checkpoint`` when it is complete, else the newest complete ``epoch_*.pth`` /
    ``iter_*.pth`` (each skipped file is logged); None when there is none."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
    candidates = sorted(glob.glob(osp.join(glob.escape(work_dir), '*.pth')), key=osp.getmtime,
                        reverse=True)
    candidates = [path for path in candidates
                  if re.fullmatch(r'(epoch|iter)_\d+\.pth', osp.basename(path))]
    for path in ([named] if named else []) + candidates:
        if is_complete_checkpoint(path):
            return path
        print_log(f'--resume: skipping {path!r}, not a complete checkpoint (missing, truncated or '
                  'empty)', logger='current', level=logging.WARNING)
    return None


_RUNNERS_BUILT = itertools.count()


def build_runner(cfg: Config) -> Runner:
    """mmengine's runner for ``cfg``, with a visualizer of its own.

    mmengine keeps visualizers as named singletons, and mmdet's runtime config names its one
    'visualizer': a second runner in the same process gets the first runner's instance back,
    without making it the current one, while mmdet's visualization hook takes the most recently
    created visualizer, which may then be another runner's (a BEV runner's plain ``Visualizer``
    in the test suite: ``add_datasample() got an unexpected keyword argument``).
    """
    if cfg.get('visualizer') is not None:
        name = cfg.visualizer.get('name', 'visualizer')
        cfg.visualizer.name = f'{name}_{next(_RUNNERS_BUILT)}'
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def train(argv: Optional[List[str]] = None) -> Runner:
    args = train_parser().parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                             f'{args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        latest = latest_complete_checkpoint(cfg.work_dir)
        cfg.resume, cfg.load_from = latest is not None, latest
        if latest is None:
            print_log(f'--resume: no complete checkpoint in {cfg.work_dir!r}; training from the '
                      'start', logger='current', level=logging.WARNING)
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint {args.resume!r} does not exist')
        cfg.resume, cfg.load_from = True, args.resume
    check_annotation_files(cfg, splits=('train', 'val'))
    hooks = list(cfg.get('custom_hooks') or [])
    for name in ('NonFiniteLossHook', 'RandomStateHook'):
        if not any(hook.get('type') == name for hook in hooks):
            hooks.append(dict(type=name))
    cfg.custom_hooks = hooks
    with process_group_released(), checkpoint_named(cfg.get('load_from'), cfg.work_dir):
        runner = build_runner(cfg)
        runner.train()
    return runner


def test(argv: Optional[List[str]] = None) -> dict:
    """Evaluate a checkpoint; returns the metrics."""
    from mmdet.engine.hooks.utils import trigger_visualization_hook
    from mmdet.evaluation import DumpDetResults

    args = test_parser().parse_args(argv)
    cfg = load_config(args)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist')
    cfg.load_from = args.checkpoint
    check_annotation_files(cfg, splits=('test', ))
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file, got {args.out!r}')
    with process_group_released(), checkpoint_named(args.checkpoint, cfg.work_dir):
        runner = build_runner(cfg)
        if args.out is not None:
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        return runner.test()
