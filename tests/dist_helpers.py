"""Launching our tools on several CPU processes (gloo) for the distributed tests."""
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Dict, List, Sequence

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def free_port() -> int:
    """A TCP port nobody listens on now (for the rendezvous of one run)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_dist_tool(script: str, positional: Sequence[str], options: Sequence[str],
                  num_processes: int = 2, timeout: float = 900,
                  python_path: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """``bash tools/<script> POSITIONAL NUM_PROCESSES OPTIONS`` (dist_train.sh: CONFIG;
    dist_test.sh: CONFIG CHECKPOINT) with torchrun on a free port, one thread per process, and
    ``python_path`` folders importable; torchrun's exit status is non-zero when any process
    failed."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([REPO, *python_path]))
    command = ['bash', osp.join(REPO, 'tools', script), *positional, str(num_processes),
               *options]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_ranks(tool: str, args: Sequence[str], num_processes: int = 2,
              timeout: float = 600) -> List[subprocess.CompletedProcess]:
    """``python tools/<tool> ARGS --launcher pytorch`` as ``num_processes`` processes started here
    with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...), so that every
    process's own exit status is seen (torchrun reports only the first failure)."""
    port = free_port()
    processes = []
    for rank in range(num_processes):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK='0',
                   WORLD_SIZE=str(num_processes), LOCAL_WORLD_SIZE=str(num_processes),
                   MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), OMP_NUM_THREADS='1',
                   PYTHONPATH=REPO)
        processes.append(subprocess.Popen(
            [sys.executable, osp.join(REPO, 'tools', tool), *args, '--launcher', 'pytorch'],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for rank, process in enumerate(processes):
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(process.args, process.returncode, output))
    return results


RANK_WEIGHTS_HOOK = """
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankWeightsForTests(Hook):
    def before_train(self, runner):
        torch.save(runner.model.state_dict(), f'{runner.work_dir}/initial{get_rank()}.pth')

    def after_train(self, runner):
        torch.save(runner.model.state_dict(), f'{runner.work_dir}/rank{get_rank()}.pth')
"""


def config_saving_rank_weights(folder, base_config: str, overrides: str = '') -> str:
    """A config in ``folder`` that inherits ``base_config``, adds ``overrides`` (config text) and
    makes every process save its weights before and after training as ``initial{rank}.pth`` and
    ``rank{rank}.pth`` in the work dir; put ``folder`` on the python path of the run."""
    (folder / 'rank_weights_hook.py').write_text(RANK_WEIGHTS_HOOK)
    config = folder / 'saving_rank_weights.py'
    config.write_text(f"_base_ = [{base_config!r}]\n"
                      "custom_imports = dict(imports=['projects', 'rank_weights_hook'], "
                      "allow_failed_imports=False)\n"
                      "custom_hooks = [dict(type='SaveRankWeightsForTests')]\n" + overrides)
    return str(config)


def rank_weights(path) -> Dict[str, torch.Tensor]:
    """Weights saved by ``SaveRankWeightsForTests``, without DDP's ``module.`` prefix."""
    weights = torch.load(path, weights_only=True)
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in weights.items()}
