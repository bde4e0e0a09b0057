"""nuScenes camera dataset that returns a temporal queue of keyframes for BEVFormer.

Config use::

    dataset = dict(
        type='BEVNuScenesDataset', data_root='data/nuscenes/',
        ann_file='nuscenes_infos_train.pkl', queue_length=3,
        data_prefix=dict(CAM_FRONT='samples/CAM_FRONT', CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
                         ...),
        pipeline=[
            # per frame: run once for every frame of the queue
            dict(type='LoadMultiViewImages'),
            dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
            dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
            dict(type='ObjectNameFilter', classes=class_names),
            dict(type='MultiViewResize', scale_factor=0.5, ratio_range=(0.9, 1.1)),
            dict(type='MultiViewFlip', prob=0.5),
            # last: stacks the queue
            dict(type='PackBEVInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d']),
        ])

The pipeline reads like mmdet3d's: every transform before the final :class:`PackBEVInputs` runs on
each frame's info dict separately; ``PackBEVInputs`` gets the list of processed frames, oldest
first, current last (see its docstring for the data contract). The frames of one sample get the
same random augmentation: ``np.random`` and ``random`` are put back into one state before each
frame (every frame draws the same numbers, so e.g. the resize ratio and the flip agree), and are
left after the last frame as one frame's processing leaves them.

Queue: for sample i, the previous ``queue_length - 1`` keyframes of its scene, found by following
the info's ``prev`` sample tokens (``queue_sampling='official'``: ``queue_length - 1`` of the
previous ``queue_length``, one dropped at random, as the official training recipe). At the start of
a scene the earliest frame available is repeated (so a scene's first sample gives
``[f0, f0, f0]``, its second ``[f0, f0, f1]``); the model
recognises the repeat, or a scene change, from ``scene_token`` and the ego pose
(``ego2global``). A ``prev`` token that is not in this dataset (e.g. a subset chosen with
``indices``) is treated as the start of the scene, with a warning.

Temporal fields: ``scene_token`` and ``prev`` in every ``data_list`` entry (``next`` and
``frame_idx`` are used when present). mmdet3d's own nuScenes infos lack them; with
``queue_length > 1`` such an info file is an error naming the file and the command that adds them
(``python tools/data/create_nuscenes_infos.py --augment <pkl>``). With ``queue_length == 1`` such
infos work: the queue is the current frame and ``scene_token`` is ''.

CAN bus (``with_can_bus=True``): every ``data_list`` entry must carry ``can_bus`` (18 floats,
written by ``tools/data/create_nuscenes_infos.py --can-bus-root``), else a ValueError names the info
file. Each frame's info then gets ``can_bus`` as official BEVFormer's dataset makes it: a float64
(18,) copy with [0:3] the ego2global translation, [3:7] its quaternion (w, x, y, z), [16] the ego
yaw in radians in [0, 2 pi) and [17] in degrees (``projects.datasets.can_bus.frame_can_bus``),
all absolute: the model takes the differences between frames. With ``with_can_bus=False`` a
stored ``can_bus`` is dropped, so the model gets none.

Camera paths: ``img_path`` of camera ``CAM_X`` is joined with ``data_prefix['CAM_X']`` (else
``data_prefix['img']``), itself joined with ``data_root``, as mmdet3d does.
"""
import logging
import random
from typing import Callable, Dict, List, Optional, Union

import numpy as np
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import DATASETS
from mmengine.dataset import Compose
from mmengine.logging import print_log

from ..datasets.can_bus import CAN_BUS_DIM, frame_can_bus
from .transforms import PackBEVInputs

__all__ = ['BEVNuScenesDataset', 'AUGMENT_COMMAND']

AUGMENT_COMMAND = ('python tools/data/create_nuscenes_infos.py --data-root {data_root} '
                   '--version <v1.0-trainval or v1.0-mini> --augment {ann_file}')
CAN_BUS_COMMAND = ('python tools/data/create_nuscenes_infos.py --data-root {data_root} '
                   '--version <v1.0-trainval or v1.0-mini> --can-bus-root <folder holding '
                   'can_bus/> --augment {ann_file}')
TEMPORAL_KEYS = ('scene_token', 'prev')
QUEUE_SAMPLINGS = ('consecutive', 'official')
_PREV_NOT_IN_DATASET = -2


@DATASETS.register_module()
class BEVNuScenesDataset(NuScenesDataset):
    """mmdet3d's ``NuScenesDataset`` (camera modality) returning a queue of ``queue_length``
    keyframes per sample, oldest first.

    Args:
        queue_length: frames per sample (the current one and ``queue_length - 1`` before it).
        modality: default ``dict(use_camera=True, use_lidar=False)``.
        pipeline: per-frame transforms followed by a ``PackBEVInputs``; without that final pack
            only ``queue_length == 1`` is allowed and the pipeline runs on the single info dict as
            in ``NuScenesDataset``.
        with_can_bus: give every frame the official (18,) CAN-bus vector (see the module
            docstring); the infos must carry ``can_bus``.
        queue_sampling: ``'consecutive'``: the ``queue_length - 1`` keyframes right before the
            current one; ``'official'`` (the official training recipe): ``queue_length - 1`` of
            the ``queue_length`` keyframes before it, one dropped at random (so the immediate
            predecessor is missing with chance 1 / queue_length), in time order.
        **kwargs: ``NuScenesDataset`` / ``Det3DDataset`` arguments.
    """

    def __init__(self,
                 *args,
                 queue_length: int = 1,
                 modality: Optional[dict] = None,
                 pipeline: List[Union[dict, Callable]] = [],
                 with_can_bus: bool = False,
                 queue_sampling: str = 'consecutive',
                 **kwargs) -> None:
        if int(queue_length) != queue_length or queue_length < 1:
            raise ValueError(f'queue_length must be a positive integer, got {queue_length}')
        if kwargs.get('load_type', 'frame_based') != 'frame_based':
            raise ValueError("BEVNuScenesDataset needs load_type='frame_based' (all cameras of a "
                             f"sample together), got {kwargs['load_type']!r}")
        if modality is None:
            modality = dict(use_camera=True, use_lidar=False)
        if queue_sampling not in QUEUE_SAMPLINGS:
            raise ValueError(f'queue_sampling must be one of {QUEUE_SAMPLINGS}, got '
                             f'{queue_sampling!r}')
        self.queue_length = int(queue_length)
        self.queue_sampling = queue_sampling
        self.with_can_bus = bool(with_can_bus)
        self._prev_index: Optional[List[int]] = None  # index of each sample's previous keyframe
        self._warned_missing_prev = False
        super().__init__(*args, modality=modality, pipeline=pipeline, **kwargs)
        transforms = self.pipeline.transforms
        if transforms and isinstance(transforms[-1], PackBEVInputs):
            self.frame_pipeline = Compose(transforms[:-1])
            self.pack = transforms[-1]
        elif self.queue_length == 1:
            self.frame_pipeline, self.pack = None, None
        else:
            last = transforms[-1] if transforms else 'an empty pipeline'
            raise ValueError(f'BEVNuScenesDataset with queue_length={self.queue_length} needs '
                             "PackBEVInputs as the pipeline's last transform (it stacks the "
                             f'frames), got {last}')

    def parse_data_info(self, info: dict) -> dict:
        """``NuScenesDataset.parse_data_info``, with ``can_bus`` made the official vector (or
        dropped without ``with_can_bus``)."""
        can_bus = info.pop('can_bus', None)
        if self.with_can_bus:
            if can_bus is None or np.shape(can_bus) != (CAN_BUS_DIM, ):
                found = 'none' if can_bus is None else f'shape {np.shape(can_bus)}'
                raise ValueError(
                    f'{self.ann_file}: data_list entry (token {info.get("token")}) has no '
                    f'{CAN_BUS_DIM}-value can_bus ({found}); with_can_bus=True needs it in every '
                    'entry. Add it from the nuScenes CAN bus expansion with: '
                    + CAN_BUS_COMMAND.format(data_root=self.data_root, ann_file=self.ann_file))
            info['can_bus'] = frame_can_bus(can_bus, info['ego2global'])
        return super().parse_data_info(info)

    # ----------------------------------------------------------------------------- queue index
    def full_init(self) -> None:
        """Loads the infos (``BaseDataset.full_init``) and links every sample to its previous
        keyframe."""
        if self._fully_initialized:
            return
        super().full_init()
        if self.queue_length > 1:
            self._build_prev_index()

    def _build_prev_index(self) -> None:
        tokens: List[str] = []
        prev_tokens: List[str] = []
        scenes: List[str] = []
        for idx in range(len(self)):
            info = self.get_data_info(idx)
            missing = [key for key in TEMPORAL_KEYS if key not in info]
            if missing:
                raise ValueError(
                    f'{self.ann_file}: data_list entry {idx} (token {info.get("token")}) has no '
                    f'temporal fields {missing}; queue_length={self.queue_length} needs '
                    f'{list(TEMPORAL_KEYS)} in every entry. Add them with: '
                    + AUGMENT_COMMAND.format(data_root=self.data_root, ann_file=self.ann_file))
            tokens.append(info['token'])
            prev_tokens.append(info['prev'] or '')
            scenes.append(info['scene_token'])
        index_of = {token: idx for idx, token in enumerate(tokens)}
        if len(index_of) != len(tokens):
            raise ValueError(f'{self.ann_file}: sample tokens are not unique')
        # -1: first keyframe of its scene; _PREV_NOT_IN_DATASET: its prev is not in this dataset.
        self._prev_index = []
        for idx, prev in enumerate(prev_tokens):
            if not prev:
                self._prev_index.append(-1)
                continue
            prev_idx = index_of.get(prev, _PREV_NOT_IN_DATASET)
            if prev_idx >= 0 and scenes[prev_idx] != scenes[idx]:
                raise ValueError(f'{self.ann_file}: sample {tokens[idx]} of scene {scenes[idx]} '
                                 f'has prev {prev} in another scene {scenes[prev_idx]}')
            self._prev_index.append(prev_idx)

    def queue_indices(self, index: int) -> List[int]:
        """Dataset indices of sample ``index``'s queue, oldest first, ``index`` last (see
        ``queue_sampling``); the earliest frame available is repeated at a scene start."""
        if self.queue_length == 1:
            return [index]
        if self._prev_index is None:
            self.full_init()
        # the keyframes before ``index`` in its scene, nearest first, up to the ones drawn from
        steps_back = list(range(1, self.queue_length))
        if self.queue_sampling == 'official':
            candidates = list(range(1, self.queue_length + 1))
            candidates.pop(random.randrange(len(candidates)))  # one of them dropped at random
            steps_back = candidates
        chain = [index]
        while len(chain) <= steps_back[-1]:
            prev_idx = self._prev_index[chain[-1]]
            if prev_idx < 0:
                break
            chain.append(prev_idx)
        queue = [index]
        for step in steps_back:  # a step before the scene start repeats the frame after it
            queue.append(chain[step] if step < len(chain) else queue[-1])
        if (len(chain) <= steps_back[-1] and not self._warned_missing_prev
                and self._prev_index[chain[-1]] == _PREV_NOT_IN_DATASET):
            self._warned_missing_prev = True
            num_missing = self._prev_index.count(_PREV_NOT_IN_DATASET)
            print_log(f'{num_missing} samples of {self.ann_file} have a prev sample that is not '
                      'in this dataset; their queues start there, as at a scene start',
                      logger='current', level=logging.WARNING)
        return queue[::-1]

    # -------------------------------------------------------------------------------- samples
    def _frame_info(self, index: int) -> dict:
        info = self.get_data_info(index)
        info['box_type_3d'] = self.box_type_3d
        info['box_mode_3d'] = self.box_mode_3d
        info.setdefault('scene_token', '')
        return info

    def prepare_data(self, index: int) -> Optional[dict]:
        """Runs the per-frame pipeline on every frame of the queue (same random state for each),
        then ``PackBEVInputs``. Returns None (mmengine then draws another sample in training)
        like ``Det3DDataset`` when the current frame has no ground truth and
        ``filter_empty_gt``."""
        if self.pack is None:  # queue_length == 1 without PackBEVInputs: NuScenesDataset's path
            return super().prepare_data(index)
        queue = self.queue_indices(index)
        infos: Dict[int, dict] = {idx: self._frame_info(idx) for idx in dict.fromkeys(queue)}
        current = infos[index]
        check_gt = not self.test_mode and self.filter_empty_gt
        if check_gt and len(current['ann_info']['gt_labels_3d']) == 0:
            return None

        np_state, py_state = np.random.get_state(), random.getstate()
        frames: Dict[int, dict] = {}
        for idx in dict.fromkeys(queue):  # unique, oldest first
            np.random.set_state(np_state)
            random.setstate(py_state)
            frame = self.frame_pipeline(infos[idx])
            if frame is None:
                return None
            frames[idx] = frame
        example = self.pack([frames[idx] for idx in queue])
        if check_gt and len(example['data_samples'].gt_instances_3d.labels_3d) == 0:
            return None
        return example
