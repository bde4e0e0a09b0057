"""Dataset generators and helpers: the toy COCO shapes, nuScenes info files with temporal fields,
and the toy nuScenes world."""
from .nuscenes_infos import (NUSCENES_CLASSES, augment_nuscenes_infos, build_nuscenes_infos,
                             create_nuscenes_infos)
from .toy_coco import CLASSES, METAINFO, generate_toy_coco, prepare_toy_coco, toy_coco_ready
from .toy_nuscenes import generate_toy_nuscenes, prepare_toy_nuscenes, toy_nuscenes_ready

__all__ = [
    'CLASSES', 'METAINFO', 'NUSCENES_CLASSES', 'augment_nuscenes_infos', 'build_nuscenes_infos',
    'create_nuscenes_infos', 'generate_toy_coco', 'generate_toy_nuscenes', 'prepare_toy_coco',
    'prepare_toy_nuscenes', 'toy_coco_ready', 'toy_nuscenes_ready'
]
