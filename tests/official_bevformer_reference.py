"""A slow, obvious BEVFormer encoder as the official code computes it (fundamentalvision/BEVFormer
at its first release, 68e6af5, the code the published checkpoints were trained with), for tests.

Written from reading the official modules (``PerceptionTransformer.get_bev_features``,
``BEVFormerEncoder``, ``BEVFormerLayer``, ``TemporalSelfAttention``, ``SpatialCrossAttention`` /
``MSDeformableAttention3D``, mmcv 1.x ``FFN`` and mmdet's ``LearnedPositionalEncoding``), not from
ours: it reads the official state dict by its official key names, keeps the official tensor
layouts (sequence-first BEV, cameras first), loops over cameras and samples, and samples with
mmcv's reference op ``multi_scale_deformable_attn_pytorch``. Every official quirk that changes
numbers is kept and named where it happens. Dropout is off (eval mode). Meant for bs = 1, which is
what the official code was run with (its attentions read sample 0's rows for every sample).
"""
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from torch import Tensor

from projects.bevformer.encoder import OFFICIAL_SETTINGS

HEAD = 'pts_bbox_head.'
TRANSFORMER = HEAD + 'transformer.'


@dataclass(frozen=True)
class OfficialSizes:
    """The sizes an official BEVFormer state dict is built with (small ones for tests)."""
    embed: int = 32
    heads: int = 2
    ffn: int = 64
    bev_h: int = 6
    bev_w: int = 6
    encoder_layers: int = 1
    decoder_layers: int = 2
    queries: int = 10
    classes: int = 10
    cams: int = 6
    levels: int = 1  # image feature levels the model uses (FPN outputs)
    tsa_points: int = 4
    sca_points: int = 8
    decoder_points: int = 4


def small_detector_cfg(sizes: OfficialSizes = OfficialSizes(), **encoder_options) -> dict:
    """Our ``BEVFormerDetector`` of ``sizes`` (ResNet-18, FPN), its encoder set to the official
    code path unless ``encoder_options`` say otherwise."""
    neck_inputs = [64, 128, 256, 512][-sizes.levels:]
    return dict(
        type='BEVFormerDetector',
        data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        img_backbone=dict(type='mmdet.ResNet', depth=18, num_stages=4,
                          out_indices=tuple(range(4 - sizes.levels, 4)),
                          norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                          style='pytorch'),
        img_neck=dict(type='mmdet.FPN', in_channels=neck_inputs, out_channels=sizes.embed,
                      start_level=0, add_extra_convs='on_output', num_outs=sizes.levels),
        encoder=dict(type='BEVFormerEncoder', bev_h=sizes.bev_h, bev_w=sizes.bev_w,
                     num_layers=sizes.encoder_layers, embed_dims=sizes.embed,
                     num_cams=sizes.cams, num_feature_levels=sizes.levels,
                     layer_cfg=dict(
                         feedforward_channels=sizes.ffn, ffn_drop=0.0,
                         self_attn_cfg=dict(num_heads=sizes.heads, num_points=sizes.tsa_points,
                                            dropout=0.0),
                         cross_attn_cfg=dict(num_heads=sizes.heads, num_points=sizes.sca_points,
                                             dropout=0.0)),
                     **dict(OFFICIAL_SETTINGS, **encoder_options)),
        bbox_head=dict(type='BEVFormerHead', num_classes=sizes.classes, num_query=sizes.queries,
                       num_layers=sizes.decoder_layers, embed_dims=sizes.embed,
                       num_heads=sizes.heads, num_points=sizes.decoder_points,
                       feedforward_channels=sizes.ffn))


def official_shapes(sizes: OfficialSizes = OfficialSizes()) -> Dict[str, Tuple[int, ...]]:
    """Official key -> shape of the transformer and head, from the official modules'
    constructors (PerceptionTransformer with its default num_feature_levels=4, TemporalSelfAttention
    with num_bev_queue=2 and num_levels=1, SpatialCrossAttention around MSDeformableAttention3D,
    mmcv 1.x MultiheadAttention / FFN / BaseTransformerLayer, CustomMSDeformableAttention,
    BEVFormerHead with with_box_refine=True)."""
    C, heads, ffn = sizes.embed, sizes.heads, sizes.ffn
    shapes = {
        HEAD + 'bev_embedding.weight': (sizes.bev_h * sizes.bev_w, C),
        HEAD + 'positional_encoding.row_embed.weight': (sizes.bev_h, C // 2),
        HEAD + 'positional_encoding.col_embed.weight': (sizes.bev_w, C // 2),
        HEAD + 'query_embedding.weight': (sizes.queries, 2 * C),
        HEAD + 'code_weights': (10, ),
        TRANSFORMER + 'level_embeds': (4, C),
        TRANSFORMER + 'cams_embeds': (sizes.cams, C),
        TRANSFORMER + 'reference_points.weight': (3, C),
        TRANSFORMER + 'reference_points.bias': (3, ),
        TRANSFORMER + 'can_bus_mlp.0.weight': (C // 2, 18),
        TRANSFORMER + 'can_bus_mlp.0.bias': (C // 2, ),
        TRANSFORMER + 'can_bus_mlp.2.weight': (C, C // 2),
        TRANSFORMER + 'can_bus_mlp.2.bias': (C, ),
        TRANSFORMER + 'can_bus_mlp.norm.weight': (C, ),
        TRANSFORMER + 'can_bus_mlp.norm.bias': (C, ),
    }

    def linear(prefix, out_features, in_features):
        shapes[prefix + '.weight'] = (out_features, in_features)
        shapes[prefix + '.bias'] = (out_features, )

    def ffn_and_norms(layer):
        linear(layer + 'ffns.0.layers.0.0', ffn, C)
        linear(layer + 'ffns.0.layers.1', C, ffn)
        for n in range(3):
            shapes[layer + f'norms.{n}.weight'] = shapes[layer + f'norms.{n}.bias'] = (C, )

    for i in range(sizes.encoder_layers):
        layer = TRANSFORMER + f'encoder.layers.{i}.'
        tsa, sca = layer + 'attentions.0.', layer + 'attentions.1.'
        linear(tsa + 'sampling_offsets', 2 * heads * 1 * sizes.tsa_points * 2, 2 * C)
        linear(tsa + 'attention_weights', 2 * heads * 1 * sizes.tsa_points, 2 * C)
        linear(tsa + 'value_proj', C, C)
        linear(tsa + 'output_proj', C, C)
        sca_samples = heads * sizes.levels * sizes.sca_points
        linear(sca + 'deformable_attention.sampling_offsets', sca_samples * 2, C)
        linear(sca + 'deformable_attention.attention_weights', sca_samples, C)
        linear(sca + 'deformable_attention.value_proj', C, C)
        linear(sca + 'output_proj', C, C)
        ffn_and_norms(layer)
    for i in range(sizes.decoder_layers):
        layer = TRANSFORMER + f'decoder.layers.{i}.'
        shapes[layer + 'attentions.0.attn.in_proj_weight'] = (3 * C, C)
        shapes[layer + 'attentions.0.attn.in_proj_bias'] = (3 * C, )
        linear(layer + 'attentions.0.attn.out_proj', C, C)
        # the decoder samples the BEV: one level
        linear(layer + 'attentions.1.sampling_offsets', heads * 1 * sizes.decoder_points * 2, C)
        linear(layer + 'attentions.1.attention_weights', heads * 1 * sizes.decoder_points, C)
        linear(layer + 'attentions.1.value_proj', C, C)
        linear(layer + 'attentions.1.output_proj', C, C)
        ffn_and_norms(layer)
        for j in (0, 3):  # cls: Linear, LN, ReLU, Linear, LN, ReLU, Linear
            linear(HEAD + f'cls_branches.{i}.{j}', C, C)
            shapes[HEAD + f'cls_branches.{i}.{j + 1}.weight'] = (C, )
            shapes[HEAD + f'cls_branches.{i}.{j + 1}.bias'] = (C, )
        linear(HEAD + f'cls_branches.{i}.6', sizes.classes, C)
        for j in (0, 2):  # reg: Linear, ReLU, Linear, ReLU, Linear
            linear(HEAD + f'reg_branches.{i}.{j}', C, C)
        linear(HEAD + f'reg_branches.{i}.4', 10, C)
    return shapes


def random_official_state_dict(image_part: Mapping[str, Tensor],
                               sizes: OfficialSizes = OfficialSizes(), seed: int = 0,
                               scale: float = 1.0) -> 'OrderedDict[str, Tensor]':
    """Random tensors (normal, times ``scale``) under the official keys; ``image_part``: the
    backbone and neck tensors (mmdet 2.x and 3.x name them alike), whose shapes are kept
    (integer buffers copied)."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, value in image_part.items():
        state[key] = (value.clone() if value.dtype == torch.long else
                      torch.randn(value.shape, generator=generator) * scale)
    for key, shape in official_shapes(sizes).items():
        state[key] = torch.randn(shape, generator=generator) * scale
    return state


def _linear(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    return x @ sd[name + '.weight'].T + sd[name + '.bias']


def _layer_norm(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[name + '.weight'], sd[name + '.bias'], eps=1e-5)


def bev_positional_encoding(sd: Mapping[str, Tensor], bev_h: int, bev_w: int) -> Tensor:
    """(Q, C): for cell (row i, column j) the column embedding j, then the row embedding i."""
    col = sd[HEAD + 'positional_encoding.col_embed.weight']
    row = sd[HEAD + 'positional_encoding.row_embed.weight']
    rows = []
    for i in range(bev_h):
        for j in range(bev_w):
            rows.append(torch.cat([col[j], row[i]]))
    return torch.stack(rows)


def torchvision_rotate_nearest(image: Tensor, angle: float, center: Sequence[float]) -> Tensor:
    """torchvision ``rotate(image, angle, center=center)`` for a (C, H, W) tensor, pixel by pixel:
    the inverse affine matrix C * R(angle)^-1 * C^-1 (torchvision passes -angle to its inverse
    matrix builder), each output pixel centre mapped through it and read at the nearest input
    pixel (half-way rounds to even, as grid_sample's nearest), zero outside."""
    channels, height, width = image.shape
    cx, cy = center[0] - width * 0.5, center[1] - height * 0.5
    rot = math.radians(-angle)
    # inverse of [[cos, -sin], [sin, cos]](rot) about (cx, cy)
    inverse = np.array([[math.cos(rot), math.sin(rot), 0.0], [-math.sin(rot), math.cos(rot), 0.0],
                        [0.0, 0.0, 1.0]])
    to_center = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    from_center = np.array([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
    matrix = from_center @ inverse @ to_center
    out = torch.zeros_like(image)
    for row in range(height):
        for col in range(width):
            x, y = col + 0.5 - width * 0.5, row + 0.5 - height * 0.5
            sx, sy, _ = matrix @ np.array([x, y, 1.0])
            # to input pixel indices: torchvision normalises by half the size, u = s / (size /
            # 2), and grid_sample (align_corners=False) reads index ((u + 1) * size - 1) / 2
            src_col = float(np.round(sx + width * 0.5 - 0.5))
            src_row = float(np.round(sy + height * 0.5 - 0.5))
            if 0 <= src_col < width and 0 <= src_row < height:
                out[:, row, col] = image[:, int(src_row), int(src_col)]
    return out


def point_sampling(pc_range: Sequence[float], bev_h: int, bev_w: int, num_z: int,
                   lidar2img: Tensor, padded_hw: Sequence[int]):
    """Official ``get_reference_points('3d')`` + ``point_sampling``: reference_points_cam
    (cams, bs, Q, D, 2) normalised by the padded image size and bev_mask (cams, bs, Q, D),
    ``depth > 1e-5`` and strictly inside (0, 1) of the padded size."""
    bs, num_cams = lidar2img.shape[:2]
    eps = 1e-5
    cams, masks = [], []
    for cam in range(num_cams):
        per_sample_points, per_sample_masks = [], []
        for b in range(bs):
            points = torch.zeros(bev_h * bev_w, num_z, 2, dtype=lidar2img.dtype)
            mask = torch.zeros(bev_h * bev_w, num_z, dtype=torch.bool)
            for q in range(bev_h * bev_w):
                i, j = divmod(q, bev_w)
                x = (j + 0.5) / bev_w * (pc_range[3] - pc_range[0]) + pc_range[0]
                y = (i + 0.5) / bev_h * (pc_range[4] - pc_range[1]) + pc_range[1]
                depth = pc_range[5] - pc_range[2]
                for d, z in enumerate(np.linspace(0.5, depth - 0.5, num_z) / depth):
                    z = z * depth + pc_range[2]
                    p = lidar2img[b, cam] @ torch.tensor([x, y, z, 1.0], dtype=lidar2img.dtype)
                    uv = p[:2] / max(float(p[2]), eps)
                    u, v = float(uv[0]) / padded_hw[1], float(uv[1]) / padded_hw[0]
                    points[q, d] = torch.tensor([u, v], dtype=points.dtype)
                    mask[q, d] = float(p[2]) > eps and 0 < u < 1 and 0 < v < 1
            per_sample_points.append(points)
            per_sample_masks.append(mask)
        cams.append(torch.stack(per_sample_points))
        masks.append(torch.stack(per_sample_masks))
    return torch.stack(cams), torch.stack(masks)


def temporal_self_attention(sd, name: str, query: Tensor, query_pos: Tensor,
                            value: Optional[Tensor], hybrid_ref_2d: Tensor, bev_h: int,
                            bev_w: int, num_heads: int, num_points: int) -> Tensor:
    """Official ``TemporalSelfAttention`` (batch first, 2 frames, 1 level). query (bs, Q, C),
    value (bs * 2, Q, C) frame-interleaved [previous, current] or None (then [query, query]),
    hybrid_ref_2d (bs * 2, Q, 1, 2). Offsets come from cat(value[:bs], query + pos): the
    previous BEV as given for bs = 1."""
    bs, num_query, channels = query.shape
    if value is None:
        value = torch.stack([query, query], 1).reshape(bs * 2, num_query, channels)
    identity = query
    query = query + query_pos
    offset_input = torch.cat([value[:bs], query], -1)
    value = _linear(sd, name + 'value_proj', value).reshape(bs * 2, num_query, num_heads, -1)
    offsets = _linear(sd, name + 'sampling_offsets', offset_input).view(
        bs, num_query, num_heads, 2, 1, num_points, 2)
    weights = _linear(sd, name + 'attention_weights', offset_input).view(
        bs, num_query, num_heads, 2, num_points).softmax(-1).view(
            bs, num_query, num_heads, 2, 1, num_points)
    weights = weights.permute(0, 3, 1, 2, 4, 5).reshape(
        bs * 2, num_query, num_heads, 1, num_points)
    offsets = offsets.permute(0, 3, 1, 2, 4, 5, 6).reshape(
        bs * 2, num_query, num_heads, 1, num_points, 2)
    normalizer = torch.tensor([bev_w, bev_h], dtype=query.dtype)
    locations = hybrid_ref_2d[:, :, None, :, None, :] + offsets / normalizer
    shapes = torch.tensor([[bev_h, bev_w]])
    sampled = multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)
    sampled = sampled.permute(1, 2, 0).reshape(num_query, channels, bs, 2).mean(-1)
    return _linear(sd, name + 'output_proj', sampled.permute(2, 0, 1)) + identity


def spatial_cross_attention(sd, name: str, query: Tensor, feats: Tensor, spatial_shapes: Tensor,
                            reference_points_cam: Tensor, bev_mask: Tensor, num_heads: int,
                            num_points: int) -> Tensor:
    """Official ``SpatialCrossAttention`` around ``MSDeformableAttention3D``, no positional
    embedding. query (bs, Q, C); feats (cams, keys, bs, C); reference_points_cam (cams, bs, Q,
    D, 2); bev_mask (cams, bs, Q, D). Per camera, the queries that sample 0 sees there attend;
    the sum over cameras is divided by each query's camera count."""
    bs, num_query, channels = query.shape
    num_cams, _, _, num_z, _ = reference_points_cam.shape
    levels = spatial_shapes.shape[0]
    attn = name + 'deformable_attention.'
    slots = torch.zeros_like(query)
    for b in range(bs):
        for cam in range(num_cams):
            index = bev_mask[cam, 0].sum(-1).nonzero().squeeze(-1)  # sample 0's hits
            if len(index) == 0:
                continue
            q = query[b, index]  # (M, C)
            value = _linear(sd, attn + 'value_proj', feats[cam, :, b]).view(
                1, -1, num_heads, channels // num_heads)
            offsets = _linear(sd, attn + 'sampling_offsets', q).view(
                len(index), num_heads, levels, num_points // num_z, num_z, 2)
            normalizer = spatial_shapes.flip(-1).to(query.dtype)[None, None, :, None, None, :]
            ref = reference_points_cam[cam, b, index][:, None, None, None, :, :]
            locations = (ref + offsets / normalizer).reshape(
                1, len(index), num_heads, levels, num_points, 2)
            weights = _linear(sd, attn + 'attention_weights', q).view(
                len(index), num_heads, levels * num_points).softmax(-1).view(
                    1, len(index), num_heads, levels, num_points)
            sampled = multi_scale_deformable_attn_pytorch(value, spatial_shapes, locations,
                                                          weights)[0]
            slots[b, index] += sampled
    count = (bev_mask.sum(-1) > 0).permute(1, 2, 0).sum(-1).clamp(min=1.0)  # (bs, Q)
    slots = slots / count[..., None]
    return _linear(sd, name + 'output_proj', slots) + query


def encoder_layer(sd, layer: int, query: Tensor, bev_pos: Tensor, value: Optional[Tensor],
                  hybrid_ref_2d: Tensor, feats: Tensor, spatial_shapes: Tensor,
                  reference_points_cam: Tensor, bev_mask: Tensor, bev_h: int, bev_w: int,
                  num_heads: int, tsa_points: int, sca_points: int) -> Tensor:
    """Official ``BEVFormerLayer``: TSA (with bev_pos), norm, SCA (query_pos=None), norm, FFN,
    norm. Shapes as in the attentions."""
    name = TRANSFORMER + f'encoder.layers.{layer}.'
    x = temporal_self_attention(sd, name + 'attentions.0.', query, bev_pos, value, hybrid_ref_2d,
                                bev_h, bev_w, num_heads, tsa_points)
    x = _layer_norm(sd, name + 'norms.0', x)
    x = spatial_cross_attention(sd, name + 'attentions.1.', x, feats, spatial_shapes,
                                reference_points_cam, bev_mask, num_heads, sca_points)
    x = _layer_norm(sd, name + 'norms.1', x)
    hidden = torch.relu(_linear(sd, name + 'ffns.0.layers.0.0', x))
    x = _linear(sd, name + 'ffns.0.layers.1', hidden) + x
    return _layer_norm(sd, name + 'norms.2', x)


def get_bev_features(sd: Mapping[str, Tensor], img_feats: List[Tensor], can_bus: np.ndarray,
                     lidar2img: Tensor, padded_hw: Sequence[int], bev_h: int, bev_w: int,
                     pc_range: Sequence[float], num_layers: int, num_z: int = 4,
                     num_heads: int = 8, tsa_points: int = 4, sca_points: int = 8,
                     prev_bev: Optional[Tensor] = None,
                     rotate_center: Sequence[float] = (100, 100)) -> Tensor:
    """Official ``PerceptionTransformer.get_bev_features`` + ``BEVFormerEncoder.forward``.

    Args:
        img_feats: per level (bs, cams, C, h, w).
        can_bus: (bs, 18) float64 as the official detector hands it over (deltas already taken).
        lidar2img: (bs, cams, 4, 4).
        padded_hw: the padded image size (official ``img_shape`` after padding).
        prev_bev: (bs, Q, C) or None.

    Returns:
        (bs, Q, C) the BEV.
    """
    bs = img_feats[0].shape[0]
    dtype = img_feats[0].dtype
    bev_queries = sd[HEAD + 'bev_embedding.weight'][:, None].repeat(1, bs, 1)  # (Q, bs, C)
    bev_pos = bev_positional_encoding(sd, bev_h, bev_w)[:, None].repeat(1, bs, 1)

    # ego motion from the CAN bus: shift in grid units, in numpy as the official code
    grid_length_y = (pc_range[4] - pc_range[1]) / bev_h
    grid_length_x = (pc_range[3] - pc_range[0]) / bev_w
    delta_x, delta_y = can_bus[:, 0], can_bus[:, 1]
    ego_angle = can_bus[:, -2] / np.pi * 180
    translation_length = np.sqrt(delta_x ** 2 + delta_y ** 2)
    translation_angle = np.arctan2(delta_y, delta_x) / np.pi * 180
    bev_angle = ego_angle - translation_angle
    shift_y = translation_length * np.cos(bev_angle / 180 * np.pi) / grid_length_y / bev_h
    shift_x = translation_length * np.sin(bev_angle / 180 * np.pi) / grid_length_x / bev_w
    shift = torch.tensor(np.stack([shift_x, shift_y], -1), dtype=dtype)  # (bs, 2)

    if prev_bev is not None:
        prev_bev = prev_bev.permute(1, 0, 2).clone()  # (Q, bs, C)
        for b in range(bs):  # rotated about rotate_center by the heading change, not shifted
            grid = prev_bev[:, b].reshape(bev_h, bev_w, -1).permute(2, 0, 1)
            grid = torchvision_rotate_nearest(grid, float(can_bus[b, -1]), rotate_center)
            prev_bev[:, b] = grid.permute(1, 2, 0).reshape(bev_h * bev_w, -1)

    can_bus_t = torch.tensor(can_bus, dtype=dtype)
    mlp = TRANSFORMER + 'can_bus_mlp.'
    can = torch.relu(_linear(sd, mlp + '0', can_bus_t))
    can = torch.relu(_linear(sd, mlp + '2', can))
    if mlp + 'norm.weight' in sd:
        can = _layer_norm(sd, mlp + 'norm', can)
    bev_queries = bev_queries + can[None]

    flat, shapes = [], []
    for level, feat in enumerate(img_feats):
        _, num_cams, channels, h, w = feat.shape
        feat = feat.flatten(3).permute(1, 0, 3, 2)  # (cams, bs, hw, C)
        feat = feat + sd[TRANSFORMER + 'cams_embeds'][:, None, None, :]
        feat = feat + sd[TRANSFORMER + 'level_embeds'][None, None, level:level + 1, :]
        flat.append(feat)
        shapes.append((h, w))
    feats = torch.cat(flat, 2).permute(0, 2, 1, 3)  # (cams, keys, bs, C)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)

    # the encoder
    reference_points_cam, bev_mask = point_sampling(pc_range, bev_h, bev_w, num_z, lidar2img,
                                                    padded_hw)
    ref_2d = torch.zeros(bs, bev_h * bev_w, 1, 2, dtype=dtype)
    for q in range(bev_h * bev_w):
        i, j = divmod(q, bev_w)
        ref_2d[:, q, 0] = torch.tensor([(j + 0.5) / bev_w, (i + 0.5) / bev_h], dtype=dtype)
    # the release's bug, kept for its checkpoints: "shift_ref_2d = ref_2d" aliases, so the
    # in-place shift moves the current frame's reference points too
    ref_2d += shift[:, None, None, :]
    shift_ref_2d = ref_2d
    bev_query = bev_queries.permute(1, 0, 2)  # (bs, Q, C)
    bev_pos = bev_pos.permute(1, 0, 2)
    num_query = bev_query.shape[1]
    if prev_bev is not None:
        prev = prev_bev.permute(1, 0, 2)
        value = torch.stack([prev, bev_query], 1).reshape(bs * 2, num_query, -1)
        hybrid = torch.stack([shift_ref_2d, ref_2d], 1).reshape(bs * 2, num_query, 1, 2)
    else:
        value = None
        hybrid = torch.stack([ref_2d, ref_2d], 1).reshape(bs * 2, num_query, 1, 2)
    output = bev_query
    for layer in range(num_layers):
        output = encoder_layer(sd, layer, output, bev_pos, value, hybrid, feats, spatial_shapes,
                               reference_points_cam, bev_mask, bev_h, bev_w, num_heads,
                               tsa_points, sca_points)
    return output


def _inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _self_attention(sd, name: str, query: Tensor, query_pos: Tensor, num_heads: int) -> Tensor:
    """mmcv 1.x ``MultiheadAttention`` as the decoder calls it: queries and keys with the
    positional embedding, values without; one head at a time. query (bs, nq, C)."""
    bs, num_query, channels = query.shape
    head_dims = channels // num_heads
    weight, bias = sd[name + 'attn.in_proj_weight'], sd[name + 'attn.in_proj_bias']
    q = (query + query_pos) @ weight[:channels].T + bias[:channels]
    k = (query + query_pos) @ weight[channels:2 * channels].T + bias[channels:2 * channels]
    v = query @ weight[2 * channels:].T + bias[2 * channels:]
    heads = []
    for h in range(num_heads):
        part = slice(h * head_dims, (h + 1) * head_dims)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(head_dims)
        heads.append(scores.softmax(-1) @ v[..., part])
    return _linear(sd, name + 'attn.out_proj', torch.cat(heads, -1)) + query


def _decoder_cross_attention(sd, name: str, query: Tensor, query_pos: Tensor, bev: Tensor,
                             reference_xy: Tensor, bev_h: int, bev_w: int, num_heads: int,
                             num_points: int) -> Tensor:
    """Official ``CustomMSDeformableAttention`` (Deformable DETR's, one level: the BEV)."""
    bs, num_query, channels = query.shape
    q = query + query_pos
    value = _linear(sd, name + 'value_proj', bev).view(bs, -1, num_heads, channels // num_heads)
    offsets = _linear(sd, name + 'sampling_offsets', q).view(
        bs, num_query, num_heads, 1, num_points, 2)
    weights = _linear(sd, name + 'attention_weights', q).view(
        bs, num_query, num_heads, num_points).softmax(-1)[:, :, :, None]
    normalizer = torch.tensor([bev_w, bev_h], dtype=query.dtype)
    locations = reference_xy[:, :, None, None, None, :] + offsets / normalizer
    sampled = multi_scale_deformable_attn_pytorch(value, torch.tensor([[bev_h, bev_w]]),
                                                  locations, weights)
    return _linear(sd, name + 'output_proj', sampled) + query


def head_outputs(sd, bev: Tensor, bev_h: int, bev_w: int, pc_range: Sequence[float],
                 num_layers: int, num_heads: int = 8, num_points: int = 4):
    """Official ``PerceptionTransformer`` decoder part + ``BEVFormerHead.forward`` (box
    refinement on). bev (bs, Q, C). Returns per layer (layers, bs, nq, classes) logits and
    (layers, bs, nq, 10) 0.17 codes with the centre in metres."""
    channels = bev.shape[-1]
    query_pos, query = sd[HEAD + 'query_embedding.weight'].split(channels, 1)
    bs = bev.shape[0]
    query_pos, query = query_pos[None].expand(bs, -1, -1), query[None].expand(bs, -1, -1)
    reference = _linear(sd, TRANSFORMER + 'reference_points', query_pos).sigmoid()
    all_cls, all_codes = [], []
    for layer in range(num_layers):
        name = TRANSFORMER + f'decoder.layers.{layer}.'
        query = _layer_norm(sd, name + 'norms.0',
                            _self_attention(sd, name + 'attentions.0.', query, query_pos,
                                            num_heads))
        query = _layer_norm(sd, name + 'norms.1', _decoder_cross_attention(
            sd, name + 'attentions.1.', query, query_pos, bev, reference[..., :2], bev_h, bev_w,
            num_heads, num_points))
        hidden = torch.relu(_linear(sd, name + 'ffns.0.layers.0.0', query))
        query = _layer_norm(sd, name + 'norms.2', _linear(sd, name + 'ffns.0.layers.1', hidden)
                            + query)
        # the head's branches on this layer's output, with the reference it started from
        cls_branch, reg_branch = HEAD + f'cls_branches.{layer}.', HEAD + f'reg_branches.{layer}.'
        x = query
        for j in (0, 3):
            x = torch.relu(_layer_norm(sd, cls_branch + f'{j + 1}',
                                       _linear(sd, cls_branch + f'{j}', x)))
        all_cls.append(_linear(sd, cls_branch + '6', x))
        code = torch.relu(_linear(sd, reg_branch + '0', query))
        code = _linear(sd, reg_branch + '4', torch.relu(_linear(sd, reg_branch + '2', code)))
        inverse = _inverse_sigmoid(reference)
        centre_x = (code[..., 0] + inverse[..., 0]).sigmoid()
        centre_y = (code[..., 1] + inverse[..., 1]).sigmoid()
        centre_z = (code[..., 4] + inverse[..., 2]).sigmoid()
        out = code.clone()
        out[..., 0] = centre_x * (pc_range[3] - pc_range[0]) + pc_range[0]
        out[..., 1] = centre_y * (pc_range[4] - pc_range[1]) + pc_range[1]
        out[..., 4] = centre_z * (pc_range[5] - pc_range[2]) + pc_range[2]
        all_codes.append(out)
        # the decoder refines the reference from the same regression output (detached there)
        reference = torch.stack([centre_x, centre_y, centre_z], -1)
    return torch.stack(all_cls), torch.stack(all_codes)


def nms_free_decode(cls_scores: Tensor, codes: Tensor, max_num: int,
                    post_center_range: Sequence[float]):
    """Official ``NMSFreeCoder.decode_single`` + ``BEVFormerHead.get_bboxes`` for one sample's
    last layer: the top ``max_num`` (query, class) sigmoid scores, the code denormalised to the
    0.17 box (x, y, z bottom, w, l, h, yaw', vx, vy), kept when its gravity centre is inside
    ``post_center_range``. Returns boxes (k, 9), scores (k,), labels (k,) in the official class
    order."""
    num_classes = cls_scores.shape[-1]
    scores, index = cls_scores.sigmoid().view(-1).topk(max_num)
    labels, query = index % num_classes, index // num_classes
    code = codes[query]
    yaw = torch.atan2(code[:, 6:7], code[:, 7:8])
    sizes = code[:, [2, 3, 5]].exp()  # w, l, h
    centre = code[:, [0, 1, 4]]
    keep = ((centre >= centre.new_tensor(post_center_range[:3])).all(1)
            & (centre <= centre.new_tensor(post_center_range[3:])).all(1))
    bottom = centre.clone()
    bottom[:, 2] -= sizes[:, 2] * 0.5
    boxes = torch.cat([bottom, sizes, yaw, code[:, 8:10]], -1)
    return boxes[keep], scores[keep], labels[keep]
