"""Our backbones on CUDA against the same modules on CPU, float32 with TF32 off: eval outputs
(CUDA takes SDPA, CPU its no-grad attention products), training outputs and gradients, and bf16
autocast within bf16 rounding. Skipped without a CUDA device."""
import copy

import pytest
import torch
from backbone_helpers import randomize_
from numeric_helpers import assert_relative_close

from projects.moa import MOABackbone
from projects.pvt import PVTV2Backbone
from projects.swin import SwinBackbone, SwinV2Backbone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

SMALL = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
             drop_path_rate=0.0)
BACKBONES = {
    'swin': lambda: SwinBackbone(**SMALL),
    'swin-v2': lambda: SwinV2Backbone(**SMALL),
    'pvtv2-b0': lambda: PVTV2Backbone(arch='b0', drop_path_rate=0.0),
    'moa': lambda: MOABackbone(**SMALL, global_drop_path_rate=0.0),
}


@pytest.fixture
def no_tf32():
    """Full float32 products on CUDA, so that CPU and CUDA differ only by summation order."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_maps_close(actual, expected, tolerance):
    """Feature maps (CUDA, any dtype) against float32 CPU ones, relative to each map's scale."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert_relative_close(a.float().cpu(), e, tolerance)


@pytest.mark.parametrize('size', [(96, 128), (75, 110)])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_cuda_matches_cpu(name, size, no_tf32):
    cpu = randomize_(BACKBONES[name]())
    gpu = copy.deepcopy(cpu).cuda()
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = cpu(images)
        assert_maps_close(gpu(images.cuda()), expected, 1e-4)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            assert_maps_close(gpu(images.cuda()), expected, 5e-2)

    cpu.train(), gpu.train()
    for model, device in ((cpu, 'cpu'), (gpu, 'cuda')):
        outs = model(images.to(device))
        sum(o.square().mean() for o in outs).backward()
    assert_maps_close(gpu(images.cuda()), cpu(images), 1e-4)
    for (param_name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        if p_cpu.grad is None:
            assert p_gpu.grad is None, param_name
            continue
        # absolute floor: a few parameters have analytically zero gradients at these sizes
        error = (p_gpu.grad.cpu() - p_cpu.grad).abs().max().item()
        assert error <= 2e-3 * p_cpu.grad.abs().max().item() + 1e-8, param_name
