"""BEVFormer on MMDetection3D 1.x: camera geometry, the multi-view pipeline and temporal nuScenes
dataset, the BEV encoder (temporal self-attention and spatial cross-attention on the shared
deformable-attention op). Registered in mmdet3d's registries on import."""
from . import dataset, transforms  # noqa: F401  (registers the dataset and the transforms)
from .attention import BEVSpatialCrossAttention, BEVTemporalSelfAttention
from .encoder import BEVFormerEncoder, BEVFormerEncoderLayer

__all__ = [
    'BEVFormerEncoder', 'BEVFormerEncoderLayer', 'BEVSpatialCrossAttention',
    'BEVTemporalSelfAttention'
]
