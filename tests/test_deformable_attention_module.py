"""FastMultiScaleDeformableAttention: mmcv's module with the same weights gives the same output."""
import pytest
import torch

try:
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention
    MMCV_OPS_ERROR = None
except (ImportError, OSError) as error:  # mmcv missing, or built without its ops
    MMCV_OPS_ERROR = error

pytestmark = pytest.mark.skipif(
    MMCV_OPS_ERROR is not None,
    reason=f'mmcv.ops is not importable ({MMCV_OPS_ERROR}): the module subclasses mmcv\'s '
    'MultiScaleDeformableAttention and is compared against it')

LEVEL_SHAPES = ((6, 8), (3, 4), (2, 2))


def make_pair(seed=0, **kwargs):
    """mmcv's module with random weights, and ours loaded from its state dict."""
    from projects.deformable_attention.module import FastMultiScaleDeformableAttention
    arguments = dict(embed_dims=32, num_heads=4, num_levels=len(LEVEL_SHAPES), num_points=3,
                     dropout=0.0)
    arguments.update(kwargs)
    theirs = MultiScaleDeformableAttention(**arguments)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in theirs.parameters():  # mmcv's init zeroes the attention weights: randomise
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    ours = FastMultiScaleDeformableAttention(**arguments)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def make_call(batch_first=False, box_reference=False, padding_mask=False, bs=2, num_queries=5,
              seed=1):
    """Keyword arguments of a forward call, as a Deformable DETR decoder layer would make them."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(LEVEL_SHAPES)
    sizes = spatial_shapes.prod(1)
    num_keys = int(sizes.sum())

    def sequence(length):  # (length, bs, embed_dims), or (bs, length, embed_dims) with batch_first
        tensor = torch.randn(bs, length, 32, generator=generator)
        return tensor if batch_first else tensor.transpose(0, 1)

    reference_points = torch.rand(bs, num_queries, len(LEVEL_SHAPES), 4 if box_reference else 2,
                                  generator=generator)
    key_padding_mask = torch.rand(bs, num_keys, generator=generator) < 0.2 if padding_mask else None
    return dict(query=sequence(num_queries), value=sequence(num_keys),
                query_pos=sequence(num_queries), key_padding_mask=key_padding_mask,
                reference_points=reference_points, spatial_shapes=spatial_shapes,
                level_start_index=torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]))


@pytest.mark.parametrize('batch_first, box_reference, padding_mask', [
    (False, False, False), (True, False, True), (False, True, True), (True, True, False)])
def test_same_weights_same_output_and_gradients(batch_first, box_reference, padding_mask):
    ours, theirs = make_pair(batch_first=batch_first)
    call = make_call(batch_first, box_reference, padding_mask)
    expected = theirs(**call)
    actual = ours(**call)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-5
    grad_output = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2))
    expected.backward(grad_output)
    actual.backward(grad_output)
    for (name, parameter), (_, reference) in zip(ours.named_parameters(),
                                                 theirs.named_parameters()):
        scale = reference.grad.abs().max().item()
        assert (parameter.grad - reference.grad).abs().max().item() <= 1e-4 * max(scale, 1e-6), name


def test_same_state_dict_keys_and_init():
    from projects.deformable_attention.module import FastMultiScaleDeformableAttention
    torch.manual_seed(3)
    theirs = MultiScaleDeformableAttention(embed_dims=64, num_heads=8)
    torch.manual_seed(3)
    ours = FastMultiScaleDeformableAttention(embed_dims=64, num_heads=8)
    assert isinstance(ours, MultiScaleDeformableAttention)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, tensor in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], tensor), key


def test_built_from_the_registries_under_its_own_name():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import MODELS

    from projects.deformable_attention.module import FastMultiScaleDeformableAttention
    config = dict(type='FastMultiScaleDeformableAttention', embed_dims=32, num_heads=4)
    assert type(MMDET_MODELS.build(config)) is FastMultiScaleDeformableAttention
    assert type(MODELS.build(config)) is FastMultiScaleDeformableAttention
    # mmcv's own name is untouched
    assert MODELS.get('MultiScaleDeformableAttention') is MultiScaleDeformableAttention


def test_embed_dims_not_divisible_by_heads_is_refused():
    from projects.deformable_attention.module import FastMultiScaleDeformableAttention
    with pytest.raises(ValueError, match='embed_dims must be divisible by num_heads'):
        FastMultiScaleDeformableAttention(embed_dims=30, num_heads=4)


def test_bad_reference_points_are_refused():
    ours, _ = make_pair()
    call = make_call()
    call['reference_points'] = torch.rand(2, 5, len(LEVEL_SHAPES), 3)
    with pytest.raises(ValueError, match='reference_points'):
        ours(**call)
