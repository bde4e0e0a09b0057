"""What our backbones share: mmdet's ``frozen_stages`` and ``norm_eval`` conventions, how
``pretrained`` / ``init_cfg`` weights are loaded, and the conversion of foreign checkpoint layouts
wherever a state dict is loaded into them."""
from typing import Callable, List, Optional, Sequence

from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .pretrained import load_pretrained


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
    pretrained: Optional[str]  # checkpoint path from ``pretrained`` / a Pretrained ``init_cfg``
    # the family's converter of foreign checkpoint layouts (``projects/<family>/convert.py``)
    checkpoint_converter: Callable

    def __init__(self, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.register_load_state_dict_pre_hook(self._convert_foreign_layout)

    def _convert_foreign_layout(self, module, state_dict, prefix: str, *args) -> None:
        """Load-state-dict pre-hook: the tensors under ``prefix`` (e.g. a detector checkpoint's
        ``backbone.``) in another layout (the official repository's, mmdet's) are replaced, in
        ``state_dict``, by the family's converter's output, so every loading path (``tools/test.py
        CKPT``, ``load_from``, ``load_state_dict``) gets our names; what it did is logged."""
        keys = [key for key in state_dict if key.startswith(prefix)]
        ours = {key[len(prefix):]: state_dict[key] for key in keys}
        converted = type(self).checkpoint_converter(ours, self)
        if converted.keys() == ours.keys() and all(converted[k] is ours[k] for k in ours):
            return  # our own layout
        for key in keys:
            del state_dict[key]
        state_dict.update((prefix + key, value) for key, value in converted.items())
        own = set(self.state_dict())
        unplaced, unfilled = sorted(set(converted) - own), sorted(own - set(converted))
        print_log(f'{type(self).__name__} (keys under {prefix!r}): {len(ours)} checkpoint tensors '
                  f'in another layout converted to {len(converted)} of ours by '
                  f'{type(self).checkpoint_converter.__name__} ({len(ours) - len(converted)} '
                  f'classification-only or recomputed ones dropped); {len(unplaced)} without a '
                  f'place here {unplaced[:5]}, {len(unfilled)} of ours not in the checkpoint '
                  f'{unfilled[:5]}', logger='current')

    def init_weights(self) -> None:
        """Load ``pretrained`` through the family's ``checkpoint_converter``, else run another
        ``init_cfg``, else initialise from scratch (``_init_from_scratch``)."""
        if self.pretrained is not None:
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
