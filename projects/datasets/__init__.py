"""Dataset generators and helpers."""
from .toy_coco import CLASSES, METAINFO, generate_toy_coco, prepare_toy_coco, toy_coco_ready

__all__ = ['CLASSES', 'METAINFO', 'generate_toy_coco', 'prepare_toy_coco', 'toy_coco_ready']
