"""The box code of the BEVFormer head, in the mmdet3d 1.x LiDAR convention.

A ``LiDARInstance3DBoxes`` with velocity (mmdet3d 1.x) is ``(x, y, z, l, w, h, yaw, vx, vy)``:
``(x, y, z)`` the bottom centre, ``l = dx`` the size along the heading, ``w = dy`` across it,
``h = dz``, ``yaw`` the heading measured from +x towards +y (the heading direction is
``(cos yaw, sin yaw)``), ``(vx, vy)`` m/s, everything in the LiDAR frame.

The head regresses, per query, the 10-number code (slots of BEVFormer's code kept, so that the
centre slots 0, 1, 4 and everything but the size and yaw slots mean the same as there)::

    0 cx   1 cy   2 log l   3 log w   4 cz   5 log h   6 sin yaw   7 cos yaw   8 vx   9 vy

with ``(cx, cy, cz)`` the gravity centre in metres (the head predicts it as a sigmoid in the
normalised ``point_cloud_range`` and denormalises it, ``centres_to_metres``). The loss and the
matching cost compare codes directly (``encode_boxes`` of the ground truth).

mmdet3d 0.17 (the official BEVFormer checkpoints) used ``(cx, cy, log w, log l, cz, log h,
sin yaw', cos yaw', vx, vy)`` of its own LiDAR box ``(x, y, z, w, l, h, yaw')``; the two differ only
in the box *parameters*, not in the LiDAR frame (see ``V017_TO_V1_CODE``).
"""
from typing import Optional, Sequence, Tuple

import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from torch import Tensor

__all__ = [
    'CODE_SIZE', 'CENTER_SLOTS', 'encode_boxes', 'decode_boxes', 'centres_to_metres',
    'decode_top_k', 'V017_TO_V1_CODE'
]

CODE_SIZE = 10
CENTER_SLOTS = (0, 1, 4)  # cx, cy, cz: refined from the reference points
# Slots that define the box (centre, size, yaw), the ones the matching cost compares.
GEOMETRY_SLOTS = 8

# code_v1 = V017_TO_V1_CODE @ code_v017, for the same physical box. Derivation (mmdet3d 1.0's
# LiDAR box refactor; the LiDAR frame and the points did not change):
#   centre (cx, cy, cz) and velocity (vx, vy): unchanged (slots 0, 1, 4, 8, 9);
#   sizes: 0.17 stored (x_size, y_size) = (w, l), 1.x stores (l, w): swap slots 2 and 3;
#   yaw: 0.17 rotated the box's local frame clockwise by yaw' and its front was local -y, so its
#   heading was (-sin yaw', -cos yaw'); 1.x's is (cos yaw, sin yaw), hence yaw = -yaw' - pi/2 and
#   sin yaw = -cos yaw', cos yaw = -sin yaw' (slots 6, 7 <- -slot 7, -slot 6). This is linear in
#   the (not necessarily unit) pair the network predicts, and atan2 of the new pair is exactly
#   -atan2(old pair) - pi/2 (mod 2 pi), so it can be folded into the final regression Linear.
# The same change mmdet3d applies to 0.17 infos (tools/update_data_coords.py: swap dims 3 and 4,
# yaw = -yaw - pi/2, centres untouched) and DETR3D's old_detr3d_converter.py to its weights.
# ("x_new = y_old, y_new = x_old" in DETR3D's README is about the sizes, x_size and y_size.)
# The map is its own inverse: applying it twice restores the original.
V017_TO_V1_CODE = torch.eye(CODE_SIZE)[[0, 1, 3, 2, 4, 5, 7, 6, 8, 9]]
V017_TO_V1_CODE[6:8] *= -1


def centres_to_metres(unit_centres: Tensor, point_cloud_range: Sequence[float]) -> Tensor:
    """(..., 3) normalised (x, y, z) in [0, 1] over ``point_cloud_range`` -> (..., 3) metres."""
    low = unit_centres.new_tensor(point_cloud_range[:3])
    high = unit_centres.new_tensor(point_cloud_range[3:])
    return unit_centres * (high - low) + low


def encode_boxes(boxes: LiDARInstance3DBoxes) -> Tensor:
    """(n, 10) codes of ``boxes`` (mmdet3d 1.x ``LiDARInstance3DBoxes``, 7 or 9 dims); boxes
    without velocity (7 dims) get NaN velocity, which the loss ignores."""
    if not isinstance(boxes, LiDARInstance3DBoxes):
        raise TypeError(f'boxes must be LiDARInstance3DBoxes (the code is in the LiDAR frame), '
                        f'got {type(boxes).__name__}')
    tensor = boxes.tensor
    if tensor.shape[-1] not in (7, 9):
        raise ValueError(f'boxes must have 7 dims (x, y, z, l, w, h, yaw) or 9 (+ vx, vy), got '
                         f'box_dim={tensor.shape[-1]}')
    centre = boxes.gravity_center  # (n, 3)
    size = tensor[:, 3:6].log()  # (n, 3) log l, log w, log h
    yaw = tensor[:, 6:7]
    if tensor.shape[-1] == 9:
        velocity = tensor[:, 7:9]
    else:
        velocity = tensor.new_full((tensor.shape[0], 2), float('nan'))
    return torch.cat([centre[:, :2], size[:, :2], centre[:, 2:3], size[:, 2:3], yaw.sin(),
                      yaw.cos(), velocity], dim=-1)


def decode_boxes(code: Tensor) -> Tensor:
    """(..., 10) codes -> (..., 9) ``LiDARInstance3DBoxes`` tensor (x, y, z bottom, l, w, h, yaw
    in [-pi, pi], vx, vy)."""
    if code.shape[-1] != CODE_SIZE:
        raise ValueError(f'code must end in {CODE_SIZE} entries, got shape {tuple(code.shape)}')
    size = code[..., [2, 3, 5]].exp()  # l, w, h
    bottom_z = code[..., 4:5] - size[..., 2:3] * 0.5
    yaw = torch.atan2(code[..., 6:7], code[..., 7:8])
    return torch.cat([code[..., 0:2], bottom_z, size, yaw, code[..., 8:10]], dim=-1)


def decode_top_k(cls_scores: Tensor, bbox_preds: Tensor, max_num: int,
                 score_threshold: Optional[float] = None,
                 post_center_range: Optional[Sequence[float]] = None
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """NMS-free decoding of one sample: the ``max_num`` best (query, class) pairs.

    Args:
        cls_scores: (num_query, num_classes) logits.
        bbox_preds: (num_query, 10) codes (centres in metres).
        max_num: pairs kept (at most num_query * num_classes).
        score_threshold: keep only pairs scoring above it (None: no threshold).
        post_center_range: keep only boxes whose gravity centre lies in [x_min, y_min, z_min,
            x_max, y_max, z_max] (None: no filter).

    Returns:
        boxes (k, 9) as ``decode_boxes``, scores (k,) sigmoid, labels (k,) int64, best first.
    """
    num_classes = cls_scores.shape[-1]
    scores, flat_index = cls_scores.sigmoid().flatten().topk(min(max_num, cls_scores.numel()))
    labels = flat_index % num_classes
    codes = bbox_preds[flat_index // num_classes]  # (k, 10)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if score_threshold is not None:
        keep &= scores > score_threshold
    if post_center_range is not None:
        centre = codes[:, list(CENTER_SLOTS)]
        keep &= (centre >= centre.new_tensor(post_center_range[:3])).all(-1)
        keep &= (centre <= centre.new_tensor(post_center_range[3:])).all(-1)
    return decode_boxes(codes[keep]), scores[keep], labels[keep]
