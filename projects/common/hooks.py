"""Training stops at the first non-finite loss or parameter, before anything is saved from it."""
import math
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise ``FloatingPointError`` after the first iteration whose loss terms or updated
    parameters are not finite, naming the iteration, the terms and the last checkpoint saved.

    mmdet's ``CheckInvalidLossHook`` checks only the total loss, every 50 iterations, and names
    neither the term nor a checkpoint to go back to. Runs before the checkpoint hook (which has
    the lowest priority), so a diverged model is never saved over the good checkpoints; the
    parameter check catches an update from a non-finite gradient before the next forward (where
    DETR-style matchers would fail inside scipy instead).
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        losses = {name: float(torch.as_tensor(value).detach())
                  for name, value in (outputs or {}).items() if name.startswith('loss')}
        bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
        params = [p.detach() for p in runner.model.parameters()]
        if not bad and (not params or torch.nn.utils.get_total_norm(params).isfinite()):
            return
        what = (', '.join(f'{name} = {value}' for name, value in bad.items()) if bad else
                'parameters became non-finite (an update from a non-finite gradient)')
        last = runner.message_hub.get_info('last_ckpt') or runner.cfg.get('load_from')
        last = f'the last checkpoint is {last!r}' if last else 'no checkpoint was saved yet'
        raise FloatingPointError(
            f'training stopped at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): {what}; '
            f'nothing was saved after it, {last}. Lower the learning rate or clip gradients '
            '(optim_wrapper.clip_grad) and resume.')
