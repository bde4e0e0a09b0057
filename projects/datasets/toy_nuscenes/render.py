"""The toy world's camera images.

:func:`_render_camera` draws one camera's view of the scene: sky and a checkered ground plane,
then each box as filled faces in its class colour, shaded by a fixed light, back faces culled,
clipped at ``NEAR_PLANE``, painted far to near. It also counts each object's visible and
silhouette pixels, which :func:`_visibility_token` turns into a nuScenes visibility token.
Deterministic: it draws no random numbers.
"""
from typing import List, Tuple

import cv2
import numpy as np

from .plan import ToyObject
from .rig import camera_intrinsic, sensor2ego
from .world import OBJECT_SPECS, VISIBILITY_BINS

NEAR_PLANE = 0.1  # camera-space depth at which faces are clipped (m)
LIGHT_DIRECTION = np.array([-0.3, 0.4, 1.0]) / np.linalg.norm([-0.3, 0.4, 1.0])  # global
CHECKER_SIZE = 5.0  # m


def _box_corners(centre: np.ndarray, yaw: float, half: np.ndarray) -> np.ndarray:
    """(8, 3) corners of a box; corner ``i`` has local signs (+-x, +-y, +-z) from bits 2, 1, 0
    of ``i`` (set bit: minus)."""
    signs = np.array([[1 - 2 * ((i >> 2) & 1), 1 - 2 * ((i >> 1) & 1), 1 - 2 * (i & 1)]
                      for i in range(8)], dtype=np.float64)
    cos, sin = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return (signs * half) @ rotation.T + centre


# Faces as corner indices (see _box_corners) in cyclic order, with their outward normal in the
# box frame.
_BOX_FACES = (((0, 2, 6, 4), (0, 0, 1)), ((1, 5, 7, 3), (0, 0, -1)), ((0, 1, 3, 2), (1, 0, 0)),
              ((4, 6, 7, 5), (-1, 0, 0)), ((0, 4, 5, 1), (0, 1, 0)), ((2, 3, 7, 6), (0, -1, 0)))


def _clip_near(polygon: np.ndarray) -> np.ndarray:
    """The part (M, 3) of a camera-frame polygon (N, 3) with depth z >= ``NEAR_PLANE``."""
    clipped = []
    for current, following in zip(polygon, np.roll(polygon, -1, axis=0)):
        current_in, following_in = current[2] >= NEAR_PLANE, following[2] >= NEAR_PLANE
        if current_in:
            clipped.append(current)
        if current_in != following_in:
            fraction = (NEAR_PLANE - current[2]) / (following[2] - current[2])
            clipped.append(current + fraction * (following - current))
    return np.array(clipped).reshape(-1, 3)


_GROUND_RGB = (105.0, 105.0, 100.0)
_HAZE_RGB = (175.0, 185.0, 195.0)
_SKY_HORIZON_RGB = (200.0, 215.0, 230.0)
_SKY_ZENITH_RGB = (110.0, 150.0, 210.0)


def _background(cam2global: np.ndarray, intrinsic: np.ndarray, height: int,
                width: int) -> np.ndarray:
    """(height, width, 3) float32 RGB sky above the horizon, checkered ground below it."""
    pixel2global = (cam2global[:3, :3] @ np.linalg.inv(intrinsic)).astype(np.float32)
    cols = np.arange(width, dtype=np.float32)[None, :]
    rows = np.arange(height, dtype=np.float32)[:, None]
    dx, dy, dz = (m[0] * cols + m[1] * rows + m[2] for m in pixel2global)  # (H, W) directions
    length = np.sqrt(dx * dx + dy * dy + dz * dz)
    is_ground = dz < -1e-6 * length
    steps = np.where(is_ground, np.float32(-cam2global[2, 3]) / np.where(is_ground, dz, -1), 0)
    ground_x = np.float32(cam2global[0, 3]) + steps * dx
    ground_y = np.float32(cam2global[1, 3]) + steps * dy
    checker = (np.floor(ground_x / CHECKER_SIZE) + np.floor(ground_y / CHECKER_SIZE)) % 2 * 2 - 1
    fade = np.exp(steps * length / -60.0)  # 1 at the camera, 0 far away
    ground_weight = fade ** 0.3  # far ground fades into haze
    elevation = np.clip(dz / length, 0, 1)
    image = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):
        ground = ((_GROUND_RGB[channel] + 14 * checker * fade) * ground_weight
                  + _HAZE_RGB[channel] * (1 - ground_weight))
        sky = (_SKY_HORIZON_RGB[channel] * (1 - elevation)
               + _SKY_ZENITH_RGB[channel] * elevation)
        image[..., channel] = np.where(is_ground, ground, sky)
    return image


def _face_shade(normal_global: np.ndarray) -> float:
    """Brightness factor of a face with this outward global normal (ambient + diffuse)."""
    return 0.45 + 0.55 * max(0.0, float(normal_global @ LIGHT_DIRECTION))


def _fixed_point(points: np.ndarray) -> np.ndarray:
    """(N, 1, 2) int32 pixel coordinates with 4 fractional bits, for cv2's ``shift=4``."""
    return np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)


def _render_camera(objects: List[ToyObject], boxes_global: tuple, ego2global: np.ndarray,
                   channel: str, image_size: Tuple[int, int]
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one camera image.

    Returns:
        image: (height, width, 3) uint8 RGB.
        visible: (B,) pixels where each object is the nearest surface.
        silhouette: (B,) pixels each object covers when drawn alone.
    """
    height, width = image_size
    intrinsic = camera_intrinsic(channel, image_size)
    cam2global = ego2global @ sensor2ego(channel)
    global2cam = np.linalg.inv(cam2global)
    image = _background(cam2global, intrinsic, height, width)
    object_ids = np.zeros((height, width), dtype=np.uint8)  # 0: background, b + 1: object b
    centres, yaws, half = boxes_global
    silhouette = np.zeros(len(objects), dtype=np.int64)
    distances = np.linalg.norm(centres - cam2global[:3, 3], axis=1)
    for b in np.argsort(-distances, kind='stable'):  # far to near
        corners = _box_corners(centres[b], yaws[b], half[b])
        corners_cam = corners @ global2cam[:3, :3].T + global2cam[:3, 3]
        if np.all(corners_cam[:, 2] < NEAR_PLANE):
            continue  # behind the camera
        cos, sin = np.cos(yaws[b]), np.sin(yaws[b])
        colour = np.array(OBJECT_SPECS[objects[b].name].colour, dtype=np.float32)
        alone = np.zeros((height, width), dtype=np.uint8)
        for face, normal in _BOX_FACES:
            normal_global = np.array([cos * normal[0] - sin * normal[1],
                                      sin * normal[0] + cos * normal[1], normal[2]])
            polygon = corners_cam[list(face)]
            if (global2cam[:3, :3] @ normal_global) @ polygon.mean(axis=0) >= 0:
                continue  # back face
            polygon = _clip_near(polygon)
            if len(polygon) < 3:
                continue
            pixels = _fixed_point((polygon / polygon[:, 2:]) @ intrinsic.T[:, :2])
            shade = colour * _face_shade(normal_global)
            cv2.fillPoly(image, [pixels], shade.tolist(), cv2.LINE_AA, shift=4)
            cv2.polylines(image, [pixels], True, (shade * 0.45).tolist(), 1, cv2.LINE_AA,
                          shift=4)
            cv2.fillPoly(object_ids, [pixels], int(b) + 1, cv2.LINE_8, shift=4)
            cv2.fillPoly(alone, [pixels], 1, cv2.LINE_8, shift=4)
        silhouette[b] = int(alone.sum())
    visible = np.bincount(object_ids.ravel(), minlength=len(objects) + 1)[1:]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), visible, silhouette


def _visibility_token(visible: int, silhouette: int) -> str:
    """nuScenes visibility token of an object with this many visible of ``silhouette`` pixels."""
    fraction = visible / silhouette if silhouette else 0.0
    for token, _, upper in VISIBILITY_BINS:
        if fraction < upper:
            return token
    return VISIBILITY_BINS[-1][0]
