"""Loading pretrained backbone weights from foreign checkpoint layouts.

Each backbone family owns one ``convert`` function (official repository / mmdet layout -> ours);
this module does everything around it the same way for all families: read the file (through
mmengine, so ``open-mmlab://`` and URLs work too), unwrap the state dict, strip detector prefixes,
check shapes, load, and report missing and unexpected keys.
"""
import logging
import os.path as osp
from collections import Counter
from typing import Callable, Dict, Optional, Tuple

import torch
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

StateDict = Dict[str, torch.Tensor]

# why a converter drops a checkpoint tensor (the reasons the families share)
CLASSIFIER_ONLY = 'classification only (the classifier head, its final norm, the class token)'
RECOMPUTED_BUFFER = 'buffer that the model recomputes from its configuration'


class ConvertedStateDict(dict):
    """A converter's output: our key -> tensor, and ``dropped``: checkpoint key -> why it has no
    counterpart here (``key[...]`` for part of a tensor)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dropped: Dict[str, str] = {}

    def drop(self, key: str, reason: str) -> None:
        self.dropped[key] = reason

    def dropped_summary(self) -> str:
        """Every dropped key by name, grouped by reason; '' when nothing was dropped."""
        by_reason: Dict[str, list] = {}
        for key, reason in self.dropped.items():
            by_reason.setdefault(reason, []).append(key)
        return '; '.join(f'dropped {len(keys)} ({reason}): {", ".join(keys)}'
                         for reason, keys in by_reason.items())


Converter = Callable[[StateDict, nn.Module], ConvertedStateDict]

_WRAPPER_KEYS = ('state_dict', 'model', 'module')
_STRIPPED_PREFIXES = ('module.', 'backbone.')


def unwrap_state_dict(checkpoint: dict) -> StateDict:
    """The tensors of a checkpoint, whether saved by mmengine, an official repo or DDP.

    Detector checkpoints keep the backbone under ``backbone.``; that prefix is stripped and the
    other sub-modules (neck, heads) are dropped.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    for key in _WRAPPER_KEYS:
        if key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
            break
    state_dict = {}
    has_backbone = any(k.startswith(('backbone.', 'module.backbone.')) for k in checkpoint)
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key.startswith('module.'):
            key = key[len('module.'):]
        if has_backbone:
            if not key.startswith('backbone.'):
                continue
            key = key[len('backbone.'):]
        state_dict[key] = value
    return state_dict


def describe_checkpoint(checkpoint: dict) -> str:
    """What kind of model a checkpoint (as loaded, any wrapper) holds, judged from the first
    components of its tensor names: for error messages."""
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    roots = Counter(key.split('.', 1)[0] for key, value in checkpoint.items()
                    if isinstance(value, torch.Tensor))
    listed = ', '.join(f'{root}. ({count})' for root, count in roots.most_common(6))
    if 'img_backbone' in roots:
        kind = ('a multi-view 3D (BEVFormer-style) checkpoint: its image backbone is under '
                'img_backbone.')
    elif 'backbone' in roots:
        kind = 'a detector checkpoint'
    else:
        kind = ("a backbone-only (classification / pre-training) checkpoint? To start training "
                "from one, give it as model.backbone.init_cfg=dict(type='Pretrained', "
                "checkpoint=FILE)")
    return f'{kind}; its tensors are under {listed or "nothing"}'


def check_shapes(state_dict: StateDict, model: nn.Module, source: str) -> None:
    """Raise naming ``source`` when a key present on both sides has another shape."""
    own = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                  if k in own and v.shape != own[k].shape]
    if mismatched:
        lines = '\n'.join(f'  {k}: checkpoint {a} vs model {b}' for k, a, b in mismatched[:10])
        more = f'\n  ... and {len(mismatched) - 10} more' if len(mismatched) > 10 else ''
        raise ValueError(
            f'checkpoint {source!r} does not fit {type(model).__name__}: {len(mismatched)} '
            f'parameter(s) have other shapes (a checkpoint of another size or architecture?)\n'
            f'{lines}{more}')


def pretrained_checkpoint(pretrained: Optional[str],
                          init_cfg: Optional[dict]) -> Tuple[Optional[str], Optional[str]]:
    """The checkpoint a backbone is asked to start from, ``pretrained='path'`` or
    ``init_cfg=dict(type='Pretrained', checkpoint='path')``, and the argument that names it;
    (None, None) when neither does.

    Meant for a backbone's ``__init__``: raises ValueError when both are given. Whether the file
    exists is checked when it is loaded (:func:`check_pretrained_file` in ``init_weights``, i.e.
    for training only), so that testing a trained detector does not need the ImageNet file.
    """
    from_init_cfg = isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'
    if pretrained is not None and init_cfg is not None:
        raise ValueError('give either pretrained or init_cfg, not both '
                         f'(pretrained={pretrained!r}, init_cfg={init_cfg!r})')
    if from_init_cfg and 'checkpoint' not in init_cfg:
        raise ValueError(f"init_cfg of type 'Pretrained' needs a checkpoint, got {init_cfg!r}")
    path, argument = ((pretrained, 'pretrained') if pretrained is not None else
                      (init_cfg['checkpoint'], "init_cfg['checkpoint']") if from_init_cfg else
                      (None, None))
    return path, argument


def check_pretrained_file(path: str, argument: str) -> None:
    """FileNotFoundError naming the config argument for a local ``path`` that does not exist
    (URLs and ``scheme://`` paths are left to the loader)."""
    if '://' not in path and not osp.isfile(path):
        raise FileNotFoundError(
            f'model.backbone.{argument}: no checkpoint file at {path!r} (the pretrained weights to '
            'start training from; testing a trained checkpoint does not need them)')


def load_pretrained(model: nn.Module, filename: str, convert: Optional[Converter] = None,
                    logger: Optional[MMLogger] = None) -> None:
    """Load ``filename`` into ``model`` after ``convert``, reporting missing/unexpected keys.

    Raises FileNotFoundError for a missing file and ValueError for a checkpoint of another
    architecture (shape mismatches, or no key in common at all).
    """
    logger = logger or MMLogger.get_current_instance()
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location='cpu', logger=logger)
    state_dict = unwrap_state_dict(checkpoint)
    if convert is not None:
        state_dict = convert(state_dict, model)
        if getattr(state_dict, 'dropped', None):
            logger.info(f'{filename}: {state_dict.dropped_summary()}')
    check_shapes(state_dict, model, filename)
    own_keys = set(model.state_dict())
    if not own_keys & set(state_dict):
        raise ValueError(
            f'checkpoint {filename!r} has no parameter of {type(model).__name__} '
            f'(first keys: {sorted(state_dict)[:5]}); is it a checkpoint of this backbone?')
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    logger.info(f'loaded {len(own_keys) - len(missing)}/{len(own_keys)} tensors of '
                f'{type(model).__name__} from {filename}')
    if missing:
        logger.warning(f'missing keys (left at their initialisation): {sorted(missing)}')
    if unexpected:
        logger.warning(f'unexpected keys in {filename} (ignored): {sorted(unexpected)}')


def init_weights_quietly(model: nn.Module) -> nn.Module:
    """``model.init_weights()`` without mmengine's INFO log of every initialised tensor (it
    writes one entry per parameter); warnings and errors still show."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model
