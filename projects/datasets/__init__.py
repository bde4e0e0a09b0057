"""Dataset generators and helpers: the toy COCO shapes, nuScenes info files with temporal fields
and the CAN-bus vector, and the toy nuScenes world."""
from .can_bus import CanBusReader, check_can_bus_root, frame_can_bus
from .nuscenes_infos import (NUSCENES_CLASSES, add_can_bus, augment_nuscenes_infos,
                             build_nuscenes_infos, create_nuscenes_infos)
from .toy_coco import CLASSES, METAINFO, generate_toy_coco, prepare_toy_coco, toy_coco_ready
from .toy_nuscenes import generate_toy_nuscenes, prepare_toy_nuscenes, toy_nuscenes_ready

__all__ = [
    'CLASSES', 'METAINFO', 'NUSCENES_CLASSES', 'CanBusReader', 'add_can_bus',
    'augment_nuscenes_infos', 'build_nuscenes_infos', 'check_can_bus_root',
    'create_nuscenes_infos', 'frame_can_bus', 'generate_toy_coco', 'generate_toy_nuscenes',
    'prepare_toy_coco', 'prepare_toy_nuscenes', 'toy_coco_ready', 'toy_nuscenes_ready'
]
