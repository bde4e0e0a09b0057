"""BEVFormer on MMDetection3D 1.x: camera geometry, the multi-view pipeline and temporal nuScenes
dataset, the BEV encoder (temporal self-attention and spatial cross-attention on the shared
deformable-attention op), the 3D DETR head and the detector. Registered in mmdet3d's registries
on import."""
from . import dataset, transforms, visualization  # noqa: F401  (dataset, transforms, hook)
from .attention import BEVSpatialCrossAttention, BEVTemporalSelfAttention
from .detector import BEVFormerDetector
from .encoder import BEVFormerEncoder, BEVFormerEncoderLayer
from .head import BEVFormerHead, BoxCodeL1Cost, convert_head_state_dict_from_v017
from .sampler import SceneShardSampler

__all__ = [
    'BEVFormerDetector', 'BEVFormerEncoder', 'BEVFormerEncoderLayer', 'BEVFormerHead',
    'BEVSpatialCrossAttention', 'BEVTemporalSelfAttention', 'BoxCodeL1Cost',
    'SceneShardSampler', 'convert_head_state_dict_from_v017'
]
