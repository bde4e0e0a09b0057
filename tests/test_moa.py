"""MOA backbone: window attention and the MOA module against slow obvious implementations written
here, globality of the MOA module, any input size, official checkpoint conversion, training
switches, errors."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from backbone_helpers import randomize_
from mmdet.registry import MODELS
from numeric_helpers import assert_max_abs_close, assert_relative_close

from projects.common.window_ops import window_layout
from projects.moa import MOABackbone, convert_moa_checkpoint
from projects.moa.moa import MOAModule, OfficialMOAModule, patch_offset_index
from projects.swin.swin import SwinBlock, relative_position_index

SMALL = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4,
             reduction=4)
# the official code's fixed choices: window 14, overlap 1, reduction 32, 224 x 224 inputs
OFFICIAL_SMALL = dict(embed_dims=32, depths=(1, 2, 1), num_heads=(1, 2, 4), window_size=14)


# ---------------------------------------------------------------- slow obvious implementation
def table_bias(table, dy, dx, side):
    """(heads,) bias of offset (dy, dx) in a ((2*side-1)^2, heads) table, offsets clipped."""
    dy, dx = (max(-(side - 1), min(side - 1, d)) for d in (dy, dx))
    return table[(dy + side - 1) * (2 * side - 1) + dx + side - 1]


def reference_window_attention(attn, x, hw, ws):
    """(B, H*W, C) -> (B, H*W, C): zero padding to whole windows, then for each window explicit
    attention with the bias looked up per token pair; cropped."""
    B, _, C = x.shape
    H, W = hw
    heads, d = attn.num_heads, C // attn.num_heads
    padded = F.pad(x.view(B, H, W, C), (0, 0, 0, -W % ws, 0, -H % ws))
    out = torch.zeros_like(padded)
    positions = [(r, c) for r in range(ws) for c in range(ws)]
    bias = torch.stack([torch.stack([table_bias(attn.relative_position_bias_table,
                                                qr - kr, qc - kc, ws)
                                     for (kr, kc) in positions]) for (qr, qc) in positions])
    for top in range(0, padded.shape[1], ws):
        for left in range(0, padded.shape[2], ws):
            window = padded[:, top:top + ws, left:left + ws].reshape(B, ws * ws, C)
            q, k, v = (t.reshape(B, ws * ws, heads, d) for t in attn.qkv(window).chunk(3, -1))
            logits = torch.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(d)
            logits = logits + bias.permute(2, 0, 1)
            attended = torch.einsum('bhqk,bkhd->bqhd', logits.softmax(-1), v)
            out[:, top:top + ws, left:left + ws] = attn.proj(
                attended.reshape(B, ws * ws, C)).view(B, ws, ws, C)
    return out[:, :H, :W].reshape(B, H * W, C)


def reference_block(block, x, hw, ws):
    x = x + reference_window_attention(block.attn, block.norm1(x), hw, ws)
    return x + block.mlp(block.norm2(x))


def reference_patch_tokens(attn, x):
    """(B, C, H, W) map -> (B, gh*gw, C): explicit 1x1 reduction, zero canvas, query and
    overlapping key patches cut out one by one, per-patch attention with explicit offsets, added
    to the query embedding."""
    B, C, H, W = x.shape
    ws, o, side, heads = attn.window_size, attn.overlap, attn.table_side, attn.num_heads
    d = C // heads
    reduced = torch.einsum('oc,bchw->bohw', attn.reduce.weight[:, :, 0, 0], x)
    reduced = reduced + attn.reduce.bias[:, None, None]
    gh, gw = math.ceil(H / ws), math.ceil(W / ws)
    canvas = x.new_zeros(B, reduced.shape[1], gh * ws + 2 * o, gw * ws + 2 * o)
    canvas[:, :, o:o + H, o:o + W] = reduced
    cells = [(i, j) for i in range(gh) for j in range(gw)]
    queries, keys = [], []
    for i, j in cells:
        query = canvas[:, :, o + i * ws:o + (i + 1) * ws, o + j * ws:o + (j + 1) * ws]
        queries.append(query.permute(0, 2, 3, 1).reshape(B, -1))  # (row, col, channel)
        key = canvas[:, :, i * ws:i * ws + ws + 2 * o, j * ws:j * ws + ws + 2 * o]
        keys.append(key.reshape(B, -1))  # (channel, row, col)
    queries = attn.q(torch.stack(queries, 1))  # (B, N, C)
    q = queries.view(B, len(cells), heads, d)
    k, v = (t.reshape(B, len(cells), heads, d)
            for t in attn.kv(torch.stack(keys, 1)).chunk(2, -1))
    out = []
    for p, (pi, pj) in enumerate(cells):
        bias = torch.stack([table_bias(attn.relative_position_bias_table, pi - ni, pj - nj, side)
                            for ni, nj in cells])  # (N, heads)
        logits = torch.einsum('bhd,bnhd->bhn', q[:, p], k) / math.sqrt(d) + bias.t()
        out.append(torch.einsum('bhn,bnhd->bhd', logits.softmax(-1), v).reshape(B, C))
    return queries + attn.proj(torch.stack(out, 1))


def reference_moa(moa, x, hw):
    """(B, H*W, C) -> (B, H*W, C): the patch tokens, the MLP written out (LayerNorm, Linear,
    GELU, Linear, residual), the 1x1 convolution back as a matrix product per patch, and each
    token given its window's global feature by explicit loops."""
    B, _, C = x.shape
    H, W = hw
    ws = moa.window_size
    local = moa.norm1(x)
    patches = reference_patch_tokens(moa.attn, local.view(B, H, W, C).permute(0, 3, 1, 2))
    normed = F.layer_norm(patches, (C, ), moa.mlp_norm.weight, moa.mlp_norm.bias)
    hidden = F.gelu(normed @ moa.mlp.fc1.weight.t() + moa.mlp.fc1.bias)
    patches = patches + hidden @ moa.mlp.fc2.weight.t() + moa.mlp.fc2.bias
    features = patches @ moa.expand.weight[:, :, 0, 0].t() + moa.expand.bias  # (B, N, C)
    out = x.clone()
    for r in range(H):
        for c in range(W):
            out[:, r * W + c] += features[:, (r // ws) * math.ceil(W / ws) + c // ws]
    return out


def reference_forward(model, images):
    """The backbone's outputs computed with the references above, stage by stage."""
    x, hw = model.patch_embed(images)
    outs = []
    for i, stage in enumerate(model.stages):
        for block in stage.blocks:
            x = reference_block(block, x, hw, stage.window_size)
        if stage.moa is not None:
            x = reference_moa(stage.moa, x, hw)
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(x)
            outs.append(out.view(-1, *hw, out.shape[-1]).permute(0, 3, 1, 2))
        if stage.downsample is not None:
            x, hw = stage.downsample(x, hw)
    return outs


# ------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize('hw', [(8, 8), (6, 9), (3, 2)])
def test_window_attention_matches_slow_reference(hw):
    block = randomize_(SwinBlock(16, 2, window_size=4, shift=False))
    x = torch.randn(2, hw[0] * hw[1], 16)
    layout = window_layout(hw, 4, 0, x.device, x.dtype)
    with torch.no_grad():
        assert_max_abs_close(block.attn(x, layout),
                             reference_window_attention(block.attn, x, hw, 4), 1e-4)


@pytest.mark.parametrize('ws, overlap, hw, table_side', [
    (3, 1, (7, 10), 2),  # padded to whole windows; grid 3 x 4 wider than the table: clipped
    (3, 0, (6, 6), 2),  # keys without overlap
    (4, 2, (8, 12), 3),  # wide overlap, grid 2 x 3 inside the table
    (4, 1, (2, 3), 1),  # a map smaller than one window: a single patch
])
def test_moa_module_matches_slow_reference(ws, overlap, hw, table_side):
    moa = randomize_(MOAModule(8, 2, ws, overlap, reduction=2, table_side=table_side))
    x = torch.randn(2, hw[0] * hw[1], 8)
    with torch.no_grad():
        assert_max_abs_close(moa(x, hw), reference_moa(moa, x, hw), 1e-4)


@pytest.mark.parametrize('size', [(64, 64), (45, 70), (9, 13)])
def test_backbone_matches_slow_reference(size):
    model = randomize_(MOABackbone(**SMALL))
    images = torch.randn(1, 3, *size)
    with torch.no_grad():
        for ours, reference in zip(model(images), reference_forward(model, images)):
            assert_max_abs_close(ours, reference, 1e-4)


def test_patch_offset_index_is_swins_inside_the_table():
    """A square grid as large as the table indexes it as Swin's window index does."""
    assert torch.equal(patch_offset_index((5, 5), 5, torch.device('cpu')),
                       relative_position_index(5))


def test_inference_and_autograd_paths_agree():
    """No-grad forward (oneDNN products) equals the differentiable one."""
    model = randomize_(MOABackbone(**SMALL))
    images = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        fast = model(images)
    for a, b in zip(fast, model(images)):
        assert_max_abs_close(a, b.detach(), 1e-5)


# ------------------------------------------------------------------------------ globality
def far_window_change(model, images, stage_index):
    """Largest change of stage ``stage_index``'s output in its bottom-right window when the
    pixels of its top-left window are perturbed."""
    ws = model.stages[stage_index].window_size
    pixels = 4 * 2**stage_index * ws  # a window of the stage, in image pixels
    perturbed = images.clone()
    perturbed[..., :pixels, :pixels] += torch.randn_like(perturbed[..., :pixels, :pixels])
    with torch.no_grad():
        before, after = model(images)[stage_index], model(perturbed)[stage_index]
    return (after - before)[..., -ws:, -ws:].abs().max().item()


@pytest.mark.parametrize('stage_index', [0, 1])
def test_moa_spreads_information_across_the_map(stage_index):
    """Windows nest across patch mergings, so local attention alone keeps a far window blind to
    a perturbation; with the MOA modules it sees it."""
    model = randomize_(MOABackbone(**SMALL))
    images = torch.randn(1, 3, 128, 128)  # stage 0: 8 x 8 windows, stage 1: 4 x 4
    local_only = copy.deepcopy(model)
    for stage in local_only.stages:
        stage.moa = None
    assert far_window_change(model, images, stage_index) > 1e-5  # far above rounding noise
    assert far_window_change(local_only, images, stage_index) == 0.0


# --------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize('moa_style', ['paper', 'official'])
@pytest.mark.parametrize('size', [(224, 224), (96, 64), (100, 75), (20, 17), (8, 8)])
def test_any_input_size(size, moa_style):
    """Multiples of every window, non-multiples, and maps smaller than a window at every
    stage."""
    model = MOABackbone(moa_style=moa_style, **SMALL).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    for i, out in enumerate(outs):
        assert out.shape == (1, 16 * 2**i, h, w)
        h, w = math.ceil(h / 2), math.ceil(w / 2)


def test_paper_archs_and_overrides():
    tiny = MOABackbone('tiny')
    assert [len(s.blocks) for s in tiny.stages] == [2, 2, 8]
    assert tiny.num_features == [96, 192, 384]
    assert tiny.stages[2].moa is None and tiny.stages[2].downsample is None
    assert [len(s.blocks) for s in MOABackbone('small').stages] == [2, 2, 20]
    base = MOABackbone('base', depths=[1, 1, 1, 1], num_heads=[4, 8, 16, 32], window_size=7)
    assert base.num_features == [128, 256, 512, 1024]
    assert base.stages[0].window_size == 7 and base.stages[2].moa is not None
    assert base.stages[0].moa.attn.table_side == 8  # 224 / 4 / 7 patches per side


def test_out_indices_select_stages_and_norms():
    model = MOABackbone(**dict(SMALL, out_indices=(1, 3))).eval()
    assert hasattr(model, 'norm1') and not hasattr(model, 'norm0')
    with torch.no_grad():
        assert [o.shape[1] for o in model(torch.randn(1, 3, 32, 32))] == [32, 128]


# ---------------------------------------------------------------------------- checkpoints
def official_state_dict(embed_dims, depths, num_heads, window_size=14, img_size=224,
                        tensor=None):
    """Random weights under the key names and shapes of the official ``MOATransformer``
    (buffers and classifier included); ``tensor(*shape)`` makes each tensor."""
    generator = torch.Generator().manual_seed(1)
    tensor = tensor or (lambda *shape: 0.1 * torch.randn(*shape, generator=generator))
    ws, key_size, reduction = window_size, window_size + 2, 32
    sd = {'patch_embed.proj.weight': tensor(embed_dims, 3, 4, 4),
          'patch_embed.proj.bias': tensor(embed_dims),
          'patch_embed.norm.weight': tensor(embed_dims),
          'patch_embed.norm.bias': tensor(embed_dims)}
    resolution = img_size // 4
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        c = embed_dims * 2**i
        for j in range(depth):
            block = {'norm1.weight': tensor(c), 'norm1.bias': tensor(c),
                     'attn.relative_position_bias_table': tensor((2 * ws - 1)**2, heads),
                     'attn.relative_position_index': torch.zeros(ws * ws, ws * ws).long(),
                     'attn.qkv.weight': tensor(3 * c, c), 'attn.qkv.bias': tensor(3 * c),
                     'attn.proj.weight': tensor(c, c), 'attn.proj.bias': tensor(c),
                     'norm2.weight': tensor(c), 'norm2.bias': tensor(c),
                     'mlp.fc1.weight': tensor(4 * c, c), 'mlp.fc1.bias': tensor(4 * c),
                     'mlp.fc2.weight': tensor(c, 4 * c), 'mlp.fc2.bias': tensor(c)}
            sd.update({f'layers.{i}.blocks.{j}.{k}': v for k, v in block.items()})
        if i < len(depths) - 1 and resolution >= ws:  # the official builds no MOA otherwise
            seq_len, reduced = resolution // ws, c // reduction
            layer = {'glb_attn.pre_conv.weight': tensor(reduced, c, 1, 1),
                     'glb_attn.pre_conv.bias': tensor(reduced),
                     'glb_attn.relative_position_bias_table': tensor((2 * seq_len - 1)**2,
                                                                     heads),
                     'glb_attn.relative_position_index':
                         torch.zeros(seq_len**2, seq_len**2).long(),
                     'glb_attn.q.weight': tensor(c, reduced * ws * ws),
                     'glb_attn.q.bias': tensor(c),
                     'glb_attn.kv.weight': tensor(2 * c, reduced * key_size * key_size),
                     'glb_attn.kv.bias': tensor(2 * c),
                     'glb_attn.proj.weight': tensor(c, c), 'glb_attn.proj.bias': tensor(c),
                     'post_conv.weight': tensor(c, c, 3, 3), 'post_conv.bias': tensor(c),
                     'norm1.weight': tensor(c), 'norm1.bias': tensor(c),
                     'norm2.weight': tensor(c), 'norm2.bias': tensor(c)}
            sd.update({f'layers.{i}.{k}': v for k, v in layer.items()})
        if i < len(depths) - 1:
            sd.update({f'layers.{i}.downsample.reduction.weight': tensor(2 * c, 4 * c),
                       f'layers.{i}.downsample.norm.weight': tensor(4 * c),
                       f'layers.{i}.downsample.norm.bias': tensor(4 * c)})
        resolution //= 2
    last = embed_dims * 2**(len(depths) - 1)
    sd.update({'norm.weight': tensor(last), 'norm.bias': tensor(last),
               'head.weight': tensor(1000, last), 'head.bias': tensor(1000)})
    return sd


# what only one MOA style has, per MOA stage: the paper's MLP and 1x1 convolution back, the
# official block's LayerNorm and 3x3 convolution
PAPER_ONLY = ('moa.mlp_norm.weight', 'moa.mlp_norm.bias', 'moa.mlp.fc1.weight', 'moa.mlp.fc1.bias',
              'moa.mlp.fc2.weight', 'moa.mlp.fc2.bias', 'moa.expand.weight', 'moa.expand.bias')
OFFICIAL_ONLY = ('moa.norm2.weight', 'moa.norm2.bias', 'moa.post_conv.weight',
                 'moa.post_conv.bias')


def per_moa_stage(names, num_stages):
    return sorted(f'stages.{i}.{name}' for i in range(num_stages - 1) for name in names)


def test_official_checkpoint_fills_the_official_style_whole(tmp_path):
    """An official checkpoint (mmengine-style 'model' wrapper, as the official training saves)
    fills every tensor of moa_style='official' through ``pretrained=``."""
    official = official_state_dict(**OFFICIAL_SMALL)
    path = str(tmp_path / 'moa_official.pth')
    torch.save({'model': official, 'epoch': 3}, path)
    model = MOABackbone(pretrained=path, out_indices=(2, ), moa_style='official',
                        **OFFICIAL_SMALL)
    model.init_weights()
    missing, unexpected = model.load_state_dict(convert_moa_checkpoint(official, model),
                                                strict=False)
    assert missing == [] and unexpected == []
    own = model.state_dict()
    assert torch.equal(own['stages.1.moa.attn.reduce.weight'],
                       official['layers.1.glb_attn.pre_conv.weight'])
    assert torch.equal(own['stages.0.moa.norm1.weight'], official['layers.0.norm1.weight'])
    assert torch.equal(own['stages.0.moa.post_conv.weight'], official['layers.0.post_conv.weight'])
    assert torch.equal(own['stages.1.moa.norm2.bias'], official['layers.1.norm2.bias'])
    assert torch.equal(own['norm2.bias'], official['norm.bias'])


def test_checkpoint_of_the_other_moa_style_is_refused_naming_the_switch():
    official = official_state_dict(**OFFICIAL_SMALL)
    with pytest.raises(ValueError, match="moa_style='official'"):
        convert_moa_checkpoint(official, MOABackbone(**OFFICIAL_SMALL))
    paper = MOABackbone(**OFFICIAL_SMALL).state_dict()
    with pytest.raises(ValueError, match="of moa_style='paper'.*build the backbone with "
                                         "moa_style='paper'"):
        MOABackbone(moa_style='official', **OFFICIAL_SMALL).load_state_dict(paper)


def test_the_styles_differ_only_in_the_moa_block():
    paper = set(MOABackbone(**OFFICIAL_SMALL).state_dict())
    official = set(MOABackbone(moa_style='official', **OFFICIAL_SMALL).state_dict())
    assert sorted(paper - official) == per_moa_stage(PAPER_ONLY, 3)
    assert sorted(official - paper) == per_moa_stage(OFFICIAL_ONLY, 3)


@pytest.mark.parametrize('arch, cfg', [
    ('tiny', dict(embed_dims=96, depths=(2, 2, 8), num_heads=(3, 6, 12))),
    ('base', dict(embed_dims=128, depths=(2, 2, 20), num_heads=(4, 8, 16))),
])
def test_official_paper_models_convert_name_for_name_and_shape_for_shape(arch, cfg):
    """Every official tensor lands on a tensor of moa_style='official' of the same shape."""
    model = MOABackbone(arch, out_indices=(2, ), moa_style='official')
    converted = convert_moa_checkpoint(
        official_state_dict(**cfg, tensor=lambda *s: torch.empty(s, device='meta')), model)
    own = model.state_dict()
    assert own.keys() == converted.keys()
    assert all(converted[k].shape == own[k].shape for k in own)


def test_own_checkpoint_round_trip(tmp_path):
    source = randomize_(MOABackbone(**SMALL))
    path = str(tmp_path / 'ours.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}},
               path)
    model = MOABackbone(init_cfg=dict(type='Pretrained', checkpoint=path), **SMALL)
    model.init_weights()
    images = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        for a, b in zip(model.eval()(images), source(images)):
            assert torch.equal(a, b)


def test_init_from_scratch():
    model = MOABackbone(**SMALL)
    model.init_weights()
    moa_attn = model.stages[0].moa.attn
    assert torch.count_nonzero(moa_attn.relative_position_bias_table) == 0  # as official
    assert model.stages[0].blocks[0].attn.relative_position_bias_table.std() > 0
    assert torch.count_nonzero(moa_attn.q.bias) == 0
    assert torch.equal(model.stages[0].moa.norm1.weight, torch.ones(16))
    assert torch.count_nonzero(model.stages[0].moa.expand.weight) == 0  # MOA starts as identity
    x = torch.randn(1, 64, 16)
    with torch.no_grad():
        assert torch.equal(model.stages[0].moa(x, (8, 8)), x)


# ------------------------------------------------------------------------- training switches
def test_frozen_stages_freeze_parameters_and_stay_in_eval():
    model = MOABackbone(frozen_stages=1, **SMALL)
    model.train()
    frozen = [model.patch_embed, model.stages[0], model.norm0]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for part in frozen for m in part.modules())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    assert model.stages[1].training and model.stages[0].moa.attn.training is False


@pytest.mark.parametrize('moa_style', ['paper', 'official'])
def test_with_cp_gives_same_output_and_gradients(moa_style):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 48, 40)
    results = []
    for with_cp in (False, True):
        model = randomize_(MOABackbone(with_cp=with_cp, moa_style=moa_style, **SMALL)).train()
        loss = sum(out.square().mean() for out in model(images))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5), name


@pytest.mark.parametrize('moa_style', ['paper', 'official'])
def test_backward_reaches_every_parameter(moa_style):
    model = randomize_(MOABackbone(moa_style=moa_style, **SMALL)).train()
    sum(out.sum() for out in model(torch.randn(1, 3, 40, 40))).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registered_in_mmdet_models():
    model = MODELS.build(dict(type='MOABackbone', **SMALL))
    assert isinstance(model, MOABackbone)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize('cfg, name', [
    (dict(SMALL, reduction=3), 'reduction'),
    (dict(SMALL, reduction=0), 'reduction'),
    (dict(SMALL, overlap=4), 'overlap'),
    (dict(SMALL, overlap=-1), 'overlap'),
    (dict(SMALL, window_size=0), 'window_size'),
    (dict(SMALL, window_size=-3), 'window_size'),
    (dict(SMALL, depths=(1, 1, 1)), 'depths'),
    (dict(SMALL, num_heads=(1, 3, 4, 8)), 'num_heads'),
    (dict(SMALL, embed_dims=18, num_heads=(4, 2, 4, 8), reduction=2), 'embed_dims'),
    (dict(SMALL, out_indices=(0, 4)), 'out_indices'),
    (dict(SMALL, out_indices=(-1, )), 'out_indices'),
    (dict(SMALL, frozen_stages=5), 'frozen_stages'),
    (dict(SMALL, pretrain_img_size=0), 'pretrain_img_size'),
    (dict(arch='huge'), 'arch'),
    (dict(SMALL, moa_style='offical'), 'moa_style'),
])
def test_bad_config_names_the_parameter(cfg, name):
    with pytest.raises(ValueError, match=name):
        MOABackbone(**cfg)


def test_converter_names_every_dropped_tensor_with_its_reason():
    official = official_state_dict(**OFFICIAL_SMALL)
    model = MOABackbone(out_indices=(1, ), moa_style='official', **OFFICIAL_SMALL)
    converted = convert_moa_checkpoint(official, model)
    assert len(converted) + len(converted.dropped) == len(official)
    assert converted.dropped['head.weight'].startswith('classification')
    assert converted.dropped['norm.weight'] == 'final norm: this model has no norm2 (out_indices)'
    assert {k for k, why in converted.dropped.items() if why.startswith('buffer')} == {
        k for k in official if k.endswith('relative_position_index')}


def reference_official_moa_block(moa, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The official BasicLayer's MOA part (models/MOA_transformer.py, read there and written out
    step by step with its reshapes and views of memory), on (B, H*W, C) tokens, H and W whole
    windows; the weights of ``moa`` (an OfficialMOAModule). Official names in comments."""
    B, L, C = x.shape
    ws = moa.window_size
    attn = moa.attn
    normed = F.layer_norm(x, (C, ), moa.norm1.weight, moa.norm1.bias)  # norm1
    # GlobalAttention: x.reshape(-1, C, H, W) of the token buffer, then pre_conv
    reduced = F.conv2d(normed.reshape(B, C, H, W), attn.reduce.weight, attn.reduce.bias)
    c, gh, gw = reduced.shape[1], H // ws, W // ws
    N = gh * gw
    # queryembedding: Rearrange('b c (h p1) (w p2) -> b (p1 p2 c) h w'), then .view(B, -1, D)
    features = torch.empty(B, ws * ws * c, gh, gw)
    for p1 in range(ws):
        for p2 in range(ws):
            for ch in range(c):
                features[:, (p1 * ws + p2) * c + ch] = reduced[:, ch, p1::ws, p2::ws]
    query = F.linear(features.reshape(B, N, -1), attn.q.weight, attn.q.bias)
    # keyembedding: nn.Unfold(ws + 2, stride=14 (= ws), padding=1), then .view(B, -1, D')
    keys = F.unfold(reduced, ws + 2, padding=1, stride=ws).reshape(B, N, -1)
    kv = F.linear(keys, attn.kv.weight, attn.kv.bias)
    heads = attn.num_heads
    q = query.reshape(B, N, heads, -1).permute(0, 2, 1, 3)
    k, v = kv.reshape(B, N, 2, heads, -1).permute(2, 0, 3, 1, 4)
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    # relative_position_index over the seq_len x seq_len patch grid (square: gh == gw)
    bias = torch.empty(heads, N, N)
    for i in range(N):
        for j in range(N):
            dh, dw = i // gw - j // gw + gh - 1, i % gw - j % gw + gw - 1
            bias[:, i, j] = attn.relative_position_bias_table[dh * (2 * gh - 1) + dw]
    out = (logits + bias).softmax(-1) @ v
    glb = F.linear(out.transpose(1, 2).reshape(B, N, C), attn.proj.weight, attn.proj.bias)
    # BasicLayer: local_attn = x.view(B, no_window, ws, ws, C) (x: norm1's output), plus the
    # global feature, viewed as (B, C, H, W); the shortcut viewed alike; norm2; post_conv
    local = normed.view(B, N, ws, ws, C)
    y = (local + glb.view(B, N, 1, 1, C)).view(B, C, H, W)
    y = x.reshape(B, C, H, W) + y
    y = F.layer_norm(y.view(B, H * W, C), (C, ), moa.norm2.weight, moa.norm2.bias)
    post = F.conv2d(y.view(B, C, H, W), moa.post_conv.weight, moa.post_conv.bias, padding=1)
    return y + post.view(B, H * W, C)


@pytest.mark.parametrize('hw', [(28, 28), (42, 42)])
def test_official_moa_block_matches_the_official_computation(hw):
    moa = OfficialMOAModule(64, num_heads=2, window_size=14, overlap=1, reduction=32,
                            table_side=hw[0] // 14)
    randomize_(moa)
    x = torch.randn(2, hw[0] * hw[1], 64)
    with torch.no_grad():
        assert_relative_close(moa(x, hw), reference_official_moa_block(moa, x, *hw), 1e-5)


@pytest.mark.parametrize('hw', [(20, 33), (9, 9)])
def test_official_moa_block_pads_other_sizes_to_whole_windows(hw):
    """Other sizes (detection): zero-padded at the bottom/right to whole windows, computed as at
    the padded size, cropped: the first hw tokens of the padded computation."""
    moa = OfficialMOAModule(64, num_heads=2, window_size=14, overlap=1, reduction=32,
                            table_side=2)
    randomize_(moa)
    x = torch.randn(1, hw[0] * hw[1], 64)
    Hp, Wp = -(-hw[0] // 14) * 14, -(-hw[1] // 14) * 14
    padded = F.pad(x.view(1, *hw, 64), (0, 0, 0, Wp - hw[1], 0, Hp - hw[0])).view(1, -1, 64)
    with torch.no_grad():
        expected = moa(padded, (Hp, Wp)).view(1, Hp, Wp, 64)[:, :hw[0], :hw[1]]
        assert torch.allclose(moa(x, hw), expected.reshape(1, -1, 64), atol=1e-5)
