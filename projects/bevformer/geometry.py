"""Camera and ego-motion geometry of the BEV encoder.

Frames: everything is in the LiDAR frame of mmdet3d 1.x unless a name says otherwise. The BEV grid
covers ``point_cloud_range = [x_min, y_min, z_min, x_max, y_max, z_max]`` (metres); BEV row ``h``
runs along +y and column ``w`` along +x, so the query of cell (h, w) has index ``h * bev_w + w``
and its centre is ``(x_min + (w + 0.5) * dx, y_min + (h + 0.5) * dy)``.

Matrices are 4x4 homogeneous transforms named ``a2b`` (they map a point in frame a to frame b):
``lidar2img = cam2img @ lidar2cam`` (cam2img padded to 4x4), ``lidar2global = ego2global @
lidar2ego``.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from projects.common.export import is_exporting

__all__ = [
    'HIT_AREAS', 'check_range', 'check_bev_grid', 'bev_cell_centers', 'pillar_points',
    'project_to_cameras', 'lidar_to_global', 'current_to_previous_lidar', 'align_previous_bev',
    'rotate_bev_like_torchvision', 'can_bus_bev_shift'
]

# A point must be at least this far in front of a camera (metres along its optical axis) to hit it.
MIN_DEPTH = 1e-5


def check_range(name: str, value: Sequence[float]) -> Tuple[float, ...]:
    """``value`` as 6 floats [x_min, y_min, z_min, x_max, y_max, z_max] with max > min, or a
    ValueError naming ``name``."""
    values = tuple(float(v) for v in value)
    if len(values) != 6 or not all(values[i + 3] > values[i] for i in range(3)):
        raise ValueError(f'{name} must be [x_min, y_min, z_min, x_max, y_max, z_max] with max > '
                         f'min on every axis, got {list(value)}')
    return values


def check_bev_grid(bev_h: int, bev_w: int, point_cloud_range: Sequence[float]) -> None:
    """Raises ValueError unless the grid sizes are positive integers and the range is non-empty.
    Any grid works: a cell is (x range / bev_w) x (y range / bev_h) metres, square or not."""
    check_range('point_cloud_range', point_cloud_range)
    if int(bev_h) != bev_h or int(bev_w) != bev_w or bev_h < 1 or bev_w < 1:
        raise ValueError(f'bev_h and bev_w must be positive integers, got {bev_h} x {bev_w}')


def bev_cell_centers(bev_h: int, bev_w: int, point_cloud_range: Sequence[float],
                     device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(bev_h * bev_w, 2) x, y in metres of every BEV cell centre, row-major (h, w)."""
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    steps = dict(device=device, dtype=dtype)
    # arange, not linspace: the TorchScript exporter gives linspace a float64 output
    xs = (torch.arange(bev_w, **steps) + 0.5) / bev_w * (x_max - x_min) + x_min
    ys = (torch.arange(bev_h, **steps) + 0.5) / bev_h * (y_max - y_min) + y_min
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


def pillar_points(bev_h: int, bev_w: int, point_cloud_range: Sequence[float],
                  num_heights: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(bev_h * bev_w, num_heights, 3) points of every BEV cell's pillar, in metres.

    Heights are spaced evenly from half a metre above z_min to half a metre below z_max, the
    anchors of BEVFormer (a single anchor sits at the middle of the range).
    """
    _, _, z_min, _, _, z_max = point_cloud_range
    depth = z_max - z_min
    if num_heights == 1:
        zs = torch.full((1, ), (z_min + z_max) / 2, device=device, dtype=dtype)
    else:
        zs = torch.linspace(0.5, depth - 0.5, num_heights, device=device, dtype=dtype) + z_min
    centers = bev_cell_centers(bev_h, bev_w, point_cloud_range, device, dtype)  # (Q, 2)
    num_cells = centers.shape[0]
    xy = centers[:, None, :].expand(num_cells, num_heights, 2)
    z = zs[None, :, None].expand(num_cells, num_heights, 1)
    return torch.cat([xy, z], dim=-1)


HIT_AREAS = ('image', 'padded')


def project_to_cameras(points: Tensor, lidar2img: Tensor, image_hw: Tensor,
                       input_hw: Tuple[int, int], hit_area: str = 'image'
                       ) -> Tuple[Tensor, Tensor]:
    """Projects LiDAR-frame points, the same for every sample of the batch, into every camera.

    Args:
        points: (..., 3) metres, e.g. pillar points (num_queries, num_heights, 3).
        lidar2img: (bs, num_cams, 4, 4) for the image the network saw (after resize/crop/flip).
        image_hw: (bs, num_cams, 2) height and width of each camera's image content.
        input_hw: (H, W) of the network's input tensor (the padded batch shape): the image
            features span it, so the coordinates are normalised by it.
        hit_area: where a point in front of a camera must land to hit it: ``'image'`` inside
            the image content (0 <= u < width, 0 <= v < height); ``'padded'`` strictly inside the
            padded input (0 < u / W < 1, 0 < v / H < 1), as the official BEVFormer code, whose
            points in the bottom padding strip hit.

    Returns:
        reference_points_cam: (bs, num_cams, ..., 2) pixel (u, v) / (W, H), in [0, 1] over the
            input area (values for misses are finite but meaningless).
        bev_mask: (bs, num_cams, ...) bool, True where the point hits the camera.
    """
    if hit_area not in HIT_AREAS:
        raise ValueError(f'hit_area must be one of {HIT_AREAS}, got {hit_area!r}')
    bs, num_cams = lidar2img.shape[:2]
    point_shape = points.shape[:-1]
    flat = points.reshape(-1, 3).to(lidar2img.dtype)
    homogeneous = torch.cat([flat, torch.ones_like(flat[:, :1])], dim=-1)  # (P, 4)
    in_image = torch.einsum('bcij,pj->bcpi', lidar2img, homogeneous)  # (bs, cams, P, 4)
    depth = in_image[..., 2]
    pixels = in_image[..., :2] / depth.clamp(min=MIN_DEPTH)[..., None]  # (bs, cams, P, 2)
    input_h, input_w = input_hw
    reference_points_cam = pixels / pixels.new_tensor([input_w, input_h])
    if hit_area == 'image':
        image_h = image_hw[..., 0].to(pixels.dtype)[:, :, None]
        image_w = image_hw[..., 1].to(pixels.dtype)[:, :, None]
        inside = ((pixels[..., 0] >= 0) & (pixels[..., 0] < image_w)
                  & (pixels[..., 1] >= 0) & (pixels[..., 1] < image_h))
    else:
        inside = ((reference_points_cam > 0) & (reference_points_cam < 1)).all(-1)
    bev_mask = (depth > MIN_DEPTH) & inside
    return (reference_points_cam.reshape(bs, num_cams, *point_shape, 2),
            bev_mask.reshape(bs, num_cams, *point_shape))


def lidar_to_global(ego2global: Tensor, lidar2ego: Tensor) -> Tensor:
    """(..., 4, 4) LiDAR-to-global transforms from (..., 4, 4) ego2global and lidar2ego."""
    return ego2global @ lidar2ego


def current_to_previous_lidar(current_lidar2global: Tensor,
                              previous_lidar2global: Tensor) -> Tensor:
    """(..., 4, 4) maps a point in the current LiDAR frame to the previous LiDAR frame."""
    return torch.linalg.inv(previous_lidar2global) @ current_lidar2global


def align_previous_bev(previous_bev: Tensor, current2previous: Tensor,
                       point_cloud_range: Sequence[float]) -> Tensor:
    """Resamples the previous BEV onto the current BEV grid.

    The aligned map at a current cell holds the previous map at the same place in the world: the
    cell centre is moved into the previous LiDAR frame (rotation about z and translation in x, y;
    the ground is taken as flat) and the previous map is sampled there bilinearly, with zeros where
    the place was outside the previous grid.

    Args:
        previous_bev: (bs, C, bev_h, bev_w) features in the previous frame's grid.
        current2previous: (bs, 4, 4) from ``current_to_previous_lidar``.
        point_cloud_range: the grid's range (the same for both frames).

    Returns:
        (bs, C, bev_h, bev_w) in the current frame's grid.
    """
    bs, _, bev_h, bev_w = previous_bev.shape
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    centers = bev_cell_centers(bev_h, bev_w, point_cloud_range, previous_bev.device)  # (Q, 2)
    transform = current2previous.to(centers.dtype)
    rotation_xy = transform[:, :2, :2]  # (bs, 2, 2)
    translation_xy = transform[:, :2, 3]  # (bs, 2)
    in_previous = torch.einsum('bij,qj->bqi', rotation_xy, centers) + translation_xy[:, None]
    # grid_sample's (x, y) in [-1, 1] spans the map's outer edges (align_corners=False).
    grid_x = (in_previous[..., 0] - x_min) / (x_max - x_min) * 2 - 1
    grid_y = (in_previous[..., 1] - y_min) / (y_max - y_min) * 2 - 1
    grid = torch.stack([grid_x, grid_y], dim=-1).reshape(bs, bev_h, bev_w, 2)
    return F.grid_sample(previous_bev, grid.to(previous_bev.dtype), mode='bilinear',
                         padding_mode='zeros', align_corners=False)


def rotate_bev_like_torchvision(bev: Tensor, angle_deg: Tensor,
                                center_xy: Sequence[float]) -> Tensor:
    """The previous-BEV rotation of the official BEVFormer code (``temporal_alignment=
    'official'``): torchvision's tensor ``rotate(img, angle, center=center_xy)``, i.e. nearest
    neighbour, zeros outside, for a batch with one angle per sample.

    torchvision turns the image ``angle`` degrees counter-clockwise as displayed (column x to the
    right, row y down) about ``center_xy`` in pixels from the top-left corner of the first pixel:
    output pixel (x, y), taken relative to the image centre, reads the input at
    ``R(angle) ((x, y) - c) + c`` with ``R = [[cos, -sin], [sin, cos]]`` and ``c`` the centre
    relative to the image centre; that point is normalised by half the image size and sampled by
    ``grid_sample(mode='nearest', align_corners=False)``.

    Args:
        bev: (bs, C, H, W) maps.
        angle_deg: (bs,) degrees.
        center_xy: (x, y) pixels, the same for every sample (official default (100, 100)).

    Returns:
        (bs, C, H, W) rotated maps.
    """
    bs, _, height, width = bev.shape
    dtype = bev.dtype if bev.dtype == torch.float64 else torch.float32
    angle = angle_deg.to(device=bev.device, dtype=dtype) * (math.pi / 180)  # as torch.deg2rad
    cos, sin = angle.cos(), angle.sin()  # (bs,)
    center = torch.tensor([center_xy[0] - width * 0.5, center_xy[1] - height * 0.5],
                          dtype=dtype, device=bev.device)
    # arange, not linspace or deg2rad: the TorchScript exporter has no deg2rad and gives
    # linspace a float64 output
    xs = torch.arange(width, dtype=dtype, device=bev.device) + (0.5 - width * 0.5)
    ys = torch.arange(height, dtype=dtype, device=bev.device) + (0.5 - height * 0.5)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')  # (H, W) pixel centres
    rel_x, rel_y = grid_x - center[0], grid_y - center[1]
    source_x = cos[:, None, None] * rel_x - sin[:, None, None] * rel_y + center[0]
    source_y = sin[:, None, None] * rel_x + cos[:, None, None] * rel_y + center[1]
    grid = torch.stack([source_x / (0.5 * width), source_y / (0.5 * height)], dim=-1)
    return F.grid_sample(bev, grid.to(bev.dtype), mode='nearest', padding_mode='zeros',
                         align_corners=False)


def can_bus_bev_shift(can_bus: Tensor, point_cloud_range: Sequence[float]) -> Tensor:
    """The official BEVFormer's shift of the BEV reference points (``temporal_alignment=
    'official'``): the ego translation since the previous frame, turned into the current grid's
    axes and normalised by the grid's extent.

    Args:
        can_bus: (bs, 18) official CAN-bus vectors: [0:2] translation since the previous frame in
            the global frame (metres), [16] the absolute ego yaw (radians).
        point_cloud_range: the BEV grid's range.

    Returns:
        (bs, 2) (x, y) shift in the normalised [0, 1] grid coordinates of the reference points:
        ``t * (sin(b), cos(b)) / (x extent, y extent)`` with ``t`` the translation length and
        ``b`` the ego yaw minus the translation's direction (forward motion shifts along +y).
    """
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    # float64 (translations of a few metres against yaws of any size); float32 while exporting:
    # ONNX Runtime has no float64 Atan
    can_bus = can_bus.to(torch.float32 if is_exporting() else torch.float64)
    delta_x, delta_y, ego_yaw = can_bus[:, 0], can_bus[:, 1], can_bus[:, 16]
    length = (delta_x.square() + delta_y.square()).sqrt()  # as the official code (no hypot in ONNX)
    bev_angle = ego_yaw - torch.atan2(delta_y, delta_x)
    return torch.stack([length * bev_angle.sin() / (x_max - x_min),
                        length * bev_angle.cos() / (y_max - y_min)], dim=-1)
