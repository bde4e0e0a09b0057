"""Training hooks that ``tools/train.py`` adds: stop at the first non-finite loss or parameter,
before anything is saved from it; resume with the random streams of an uninterrupted run."""
import math
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import get_world_size
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


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random number generator states (Python, numpy, torch CPU and CUDA) in each
    checkpoint and restore them when training resumes from it, so that a resumed run draws the
    same augmentations and drop-path masks as an uninterrupted one (mmengine saves only the seed
    and reseeds, which restarts the streams). Single-process runs only: the checkpoint is written
    by rank 0 alone (mmengine's ``save_checkpoint`` is master-only, so the other processes'
    states cannot be gathered there); distributed runs resume reseeded, as with mmengine.

    Restored at ``before_train``, after mmengine's resume has finished reseeding. Validation
    leaves the states as it found them (it draws a seed for its dataloader, which would otherwise
    shift the training's streams after every validation, a draw the resumed run does not make).
    Dataloader worker processes seed themselves (mmengine's ``worker_init_fn``) and are not
    covered.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._resumed_state: Optional[dict] = None
        self._before_val: Optional[dict] = None

    @staticmethod
    def _states() -> dict:
        return dict(python=random.getstate(), numpy=np.random.get_state(legacy=True),
                    torch=torch.get_rng_state(),
                    cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    @staticmethod
    def _restore(state: dict) -> None:
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if state['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if get_world_size() == 1:
            checkpoint['random_states'] = self._states()

    def before_val(self, runner) -> None:
        self._before_val = self._states()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            self._restore(self._before_val)
            self._before_val = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._resumed_state = checkpoint.get('random_states')

    def before_train(self, runner) -> None:
        state, self._resumed_state = self._resumed_state, None
        if state is not None and runner._resume and get_world_size() == 1:
            self._restore(state)
