"""Multi-scale deformable attention op, pinned against mmcv's grid_sample reference."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from numeric_helpers import assert_relative_close

from projects.common.benchmark import measure
from projects.deformable_attention import multi_scale_deformable_attention, ops

try:
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    MMCV_OPS_ERROR = None
except (ImportError, OSError) as error:  # mmcv missing, or built without its ops
    MMCV_OPS_ERROR = error

requires_mmcv = pytest.mark.skipif(
    MMCV_OPS_ERROR is not None,
    reason=f'mmcv.ops is not importable ({MMCV_OPS_ERROR}): the reference '
    'multi_scale_deformable_attn_pytorch is needed to compare against')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(os.path.dirname(__file__), '..', 'tools', 'analysis',
                    'benchmark_deformable_attention.py')
GRAD_NAMES = ('value', 'sampling_locations', 'attention_weights')


def make_inputs(level_shapes=((6, 8), (3, 4), (2, 1)), bs=2, num_queries=7, heads=2, dims=4,
                points=3, low=-0.2, high=1.2, dtype=torch.float32, seed=0):
    """value, spatial_shapes, level_start_index, sampling_locations (uniform in [low, high]),
    attention_weights."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(level_shapes)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(bs, int(sizes.sum()), heads, dims, generator=generator, dtype=dtype)
    sample_shape = (bs, num_queries, heads, len(level_shapes), points)
    locations = torch.rand(*sample_shape, 2, generator=generator, dtype=dtype)
    weights = torch.rand(*sample_shape, generator=generator, dtype=dtype)
    return value, spatial_shapes, level_start_index, locations * (high - low) + low, weights


def border_inputs():
    """Locations on a 1/16 grid from -0.375 to 1.375 in x and y, on maps of power-of-two sizes:
    every location is exact in float32, and many sit at 0, at 1, on pixel centres (where the
    bilinear gradient switches corners) and on the clamp limits one pixel outside the map."""
    value, spatial_shapes, level_start_index, _, _ = make_inputs(
        level_shapes=((4, 8), (2, 4), (1, 2)), bs=1, heads=2, dims=3)
    coords = torch.arange(-6, 23) / 16
    x, y = torch.meshgrid(coords, coords, indexing='ij')
    num_queries = x.numel()
    locations = torch.stack([x, y], -1).view(1, num_queries, 1, 1, 1, 2)
    locations = locations.expand(1, num_queries, 2, 3, 1, 2).contiguous()
    weights = torch.rand(1, num_queries, 2, 3, 1, generator=torch.Generator().manual_seed(1))
    return value, spatial_shapes, level_start_index, locations, weights


def reference(value, spatial_shapes, level_start_index, locations, weights):
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, locations, weights)


def outputs_and_grads(fn, inputs, grad_seed=2):
    """fn's output and its gradients in value, sampling_locations and attention_weights."""
    value, spatial_shapes, level_start_index, locations, weights = inputs
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    output = fn(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(grad_seed))
    return (output, ) + torch.autograd.grad(output, leaves, grad_output.to(output))


@requires_mmcv
@pytest.mark.parametrize('inputs', [
    make_inputs(),
    make_inputs(level_shapes=((10, 15), (5, 8), (3, 4), (1, 1)), heads=8, dims=32, points=4,
                num_queries=50),
    make_inputs(low=0.0, high=1.0, seed=3),
    make_inputs(low=-3.0, high=4.0, seed=4),  # mostly far outside the maps
    border_inputs(),
], ids=['small', 'detr-like', 'inside', 'far-outside', 'border'])
def test_forward_and_gradients_match_mmcv(inputs):
    ours = outputs_and_grads(multi_scale_deformable_attention, inputs)
    theirs = outputs_and_grads(reference, inputs)
    assert ours[0].shape == theirs[0].shape
    assert (ours[0] - theirs[0]).abs().max().item() <= 1e-5
    for name, actual, expected in zip(GRAD_NAMES, ours[1:], theirs[1:]):
        assert actual.shape == expected.shape, name
        assert_relative_close(actual, expected, 1e-4)


@requires_mmcv
@pytest.mark.parametrize('needs_grad', [(True, False, False), (False, True, True),
                                        (False, False, True)])
def test_gradients_of_a_subset_of_inputs(needs_grad):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs()
    leaves = (value, locations, weights)
    ours = [t.clone().requires_grad_(flag) for t, flag in zip(leaves, needs_grad)]
    theirs = [t.clone().requires_grad_() for t in leaves]
    multi_scale_deformable_attention(ours[0], spatial_shapes, level_start_index,
                                     *ours[1:]).sum().backward()
    reference(theirs[0], spatial_shapes, level_start_index, *theirs[1:]).sum().backward()
    for tensor, expected, flag in zip(ours, theirs, needs_grad):
        if flag:
            assert_relative_close(tensor.grad, expected.grad, 1e-4)
        else:
            assert tensor.grad is None


@requires_mmcv
def test_non_contiguous_inputs():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(seed=10)
    value = value.transpose(0, 1).contiguous().transpose(0, 1)
    locations = locations[:, :1].expand(-1, 7, -1, -1, -1, -1)  # all queries sample alike
    weights = weights.transpose(3, 4).contiguous().transpose(3, 4)
    inputs = (value, spatial_shapes, level_start_index, locations, weights)
    for actual, expected in zip(outputs_and_grads(multi_scale_deformable_attention, inputs),
                                outputs_and_grads(reference, inputs)):
        assert_relative_close(actual, expected, 1e-4)


def test_no_queries():
    inputs = make_inputs(num_queries=0)
    output, grad_value, grad_locations, _ = outputs_and_grads(
        multi_scale_deformable_attention, inputs)
    assert output.shape == (2, 0, 8) and grad_locations.shape == inputs[3].shape
    assert not grad_value.any()


def test_gradcheck_float64():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        level_shapes=((3, 4), (2, 2)), bs=1, num_queries=3, heads=2, dims=2, points=2, low=-0.3,
        high=1.3, dtype=torch.float64, seed=5)
    pixels = locations * spatial_shapes.flip(-1).view(1, 1, 1, -1, 1, 2) - 0.5
    # finite differences hold only away from the kinks at integer pixel coordinates
    assert ((pixels - pixels.round()).abs() > 1e-3).all()

    def op(value, locations, weights):
        return multi_scale_deformable_attention(value, spatial_shapes, level_start_index,
                                                locations, weights)

    inputs = tuple(t.requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(op, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize('dtype, tolerance', [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_close_to_float32(dtype, tolerance):
    inputs = [t.to(dtype) if t.is_floating_point() else t
              for t in make_inputs(heads=4, dims=8, seed=6)]
    half = outputs_and_grads(multi_scale_deformable_attention, inputs)
    full = outputs_and_grads(multi_scale_deformable_attention,
                             [t.float() if t.is_floating_point() else t for t in inputs])
    for actual, expected in zip(half, full):
        assert actual.dtype == dtype
        assert_relative_close(actual.float(), expected, tolerance)


def test_int64_indices_give_the_same_result(monkeypatch):
    inputs = make_inputs(seed=7)
    expected = outputs_and_grads(multi_scale_deformable_attention, inputs)
    monkeypatch.setattr(ops, '_index_dtype', lambda padded_value, locations: torch.int64)
    actual = outputs_and_grads(multi_scale_deformable_attention, inputs)
    for actual_tensor, expected_tensor in zip(actual, expected):
        assert torch.allclose(actual_tensor, expected_tensor, atol=1e-6)


def test_gathered_dot_products_equal_sampled_ones(monkeypatch):
    """The dot products used off-CPU (an explicit gather, chunked) equal the CPU ones."""
    monkeypatch.setattr(ops, '_DOT_CHUNK', 5)
    generator = torch.Generator().manual_seed(8)
    table = torch.randn(30, 6, generator=generator)
    rows = torch.randint(0, 30, (13, 4, 3), generator=generator, dtype=torch.int32)
    grad_output = torch.randn(13, 6, generator=generator)
    expected = (table[rows.long()] * grad_output[:, None, None]).sum(-1)
    assert torch.allclose(ops._corner_dot_products(rows, grad_output, table), expected, atol=1e-5)
    assert torch.allclose(ops._gathered_dot_products(rows, grad_output, table), expected,
                          atol=1e-5)


NON_FINITE_CASES = {  # name -> (input index, position, bad value)
    'location-nan': (3, (0, 1, 0, 0, 0, 0), float('nan')),
    'location-inf': (3, (0, 1, 0, 1, 2, 1), float('inf')),
    'weight-nan': (4, (1, 4, 1, 2, 0), float('nan')),
    'weight-minus-inf': (4, (1, 4, 1, 2, 0), -float('inf')),
}


def check_non_finite_semantics(op, heads: int = 2) -> None:
    """The op module's documented semantics: a non-finite location or weight makes exactly its
    (batch, query, head) output non-finite, the rest unchanged; a NaN value pixel makes NaN at
    least the outputs that mmcv's grid_sample reference makes NaN."""
    clean_inputs = make_inputs(heads=heads)
    clean = op(*clean_inputs).unflatten(-1, (heads, -1))  # (bs, queries, heads, dims)
    for name, (index, position, bad) in NON_FINITE_CASES.items():
        inputs = [t.clone() for t in clean_inputs]
        position = position[:2] + (position[2] % heads, ) + position[3:]
        inputs[index][position] = bad
        output = op(*inputs).unflatten(-1, (heads, -1))
        hit = torch.zeros(clean.shape[:3], dtype=torch.bool)
        hit[position[:3]] = True
        assert not torch.isfinite(output[hit]).any(), name
        assert torch.allclose(output[~hit], clean[~hit], atol=1e-6), name
    inputs = [t.clone() for t in clean_inputs]
    inputs[0][0, 3, 0, 0] = float('nan')
    expected = torch.isnan(reference(*inputs))
    assert expected.any() and torch.isnan(op(*inputs))[expected].all()


@pytest.mark.parametrize('op', [multi_scale_deformable_attention, pytest.param(
    reference, marks=requires_mmcv)], ids=['ours', 'mmcv-reference'])
@pytest.mark.parametrize('heads', [2, 1])
def test_non_finite_inputs_are_never_hidden(op, heads):
    check_non_finite_semantics(op, heads)


TRITON_INTERPRETED = """
import os, sys
os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported: kernels run on the CPU
sys.path.insert(0, 'tests')
import torch
from numeric_helpers import assert_relative_close
from projects.deformable_attention import ops
from test_deformable_attention_op import (border_inputs, check_non_finite_semantics, make_inputs,
                                          outputs_and_grads, reference)
ops._uses_triton = lambda value: True  # CPU tensors through the Triton kernels
cases = [make_inputs(heads=4, dims=8, seed=9), border_inputs(),
         make_inputs(level_shapes=((9, 13), (5, 7), (1, 1)), heads=3, dims=5, num_queries=20),
         make_inputs(low=-3.0, high=4.0, seed=4)]
for inputs in cases:
    for actual, expected in zip(outputs_and_grads(ops.multi_scale_deformable_attention, inputs),
                                outputs_and_grads(reference, inputs)):
        assert_relative_close(actual, expected, 1e-4)
check_non_finite_semantics(ops.multi_scale_deformable_attention)
print('ok')
"""


@requires_mmcv
@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='Triton is not installed')
def test_triton_kernels_in_the_interpreter_match_mmcv():
    """The Triton kernels (forward and backward) run on the CPU in Triton's interpreter: outputs
    and gradients against mmcv's reference, and the non-finite semantics. A subprocess, because
    TRITON_INTERPRET must be set before Triton is imported."""
    result = subprocess.run([sys.executable, '-c', TRITON_INTERPRETED], cwd=REPO, text=True,
                            capture_output=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype, tolerance', [(torch.float32, 1e-4), (torch.float16, 1e-2),
                                              (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize('inputs', [
    make_inputs(heads=4, dims=8, seed=9), border_inputs(),
    make_inputs(level_shapes=((9, 13), (5, 7), (1, 1)), heads=3, dims=5, num_queries=150)
], ids=['uniform', 'border', 'odd-dims'])
@pytest.mark.parametrize('use_triton', [True, False], ids=['triton', 'pytorch'])
def test_cuda_matches_cpu(dtype, tolerance, inputs, use_triton, monkeypatch):
    """Both CUDA paths (the Triton kernels, and the PyTorch path they replace there) against the
    CPU op in float32."""
    if use_triton and importlib.util.find_spec('triton') is None:
        pytest.skip('Triton is not installed')
    monkeypatch.setattr(ops, 'USE_TRITON', use_triton)
    on_cuda = [t.cuda().to(dtype) if t.is_floating_point() else t.cuda() for t in inputs]
    assert ops._uses_triton(on_cuda[0]) == use_triton
    actual = outputs_and_grads(multi_scale_deformable_attention, on_cuda)
    expected = outputs_and_grads(multi_scale_deformable_attention,
                                 [t.cpu().float() if t.is_floating_point() else t.cpu()
                                  for t in on_cuda])
    for actual_tensor, expected_tensor in zip(actual, expected):
        assert actual_tensor.dtype == dtype
        assert_relative_close(actual_tensor.cpu().float(), expected_tensor, tolerance)


@pytest.mark.parametrize('index, bad, message', [
    (0, torch.zeros(2, 64, 2), 'value'),
    (1, torch.tensor([[6, 8], [3, 4], [2, 2]]), 'num_keys'),
    (1, torch.tensor([[6, 8], [3, 4]]), 'spatial_shapes has 2'),
    (1, torch.tensor([6.0, 8.0]), 'spatial_shapes'),
    (2, torch.tensor([0, 48, 61]), 'level_start_index'),
    (2, torch.tensor([0, 48]), 'level_start_index'),
    (3, torch.zeros(2, 7, 2, 3, 3), 'sampling_locations'),
    (3, torch.zeros(2, 7, 2, 3, 3, 3), 'sampling_locations'),
    (3, torch.zeros(2, 7, 2, 2, 3, 2), 'sampling_locations has 2 levels'),
    (3, torch.zeros(1, 7, 2, 3, 3, 2), 'sampling_locations'),  # batch differs from value's
    (4, torch.zeros(2, 7, 2, 2, 3), 'attention_weights'),  # 2 levels
    (4, torch.zeros(2, 7, 2, 3, 4), 'attention_weights'),  # 4 points, locations have 3
])
def test_bad_inputs_name_the_argument(index, bad, message):
    inputs = list(make_inputs())
    inputs[index] = bad
    with pytest.raises(ValueError, match=message):
        multi_scale_deformable_attention(*inputs)


def test_measure_reports_seconds_and_peak_memory():
    seconds, peak = measure(lambda: torch.ones(16 * 2**20).sum(), repeats=2, warmup=1)
    assert seconds > 0
    if peak is not None:  # measured on Linux
        assert peak >= 48 * 2**20  # the 64 MiB tensor was resident during the call


def test_benchmark_tool_runs_on_a_tiny_shape(capsys):
    spec = importlib.util.spec_from_file_location('benchmark_deformable_attention', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--levels', '6x8,3x4', '--batch-size', '1', '--heads', '2', '--head-dims', '4',
               '--repeats', '1'])
    printed = capsys.readouterr().out
    assert 'forward time (ms)' in printed and 'forward+backward peak memory' in printed
    assert ' MiB' in printed
