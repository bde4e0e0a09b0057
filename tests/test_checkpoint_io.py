"""Checkpoints on torch >= 2.6: resume works without full pickle, foreign callables are refused."""
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn
from torch.utils.data import Dataset

from projects.common.checkpoint_io import (AtomicLocalBackend, CorruptCheckpointError,
                                           UnsafeCheckpointError, is_complete_checkpoint)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class _Regression(Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        x = torch.randn(4, generator=generator)
        return dict(x=x, y=x.sum(dim=0, keepdim=True))


class _LinearModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, y, mode='loss'):
        return dict(loss=((self.linear(x) - y) ** 2).mean())


class _Crash(Exception):
    pass


class _CrashAfterFirstEpoch(Hook):
    priority = 'LOWEST'  # after the CheckpointHook has saved epoch_1.pth

    def after_train_epoch(self, runner):
        raise _Crash


def _runner(work_dir, max_epochs=2, resume=False, custom_hooks=()):
    torch.manual_seed(0)  # the model is built before the Runner seeds
    return Runner(
        model=_LinearModel(), custom_hooks=list(custom_hooks), work_dir=str(work_dir),
        resume=resume,
        experiment_name=f'exp-{max_epochs}-{resume}-{os.path.basename(work_dir)}',
        randomness=dict(seed=0),
        train_dataloader=dict(dataset=_Regression(), batch_size=4,
                              collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
                         dict(type='MultiStepLR', milestones=[1], by_epoch=True)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        default_scope='mmengine')


def test_resume_continues_exactly(tmp_path):
    straight = _runner(tmp_path / 'straight')
    straight.train()
    with pytest.raises(_Crash):
        _runner(tmp_path / 'interrupted', custom_hooks=[_CrashAfterFirstEpoch()]).train()
    resumed = _runner(tmp_path / 'interrupted', resume=True)
    resumed.train()
    assert resumed.iter == straight.iter
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    # the message hub history (HistoryBuffer, numpy arrays) came through the weights-only load
    history = resumed.message_hub.get_scalar('train/loss')
    assert isinstance(history, HistoryBuffer) and len(history.data[0]) == straight.iter


def test_checkpoint_types_load_weights_only(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(np.float64(1.5))
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(hub=buffer, scalar=np.float32(2.0), array=np.arange(3)), path)
    loaded = _load_checkpoint(str(path))
    assert loaded['hub'].current() == 1.5 and loaded['scalar'] == 2.0
    np.testing.assert_array_equal(loaded['array'], np.arange(3))


class _CallsSystem:
    def __reduce__(self):
        return os.system, ('echo pwned',)


class _ReachesThroughGetattr:
    def __reduce__(self):
        return getattr, (HistoryBuffer, 'update')


@pytest.mark.parametrize('payload', [_CallsSystem(), _ReachesThroughGetattr()],
                         ids=['os.system', 'getattr-escape'])
def test_pickled_callable_is_refused_naming_the_file(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=dict(w=torch.zeros(1)), meta=dict(hook=payload)), path)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        _load_checkpoint(str(path))


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        _load_checkpoint(str(tmp_path / 'nowhere.pth'))


@pytest.mark.parametrize('content', [b'', b'a text file, not a checkpoint\n', 'half'])
def test_unreadable_checkpoint_is_named(tmp_path, content):
    path = tmp_path / 'epoch_3.pth'
    if content == 'half':  # truncated, as by an interrupted copy
        torch.save(dict(state_dict=dict(w=torch.zeros(1000))), path)
        content = path.read_bytes()[:path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=r"'.*epoch_3.pth' .* not a readable torch "
                                                     'checkpoint'):
        _load_checkpoint(str(path))
    assert not is_complete_checkpoint(str(path))


def test_checkpoints_get_the_permissions_of_plain_writes(tmp_path):
    AtomicLocalBackend().put(b'weights', tmp_path / 'epoch_1.pth')
    with open(tmp_path / 'plain', 'wb'):
        pass
    mode = (tmp_path / 'epoch_1.pth').stat().st_mode & 0o777
    assert mode == (tmp_path / 'plain').stat().st_mode & 0o777


KILLED_WRITER = '''
import os, sys, time
import projects.common.checkpoint_io as io
io.write_atomic(b'x' * 2**20, sys.argv[1])  # the previous checkpoint, complete
os.fsync = lambda fd: time.sleep(600)  # a slow disk: the next save is killed before its rename
io.write_atomic(b'y' * 2**20, sys.argv[1])
'''


def test_kill_during_a_save_keeps_the_previous_file_and_the_leftover_is_removed(tmp_path):
    path = tmp_path / 'epoch_2.pth'
    writer = subprocess.Popen([sys.executable, '-c', KILLED_WRITER, str(path)], cwd=REPO)
    deadline = time.time() + 60
    while not (path.exists() and list(tmp_path.glob('.tmp-*.part'))) and time.time() < deadline:
        time.sleep(0.01)
    writer.kill()
    writer.wait()
    assert path.read_bytes() == b'x' * 2**20
    assert len(list(tmp_path.glob('.tmp-*.part'))) == 1  # what the killed writer left
    AtomicLocalBackend().put(b'next', tmp_path / 'epoch_3.pth')
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth', 'epoch_3.pth']


def test_atomic_write_keeps_previous_file_on_failure(tmp_path):
    backend = AtomicLocalBackend()
    path = tmp_path / 'epoch_1.pth'
    backend.put(b'trained weights', path)
    with pytest.raises(TypeError):
        backend.put('not bytes', path)  # fails while writing the temporary file
    assert path.read_bytes() == b'trained weights'
    assert os.listdir(tmp_path) == ['epoch_1.pth']
