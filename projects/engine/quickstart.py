"""The main job: toy data if missing -> train a small-Swin detector -> COCO evaluation -> pictures.

``python tools/quickstart.py`` runs it with the toy config; everything goes through the same
``train`` / ``test`` entry points as ``tools/train.py`` / ``tools/test.py``.
"""
import glob
import math
import os.path as osp
import time
from typing import Callable, List, Optional, Tuple

from mmengine.config import Config
from PIL import Image

from projects.datasets import prepare_toy_coco
from projects.engine.launch import build_runner, load_config, test, train, train_parser

DEFAULT_CONFIG = 'configs/toy/retinanet_swin-nano_fpn_1xb8-50e_toy-coco.py'


def latest_checkpoint(work_dir: str) -> str:
    """The checkpoint named in ``work_dir/last_checkpoint`` (written by mmengine's
    CheckpointHook)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        raise FileNotFoundError(f'no checkpoint was saved in {work_dir!r} ({pointer} is missing)')
    with open(pointer) as f:
        return f.read().strip()


def evaluate_untrained(config: str, work_dir: str, options: List[str]) -> dict:
    """Test metrics of the model as initialised for training (the baseline to beat)."""
    cfg = load_config(train_parser().parse_args([config, '--work-dir', work_dir, *options]))
    cfg.load_from = None
    runner = build_runner(cfg)
    runner.model.init_weights()
    return runner.test()


def save_contact_sheet(image_paths: List[str], out_path: str, columns: int = 2) -> None:
    """Paste images (all of the first one's size) into one grid PNG, row by row."""
    images = [Image.open(path).convert('RGB') for path in image_paths]
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    sheet = Image.new('RGB', (width * columns, height * rows), 'white')
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    sheet.save(out_path)


def _data_root_options(data_root: str) -> List[str]:
    """--cfg-options that move the toy config's datasets and evaluators to ``data_root``."""
    val_json = osp.join(data_root, 'annotations/instances_val.json')
    return ([f'{split}_dataloader.dataset.data_root={data_root}'
             for split in ('train', 'val', 'test')]
            + [f'{split}_evaluator.ann_file={val_json}' for split in ('val', 'test')])


def data_root_and_options(config: str, data_root: Optional[str],
                          cfg_options: Optional[List[str]],
                          data_root_options: Callable[[str], List[str]]) -> Tuple[str, List[str]]:
    """The toy data folder (``data_root``, else the config's) and the tools' ``--cfg-options``
    arguments: ``data_root_options(data_root)`` (moving the config's data there) when a folder
    is given, then ``cfg_options``."""
    overrides = list(cfg_options or [])
    if data_root is None:
        data_root = Config.fromfile(config).train_dataloader.dataset.data_root
    else:
        overrides = data_root_options(data_root) + overrides
    return data_root, (['--cfg-options', *overrides] if overrides else [])


def run_quickstart(config: str = DEFAULT_CONFIG, work_dir: str = 'work_dirs/quickstart',
                   data_root: Optional[str] = None, num_train: int = 400, num_val: int = 100,
                   cfg_options: Optional[List[str]] = None) -> dict:
    """Train and evaluate ``config`` on the toy set; returns the test metrics.

    ``cfg_options`` are ``key=value`` strings as on the command line (e.g. a shorter schedule).
    """
    start = time.time()
    data_root, options = data_root_and_options(config, data_root, cfg_options,
                                               _data_root_options)
    print(f'[1/3] toy COCO data in {data_root}')
    summary = prepare_toy_coco(data_root, num_train=num_train, num_val=num_val)
    print(f'      {"generated" if summary["generated"] else "already there"}: {summary}')

    print(f'[2/3] training {config} (work dir {work_dir})')
    train([config, '--work-dir', work_dir, *options])

    print('[3/3] testing the last checkpoint, painting predictions')
    checkpoint = latest_checkpoint(work_dir)
    metrics = test([config, checkpoint, '--work-dir', work_dir, '--show-dir', 'predictions',
                    *options])
    pictures = sorted(glob.glob(osp.join(work_dir, '*', 'predictions', '*.png')))
    sheet = osp.join(work_dir, 'predictions_sheet.png')
    if pictures:
        save_contact_sheet(pictures[:8], sheet)
    print('')
    if 'coco/bbox_mAP' in metrics:
        print(f'box AP   {metrics["coco/bbox_mAP"]:.3f}')
        print(f'box AP50 {metrics["coco/bbox_mAP_50"]:.3f}')
    else:
        print('box AP   - (no box scored above the test score threshold)')
    print(f'checkpoint  {checkpoint}')
    print(f'pictures    {sheet} (ground truth | prediction, 8 val images); all {len(pictures)} '
          f'under {osp.dirname(pictures[0]) if pictures else "-"}')
    print(f'total time  {time.time() - start:.0f} s')
    return metrics
