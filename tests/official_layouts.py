"""Random weights under the key names of the official repositories (written from reading their
model files), for the converter tests: microsoft/Swin-Transformer and whai362/PVT."""
import math

import torch


def official_swin_state_dict(cfg, v2=False) -> dict:
    """Random weights under the official microsoft key names of a v1 / v2 classification model,
    buffers (relative indices, shift masks) included."""
    generator = torch.Generator().manual_seed(1)

    def rand(*shape, centre=0.0):
        return centre + 0.1 * torch.randn(*shape, generator=generator)

    dims, ws = cfg['embed_dims'], cfg['window_size']
    sd = {'patch_embed.proj.weight': rand(dims, 3, 4, 4), 'patch_embed.proj.bias': rand(dims),
          'patch_embed.norm.weight': rand(dims, centre=1.0), 'patch_embed.norm.bias': rand(dims)}
    for i, (depth, heads) in enumerate(zip(cfg['depths'], cfg['num_heads'])):
        c = dims * 2**i
        for j in range(depth):
            block = {'norm1.weight': rand(c, centre=1.0), 'norm1.bias': rand(c),
                     'norm2.weight': rand(c, centre=1.0), 'norm2.bias': rand(c),
                     'attn.qkv.weight': rand(3 * c, c), 'attn.proj.weight': rand(c, c),
                     'attn.proj.bias': rand(c),
                     'attn.relative_position_index': torch.zeros(ws * ws, ws * ws).long(),
                     'mlp.fc1.weight': rand(4 * c, c), 'mlp.fc1.bias': rand(4 * c),
                     'mlp.fc2.weight': rand(c, 4 * c), 'mlp.fc2.bias': rand(c)}
            if v2:
                block.update({'attn.logit_scale': rand(heads, 1, 1, centre=math.log(10)),
                              'attn.q_bias': rand(c), 'attn.v_bias': rand(c),
                              'attn.cpb_mlp.0.weight': rand(512, 2),
                              'attn.cpb_mlp.0.bias': rand(512),
                              'attn.cpb_mlp.2.weight': rand(heads, 512),
                              'attn.relative_coords_table': torch.zeros(1, 2 * ws - 1,
                                                                        2 * ws - 1, 2)})
            else:
                block.update({'attn.qkv.bias': rand(3 * c),
                              'attn.relative_position_bias_table': rand((2 * ws - 1)**2, heads)})
            if j % 2:
                block['attn_mask'] = torch.zeros(4, ws * ws, ws * ws)
            sd.update({f'layers.{i}.blocks.{j}.{k}': v for k, v in block.items()})
        if i < len(cfg['depths']) - 1:
            merged = 2 * c if v2 else 4 * c  # v2 normalises after the reduction
            sd.update({f'layers.{i}.downsample.reduction.weight': rand(2 * c, 4 * c),
                       f'layers.{i}.downsample.norm.weight': rand(merged, centre=1.0),
                       f'layers.{i}.downsample.norm.bias': rand(merged)})
    last = dims * 2**(len(cfg['depths']) - 1)
    sd.update({'norm.weight': torch.ones(last), 'norm.bias': torch.zeros(last),
               'head.weight': rand(1000, last), 'head.bias': rand(1000)})
    return sd


def official_pvt_state_dict(cfg, version: int, linear: bool = False) -> dict:
    """Random weights under the official whai362/PVT key names of a classification model (v1:
    position embeddings, the class token's in stage 4, ``cls_token``; v2: depthwise MLP
    convolutions, stage norms), with its ``norm`` / ``head``."""
    generator = torch.Generator().manual_seed(1)

    def rand(*shape, centre=0.0):
        return centre + 0.1 * torch.randn(*shape, generator=generator)

    def linear_layer(name, out_dims, in_dims):
        return {f'{name}.weight': rand(out_dims, in_dims), f'{name}.bias': rand(out_dims)}

    def norm(name, dims):
        return {f'{name}.weight': rand(dims, centre=1.0), f'{name}.bias': rand(dims)}

    sd, in_dims = {}, 3
    for n, (dims, depth, sr) in enumerate(zip(cfg['embed_dims'], cfg['depths'], (8, 4, 2, 1)), 1):
        kernel = (4 if n == 1 else 2) if version == 1 else (7 if n == 1 else 3)
        sd.update({f'patch_embed{n}.proj.weight': rand(dims, in_dims, kernel, kernel),
                   f'patch_embed{n}.proj.bias': rand(dims), **norm(f'patch_embed{n}.norm', dims)})
        if version == 1:
            grid = 224 // (4 * 2**(n - 1))
            sd[f'pos_embed{n}'] = rand(1, grid * grid + (n == 4), dims)
        hidden = dims * (8 if n <= 2 else 4)
        for j in range(depth):
            block = {**norm('norm1', dims), **linear_layer('attn.q', dims, dims),
                     **linear_layer('attn.kv', 2 * dims, dims),
                     **linear_layer('attn.proj', dims, dims), **norm('norm2', dims),
                     **linear_layer('mlp.fc1', hidden, dims),
                     **linear_layer('mlp.fc2', dims, hidden)}
            if linear or sr > 1:
                sr_kernel = 1 if linear else sr
                block.update({'attn.sr.weight': rand(dims, dims, sr_kernel, sr_kernel),
                              'attn.sr.bias': rand(dims), **norm('attn.norm', dims)})
            if version == 2:
                block.update({'mlp.dwconv.dwconv.weight': rand(hidden, 1, 3, 3),
                              'mlp.dwconv.dwconv.bias': rand(hidden)})
            sd.update({f'block{n}.{j}.{k}': v for k, v in block.items()})
        if version == 2:
            sd.update(norm(f'norm{n}', dims))
        in_dims = dims
    last = cfg['embed_dims'][-1]
    if version == 1:
        sd.update({'cls_token': rand(1, 1, last), **norm('norm', last)})
    sd.update(linear_layer('head', 1000, last))
    return sd
