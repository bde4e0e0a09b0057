"""What BEVFormer's pictures are drawn from: a frame through the training data path
(:func:`load_packed_frame`), a predicted sample's camera images read back as the network saw them
(:func:`load_sample_images`) and its ground truth, the file name of a sample's picture, and the
licence line of the data (:data:`NUSCENES_NOTICE`, or the toy world's for a generated toy nuScenes
data root).
"""
import glob
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...datasets.toy_nuscenes import MANIFEST_NAME as TOY_MANIFEST

__all__ = ['NUSCENES_NOTICE', 'TOY_NOTICE', 'load_packed_frame', 'load_sample_images']

NUSCENES_NOTICE = ('nuScenes data (c) Motional, CC BY-NC-SA 4.0 '
                   '(https://creativecommons.org/licenses/by-nc-sa/4.0/), non-commercial use only')
TOY_NOTICE = ('Synthetic toy nuScenes world on the nuScenes camera rig; nuScenes calibration (c) '
              'Motional, CC BY-NC-SA 4.0, non-commercial use only')


def _camera_prefixes(data_root: str, cam_names: Sequence[str]) -> Dict[str, str]:
    """nuScenes layout (``samples/CAM_X``) when ``data_root/samples`` exists, else every image
    directly in ``data_root``."""
    if osp.isdir(osp.join(data_root, 'samples')):
        return {name: osp.join('samples', name) for name in cam_names}
    return {name: '' for name in cam_names}


def _data_notice(data_root: Optional[str]) -> str:
    """The licence line for a picture of the data under ``data_root``."""
    if data_root and osp.isfile(osp.join(data_root, TOY_MANIFEST)):
        return TOY_NOTICE
    return NUSCENES_NOTICE


def load_packed_frame(data_root: str, info_path: Optional[str] = None, index: int = 0,
                      scale_factor: float = 1.0, flip: bool = False) -> dict:
    """Sample ``index`` of an mmdet3d nuScenes info file through ``BEVNuScenesDataset``.

    Args:
        data_root: directory of the images (flat, or nuScenes' ``samples/CAM_X`` layout).
        info_path: the info .pkl; None takes the only .pkl in ``data_root``.
        index: sample index in the info file.
        scale_factor: ``MultiViewResize`` factor (1 leaves the images as they are).
        flip: apply ``MultiViewFlip(prob=1)``.

    Returns:
        ``PackBEVInputs``' output: ``inputs['img']`` (N, 3, H, W) BGR uint8 and ``data_samples``.
    """
    import pickle

    from mmdet3d.registry import DATASETS
    from mmengine.registry import DefaultScope

    from .. import dataset, transforms  # noqa: F401  (registers the modules)

    if info_path is None:
        candidates = sorted(glob.glob(osp.join(data_root, '*.pkl')))
        if len(candidates) != 1:
            raise FileNotFoundError(f'pass the info file: {data_root} has {len(candidates)} .pkl '
                                    'files, expected exactly one')
        info_path = candidates[0]
    if not osp.isfile(info_path):
        raise FileNotFoundError(f'info file {info_path} does not exist')
    with open(info_path, 'rb') as file:
        first = pickle.load(file)['data_list'][0]
    pipeline = [
        dict(type='LoadMultiViewImages'),
        dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    ]
    if scale_factor != 1.0:
        pipeline.append(dict(type='MultiViewResize', scale_factor=scale_factor))
    if flip:
        pipeline.append(dict(type='MultiViewFlip', prob=1.0))
    pipeline.append(dict(type='PackBEVInputs'))
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        bev_dataset = DATASETS.build(dict(
            type='BEVNuScenesDataset', data_root=data_root, ann_file=info_path,
            data_prefix=_camera_prefixes(data_root, list(first['images'])), pipeline=pipeline,
            filter_empty_gt=False, test_mode=False))
        return bev_dataset[index]


def _warp_to_network(image: np.ndarray, aug_matrix: np.ndarray,
                     image_hw: Tuple[int, int]) -> np.ndarray:
    """The loaded image as the network saw it: ``aug_matrix`` (4, 4) (resize / crop / flip, in
    the continuous pixel convention of ``projects.bevformer.transforms``) applied, ``image_hw``
    (H, W) big."""
    import cv2
    height, width = image_hw
    a, b, d, e = aug_matrix[0, 0], aug_matrix[0, 2], aug_matrix[1, 1], aug_matrix[1, 2]
    if a > 0 and d > 0 and abs(b) < 1e-9 and abs(e) < 1e-9:  # a plain resize
        if image.shape[:2] == (height, width):
            return image
        shrink = a * d < 1
        return cv2.resize(image, (width, height),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    # continuous u' = a u + b; pixel index i covers [i, i + 1): i' = a i + (a / 2 + b - 1 / 2)
    matrix = np.array([[a, 0.0, b + a / 2 - 0.5], [0.0, d, e + d / 2 - 0.5]])
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)


def load_sample_images(metainfo: dict, backend_args: Optional[dict] = None) -> List[np.ndarray]:
    """The current frame's N camera images of a packed sample, RGB uint8, as the network saw
    them: read from ``metainfo['img_path']`` and brought to ``metainfo['img_shape']`` by the
    current frame's ``img_aug_matrix`` (a plain resize without one), so that the current frame's
    ``lidar2img`` (``metainfo['lidar2img'][-1]``) maps onto them."""
    import mmcv
    from mmengine.fileio import get

    paths = metainfo.get('img_path')
    if not paths:
        raise KeyError("the data sample has no 'img_path' in its metainfo: keep 'img_path' in "
                       "PackBEVInputs' meta_keys")
    paths = [paths] if isinstance(paths, str) else list(paths)
    image_hw = tuple(int(s) for s in metainfo['img_shape'][:2])
    aug = metainfo.get('img_aug_matrix')
    aug = None if aug is None else np.asarray(aug, dtype=np.float64)
    if aug is not None and aug.ndim == 4:
        aug = aug[-1]  # (T, N, 4, 4): the current frame's
    images = []
    for view, path in enumerate(paths):
        try:
            image = mmcv.imfrombytes(get(path, backend_args=backend_args), channel_order='rgb')
        except FileNotFoundError as error:
            raise FileNotFoundError(f'image {path!r} of the data sample does not exist') from error
        if image is None:
            raise OSError(f'image {path!r} of the data sample could not be decoded')
        images.append(_warp_to_network(image, np.eye(4) if aug is None else aug[view], image_hw))
    return images


def _ground_truth(data_sample) -> Tuple[Optional[object], Optional[np.ndarray]]:
    """(boxes, labels) of a data sample: ``eval_ann_info`` (mmdet3d's test mode) first, else
    non-empty ``gt_instances_3d``; (None, None) without ground truth."""
    eval_ann = data_sample.get('eval_ann_info', None)
    if isinstance(eval_ann, dict) and eval_ann.get('gt_bboxes_3d') is not None:
        return eval_ann['gt_bboxes_3d'], eval_ann.get('gt_labels_3d')
    gt = data_sample.get('gt_instances_3d', None)
    if gt is not None and 'bboxes_3d' in gt:
        return gt.bboxes_3d, gt.labels_3d if 'labels_3d' in gt else None
    return None, None


def _sample_name(metainfo: dict, fallback: int) -> str:
    """File stem of a sample's picture: its token, else its sample index, else ``fallback``."""
    token = metainfo.get('token')
    if token:
        return str(token).replace(os.sep, '_')
    sample_idx = metainfo.get('sample_idx')
    if sample_idx is not None and int(sample_idx) >= 0:
        return f'{int(sample_idx):06d}'
    return f'{fallback:06d}'
