"""``BEVFormerHead``: the 3D DETR head of BEVFormer on the BEV, in mmdet3d 1.x conventions.

Object queries attend to each other and, by deformable attention, to the BEV around their
reference points; after every decoder layer a classification and a regression branch predict
(class logits, 10-number box code, ``box_coder``) and the code's centre refines the reference
point of the next layer (BEVFormer's iterative box refinement). Training matches queries to the
ground truth per decoder layer (Hungarian, focal + L1 cost) and sums focal and L1 losses; inference
keeps the best (query, class) pairs of the last layer without NMS.

Library pieces: mmdet's ``DeformableDetrTransformerDecoderLayer`` (self-attention, deformable
cross-attention, FFN, post-norm) with our ``FastMultiScaleDeformableAttention`` swapped in,
``HungarianAssigner`` with ``FocalLossCost`` and ``BoxCodeL1Cost`` (below), ``FocalLoss``,
``L1Loss``, ``reduce_mean``, ``inverse_sigmoid``; mmdet3d's ``LiDARInstance3DBoxes``.

``convert_head_state_dict_from_v017`` rewrites the regression layers of a head trained in mmdet3d
0.17 box conventions (the official BEVFormer checkpoints) to predict 1.x boxes.
"""
import copy
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import Linear
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention
from mmdet3d.registry import MODELS, TASK_UTILS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmdet3d.structures.bbox_3d import get_box_type
from mmdet.models.layers import DeformableDetrTransformerDecoderLayer, inverse_sigmoid
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmdet.registry import TASK_UTILS as MMDET_TASK_UTILS
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, ModuleList, bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..common.layers import use_fast_dropout_
from ..deformable_attention.detr import swap_deformable_attention
from .box_coder import (CENTER_SLOTS, CODE_SIZE, GEOMETRY_SLOTS, V017_TO_V1_CODE, centres_to_metres,
                        decode_top_k, encode_boxes)
from .geometry import check_range

__all__ = ['BEVFormerHead', 'BoxCodeL1Cost', 'convert_head_state_dict_from_v017']


@MMDET_TASK_UTILS.register_module()
class BoxCodeL1Cost(BaseMatchCost):
    """L1 distance between predicted and ground-truth box codes (``box_coder``), over the first
    ``num_entries`` slots (default 8: centre, size, yaw; not velocity), times ``weight``.

    For mmdet's ``HungarianAssigner``: reads ``pred_instances.bboxes`` (num_query, 10) and
    ``gt_instances.bboxes`` (num_gt, 10); returns (num_query, num_gt). Ground truth is finite
    over these slots (unknown velocities are NaN, but they are not compared); non-finite
    predictions are refused by :meth:`BEVFormerHead.assign` before any cost is computed.
    """

    def __init__(self, num_entries: int = GEOMETRY_SLOTS, weight: float = 1.0) -> None:
        super().__init__(weight=weight)
        self.num_entries = num_entries

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        pred = pred_instances.bboxes[:, :self.num_entries]
        gt = gt_instances.bboxes[:, :self.num_entries]
        cost = torch.cdist(pred, gt, p=1)
        return cost * self.weight


DEFAULT_ASSIGNER = dict(
    type='mmdet.HungarianAssigner',
    match_costs=[
        dict(type='mmdet.FocalLossCost', weight=2.0),
        dict(type='mmdet.BoxCodeL1Cost', weight=0.25)
    ])
DEFAULT_LOSS_CLS = dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                        loss_weight=2.0)
DEFAULT_LOSS_BBOX = dict(type='mmdet.L1Loss', loss_weight=0.25)


@MODELS.register_module()
class BEVFormerHead(BaseModule):
    """BEVFormer's detection head (a 3D Deformable-DETR decoder with box refinement) on the BEV.

    Defaults are BEVFormer-tiny's published head.

    Args:
        num_classes: object classes (sigmoid focal classification, no background logit).
        num_query: object queries.
        num_layers: decoder layers; every layer's predictions are trained.
        embed_dims: channels of the queries and of the BEV.
        num_heads: attention heads (self- and cross-attention).
        num_points: deformable sampling points per head.
        feedforward_channels: hidden channels of each layer's FFN.
        dropout: dropout of the attentions and FFNs.
        num_reg_fcs: hidden Linear layers of the classification and regression branches.
        share_branches: one classification and one regression branch for all layers instead of
            one per layer (BEVFormer: one per layer, ``with_box_refine=True``).
        point_cloud_range: [x_min, y_min, z_min, x_max, y_max, z_max] metres (LiDAR frame) that
            the reference points span; the BEV's range.
        code_weights: 10 per-slot weights of the L1 box loss (code order in ``box_coder``).
        assigner: mmdet assigner config; its costs read ``scores`` (logits) and ``bboxes``
            (codes) of the predictions and ``labels``, ``bboxes`` (codes) of the ground truth.
        loss_cls: classification loss config (a sigmoid loss: ``use_sigmoid=True``).
        loss_bbox: box code loss config.
        max_num: boxes kept per sample at inference.
        score_threshold: inference keeps only scores above it (None: no threshold).
        post_center_range: inference keeps only boxes whose gravity centre lies in this
            [x_min, y_min, z_min, x_max, y_max, z_max] (None: no filter).
        attention_cfg: the deformable attention replacing mmcv's in the decoder layers
            (``swap_deformable_attention``).

    Shapes: bev (bs, bev_h * bev_w, embed_dims); all_cls_scores (num_layers, bs, num_query,
    num_classes); all_bbox_preds (num_layers, bs, num_query, 10) codes with centres in metres.
    """

    def __init__(self,
                 num_classes: int = 10,
                 num_query: int = 900,
                 num_layers: int = 6,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_points: int = 4,
                 feedforward_channels: int = 512,
                 dropout: float = 0.1,
                 num_reg_fcs: int = 2,
                 share_branches: bool = False,
                 point_cloud_range: Sequence[float] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0),
                 code_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2,
                                                  0.2),
                 assigner: dict = DEFAULT_ASSIGNER,
                 loss_cls: dict = DEFAULT_LOSS_CLS,
                 loss_bbox: dict = DEFAULT_LOSS_BBOX,
                 max_num: int = 300,
                 score_threshold: Optional[float] = None,
                 post_center_range: Optional[Sequence[float]] = (-61.2, -61.2, -10.0, 61.2, 61.2,
                                                                 10.0),
                 attention_cfg: dict = dict(type='FastMultiScaleDeformableAttention'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        for name, value in dict(num_classes=num_classes, num_query=num_query,
                                num_layers=num_layers, max_num=max_num).items():
            if int(value) != value or value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value}')
        if num_reg_fcs < 0:
            raise ValueError(f'num_reg_fcs must be >= 0, got {num_reg_fcs}')
        if len(code_weights) != CODE_SIZE:
            raise ValueError(f'code_weights must have {CODE_SIZE} entries, one per slot of the box '
                             f'code (cx, cy, log l, log w, cz, log h, sin, cos, vx, vy), got '
                             f'{len(code_weights)}: {list(code_weights)}')
        self.num_classes, self.num_query, self.num_layers = num_classes, num_query, num_layers
        self.embed_dims = embed_dims
        self.point_cloud_range = check_range('point_cloud_range', point_cloud_range)
        self.post_center_range = (None if post_center_range is None else
                                  check_range('post_center_range', post_center_range))
        self.max_num, self.score_threshold = int(max_num), score_threshold
        self.register_buffer('code_weights', torch.tensor(code_weights, dtype=torch.float32),
                             persistent=False)

        self.query_embedding = nn.Embedding(num_query, 2 * embed_dims)  # query_pos, query
        self.reference_points = nn.Linear(embed_dims, 3)
        self.layers = ModuleList([
            self._decoder_layer(embed_dims, num_heads, num_points, feedforward_channels, dropout,
                                attention_cfg) for _ in range(num_layers)
        ])
        use_fast_dropout_(self.layers)
        cls_branch = self._branch(embed_dims, num_reg_fcs, num_classes, with_norm=True)
        reg_branch = self._branch(embed_dims, num_reg_fcs, CODE_SIZE, with_norm=False)
        if share_branches:
            self.cls_branches = ModuleList([cls_branch] * num_layers)
            self.reg_branches = ModuleList([reg_branch] * num_layers)
        else:
            self.cls_branches = ModuleList([copy.deepcopy(cls_branch) for _ in range(num_layers)])
            self.reg_branches = ModuleList([copy.deepcopy(reg_branch) for _ in range(num_layers)])

        self.assigner = TASK_UTILS.build(assigner)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        if not getattr(self.loss_cls, 'use_sigmoid', False):
            raise ValueError(f'loss_cls must be a sigmoid classification loss (use_sigmoid=True: '
                             f'the head has no background logit), got {loss_cls}')

    @staticmethod
    def _decoder_layer(embed_dims: int, num_heads: int, num_points: int,
                       feedforward_channels: int, dropout: float,
                       attention_cfg: dict) -> DeformableDetrTransformerDecoderLayer:
        """Self-attention, norm, deformable cross-attention over one BEV level, norm, FFN, norm;
        batch first."""
        layer = DeformableDetrTransformerDecoderLayer(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, attn_drop=dropout,
                               dropout_layer=dict(type='Dropout', drop_prob=dropout),
                               batch_first=True),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, num_levels=1,
                                num_points=num_points, dropout=dropout, batch_first=True),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=feedforward_channels,
                         num_fcs=2, ffn_drop=dropout, act_cfg=dict(type='ReLU', inplace=True)),
            norm_cfg=dict(type='LN'))
        swap_deformable_attention(layer, attention_cfg)
        return layer

    @staticmethod
    def _branch(embed_dims: int, num_hidden: int, out_channels: int,
                with_norm: bool) -> nn.Sequential:
        """(Linear, [LN,] ReLU) x num_hidden, Linear -> out_channels (BEVFormer's layout, so the
        official state-dict indices apply: the final Linear is index 6 / 4 for 2 hidden)."""
        layers = []
        for _ in range(num_hidden):
            layers.append(Linear(embed_dims, embed_dims))
            if with_norm:
                layers.append(nn.LayerNorm(embed_dims))
            layers.append(nn.ReLU(inplace=True))
        layers.append(Linear(embed_dims, out_channels))
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        """Xavier for the decoder's matrices, mmcv's init for the deformable attentions, a
        uniform reference-point layer, and class biases for a 1% prior (as BEVFormer)."""
        super().init_weights()
        for parameter in self.layers.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.layers.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.init_weights()
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)
        for branch in self.cls_branches:
            nn.init.constant_(branch[-1].bias, bias_init_with_prob(0.01))

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, bev: Tensor, bev_hw: Union[Tensor, Tuple[int, int]]) -> Tuple[Tensor, Tensor]:
        """
        Args:
            bev: (bs, bev_h * bev_w, embed_dims) BEV features, row-major (h along y, w along x).
            bev_hw: (bev_h, bev_w), or a (1, 2) tensor [[bev_h, bev_w]].

        Returns:
            all_cls_scores: (num_layers, bs, num_query, num_classes) logits.
            all_bbox_preds: (num_layers, bs, num_query, 10) codes, centres in metres.
        """
        bs, num_cells, channels = bev.shape
        bev_h, bev_w = (int(v) for v in torch.as_tensor(bev_hw).flatten().tolist())
        if bev_h * bev_w != num_cells or channels != self.embed_dims:
            raise ValueError(f'bev has shape {tuple(bev.shape)}, expected (bs, bev_h * bev_w = '
                             f'{bev_h} * {bev_w}, embed_dims = {self.embed_dims}) (bev_hw, '
                             'embed_dims)')
        spatial_shapes = torch.tensor([[bev_h, bev_w]], dtype=torch.long, device=bev.device)
        level_start_index = spatial_shapes.new_zeros(1)
        query_pos, query = self.query_embedding.weight.to(bev.dtype).split(self.embed_dims, 1)
        query_pos = query_pos[None].expand(bs, -1, -1)  # (bs, num_query, C)
        query = query[None].expand(bs, -1, -1)  # (bs, num_query, C)
        reference = self.reference_points(query_pos).sigmoid()  # (bs, num_query, 3) in [0, 1]
        all_cls_scores, all_bbox_preds = [], []
        for layer, cls_branch, reg_branch in zip(self.layers, self.cls_branches,
                                                 self.reg_branches):
            query = layer(query, query_pos=query_pos, value=bev, key_padding_mask=None,
                          reference_points=reference[:, :, None, :2],
                          spatial_shapes=spatial_shapes, level_start_index=level_start_index)
            all_cls_scores.append(cls_branch(query))
            bbox_pred, refined = self._refine(reg_branch(query), reference)
            all_bbox_preds.append(bbox_pred)
            reference = refined.detach()  # as BEVFormer: no gradient through the refinement
        return torch.stack(all_cls_scores), torch.stack(all_bbox_preds)

    def _refine(self, raw_code: Tensor, reference: Tensor) -> Tuple[Tensor, Tensor]:
        """The layer's code with its centre slots as ``sigmoid(inverse_sigmoid(reference) +
        offset)`` in metres, and that refined reference (bs, num_query, 3) in [0, 1]."""
        centre_slots = torch.tensor(CENTER_SLOTS, device=raw_code.device)
        refined = (raw_code.index_select(-1, centre_slots) + inverse_sigmoid(reference)).sigmoid()
        # out of place (an index_put here breaks the TorchScript exporter's graph)
        code = raw_code.index_copy(-1, centre_slots,
                                   centres_to_metres(refined, self.point_cloud_range))
        return code, refined

    # ---- training -------------------------------------------------------------------------------
    def loss_by_feat(self, all_cls_scores: Tensor, all_bbox_preds: Tensor,
                     batch_gt_instances_3d: List[InstanceData]) -> Dict[str, Tensor]:
        """Losses of every decoder layer: ``loss_cls``, ``loss_bbox`` for the last one,
        ``d{i}.loss_cls``, ``d{i}.loss_bbox`` for layer i of the others (mmdet's naming).

        Args:
            all_cls_scores, all_bbox_preds: ``forward``'s outputs.
            batch_gt_instances_3d: per sample ``bboxes_3d`` (``LiDARInstance3DBoxes``, 9 dims with
                velocity, or 7 without: velocity is then not trained) and ``labels_3d`` (n,).
        """
        if len(batch_gt_instances_3d) != all_cls_scores.shape[1]:
            raise ValueError(f'batch_gt_instances_3d has {len(batch_gt_instances_3d)} samples, the '
                             f'predictions {all_cls_scores.shape[1]}')
        device = all_bbox_preds.device
        gt_codes, gt_labels = [], []
        for sample, gt in enumerate(batch_gt_instances_3d):
            labels = gt.labels_3d.to(device=device, dtype=torch.long)
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f'batch_gt_instances_3d[{sample}].labels_3d must lie in [0, '
                                 f'{self.num_classes}) (num_classes), got {labels.tolist()}')
            gt_codes.append(encode_boxes(gt.bboxes_3d).to(device=device,
                                                          dtype=all_bbox_preds.dtype))
            gt_labels.append(labels)
        losses = {}
        last = all_cls_scores.shape[0] - 1
        for index, (cls_scores, bbox_preds) in enumerate(zip(all_cls_scores, all_bbox_preds)):
            loss_cls, loss_bbox = self._layer_losses(cls_scores, bbox_preds, gt_codes, gt_labels)
            prefix = '' if index == last else f'd{index}.'
            losses[f'{prefix}loss_cls'] = loss_cls
            losses[f'{prefix}loss_bbox'] = loss_bbox
        return losses

    def assign(self, cls_scores: Tensor, bbox_preds: Tensor, gt_codes: Tensor,
               gt_labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Hungarian matching of one sample's queries to its ground truth.

        Args:
            cls_scores: (num_query, num_classes) logits; bbox_preds: (num_query, 10) codes;
            gt_codes: (num_gt, 10); gt_labels: (num_gt,).

        Returns:
            query indices (num_pos,) and the index of the ground truth each is matched to.
        """
        for name, value in (('cls_scores', cls_scores), ('bbox_preds', bbox_preds)):
            if not torch.isfinite(value).all():
                raise FloatingPointError(
                    f'{type(self).__name__}: {int((~torch.isfinite(value)).sum())} non-finite '
                    f'values in {name} reached the Hungarian matching: the model has diverged')
        with torch.no_grad():
            result = self.assigner.assign(
                InstanceData(scores=cls_scores, bboxes=bbox_preds),
                InstanceData(labels=gt_labels, bboxes=gt_codes))
        positive = torch.nonzero(result.gt_inds > 0).squeeze(1)
        return positive, result.gt_inds[positive] - 1

    def _layer_losses(self, cls_scores: Tensor, bbox_preds: Tensor, gt_codes: List[Tensor],
                      gt_labels: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """Focal and L1 losses of one layer: cls_scores (bs, num_query, num_classes), bbox_preds
        (bs, num_query, 10); both normalised by the positives (mean over processes)."""
        bs, num_query, _ = cls_scores.shape
        labels = cls_scores.new_full((bs, num_query), self.num_classes, dtype=torch.long)
        targets = bbox_preds.new_zeros(bs, num_query, CODE_SIZE)
        weights = bbox_preds.new_zeros(bs, num_query, CODE_SIZE)
        for sample in range(bs):
            queries, matched = self.assign(cls_scores[sample], bbox_preds[sample],
                                           gt_codes[sample], gt_labels[sample])
            labels[sample, queries] = gt_labels[sample][matched]
            targets[sample, queries] = gt_codes[sample][matched]
            weights[sample, queries] = self.code_weights.to(weights.dtype)
        known = torch.isfinite(targets)  # e.g. boxes without velocity
        weights = weights * known
        targets = torch.where(known, targets, torch.zeros_like(targets))
        num_pos = (labels < self.num_classes).sum().to(cls_scores.dtype)
        avg_factor = reduce_mean(num_pos).clamp(min=1).item()
        loss_cls = self.loss_cls(cls_scores.reshape(-1, self.num_classes), labels.flatten(),
                                 avg_factor=avg_factor)
        loss_bbox = self.loss_bbox(bbox_preds.reshape(-1, CODE_SIZE),
                                   targets.reshape(-1, CODE_SIZE),
                                   weights.reshape(-1, CODE_SIZE), avg_factor=avg_factor)
        return loss_cls, loss_bbox

    # ---- inference ------------------------------------------------------------------------------
    def predict_by_feat(self, all_cls_scores: Tensor, all_bbox_preds: Tensor,
                        batch_input_metas: List[dict]) -> List[InstanceData]:
        """Per sample ``InstanceData(bboxes_3d, scores_3d, labels_3d)`` from the last layer:
        bboxes_3d the meta's ``box_type_3d`` (default ``LiDARInstance3DBoxes``), 9 dims."""
        cls_scores, bbox_preds = all_cls_scores[-1], all_bbox_preds[-1]
        if len(batch_input_metas) != cls_scores.shape[0]:
            raise ValueError(f'batch_input_metas has {len(batch_input_metas)} samples, the '
                             f'predictions {cls_scores.shape[0]}')
        results = []
        for sample, meta in enumerate(batch_input_metas):
            boxes, scores, labels = decode_top_k(cls_scores[sample], bbox_preds[sample],
                                                 self.max_num, self.score_threshold,
                                                 self.post_center_range)
            box_type = meta.get('box_type_3d', LiDARInstance3DBoxes)
            if isinstance(box_type, str):
                box_type = get_box_type(box_type)[0]
            if not (isinstance(box_type, type) and issubclass(box_type, LiDARInstance3DBoxes)):
                raise ValueError(f'batch_input_metas[{sample}]["box_type_3d"] is {box_type}; the '
                                 'head predicts LiDAR-frame boxes (LiDARInstance3DBoxes)')
            results.append(InstanceData(bboxes_3d=box_type(boxes, box_dim=boxes.shape[-1]),
                                        scores_3d=scores, labels_3d=labels))
        return results


# ---- mmdet3d 0.17 checkpoints -------------------------------------------------------------------
_REG_LINEAR = re.compile(
    r'^(?P<branch>.*reg_branches\.\d+)\.(?P<index>\d+)\.(?P<kind>weight|bias)$')


def convert_head_state_dict_from_v017(state_dict: Mapping[str, Tensor],
                                      prefix: str = '') -> 'OrderedDict[str, Tensor]':
    """A copy of ``state_dict`` whose regression branches predict mmdet3d 1.x box codes.

    A head trained in mmdet3d 0.17 conventions (the official BEVFormer checkpoints, keys already
    named as in ``BEVFormerHead``) predicts (cx, cy, log w, log l, cz, log h, sin yaw', cos yaw',
    vx, vy) of 0.17's LiDAR box; ``box_coder.V017_TO_V1_CODE`` maps that code linearly onto ours
    (swap the two log sizes; sin yaw = -cos yaw', cos yaw = -sin yaw'; centres and velocity
    unchanged). The map is applied to the rows of each regression branch's final Linear (weight
    and bias), so every output, the refined centres included, is the 1.x code of the same box.

    Args:
        state_dict: the head's parameters (or a detector's; other keys are copied unchanged).
        prefix: only keys starting with it are considered (e.g. ``'bbox_head.'``).

    Converting twice restores the original (the map is its own inverse).
    """
    last_index: Dict[str, int] = {}
    for key in state_dict:
        match = _REG_LINEAR.match(key)
        if key.startswith(prefix) and match:
            branch = match['branch']
            last_index[branch] = max(last_index.get(branch, -1), int(match['index']))
    if not last_index:
        raise KeyError(f'no "<prefix>reg_branches.<i>.<j>.weight" keys with prefix={prefix!r} in '
                       'state_dict: nothing to convert')
    converted = OrderedDict()
    for key, value in state_dict.items():
        match = _REG_LINEAR.match(key) if key.startswith(prefix) else None
        if match and int(match['index']) == last_index[match['branch']]:
            if value.shape[0] != CODE_SIZE:
                raise ValueError(f'{key} has {value.shape[0]} output rows, expected the '
                                 f'{CODE_SIZE}-number box code')
            mapping = V017_TO_V1_CODE.to(device=value.device, dtype=value.dtype)
            value = (mapping @ value.reshape(CODE_SIZE, -1)).reshape(value.shape)
        converted[key] = value
    return converted
