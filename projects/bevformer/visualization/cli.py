"""What the ``tools/analysis`` commands call: :func:`visualize_bev_projection` (a frame's reference
points and ground truth, ``visualize_bev_projection.py``) and :func:`visualize_predictions` (a
checkpoint's predictions on test samples, ``visualize_predictions.py``)."""
import copy
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...datasets.nuscenes_infos import CAMERA_CHANNELS, NUSCENES_CLASSES
from .data import NUSCENES_NOTICE, _camera_prefixes, _data_notice, _sample_name, load_packed_frame
from .draw import DEFAULT_POINT_CLOUD_RANGE
from .render import _caption, render_bev_projection, render_data_sample

__all__ = ['visualize_bev_projection', 'visualize_predictions']


def visualize_bev_projection(data_root: str, out_path: str, info_path: Optional[str] = None,
                             index: int = 0,
                             point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
                             bev_size: Tuple[int, int] = (50, 50), num_heights: int = 4,
                             scale_factor: float = 1.0, flip: bool = False,
                             progress: Callable[[str], None] = print, dpi: int = 100) -> str:
    """Loads sample ``index`` (:func:`load_packed_frame`) and writes the contact sheet PNG
    (:func:`render_bev_projection`) to ``out_path``. Returns ``out_path``."""
    from mmdet3d.datasets import NuScenesDataset

    progress(f'loading sample {index} of {info_path or data_root}')
    packed = load_packed_frame(data_root, info_path, index, scale_factor, flip)
    sample = packed['data_samples']
    num_views = sample.num_views
    imgs = packed['inputs']['img'][-num_views:]  # the current frame: (N, 3, H, W) BGR
    images = [img.permute(1, 2, 0).numpy()[..., ::-1].astype(np.uint8) for img in imgs]
    gt = sample.gt_instances_3d
    caption = (f'sample {sample.token} ({sample.img_shape[1]}x{sample.img_shape[0]} images'
               f'{", flipped" if sample.flip else ""}). Dots: BEV reference points, '
               f'{bev_size[0]}x{bev_size[1]} pillars x {num_heights} heights over '
               f'{list(point_cloud_range)}, coloured by height (viridis, low = purple); boxes: '
               'ground truth, + = box centre.\n' + NUSCENES_NOTICE)
    render_bev_projection(
        images, sample.cam_names, sample.lidar2img[-1], gt.bboxes_3d, gt.labels_3d.numpy(),
        NuScenesDataset.METAINFO['classes'], NuScenesDataset.METAINFO['palette'],
        point_cloud_range, bev_size, num_heights, caption, out_path, progress, dpi)
    return out_path


def _scene_history(dataset, index: int, history: int) -> List[int]:
    """Indices of up to ``history`` (-1: all) keyframes before ``index`` in its scene, oldest
    first (consecutive entries of the info file with the same ``scene_token``)."""
    scene = dataset.get_data_info(index).get('scene_token')
    if not scene or history == 0:
        return []
    previous = []
    j = index - 1
    while j >= 0 and (history < 0 or len(previous) < history):
        if dataset.get_data_info(j).get('scene_token') != scene:
            break
        previous.append(j)
        j -= 1
    return previous[::-1]


def visualize_predictions(config: str, checkpoint: str, indices: Sequence[int] = (0, ),
                          out_dir: str = 'prediction_vis', data_root: Optional[str] = None,
                          ann_file: Optional[str] = None, score_threshold: float = 0.3,
                          history: int = 0, cfg_options: Optional[dict] = None,
                          progress: Callable[[str], None] = print,
                          dpi: int = 100) -> List[str]:
    """Predicts samples of a config's test dataset with a checkpoint and writes one picture each
    (:func:`render_data_sample`: predictions and ground truth).

    Args:
        config: model config (its ``model`` and ``test_dataloader.dataset``).
        checkpoint: weights (an mmengine checkpoint, ``state_dict`` inside).
        indices: dataset indices to draw.
        out_dir: directory of the PNGs, ``<sample token>.png``.
        data_root: another data root for the test dataset (camera images directly in it, or in
            nuScenes' ``samples/CAM_X``); its ``ann_file`` is then looked up there.
        ann_file: another info .pkl (a path, or relative to the data root).
        score_threshold: the lowest prediction score drawn.
        history: keyframes of the same scene run before each sample, so that the temporal
            model has its previous BEV as in ``tools/test.py``: 0 none (the sample as the first
            keyframe of a scene), -1 every earlier keyframe of the scene.
        cfg_options: ``--cfg-options`` style overrides of the config.
        progress: called with a line of progress.
        dpi: pixels per inch of the pictures.

    Returns:
        The PNG paths written.
    """
    import mmcv
    from mmdet3d.registry import DATASETS, MODELS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint

    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} does not exist')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
    if data_root is not None and not osp.isdir(data_root):
        raise FileNotFoundError(f'--data-root {data_root!r} is not a directory')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    if data_root is not None:
        dataset_cfg.data_root = data_root
        dataset_cfg.data_prefix = dict(_camera_prefixes(data_root, CAMERA_CHANNELS), img='')
    if ann_file is not None:
        if osp.isfile(ann_file):
            dataset_cfg.ann_file = osp.abspath(ann_file)
        elif osp.isfile(osp.join(dataset_cfg.get('data_root') or '', ann_file)):
            dataset_cfg.ann_file = ann_file
        else:
            raise FileNotFoundError(f'--ann-file {ann_file!r} does not exist (neither as a path '
                                    f'nor under the data root {dataset_cfg.get("data_root")!r})')
    resolved_ann = osp.join(dataset_cfg.get('data_root') or '', dataset_cfg.ann_file)
    if not osp.isfile(resolved_ann):
        raise FileNotFoundError(f'the test dataset\'s info file {resolved_ann!r} does not exist; '
                                'pass --data-root / --ann-file')

    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet3d')):
        progress(f'building the model of {config}')
        model = MODELS.build(cfg.model)
        load_checkpoint(model, checkpoint, map_location='cpu', logger='current')
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        model = model.to(device).eval()
        progress(f'loading the infos {resolved_ann}')
        dataset = DATASETS.build(dataset_cfg)
        class_names = tuple(dataset.metainfo.get('classes') or NUSCENES_CLASSES)
        encoder = getattr(model, 'encoder', None)
        point_cloud_range = tuple(getattr(encoder, 'point_cloud_range',
                                          DEFAULT_POINT_CLOUD_RANGE))
        notice = _data_notice(dataset_cfg.get('data_root'))
        for index in indices:
            if not -len(dataset) <= index < len(dataset):
                raise IndexError(f'--index {index} is out of range: the dataset has '
                                 f'{len(dataset)} samples')
        os.makedirs(out_dir, exist_ok=True)
        written = []
        for number, index in enumerate(indices):
            index = index % len(dataset)
            if hasattr(model, 'reset_temporal_state'):
                model.reset_temporal_state()  # BEVFormerDetector's test-time BEV memory
            frames = _scene_history(dataset, index, history) + [index]
            for frame_number, frame in enumerate(frames):
                progress(f'sample {number + 1}/{len(indices)} (index {index}): predicting '
                         f'{"keyframe" if frame != index else "the sample"} '
                         f'{frame_number + 1}/{len(frames)}')
                item = dataset[frame]
                with torch.no_grad():
                    output = model.test_step(pseudo_collate([item]))[0]
            meta = output.metainfo
            name = _sample_name(meta, index)
            num_views = meta['num_views']
            imgs = item['inputs']['img'][-num_views:]  # the current frame: (N, 3, H, W) BGR
            images = [img.permute(1, 2, 0).numpy()[..., ::-1].astype(np.uint8) for img in imgs]
            caption = (_caption(meta, name, notice).replace(
                '\n', f'\n{osp.basename(config)}, {osp.basename(checkpoint)}; ', 1))
            picture = render_data_sample(output, class_names, score_threshold,
                                         point_cloud_range, caption, images=images, dpi=dpi)
            path = osp.join(out_dir, f'{name}.png')
            mmcv.imwrite(picture[..., ::-1], path)
            progress(f'wrote {path}')
            written.append(path)
    return written
