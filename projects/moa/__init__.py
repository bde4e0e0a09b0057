"""MOA Transformer backbone (registered in mmdet's MODELS as ``MOABackbone``) and the converter of
official checkpoints."""
from .convert import convert_moa_checkpoint
from .moa import MOABackbone

__all__ = ['MOABackbone', 'convert_moa_checkpoint']
