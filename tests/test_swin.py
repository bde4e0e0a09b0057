"""Swin v1 / v2 backbones: numerics against mmdet's ``SwinTransformer`` (v1) and a slow obvious
per-block implementation written here (v2), checkpoint conversion, training switches, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from backbone_helpers import assert_checkpointing_matches, assert_outputs_close, randomize_
from mmdet.models.backbones import SwinTransformer
from mmdet.models.backbones.swin import swin_converter
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from official_layouts import official_swin_state_dict
from torch import nn

from projects.common.export import export_mode
from projects.common.window_ops import (gather_window_chunks, gather_windows, linear,
                                        scatter_windows, shift_window_mask, window_attention,
                                        window_layout)
from projects.swin import SwinBackbone, SwinV2Backbone, convert_swin_checkpoint
from projects.swin.swin import SwinBlockV2, WindowAttentionV2

SMALL = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)


def mmdet_swin(**cfg) -> SwinTransformer:
    return randomize_(SwinTransformer(**cfg))


def ours_loaded(tmp_path, state_dict, cls=SwinBackbone, **cfg) -> nn.Module:
    """``cls(**cfg)`` loading ``state_dict`` through ``pretrained=`` (file, converter, loader)."""
    path = str(tmp_path / 'checkpoint.pth')
    torch.save({'state_dict': state_dict}, path)
    model = cls(pretrained=path, **cfg)
    model.init_weights()
    return model.eval()


# ---------------------------------------------------------------- slow obvious implementation
def offset_bias(attn, window_size: int) -> torch.Tensor:
    """(heads, N, N) position bias, looked up by explicit (dy, dx) offsets of each token pair."""
    positions = [(i, j) for i in range(window_size) for j in range(window_size)]
    side = 2 * window_size - 1
    if isinstance(attn, WindowAttentionV2):
        reference = window_size  # our tests build v2 models without a pre-training window
        coords = torch.tensor([[dy, dx] for dy in range(-window_size + 1, window_size)
                               for dx in range(-window_size + 1, window_size)], dtype=torch.float32)
        coords = coords / (reference - 1) * 8
        coords = torch.sign(coords) * torch.log2(coords.abs() + 1) / 3
        table = 16 * torch.sigmoid(attn.cpb_mlp(coords))
    else:
        table = attn.relative_position_bias_table
    rows = [[(qy - ky + window_size - 1) * side + (qx - kx + window_size - 1)
             for (ky, kx) in positions] for (qy, qx) in positions]
    return table[torch.tensor(rows)].permute(2, 0, 1)


def reference_attention(attn, windows, mask=None) -> torch.Tensor:
    """(nW, N, C) windows -> (nW, N, C), softmax(logits + bias + mask) v written out by hand."""
    nW, N, C = windows.shape
    heads = attn.num_heads
    if isinstance(attn, WindowAttentionV2):
        bias = torch.cat((attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias))
        qkv = windows @ attn.qkv.weight.t() + bias
    else:
        qkv = attn.qkv(windows)
    q, k, v = (t.reshape(nW, N, heads, C // heads) for t in qkv.chunk(3, dim=-1))
    if isinstance(attn, WindowAttentionV2):
        cosine = torch.einsum('wqhd,wkhd->whqk', q, k) / (
            q.norm(dim=-1).clamp_min(1e-12).permute(0, 2, 1)[..., None]
            * k.norm(dim=-1).clamp_min(1e-12).permute(0, 2, 1)[:, :, None, :])
        logits = cosine * attn.logit_scale.clamp(max=math.log(100)).exp()
    else:
        logits = torch.einsum('wqhd,wkhd->whqk', q, k) / math.sqrt(C // heads)
    logits = logits + offset_bias(attn, int(math.isqrt(N)))
    if mask is not None:
        logits = logits + mask[:, None]
    out = torch.einsum('whqk,wkhd->wqhd', logits.softmax(-1), v).reshape(nW, N, C)
    return attn.proj(out)


def reference_shift_mask(Hp, Wp, window_size, shift) -> torch.Tensor:
    """(nW, N, N) mask from region labels painted slice by slice, as in the official code."""
    region = torch.zeros(Hp, Wp)
    slices = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    label = 0
    for rows in slices:
        for cols in slices:
            region[rows, cols] = label
            label += 1
    windows = region.view(Hp // window_size, window_size, Wp // window_size, window_size)
    windows = windows.permute(0, 2, 1, 3).reshape(-1, window_size * window_size)
    return (windows[:, :, None] != windows[:, None, :]).float() * -100.0


def reference_window_attention(attn, x, hw, window_size, shift) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, H*W, C): zero padding, cyclic shift, window partition,
    attention, reverse, shift back, crop."""
    B, L, C = x.shape
    H, W = hw
    y = F.pad(x.view(B, H, W, C), (0, 0, 0, -W % window_size, 0, -H % window_size))
    Hp, Wp = y.shape[1:3]
    y = torch.roll(y, (-shift, -shift), (1, 2))
    windows = y.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size**2, C)
    mask = reference_shift_mask(Hp, Wp, window_size, shift).repeat(B, 1, 1) if shift else None
    out = reference_attention(attn, windows, mask)
    out = out.view(B, Hp // window_size, Wp // window_size, window_size, window_size, C)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    return torch.roll(out, (shift, shift), (1, 2))[:, :H, :W].reshape(B, L, C)


def reference_block(block, x, hw, window_size) -> torch.Tensor:
    """One block with :func:`reference_window_attention`; v2 attends to the un-normalised x."""
    if isinstance(block, SwinBlockV2):
        x = x + block.norm1(reference_window_attention(block.attn, x, hw, window_size,
                                                       block.shift_size))
        return x + block.norm2(block.mlp(x))
    x = x + reference_window_attention(block.attn, block.norm1(x), hw, window_size,
                                       block.shift_size)
    return x + block.mlp(block.norm2(x))


def reference_forward(model, images):
    """The backbone's output computed block by block with :func:`reference_block`."""
    x, hw = model.patch_embed(images)
    outs = []
    for i, stage in enumerate(model.stages):
        for block in stage.blocks:
            x = reference_block(block, x, hw, stage.window_size)
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(x)
            outs.append(out.view(-1, *hw, out.shape[-1]).permute(0, 3, 1, 2))
        if stage.downsample is not None:
            x, hw = stage.downsample(x, hw)
    return outs


# ------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize('size', [(224, 224), (64, 96), (90, 130), (20, 17)])
def test_v1_matches_mmdet_at_every_stage(tmp_path, size):
    """Converted mmdet weights give mmdet's features; sizes: exact windows, multiples of 32,
    odd sizes (patch and merging padding), a first stage smaller than one window."""
    reference = mmdet_swin(**SMALL)
    ours = ours_loaded(tmp_path, reference.state_dict(), **SMALL)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_outputs_close(ours(images), reference(images))


def test_v1_swin_t_dims_match_mmdet(tmp_path):
    reference = mmdet_swin(**SWIN_T)
    ours = ours_loaded(tmp_path, reference.state_dict(), **SWIN_T)
    images = torch.randn(1, 3, 100, 140)
    with torch.no_grad():
        assert_outputs_close(ours(images), reference(images))


def test_v1_matches_slow_reference():
    """The same slow per-block implementation that pins v2 agrees with v1."""
    model = randomize_(SwinBackbone(**SMALL))
    images = torch.randn(1, 3, 75, 110)
    with torch.no_grad():
        assert_outputs_close(model(images), reference_forward(model, images))


@pytest.mark.parametrize('size', [(96, 96), (75, 110), (20, 17)])
def test_v2_matches_slow_reference(size):
    model = randomize_(SwinV2Backbone(**SMALL))
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_outputs_close(model(images), reference_forward(model, images))


@pytest.mark.parametrize('shift', [0, 2])
def test_window_attention_v2_matches_slow_reference(shift):
    attn = randomize_(WindowAttentionV2(embed_dims=16, num_heads=2, window_size=4))
    x = torch.randn(2, 7 * 10, 16)  # (B, H*W, C) for a 7 x 10 map: padded to 8 x 12
    layout = window_layout((7, 10), 4, shift, x.device, x.dtype)
    with torch.no_grad():
        error = attn(x, layout) - reference_window_attention(attn, x, (7, 10), 4, shift)
    assert error.abs().max().item() <= 1e-4


@pytest.mark.parametrize('gelu', [False, True])
def test_inference_linear_matches_torch(gelu):
    """The fused no-grad product (oneDNN on CPU) equals F.linear (+ exact GELU)."""
    x, weight, bias = torch.randn(2, 300, 96), torch.randn(384, 96), torch.randn(384)
    expected = F.gelu(F.linear(x, weight, bias)) if gelu else F.linear(x, weight, bias)
    with torch.no_grad():
        assert torch.allclose(linear(x, weight, bias, gelu), expected, atol=1e-4)
    # with autograd: differentiable, gradients checked against finite differences
    inputs = [t[:1, :3, :8].double().requires_grad_() for t in (x, )] + [
        weight[:5, :8].double().requires_grad_(), bias[:5].double().requires_grad_()]
    assert torch.autograd.gradcheck(lambda *args: linear(*args, gelu), inputs)


@pytest.mark.parametrize('per_window_mask', [False, True])
@pytest.mark.parametrize('scale', [None, 1.0])
def test_inference_window_attention_matches_sdpa(per_window_mask, scale):
    """The no-grad per-head products equal SDPA on strided q/k/v views as the blocks pass them
    (position bias broadcast over windows, or one mask per window)."""
    windows, heads, N, d = 5, 3, 49, 8
    qkv = torch.randn(windows, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (windows, heads, N, d) views
    mask = torch.randn(windows if per_window_mask else 1, heads, N, N)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    with torch.no_grad():
        fast = window_attention(q, k, v, mask, scale)
    assert fast.shape == expected.shape
    assert torch.allclose(fast, expected, atol=1e-5)


@pytest.mark.parametrize('cls', [SwinBackbone, SwinV2Backbone])
def test_inference_and_autograd_paths_agree(cls):
    """No-grad forward (oneDNN products, fused attention) equals the differentiable one."""
    model = randomize_(cls(**SMALL))
    images = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        fast = model(images)
    assert_outputs_close(fast, [o.detach() for o in model(images)], atol=1e-5)


@pytest.mark.parametrize('hw, shift', [((7, 7), 0), ((9, 12), 3), ((3, 5), 0)])
def test_window_reorder_matches_plain_indexing_and_passes_gradcheck(hw, shift):
    """Raster -> windows (padding zeroed) and back, against plain indexing, and their
    gather-only backward against autograd's (gradcheck in float64)."""
    layout = window_layout(hw, 7, shift, torch.device('cpu'), torch.float64)
    x = torch.randn(2, hw[0] * hw[1], 3, dtype=torch.float64, requires_grad=True)
    expected = x[:, layout.window_tokens].clone()
    if layout.pad_slots is not None:
        expected[:, layout.pad_slots] = 0
    windows = gather_windows(x, layout)
    assert torch.equal(windows, expected)
    assert torch.equal(scatter_windows(windows, layout), x)
    with export_mode():  # a gather per chunk from the tokens and an appended zero token
        chunks = gather_window_chunks(x.detach(), layout, 10)
        assert torch.equal(gather_windows(x.detach(), layout), expected)
    assert [len(chunk[0]) for chunk in chunks[:-1]] == [10] * (len(chunks) - 1)
    assert torch.equal(torch.cat(chunks, dim=1), expected)
    assert torch.autograd.gradcheck(lambda t: gather_windows(t, layout), (x, ))
    y = torch.randn(2, windows.shape[1], 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: scatter_windows(t, layout), (y, ))


def test_shift_mask_matches_slice_painting():
    for Hp, Wp in [(7, 7), (14, 21), (28, 14)]:
        ours = shift_window_mask((Hp, Wp), 7, 3).squeeze(1)
        assert torch.equal(ours, reference_shift_mask(Hp, Wp, 7, 3))


def test_v2_pretrained_window_normalises_offsets():
    """Offsets are scaled by the pre-training window, so the bias at offset (6, 6) of a window-12
    model pretrained with window 7 equals the corner bias of the window-7 model."""
    small = randomize_(WindowAttentionV2(8, 2, window_size=7))
    large = WindowAttentionV2(8, 2, window_size=12, pretrained_window_size=7)
    large.load_state_dict(small.state_dict())
    with torch.no_grad():
        corner_small = small.position_bias()[0, :, 6 * 7 + 6, 0]  # query (6, 6), key (0, 0)
        corner_large = large.position_bias()[0, :, 6 * 12 + 6, 0]  # the same offset (6, 6)
    assert torch.allclose(corner_large, corner_small, atol=1e-6)


# ---------------------------------------------------------------------------- checkpoints
OUT_NORM_KEYS = sorted(f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))


def test_official_v1_checkpoint_matches_mmdet_converter(tmp_path):
    """An official v1 checkpoint loads with only the detection output norms missing, and gives
    the features of mmdet's model loaded through mmdet's own official->mmdet converter."""
    official = official_swin_state_dict(SMALL)
    reference = mmdet_swin(**SMALL)  # random output norms, copied into ours below
    mmdet_sd = {k[len('backbone.'):]: v for k, v in swin_converter(official).items()
                if not k.endswith('relative_position_index')}  # official files hold zeros here
    missing, _ = reference.load_state_dict(mmdet_sd, strict=False)
    assert all(k.startswith('norm') or k.endswith('relative_position_index') for k in missing)

    ours = SwinBackbone(allow_partial_checkpoint=True, **SMALL)  # without output norms
    converted = convert_swin_checkpoint(official, ours)
    missing, unexpected = ours.load_state_dict(converted, strict=False)
    assert sorted(missing) == OUT_NORM_KEYS and unexpected == []
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if k.startswith('norm')},
                         strict=False)
    images = torch.randn(1, 3, 90, 120)
    with torch.no_grad():
        assert_outputs_close(ours.eval()(images), reference(images))


def test_official_detection_checkpoint_loads_without_missing_keys(tmp_path):
    """A detector checkpoint (``backbone.`` prefix, output norms, neck) leaves nothing missing."""
    official = official_swin_state_dict(SMALL)
    for key in ('norm.weight', 'norm.bias', 'head.weight', 'head.bias'):
        del official[key]
    official.update({key: torch.ones(32 * 2**int(key[4])) for key in OUT_NORM_KEYS})
    detector = {'backbone.' + k: v for k, v in official.items()}
    detector['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    model = SwinBackbone(**SMALL)
    converted = convert_swin_checkpoint({k[len('backbone.'):]: v for k, v in detector.items()
                                         if k.startswith('backbone.')}, model)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert missing == [] and unexpected == []
    ours_loaded(tmp_path, detector, **SMALL)  # and through the loader, without errors


def test_official_v2_checkpoint_loads(tmp_path):
    official = official_swin_state_dict(SMALL, v2=True)
    model = SwinV2Backbone(allow_partial_checkpoint=True, **SMALL)  # without output norms
    missing, unexpected = model.load_state_dict(convert_swin_checkpoint(official, model),
                                                strict=False)
    assert sorted(missing) == OUT_NORM_KEYS and unexpected == []
    merged = model.stages[1].downsample.norm.weight
    assert torch.equal(merged, official['layers.1.downsample.norm.weight'])
    loaded = ours_loaded(tmp_path, official, SwinV2Backbone, **SMALL)
    with torch.no_grad():
        loaded(torch.randn(1, 3, 64, 64))


def test_bias_table_resized_like_mmdet(tmp_path):
    """A window-7 checkpoint in a window-12 model: tables resized bicubically as mmdet does."""
    source = mmdet_swin(**SMALL)
    path = str(tmp_path / 'w7.pth')
    tensors = {'backbone.' + k: v for k, v in source.state_dict().items()
               if not k.endswith('relative_position_index')}  # mmdet would fail on their shape
    torch.save({'state_dict': tensors}, path)
    cfg = dict(SMALL, window_size=12)
    reference = SwinTransformer(init_cfg=ConfigDict(type='Pretrained', checkpoint=path), **cfg)
    reference.init_weights()
    ours = SwinBackbone(pretrained=path, **cfg)
    ours.init_weights()
    key = 'stages.2.blocks.1.attn.relative_position_bias_table'
    expected = reference.state_dict()[key.replace('attn.', 'attn.w_msa.')]
    assert ours.state_dict()[key].shape == (23 * 23, 4)
    assert torch.allclose(ours.state_dict()[key], expected, atol=1e-6)


def test_checkpoint_of_another_size_names_the_file(tmp_path):
    path = str(tmp_path / 'swin48.pth')
    torch.save(SwinBackbone(**dict(SMALL, embed_dims=48)).state_dict(), path)
    model = SwinBackbone(pretrained=path, **SMALL)
    with pytest.raises(ValueError, match='swin48.pth'):
        model.init_weights()


def test_init_cfg_pretrained_is_the_same_as_pretrained(tmp_path):
    source = randomize_(SwinBackbone(**SMALL))
    path = str(tmp_path / 'ours.pth')
    torch.save(source.state_dict(), path)
    model = SwinBackbone(init_cfg=dict(type='Pretrained', checkpoint=path), **SMALL)
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_init_from_scratch():
    v1, v2 = SwinBackbone(**SMALL), SwinV2Backbone(**SMALL)
    v1.init_weights()
    v2.init_weights()
    assert torch.equal(v1.stages[0].blocks[0].norm1.weight, torch.ones(32))
    assert v1.stages[0].blocks[0].attn.relative_position_bias_table.std() > 0
    post_norm = v2.stages[0].blocks[0].norm1
    assert not post_norm.weight.any() and not post_norm.bias.any()  # blocks start as identity
    assert torch.allclose(v2.stages[0].blocks[0].attn.logit_scale, torch.tensor(math.log(10)))


# --------------------------------------------------------------------- training switches
def test_frozen_stages_freeze_parameters_and_stay_in_eval():
    model = SwinBackbone(frozen_stages=2, **SMALL)
    model.train()
    frozen = [model.patch_embed, model.stages[0], model.stages[1], model.norm0, model.norm1]
    for module in frozen:
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    for module in (model.stages[2], model.stages[3], model.norm2):
        assert module.training and all(p.requires_grad for p in module.parameters())
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    assert model.stages[0].blocks[0].attn.qkv.weight.grad is None
    assert model.stages[2].blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize('cls', [SwinBackbone, SwinV2Backbone])
def test_with_cp_gives_same_output_and_gradients(cls):
    assert_checkpointing_matches(lambda with_cp: cls(drop_path_rate=0.0, with_cp=with_cp, **SMALL))


@pytest.mark.parametrize('cls', [SwinBackbone, SwinV2Backbone])
def test_backward_reaches_every_parameter(cls):
    model = randomize_(cls(**SMALL)).train()
    sum(o.mean() for o in model(torch.randn(2, 3, 45, 60))).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_out_indices_select_stages_and_norms():
    model = SwinBackbone(out_indices=(1, 3), **SMALL).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 8), (1, 256, 2, 2)]
    assert hasattr(model, 'norm1') and not hasattr(model, 'norm0')


def test_drop_path_only_in_training():
    model = randomize_(SwinBackbone(drop_path_rate=0.5, **SMALL))
    same = SwinBackbone(drop_path_rate=0.0, **SMALL).eval()
    same.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_outputs_close(model.eval()(images), same(images), atol=0)
        torch.manual_seed(0)
        first = model.train()(images)[-1]
        second = model(images)[-1]
    assert not torch.equal(first, second)


def test_registered_beside_mmdet_swin():
    assert MODELS.get('SwinTransformer') is SwinTransformer
    model = MODELS.build(dict(type='SwinV2Backbone', pretrained_window_size=(7, 7, 7, 0), **SMALL))
    assert isinstance(model, SwinV2Backbone)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize('cfg, name', [
    (dict(window_size=0), 'window_size'),
    (dict(num_heads=(1, 2, 4)), 'num_heads'),
    (dict(num_heads=(3, 6, 12, 24)), 'num_heads'),
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
])
def test_bad_config_names_the_parameter(cfg, name):
    with pytest.raises(ValueError, match=name):
        SwinBackbone(**dict(SMALL, **cfg))


def test_bad_v2_pretrained_window_names_the_parameter():
    with pytest.raises(ValueError, match='pretrained_window_size'):
        SwinV2Backbone(pretrained_window_size=(7, 7), **SMALL)


@pytest.mark.parametrize('arg', ['pretrained', 'init_cfg'])
def test_missing_checkpoint_is_named_when_loaded_not_when_built(arg):
    path = '/nonexistent/swin_tiny.pth'
    cfg = {arg: path if arg == 'pretrained' else dict(type='Pretrained', checkpoint=path)}
    model = SwinBackbone(**cfg, **SMALL)  # testing a trained detector does not need the file
    with pytest.raises(FileNotFoundError, match=f'model.backbone.{arg}') as error:
        model.init_weights()
    assert path in str(error.value)


def test_converter_names_every_dropped_tensor_with_its_reason():
    official = official_swin_state_dict(SMALL)
    converted = convert_swin_checkpoint(official, SwinBackbone(**SMALL))
    assert len(converted) + len(converted.dropped) == len(official)
    assert {k for k, why in converted.dropped.items() if why.startswith('classification')} == {
        'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}
    buffers = {k for k in official if k.endswith(('relative_position_index', 'attn_mask'))}
    assert {k for k, why in converted.dropped.items() if why.startswith('buffer')} == buffers
