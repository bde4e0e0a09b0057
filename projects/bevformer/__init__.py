"""BEVFormer on MMDetection3D 1.x: camera geometry, the multi-view pipeline and temporal nuScenes
dataset, the BEV encoder (temporal self-attention and spatial cross-attention on the shared
deformable-attention op), the 3D DETR head and the detector. Registered in mmdet3d's registries
on import.

"BEVFormer: Learning Bird's-Eye-View Representation from Multi-Camera Images via Spatiotemporal
Transformers" (Li et al., ECCV 2022); follows fundamentalvision/BEVFormer, whose differences from
this port are listed, with the switches that restore them, in docs/official_differences.md."""
from ..common.requirements import require_mmdet3d

require_mmdet3d('projects.bevformer')

from . import dataset, transforms, visualization  # noqa: E402,F401  (dataset, transforms, hook)
from .attention import BEVSpatialCrossAttention, BEVTemporalSelfAttention  # noqa: E402
from .detector import BEVFormerDetector  # noqa: E402
from .encoder import BEVFormerEncoder, BEVFormerEncoderLayer  # noqa: E402
from .head import BEVFormerHead, BoxCodeL1Cost, convert_head_state_dict_from_v017  # noqa: E402
from .sampler import SceneShardSampler  # noqa: E402

__all__ = [
    'BEVFormerDetector', 'BEVFormerEncoder', 'BEVFormerEncoderLayer', 'BEVFormerHead',
    'BEVSpatialCrossAttention', 'BEVTemporalSelfAttention', 'BoxCodeL1Cost',
    'SceneShardSampler', 'convert_head_state_dict_from_v017'
]
