"""What our backbones share: mmdet's ``frozen_stages`` and ``norm_eval`` conventions, how
``pretrained`` / ``init_cfg`` weights are loaded, and the conversion and completeness check of
checkpoints wherever a state dict is loaded into them."""
import contextlib
import logging
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .pretrained import check_pretrained_file, load_pretrained, pretrained_checkpoint


class CheckpointMismatchError(ValueError):
    """A checkpoint that would leave backbone tensors unfilled or have tensors without a place
    (another family, size or kind of model). :mod:`projects.engine.launch` adds the file name."""


def check_stage_indices(out_indices: Sequence[int], frozen_stages: int, num_stages: int) -> None:
    """Raise ValueError naming ``out_indices`` / ``frozen_stages`` when outside the stages."""
    if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
        raise ValueError(f'out_indices must be non-empty, within [0, {num_stages}), '
                         f'got {tuple(out_indices)}')
    if not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'frozen_stages must be within [-1, {num_stages}], got {frozen_stages}')


class StagedBackbone(BaseModule):
    """A backbone of ``patch_embed``, ``stages`` and output norms ``norm{i}`` (for i in
    ``out_indices``), with ``frozen_stages`` and ``norm_eval`` set by the subclass.

    ``frozen_stages`` k >= 0 freezes the patch embedding and stages 1..k (with their output
    norms): eval mode and no gradients, kept so by :meth:`train`. ``norm_eval`` keeps BatchNorm
    layers in eval mode while training (mmdet's convention; LayerNorms hold no running statistics,
    so it changes nothing for them).
    """

    frozen_stages: int
    norm_eval: bool
    out_indices: tuple
    # the family's converter of foreign checkpoint layouts and its layout guess
    # (``projects/<family>/convert.py``)
    checkpoint_converter: Callable
    checkpoint_layout: Callable
    # whether an ONNX export may leave the input height and width free (``--dynamic``); False
    # where the graph needs sizes derived from them as constants
    onnx_free_input_size = True

    def __init__(self, pretrained: Optional[str] = None, init_cfg: Optional[dict] = None,
                 allow_partial_checkpoint: bool = False) -> None:
        """``pretrained`` / ``init_cfg``: see :func:`pretrained_checkpoint`.
        ``allow_partial_checkpoint``: let a state dict that leaves some of our tensors unfilled
        or holds tensors without a place here load with a warning instead of an error (the
        ``pretrained`` classification checkpoint is always loaded so)."""
        path, argument = pretrained_checkpoint(pretrained, init_cfg)
        super().__init__(init_cfg=init_cfg)
        self.pretrained = path  # checkpoint from ``pretrained`` / a Pretrained ``init_cfg``
        self.pretrained_argument = argument
        self.allow_partial_checkpoint = allow_partial_checkpoint
        self.register_load_state_dict_pre_hook(self._convert_and_check_checkpoint)

    def _convert_and_check_checkpoint(self, module, state_dict, prefix: str, *args) -> None:
        """Load-state-dict pre-hook, so that every loading path (``tools/test.py CKPT``,
        ``load_from``, ``load_state_dict``) gets it: the tensors under ``prefix`` (e.g. a detector
        checkpoint's ``backbone.``) in another layout (the official repository's, mmdet's) are
        replaced, in ``state_dict``, by the family's converter's output (logged); then a checkpoint
        that does not fill every tensor of ours, or holds tensors (or shapes) that have no place
        here, raises :class:`CheckpointMismatchError` unless ``allow_partial_checkpoint``."""
        keys = [key for key in state_dict if key.startswith(prefix)]
        ours = {key[len(prefix):]: state_dict[key] for key in keys}
        layout = type(self).checkpoint_layout(ours)
        converted = type(self).checkpoint_converter(ours, self)
        if not (converted.keys() == ours.keys() and all(converted[k] is ours[k] for k in ours)):
            for key in keys:
                del state_dict[key]
            state_dict.update((prefix + key, value) for key, value in converted.items())
            print_log(f'{type(self).__name__} (keys under {prefix!r}): {len(ours)} checkpoint '
                      f'tensors in the {layout} layout converted to {len(converted)} of ours by '
                      f'{type(self).checkpoint_converter.__name__}; '
                      f'{converted.dropped_summary() or "nothing dropped"}', logger='current')
        problem = (self._describe_misfit(converted, layout) if ours else
                   f'the checkpoint holds no tensor under {prefix!r}')
        if problem is None:
            return
        message = (f'{type(self).__name__} (keys under {prefix!r}): {problem}. A checkpoint of '
                   f'another family or size? To load it partly on purpose (fine-tuning), set '
                   f'allow_partial_checkpoint=True on the backbone.')
        if not self.allow_partial_checkpoint:
            raise CheckpointMismatchError(message)
        print_log(message, logger='current', level=logging.WARNING)

    def _describe_misfit(self, converted: Dict[str, Tensor], layout: str) -> Optional[str]:
        """What keeps ``converted`` (our names) from filling this backbone exactly; None if
        nothing."""
        own = self.state_dict()
        unplaced = sorted(set(converted) - set(own))
        unfilled = sorted(set(own) - set(converted))
        reshaped = [f'{k} {tuple(v.shape)} (ours {tuple(own[k].shape)})'
                    for k, v in converted.items() if k in own and v.shape != own[k].shape]
        if not (unplaced or unfilled or reshaped):
            return None
        return (f'the checkpoint (read as the {layout} layout) does not fit: {len(unfilled)} of '
                f'our {len(own)} tensors would stay unfilled {unfilled[:5]}, {len(unplaced)} of '
                f'its tensors have no place here {unplaced[:5]}, {len(reshaped)} have another '
                f'shape {reshaped[:3]}')

    @contextlib.contextmanager
    def partial_checkpoint_allowed(self):
        """Within the block, checkpoints may fill this backbone partly (see ``__init__``)."""
        allowed, self.allow_partial_checkpoint = self.allow_partial_checkpoint, True
        try:
            yield
        finally:
            self.allow_partial_checkpoint = allowed

    def init_weights(self) -> None:
        """Load ``pretrained`` through the family's ``checkpoint_converter`` (expected to lack
        our output norms and detection-only modules: missing tensors are reported, not errors),
        else run another ``init_cfg``, else initialise from scratch (``_init_from_scratch``)."""
        if self.pretrained is not None:
            check_pretrained_file(self.pretrained, self.pretrained_argument)
            with self.partial_checkpoint_allowed():
                load_pretrained(self, self.pretrained, convert=type(self).checkpoint_converter)
        elif self.init_cfg is not None:
            super().init_weights()
            return
        else:
            self._init_from_scratch()
        self._is_init = True

    def _init_from_scratch(self) -> None:
        raise NotImplementedError

    def frozen_modules(self) -> List[nn.Module]:
        """The modules ``frozen_stages`` freezes; override for another layout."""
        frozen = [self.patch_embed] if self.frozen_stages >= 0 else []
        for i in range(self.frozen_stages):
            frozen.append(self.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
        return frozen

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'StagedBackbone':
        """Switch mode, keeping frozen stages (and BatchNorms under ``norm_eval``) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
