"""Transformer plugins for MMDetection 3.x and MMDetection3D 1.x.

Importing this package (``custom_imports=dict(imports=['projects'])`` in a config) registers every
family's modules in mmdet's registries (BEVFormer's in mmdet3d's, when mmdet3d is installed: it is
the optional ``nuscenes`` extra) and makes mmengine checkpoints load safely on torch >= 2.6.
"""
from . import common  # noqa: F401  (must come first: checkpoint I/O)
from . import deformable_attention  # noqa: F401
from . import moa  # noqa: F401
from . import pvt  # noqa: F401
from . import swin  # noqa: F401
from .common.requirements import mmdet3d_installed

if mmdet3d_installed():
    from . import bevformer  # noqa: F401  (mmdet3d's registries)
