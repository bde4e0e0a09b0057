"""PVT v1 / v2 backbones: numerics against mmdet's ``PyramidVisionTransformer(V2)`` with converted
weights, the '-li' variant and maps smaller than a kernel against a slow obvious implementation
written here, checkpoint conversion (official layout, also through mmdet's own converter), training
switches, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from backbone_helpers import assert_checkpointing_matches, assert_outputs_close, randomize_
from mmdet.models.backbones import PyramidVisionTransformer, PyramidVisionTransformerV2
from mmdet.models.backbones.pvt import pvt_convert
from mmdet.registry import MODELS
from official_layouts import official_pvt_state_dict
from torch import nn

from projects.pvt import PVTBackbone, PVTV2Backbone, convert_pvt_checkpoint
from projects.pvt.pvt import SpatialReductionAttention

SMALL = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), depths=(1, 2, 1, 1))
MMDET_SMALL = dict(embed_dims=16, num_heads=[1, 2, 4, 8], num_layers=[1, 2, 1, 1])
SIZES = [(224, 224), (64, 96), (90, 130), (47, 200)]  # mmdet's v1 needs 32 pixels per side


def official_eps_(reference: nn.Module) -> nn.Module:
    """mmdet builds every LayerNorm with eps 1e-6; the official code (and ours) keeps PyTorch's
    1e-5 in the patch embeddings and the key/value reductions."""
    for name, module in reference.named_modules():
        if isinstance(module, nn.LayerNorm) and name.endswith(('.0.norm', 'attn.norm')):
            module.eps = 1e-5
    return reference


def mmdet_pvt(cls=PyramidVisionTransformer, **cfg) -> nn.Module:
    return official_eps_(randomize_(cls(**cfg)))


def ours_loaded(tmp_path, state_dict, cls=PVTV2Backbone, **cfg) -> nn.Module:
    """``cls(**cfg)`` loading ``state_dict`` as a detector checkpoint (``backbone.`` prefix)
    through ``pretrained=`` (file, converter, loader)."""
    path = str(tmp_path / 'checkpoint.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in state_dict.items()}}, path)
    model = cls(pretrained=path, **cfg)
    model.init_weights()
    return model.eval()


# ---------------------------------------------------------------- slow obvious implementation
def average_bins(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, n, n): bin i averages rows floor(iH/n) .. ceil((i+1)H/n) - 1
    (columns alike), bins overlapping or repeating rows where H is not a multiple of n."""
    H, W = x.shape[-2:]
    rows = [(i * H // n, -(-(i + 1) * H // n)) for i in range(n)]
    cols = [(i * W // n, -(-(i + 1) * W // n)) for i in range(n)]
    return torch.stack([torch.stack([x[..., r0:r1, c0:c1].mean((-2, -1)) for c0, c1 in cols], -1)
                        for r0, r1 in rows], -2)


def reference_reduced(attn, x_map: torch.Tensor, linear: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B, M, C) tokens for keys/values. A map smaller than the reduction
    kernel is zero-padded at the bottom/right to one kernel."""
    if linear:
        reduced = F.conv2d(average_bins(x_map, 7), attn.sr.weight, attn.sr.bias)
        return F.gelu(attn.norm(reduced.flatten(2).transpose(1, 2)))
    if attn.sr_ratio == 1:
        return x_map.flatten(2).transpose(1, 2)
    s = attn.sr_ratio
    H, W = x_map.shape[-2:]
    padded = F.pad(x_map, (0, max(s - W, 0), 0, max(s - H, 0)))
    reduced = F.conv2d(padded, attn.sr.weight, attn.sr.bias, stride=s)
    return attn.norm(reduced.flatten(2).transpose(1, 2))


def reference_attention(attn, x: torch.Tensor, hw, linear: bool = False) -> torch.Tensor:
    """(B, N, C) -> (B, N, C): softmax(q k^T / sqrt(d)) v per head, written out."""
    B, N, C = x.shape
    heads, d = attn.num_heads, C // attn.num_heads
    reduced = reference_reduced(attn, x.transpose(1, 2).reshape(B, C, *hw), linear)
    q = attn.q(x).reshape(B, N, heads, d)
    k, v = attn.kv(reduced).reshape(B, -1, 2, heads, d).unbind(2)
    weights = (torch.einsum('bnhd,bmhd->bhnm', q, k) / math.sqrt(d)).softmax(-1)
    return attn.proj(torch.einsum('bhnm,bmhd->bnhd', weights, v).reshape(B, N, C))


def reference_mlp(mlp, x: torch.Tensor, hw, relu: bool) -> torch.Tensor:
    """(B, N, C) -> (B, N, C): fc1, [ReLU], depthwise 3x3 on the NCHW map, GELU, fc2."""
    hidden = mlp.fc1(x)
    if relu:
        hidden = hidden.clamp_min(0)
    B, N, channels = hidden.shape
    hidden_map = hidden.transpose(1, 2).reshape(B, channels, *hw)
    hidden = F.conv2d(hidden_map, mlp.dwconv.weight, mlp.dwconv.bias, padding=1,
                      groups=channels).flatten(2).transpose(1, 2)
    return mlp.fc2(F.gelu(hidden))


def reference_forward_v2(model, images, linear: bool):
    """A v2 backbone's output computed block by block with the written-out attention / MLP
    (``linear``: the '-li' reduction and ReLU)."""
    x, outs = images, []
    for stage in model.stages:
        tokens, hw = stage.patch_embed(x)
        for block in stage.blocks:
            tokens = tokens + reference_attention(block.attn, block.norm1(tokens), hw, linear)
            tokens = tokens + reference_mlp(block.mlp, block.norm2(tokens), hw, relu=linear)
        tokens = stage.norm(tokens)
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *hw)
        outs.append(x)
    return outs


# ------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize('size', SIZES)
def test_v1_matches_mmdet_at_every_stage(tmp_path, size):
    """Converted mmdet weights give mmdet's features, position embeddings resized to the grid."""
    reference = mmdet_pvt(PyramidVisionTransformer, **MMDET_SMALL)
    ours = ours_loaded(tmp_path, reference.state_dict(), PVTBackbone, **SMALL)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_outputs_close(ours(images), reference(images))


@pytest.mark.parametrize('size', SIZES + [(33, 45)])
def test_v2_matches_mmdet_at_every_stage(tmp_path, size):
    reference = mmdet_pvt(PyramidVisionTransformerV2, **MMDET_SMALL)
    ours = ours_loaded(tmp_path, reference.state_dict(), PVTV2Backbone, **SMALL)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_outputs_close(ours(images), reference(images))


def test_v2_b0_matches_mmdet(tmp_path):
    reference = mmdet_pvt(PyramidVisionTransformerV2, embed_dims=32, num_layers=[2, 2, 2, 2])
    ours = ours_loaded(tmp_path, reference.state_dict(), PVTV2Backbone, arch='b0')
    images = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        assert_outputs_close(ours(images), reference(images))


def test_out_indices_select_stages(tmp_path):
    reference = mmdet_pvt(PyramidVisionTransformer, out_indices=(0, 2), **MMDET_SMALL)
    ours = ours_loaded(tmp_path, reference.state_dict(), PVTBackbone, out_indices=(0, 2),
                       **SMALL)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = ours(images)
        assert_outputs_close(outs, reference(images))
    assert [o.shape[1] for o in outs] == [16, 64]


@pytest.mark.parametrize('size', [(64, 96), (90, 130), (20, 17)])
def test_v2_linear_matches_slow_reference(size):
    """'-li': keys/values from 7x7 average pooling (a first map below 7x7 at 20x17), ReLU MLP."""
    model = randomize_(PVTV2Backbone(linear=True, **SMALL))
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_outputs_close(model(images), reference_forward_v2(model, images, linear=True))


def test_v2_matches_slow_reference():
    """The written-out reference agrees with mmdet-pinned v2 (so it pins '-li' fairly)."""
    model = randomize_(PVTV2Backbone(**SMALL))
    images = torch.randn(1, 3, 75, 110)
    with torch.no_grad():
        assert_outputs_close(model(images), reference_forward_v2(model, images, linear=False))


@pytest.mark.parametrize('hw', [(5, 4), (3, 12), (1, 1)])
def test_map_smaller_than_reduction_is_zero_padded(hw):
    """Where the references fail (a map below the reduction kernel), keys/values come from the
    map zero-padded to one kernel."""
    attn = randomize_(SpatialReductionAttention(16, 2, sr_ratio=8))
    x = torch.randn(2, hw[0] * hw[1], 16)
    with torch.no_grad():
        error = attn(x, hw) - reference_attention(attn, x, hw)
    assert error.abs().max().item() <= 1e-5


@pytest.mark.parametrize('cls', [PVTBackbone, PVTV2Backbone])
def test_any_input_size(cls):
    """v1 strides drop the remainder (min. one token), v2's padded convolutions round up."""
    model = cls(**SMALL).eval()
    for size in [(1, 1), (20, 17), (31, 40)]:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *size))
        h, w = size
        for i, out in enumerate(outs):
            if cls is PVTBackbone:
                h, w = max(h // (4 if i == 0 else 2), 1), max(w // (4 if i == 0 else 2), 1)
            else:
                h, w = math.ceil(h / (4 if i == 0 else 2)), math.ceil(w / (4 if i == 0 else 2))
            assert tuple(out.shape) == (1, SMALL['embed_dims'][i], h, w)
            assert out.isfinite().all()


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize('version', [1, 2])
def test_official_checkpoint_matches_mmdet_converter(version):
    """An official checkpoint loads into ours with no key missing or unexpected, and gives the
    features of mmdet's model loaded through mmdet's own official->mmdet converter."""
    official = official_pvt_state_dict(SMALL, version)
    cls, reference_cls = ((PVTBackbone, PyramidVisionTransformer) if version == 1 else
                          (PVTV2Backbone, PyramidVisionTransformerV2))
    reference = official_eps_(reference_cls(**MMDET_SMALL))
    missing, _ = reference.load_state_dict(pvt_convert(official), strict=False)
    assert missing == []
    ours = cls(**SMALL)
    missing, unexpected = ours.load_state_dict(convert_pvt_checkpoint(official, ours),
                                               strict=False)
    assert missing == [] and unexpected == []
    images = torch.randn(1, 3, 90, 120)
    with torch.no_grad():
        assert_outputs_close(ours.eval()(images), reference.eval()(images))


def test_official_v1_class_token_embedding_dropped():
    official = official_pvt_state_dict(SMALL, 1)
    ours = PVTBackbone(**SMALL)
    converted = convert_pvt_checkpoint(official, ours)
    assert torch.equal(converted['stages.3.pos_embed'], official['pos_embed4'][:, 1:])
    assert not any(k.startswith(('cls_token', 'norm.', 'head.')) for k in converted)


def test_official_v2_linear_checkpoint_loads_without_missing_keys(tmp_path):
    official = official_pvt_state_dict(SMALL, 2, linear=True)
    model = PVTV2Backbone(linear=True, **SMALL)
    missing, unexpected = model.load_state_dict(convert_pvt_checkpoint(official, model),
                                                strict=False)
    assert missing == [] and unexpected == []
    loaded = ours_loaded(tmp_path, official, PVTV2Backbone, linear=True, **SMALL)
    block = loaded.stages[3].blocks[0]
    assert torch.equal(block.attn.sr.weight, official['block4.0.attn.sr.weight'])
    assert torch.equal(block.mlp.dwconv.weight, official['block4.0.mlp.dwconv.dwconv.weight'])


def test_checkpoint_of_another_size_names_the_file(tmp_path):
    path = str(tmp_path / 'pvt_v2_b1.pth')
    torch.save(PVTV2Backbone(arch='b1').state_dict(), path)
    model = PVTV2Backbone(arch='b0', pretrained=path)
    with pytest.raises(ValueError, match='pvt_v2_b1.pth'):
        model.init_weights()


def test_init_from_scratch():
    model = PVTBackbone(**SMALL)
    model.init_weights()
    block = model.stages[0].blocks[0]
    assert torch.equal(block.norm1.weight, torch.ones(16)) and not block.attn.q.bias.any()
    assert 0.01 < model.stages[0].pos_embed.std() < 0.03
    sr = block.attn.sr.weight  # He-normal over fan-out 8 * 8 * 16
    assert abs(sr.std().item() - math.sqrt(2 / (8 * 8 * 16))) < 0.01


# --------------------------------------------------------------------- training switches
@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages_freeze_parameters_and_stay_in_eval(frozen_stages):
    model = PVTBackbone(frozen_stages=frozen_stages, **SMALL)
    model.train()
    first = model.stages[0]
    frozen = [first.patch_embed, *model.stages[:frozen_stages]]
    trainable = [first.blocks] if frozen_stages == 0 else []
    trainable += list(model.stages[max(frozen_stages, 1):])
    assert not first.pos_embed.requires_grad
    for module in frozen:
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    for module in trainable:
        assert module.training and all(p.requires_grad for p in module.parameters())
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    assert first.patch_embed.proj.weight.grad is None
    assert model.stages[3].blocks[0].attn.q.weight.grad is not None


@pytest.mark.parametrize('cls, cfg', [(PVTBackbone, {}), (PVTV2Backbone, dict(linear=True))])
def test_with_cp_gives_same_output_and_gradients(cls, cfg):
    assert_checkpointing_matches(
        lambda with_cp: cls(drop_path_rate=0.0, with_cp=with_cp, **cfg, **SMALL))


@pytest.mark.parametrize('cls, cfg', [(PVTBackbone, {}), (PVTV2Backbone, {}),
                                      (PVTV2Backbone, dict(linear=True))])
def test_backward_reaches_every_parameter(cls, cfg):
    model = randomize_(cls(**cfg, **SMALL)).train()
    sum(o.mean() for o in model(torch.randn(2, 3, 45, 60))).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dropout_and_drop_path_only_in_training():
    model = randomize_(PVTBackbone(drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.5,
                                   **SMALL))
    same = PVTBackbone(drop_path_rate=0.0, **SMALL).eval()
    same.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_outputs_close(model.eval()(images), same(images), atol=0)
        first = model.train()(images)[-1]
        second = model(images)[-1]
    assert not torch.equal(first, second)


def test_registered_beside_mmdet_pvt():
    assert MODELS.get('PyramidVisionTransformer') is PyramidVisionTransformer
    assert MODELS.get('PyramidVisionTransformerV2') is PyramidVisionTransformerV2
    assert isinstance(MODELS.build(dict(type='PVTBackbone', arch='tiny')), PVTBackbone)
    model = MODELS.build(dict(type='PVTV2Backbone', arch='b2', linear=True))
    assert model.num_features == [64, 128, 320, 512] and model.stages[0].blocks[0].attn.linear


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize('cfg, message', [
    (dict(arch='b9'), 'arch'),
    (dict(sr_ratios=(8, 4, 2)), 'sr_ratios'),
    (dict(num_heads=(1, 2, 5)), 'num_heads'),
    (dict(depths=(2, 2, 2, 2, 2)), 'depths'),
    (dict(embed_dims=(32, 64, 160)), 'embed_dims'),
    (dict(mlp_ratios=(8, 8, 4, 0)), 'mlp_ratios'),
    (dict(embed_dims=(32, 64, 160, 250)), r'embed_dims\[3\]=250 .* num_heads\[3\]=8'),
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(out_indices=()), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(num_stages=0), 'num_stages'),
])
def test_bad_config_names_the_parameter(cfg, message):
    with pytest.raises(ValueError, match=message):
        PVTV2Backbone(**cfg)


def test_bad_v1_config_names_the_parameter():
    with pytest.raises(ValueError, match='arch'):
        PVTBackbone(arch='b0')
    with pytest.raises(ValueError, match='pretrain_img_size'):
        PVTBackbone(pretrain_img_size=16)
    with pytest.raises(ValueError, match='pretrain_img_size'):
        PVTBackbone(pretrain_img_size=(224, 224, 3))


def test_converter_names_every_dropped_tensor_with_its_reason():
    official = official_pvt_state_dict(SMALL, 1)
    converted = convert_pvt_checkpoint(official, PVTBackbone(**SMALL))
    whole = {k for k in converted.dropped if '[' not in k}
    assert len(converted) + len(whole) == len(official)
    assert whole == {'cls_token', 'norm.weight', 'norm.bias', 'head.weight', 'head.bias'}
    assert converted.dropped['stages.3.pos_embed[:, 0]'].startswith("the class token's")
