"""Drawing primitives shared by BEVFormer's pictures: the colours and layout constants, the
projection of LiDAR-frame points and box edges into a camera, and the matplotlib panels (the
contact sheet of six camera slots and a BEV slot, camera images, box wireframes, top-down box
outlines, camera frusta, the BEV axis with the ego car).

Frames: boxes and points are in mmdet3d's LiDAR frame (+x right, +y forward); ``lidar2img`` (4, 4)
maps them to image pixels of one camera, its third row giving depth along the optical axis.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'DEFAULT_POINT_CLOUD_RANGE', 'NUSCENES_CLASS_COLORS', 'GT_COLOR', 'PANEL_ORDER', 'NEAR_DEPTH',
    'class_colors', 'box_edge_segments'
]

DEFAULT_POINT_CLOUD_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
# One colour per nuScenes class, far apart from each other and from the ground truth's white
# (nuScenes' own palette has five near-identical oranges).
NUSCENES_CLASS_COLORS: Dict[str, Tuple[int, int, int]] = {
    'car': (255, 158, 0), 'truck': (0, 200, 255), 'trailer': (180, 110, 255),
    'bus': (255, 50, 50), 'construction_vehicle': (255, 230, 0), 'bicycle': (0, 230, 120),
    'motorcycle': (255, 0, 200), 'pedestrian': (40, 100, 255), 'traffic_cone': (170, 255, 0),
    'barrier': (170, 120, 80)
}
GT_COLOR = (1.0, 1.0, 1.0)
# Camera panels, two rows of three, as a driver would arrange them.
PANEL_ORDER = ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT', 'CAM_BACK',
               'CAM_BACK_RIGHT')
NEAR_DEPTH = 0.1  # metres; box edges are clipped to lie at least this far in front of a camera


def class_colors(class_names: Sequence[str],
                 palette: Optional[Sequence[Tuple[int, int, int]]] = None) -> np.ndarray:
    """(C, 3) RGB in [0, 1], one per class: ``palette`` (RGB 0-255) when given, else
    :data:`NUSCENES_CLASS_COLORS` by name, else matplotlib's tab20 by index."""
    import matplotlib
    if palette is not None:
        if len(palette) < len(class_names):
            raise ValueError(f'palette has {len(palette)} colours for {len(class_names)} classes')
        return np.asarray(palette[:len(class_names)], dtype=np.float64).reshape(-1, 3) / 255.0
    tab20 = matplotlib.colormaps['tab20']
    return np.array([np.array(NUSCENES_CLASS_COLORS[name]) / 255.0
                     if name in NUSCENES_CLASS_COLORS else np.array(tab20(i % 20)[:3])
                     for i, name in enumerate(class_names)]).reshape(-1, 3)


# ------------------------------------------------------------------------------ projection
def _to_homogeneous(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)


def box_edge_segments(corners: np.ndarray, lidar2img: np.ndarray,
                      near: float = NEAR_DEPTH) -> Tuple[np.ndarray, np.ndarray]:
    """Image segments of the 12 edges of every box, clipped to the part in front of the camera.

    Args:
        corners: (B, 8, 3) box corners in the LiDAR frame, mmdet3d's corner order.
        lidar2img: (4, 4) one camera; its third row gives depth along the optical axis.
        near: metres; edge parts closer than this are dropped.

    Returns:
        segments: (S, 2, 2) pixel (u, v) of the segment ends (off-image ends are kept: the
            caller clips to the image by its axes limits).
        box_ids: (S,) the box of each segment.
    """
    unit = np.array(np.unravel_index(np.arange(8), (2, 2, 2))).T  # (8, 3) bits, mmdet3d order
    unit = unit[[0, 1, 3, 2, 4, 5, 7, 6]]
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8)
             if np.abs(unit[i] - unit[j]).sum() == 1]  # 12 pairs differing along one axis
    starts = corners[:, [i for i, _ in edges]].reshape(-1, 3)
    ends = corners[:, [j for _, j in edges]].reshape(-1, 3)
    depth_start = _to_homogeneous(starts) @ lidar2img[2]
    depth_end = _to_homogeneous(ends) @ lidar2img[2]
    box_ids = np.repeat(np.arange(len(corners)), len(edges))
    keep = (depth_start > near) | (depth_end > near)
    box_ids = box_ids[keep]
    starts, ends, depth_start, depth_end = (a[keep] for a in (starts, ends, depth_start,
                                                              depth_end))
    # Move an end behind the near plane along the edge onto it.
    t = np.clip((near - depth_start) / (depth_end - depth_start + 1e-12), 0, 1)
    starts = np.where((depth_start < near)[:, None], starts + t[:, None] * (ends - starts), starts)
    t = np.clip((near - depth_end) / (depth_start - depth_end + 1e-12), 0, 1)
    ends = np.where((depth_end < near)[:, None], ends + t[:, None] * (starts - ends), ends)
    segments = np.stack([starts, ends], axis=1)  # (S, 2, 3)
    in_image = _to_homogeneous(segments) @ lidar2img.T  # (S, 2, 4)
    return in_image[..., :2] / in_image[..., 2:3], box_ids


def _project(points: np.ndarray, lidar2img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(P, 2) pixels and (P,) depths of LiDAR points in one camera."""
    in_image = _to_homogeneous(points) @ lidar2img.T
    depth = in_image[:, 2]
    return in_image[:, :2] / np.maximum(depth, 1e-5)[:, None], depth


def _visible_centres(centers: np.ndarray, lidar2img: np.ndarray,
                     image_hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """(P, 2) pixels of box centres in one camera and (P,) whether each is in the image."""
    pixels, depth = _project(centers.reshape(-1, 3), lidar2img)
    img_h, img_w = image_hw
    visible = ((depth > NEAR_DEPTH) & (pixels[:, 0] >= 0) & (pixels[:, 0] < img_w) &
               (pixels[:, 1] >= 0) & (pixels[:, 1] < img_h))
    return pixels, visible


# --------------------------------------------------------------------------- shared drawing
class _BoxGeometry:
    """What the panels draw of a set of boxes, as float64 numpy (LiDAR frame): ``corners``
    (B, 8, 3), ``centers`` (B, 3) gravity centres, ``velocities`` (B, 2) or None."""

    def __init__(self, boxes) -> None:
        self.corners = boxes.corners.detach().cpu().numpy().astype(np.float64).reshape(-1, 8, 3)
        self.centers = boxes.gravity_center.detach().cpu().numpy().astype(np.float64).reshape(
            -1, 3)
        tensor = boxes.tensor.detach().cpu()
        self.velocities = (tensor[:, 7:9].numpy().astype(np.float64)
                           if tensor.ndim == 2 and tensor.shape[1] >= 9 else None)

    def __len__(self) -> int:
        return len(self.corners)


def _panel_order(cam_names: Sequence[str]) -> List[int]:
    """View indices in panel order (:data:`PANEL_ORDER` where the names match), at most six."""
    panel_of = {name: i for i, name in enumerate(PANEL_ORDER)}
    order = sorted(range(len(cam_names)), key=lambda v: panel_of.get(cam_names[v], 100 + v))
    return order[:6]


def _new_sheet(image_hw: Tuple[int, int], bottom_margin: float = 0.9, top_margin: float = 0.25,
               panel_width: float = 5.0):
    """A figure (with an Agg canvas, outside pyplot's state) of six camera slots (2 x 3) and a
    square BEV slot on the right. Returns (figure, camera slots, BEV slot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = image_hw
    aspect = height / width
    fig_h = panel_width * 2 * aspect + bottom_margin + top_margin
    fig = Figure(figsize=(panel_width * (3.15 + 2 * aspect), fig_h))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 5, width_ratios=[1, 1, 1, 0.12, 2 * aspect], left=0.004,
                            right=0.996, top=1 - top_margin / fig_h, bottom=bottom_margin / fig_h,
                            wspace=0.02, hspace=0.1)
    return fig, [grid[p // 3, p % 3] for p in range(6)], grid[:, 4]


def _draw_camera_image(axis, image: np.ndarray) -> None:
    img_h, img_w = image.shape[:2]
    axis.imshow(image, extent=(0, img_w, img_h, 0), interpolation='antialiased')
    axis.set_xlim(0, img_w)
    axis.set_ylim(img_h, 0)
    axis.axis('off')


def _draw_wireframes(axis, geometry: _BoxGeometry, lidar2img: np.ndarray, colors: np.ndarray,
                     linewidth: float, linestyle: str = '-') -> None:
    """The boxes' 12 edges in one camera, clipped to the part in front of it."""
    from matplotlib.collections import LineCollection
    if not len(geometry):
        return
    segments, box_ids = box_edge_segments(geometry.corners, lidar2img)
    if len(segments):
        axis.add_collection(LineCollection(segments, colors=colors[box_ids],
                                           linewidths=linewidth, linestyles=linestyle))


def _draw_bev_boxes(axis, geometry: _BoxGeometry, colors: np.ndarray, linewidth: float,
                    linestyle: str = '-', velocity: bool = True) -> None:
    """Top-down: bottom face, heading (centre to the front face) and velocity arrow."""
    for k in range(len(geometry)):
        corners, center = geometry.corners[k], geometry.centers[k]
        bottom = corners[[0, 3, 7, 4, 0], :2]
        axis.plot(bottom[:, 0], bottom[:, 1], color=colors[k], lw=linewidth, ls=linestyle)
        front = corners[[4, 7], :2].mean(0)
        axis.plot([center[0], front[0]], [center[1], front[1]], color=colors[k], lw=linewidth)
        if velocity and geometry.velocities is not None:
            vx, vy = geometry.velocities[k]
            if vx * vx + vy * vy > 0.01:
                axis.arrow(center[0], center[1], vx, vy, color=colors[k], width=0.05,
                           head_width=0.6, length_includes_head=True)


def _draw_camera_frusta(axis, lidar2img: np.ndarray, image_hws: Sequence[Tuple[int, int]],
                        cam_names: Sequence[str], reach: float, fill_alpha: float = 0.08,
                        text_color: Optional[str] = None) -> None:
    """Rays through the left and right image edges at mid-height, from each camera centre."""
    import matplotlib
    camera_colors = matplotlib.colormaps['tab10']
    for view, name in enumerate(cam_names):
        img_h, img_w = image_hws[view]
        inverse = np.linalg.inv(lidar2img[view])
        origin = inverse @ np.array([0.0, 0.0, 0.0, 1.0])  # depth 0: the camera centre
        origin = origin[:3] / origin[3]
        rays = []
        for u in (0.0, float(img_w)):
            point = inverse @ np.array([u, img_h / 2, 1.0, 1.0])  # one metre deep
            direction = point[:3] / point[3] - origin
            direction /= np.linalg.norm(direction[:2]) + 1e-12
            rays.append(origin + reach * direction)
        color = camera_colors(view % 10)
        axis.fill([origin[0], rays[0][0], rays[1][0]], [origin[1], rays[0][1], rays[1][1]],
                  color=color, alpha=fill_alpha)
        for ray in rays:
            axis.plot([origin[0], ray[0]], [origin[1], ray[1]], color=color, lw=0.8,
                      alpha=min(1.0, 10 * fill_alpha))
        middle = (rays[0] + rays[1]) / 2
        axis.text(middle[0], middle[1], name.replace('CAM_', ''), color=text_color or color,
                  fontsize=7, ha='center', va='center')


def _finish_bev_axis(axis, point_cloud_range: Sequence[float], title: str,
                     frame_color: str = 'k') -> None:
    """Ego car (a 4.5 m x 1.9 m footprint around the LiDAR, facing +y), the range, limits and
    labels. LiDAR frame: +x to the right, +y (the car's forward direction) up."""
    from matplotlib.patches import Rectangle
    x_min, y_min, _, x_max, y_max, _ = point_cloud_range
    axis.add_patch(Rectangle((x_min, y_min), x_max - x_min, y_max - y_min, fill=False, lw=0.8,
                             color=frame_color))
    axis.add_patch(Rectangle((-0.95, -2.6), 1.9, 4.5, color='r', alpha=0.7))
    axis.set_xlim(x_min - 2, x_max + 2)
    axis.set_ylim(y_min - 2, y_max + 2)
    axis.set_aspect('equal')
    axis.tick_params(labelsize=7)
    axis.set_xlabel('x (m, LiDAR frame)', fontsize=8)
    axis.set_ylabel('y (m, forward)', fontsize=8)
    axis.set_title(title, fontsize=8)


def _figure_rgb(fig) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a figure with an Agg canvas."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
