"""Multi-view camera pipeline of BEVFormer: loading, joint resize / crop / flip, photometric
distortion per view, packing a queue.

Every transform changes the images of all views of one frame *and* their camera matrices, so a
LiDAR-frame point projected with the updated ``lidar2img`` lands on the same image content as
before the transform.

Pixel convention (the one of ``grid_sample(align_corners=False)``, ``cv2.resize`` and
``projects.bevformer.geometry.project_to_cameras``): pixel ``(row, col)`` covers the square
``[col, col + 1) x [row, row + 1)`` of continuous image coordinates ``(u, v)``, and the image spans
``[0, W) x [0, H)``. In these coordinates the image transforms are exact affine maps:

- resize to ``(new_w, new_h)``: ``u' = u * new_w / W``, ``v' = v * new_h / H`` (the exact ratios of
  the integer sizes, not the requested factor);
- crop at top-left ``(x0, y0)``: ``u' = u - x0``, ``v' = v - y0``;
- horizontal flip: ``u' = W - u`` (array column ``c`` moves to ``W - 1 - c``; its square
  ``[c, c + 1)`` moves to ``(W - 1 - c, W - c]``).

The info's ``cam2img`` is read in these coordinates too (nuScenes does not state its pixel
convention; the half pixel between the two common conventions is below its calibration accuracy).
What matters is that every transform is exact in one convention, the one the model samples in.

Such a map is the 4x4 matrix ``A = [[a, 0, b, 0], [0, d, e, 0], [0, 0, 1, 0], [0, 0, 0, 1]]``
acting on ``(u * depth, v * depth, depth, 1)``; every transform left-multiplies ``cam2img``,
``lidar2img`` and the accumulated ``img_aug_matrix`` by it. Depth (the third row) never changes.

Per-frame keys set by :class:`LoadMultiViewImages` and kept up to date by the augmentations
(``N`` = number of views, in the order of the info's ``images`` dict or of ``camera_names``)::

    img             list of N (H, W, 3) arrays, BGR (mmcv's channel order), uint8 or float32
    cam_names       list of N camera names
    img_path        list of N file paths
    img_shape       list of N (H, W) of each view's image content
    ori_shape       list of N (H, W) as loaded
    pad_shape       = img_shape: the pipeline never pads (see below)
    cam2img         (N, 4, 4) float64 intrinsics, padded to 4x4, of the current images
    lidar2cam       (N, 4, 4) float64, from the info
    lidar2img       (N, 4, 4) float64, cam2img @ lidar2cam
    ori_cam2img, ori_lidar2img   copies as loaded
    img_aug_matrix  (N, 4, 4) float64 product of the image transforms (identity at load)
    scale_factor    (w_scale, h_scale) accumulated by the resizes
    crop_offset     (x0, y0) of the crop in the image before the crop ((0, 0) without a crop)
    flip            bool, flip_direction 'horizontal' or None
    num_views       N

No transform here pads. Normalisation (mean / std, ``bgr_to_rgb``) and padding of every view to the
batch's largest size rounded up to ``pad_size_divisor`` happen in mmdet3d's
``Det3DDataPreprocessor``, which handles one (num_frames * num_views, 3, H, W) tensor per sample
(``multiview_img_stack_batch``, bottom / right padding, so pixel coordinates are unchanged). Its
output key is ``inputs['imgs']`` (not ``'img'``), shape (bs, num_frames * num_views, 3, H', W'),
and it sets ``batch_input_shape = (H', W')`` and ``pad_shape`` in every sample's metainfo.

:class:`PackBEVInputs` stacks the frames of a queue into the model's input; the data contract is
documented there.
"""
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.datasets.transforms import Pack3DDetInputs
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures import Box3DMode, LiDARInstance3DBoxes
from mmdet.datasets.transforms import PhotoMetricDistortion
from mmengine.fileio import get

__all__ = [
    'LoadMultiViewImages', 'MultiViewResize', 'MultiViewCrop', 'MultiViewFlip',
    'MultiViewPhotoMetricDistortion', 'PackBEVInputs', 'image_affine_matrix', 'apply_image_affine'
]

# Keys whose per-view values :func:`apply_image_affine` updates.
_VIEW_MATRIX_KEYS = ('cam2img', 'lidar2img', 'img_aug_matrix')


def _pad_to_4x4(matrix) -> np.ndarray:
    """(4, 4) float64 from a 3x3, 3x4 or 4x4 matrix (identity in the missing part)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] > 4 or matrix.shape[1] > 4:
        raise ValueError(f'expected a 3x3, 3x4 or 4x4 matrix, got shape {matrix.shape}')
    padded = np.eye(4)
    padded[:matrix.shape[0], :matrix.shape[1]] = matrix
    return padded


def image_affine_matrix(scale_x: float = 1.0, scale_y: float = 1.0, shift_x: float = 0.0,
                        shift_y: float = 0.0) -> np.ndarray:
    """(4, 4) float64 matrix of the image map ``u' = scale_x * u + shift_x``,
    ``v' = scale_y * v + shift_y``, acting on homogeneous ``(u * depth, v * depth, depth, 1)``."""
    matrix = np.eye(4)
    matrix[0, 0], matrix[0, 2] = scale_x, shift_x
    matrix[1, 1], matrix[1, 2] = scale_y, shift_y
    return matrix


def apply_image_affine(results: dict, matrix: np.ndarray) -> None:
    """Left-multiplies every view's ``cam2img``, ``lidar2img`` and ``img_aug_matrix`` in place.

    Args:
        results: per-frame pipeline dict with (N, 4, 4) arrays under those keys.
        matrix: (4, 4), or (N, 4, 4) for a different map per view.
    """
    for key in _VIEW_MATRIX_KEYS:
        if key not in results:
            raise KeyError(f'{key!r} missing from the pipeline results: put LoadMultiViewImages '
                           'before the image transforms')
        results[key] = np.matmul(matrix, results[key])


def _image_size(results: dict) -> Tuple[int, int]:
    """(H, W) shared by all views; raises if the views differ."""
    shapes = {tuple(img.shape[:2]) for img in results['img']}
    if len(shapes) != 1:
        raise ValueError(f'views of one frame have different image sizes {sorted(shapes)}; the '
                         'multi-view transforms need equal sizes (resize with keep_ratio=False '
                         'to a fixed scale first)')
    return shapes.pop()


@TRANSFORMS.register_module()
class LoadMultiViewImages(BaseTransform):
    """Loads every camera image of one frame and builds its projection matrices.

    Unlike mmdet3d's ``LoadMultiViewImageFromFiles`` (``num_views=5`` by default, silent padding of
    views of different sizes, ``None`` images from corrupted files failing later with an unrelated
    error, no ``lidar2img``) this loader reports an unreadable image by file and camera, keeps
    each view's own size and sets the 4x4 float64 matrices listed in the module docstring.

    Required keys: ``images`` {camera name: {img_path, cam2img (3x3), lidar2cam (4x4)}}.

    Args:
        camera_names: cameras to load, in this order; None loads all cameras of ``images`` in the
            info's order (nuScenes infos of mmdet3d: FRONT, FRONT_RIGHT, FRONT_LEFT, BACK,
            BACK_LEFT, BACK_RIGHT).
        to_float32: convert the images to float32.
        color_type: ``mmcv.imfrombytes`` flag; 'color' gives 3-channel BGR.
        imdecode_backend: ``mmcv.imfrombytes`` backend ('cv2', 'pillow', 'turbojpeg').
        backend_args: mmengine file backend arguments.

    A file that is missing raises ``FileNotFoundError``, one that cannot be decoded (empty,
    truncated, not an image) raises ``OSError``; both name the camera and the file. Damage in the
    middle of a JPEG stream that the decoder conceals (it warns and fills in) cannot be detected.
    """

    def __init__(self,
                 camera_names: Optional[Sequence[str]] = None,
                 to_float32: bool = False,
                 color_type: str = 'color',
                 imdecode_backend: str = 'cv2',
                 backend_args: Optional[dict] = None) -> None:
        self.camera_names = None if camera_names is None else list(camera_names)
        self.to_float32 = to_float32
        self.color_type = color_type
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args

    def _read_image(self, camera: str, path: str) -> np.ndarray:
        try:
            image_bytes = get(path, backend_args=self.backend_args)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f'camera {camera}: image file {path!r} does not exist') from error
        except OSError as error:
            raise OSError(f'camera {camera}: cannot read image file {path!r}: {error}') from error
        try:
            image = mmcv.imfrombytes(
                image_bytes, flag=self.color_type, backend=self.imdecode_backend)
        except Exception as error:  # cv2.error on empty input, PIL errors on truncation
            raise OSError(f'camera {camera}: image file {path!r} ({len(image_bytes)} bytes) '
                          f'could not be decoded: {error}') from error
        if image is None:  # cv2 returns None for data it cannot decode
            raise OSError(f'camera {camera}: image file {path!r} ({len(image_bytes)} bytes) '
                          'could not be decoded (corrupted, truncated or not an image)')
        if image.ndim == 2:
            image = image[..., None]
        return image.astype(np.float32) if self.to_float32 else image

    def transform(self, results: dict) -> dict:
        images = results.get('images')
        if not images:
            raise KeyError("results have no 'images' (camera infos); is the dataset's modality "
                           'use_camera=True?')
        names = list(images) if self.camera_names is None else self.camera_names
        imgs, paths, cam2img, lidar2cam = [], [], [], []
        for name in names:
            info = images.get(name)
            if info is None:
                raise KeyError(f'camera {name} missing from the info of sample '
                               f"{results.get('token', results.get('sample_idx'))}; it has "
                               f'{list(images)}')
            for key in ('img_path', 'cam2img', 'lidar2cam'):
                if key not in info or info[key] is None:
                    raise KeyError(f'camera {name}: info has no {key!r} (sample '
                                   f"{results.get('token', results.get('sample_idx'))})")
            imgs.append(self._read_image(name, info['img_path']))
            paths.append(info['img_path'])
            cam2img.append(_pad_to_4x4(info['cam2img']))
            lidar2cam.append(_pad_to_4x4(info['lidar2cam']))
        cam2img = np.stack(cam2img)  # (N, 4, 4)
        lidar2cam = np.stack(lidar2cam)  # (N, 4, 4)
        lidar2img = cam2img @ lidar2cam  # (N, 4, 4)

        results['img'] = imgs
        results['cam_names'] = names
        results['img_path'] = paths
        results['img_shape'] = [tuple(img.shape[:2]) for img in imgs]
        results['ori_shape'] = list(results['img_shape'])
        results['pad_shape'] = list(results['img_shape'])
        results['cam2img'] = cam2img
        results['lidar2cam'] = lidar2cam
        results['lidar2img'] = lidar2img
        results['ori_cam2img'] = cam2img.copy()
        results['ori_lidar2img'] = lidar2img.copy()
        results['img_aug_matrix'] = np.tile(np.eye(4), (len(imgs), 1, 1))
        results['scale_factor'] = (1.0, 1.0)
        results['crop_offset'] = (0, 0)
        results['flip'] = False
        results['flip_direction'] = None
        results['num_views'] = len(imgs)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(camera_names={self.camera_names}, '
                f'to_float32={self.to_float32}, color_type={self.color_type!r}, '
                f'imdecode_backend={self.imdecode_backend!r})')


@TRANSFORMS.register_module()
class MultiViewResize(BaseTransform):
    """Resizes all views of a frame by the same factor and rescales their intrinsics.

    Exactly one of ``scale`` and ``scale_factor`` is given:

    - ``scale=(w, h)``: with ``keep_ratio`` the largest size that fits (long edge <= max(w, h),
      short edge <= min(w, h), mmcv's ``rescale_size``), else exactly (w, h);
    - ``scale_factor=f``: each side multiplied by f and rounded.

    ``ratio_range=(low, high)`` multiplies ``scale`` or ``scale_factor`` by a factor drawn
    uniformly once per call (``np.random``), the same for all views: random in training, leave it
    None for testing. The intrinsics are scaled by the exact ratio of the integer sizes.

    Args:
        scale: target (w, h).
        scale_factor: resize factor.
        ratio_range: (low, high) random multiplier, or None.
        keep_ratio: for ``scale`` only.
        interpolation: ``mmcv.imresize`` interpolation ('bilinear', 'area', 'nearest', ...).
    """

    def __init__(self,
                 scale: Optional[Tuple[int, int]] = None,
                 scale_factor: Optional[float] = None,
                 ratio_range: Optional[Tuple[float, float]] = None,
                 keep_ratio: bool = True,
                 interpolation: str = 'bilinear') -> None:
        if (scale is None) == (scale_factor is None):
            raise ValueError('MultiViewResize needs exactly one of scale=(w, h) and '
                             f'scale_factor, got scale={scale}, scale_factor={scale_factor}')
        if scale is not None and (len(scale) != 2 or min(scale) <= 0):
            raise ValueError(f'scale must be a positive (w, h), got {scale}')
        if scale_factor is not None and scale_factor <= 0:
            raise ValueError(f'scale_factor must be positive, got {scale_factor}')
        if ratio_range is not None and not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f'ratio_range must be (low, high) with 0 < low <= high, '
                             f'got {ratio_range}')
        self.scale = None if scale is None else tuple(scale)
        self.scale_factor = scale_factor
        self.ratio_range = None if ratio_range is None else tuple(ratio_range)
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation

    def _target_size(self, width: int, height: int, ratio: float) -> Tuple[int, int]:
        """(new_w, new_h) of an image of (width, height)."""
        if self.scale_factor is not None:
            factor = self.scale_factor * ratio
            return int(width * factor + 0.5), int(height * factor + 0.5)
        scale = (self.scale[0] * ratio, self.scale[1] * ratio)
        if self.keep_ratio:
            return mmcv.rescale_size((width, height), scale)
        return int(scale[0] + 0.5), int(scale[1] + 0.5)

    def transform(self, results: dict) -> dict:
        ratio = 1.0 if self.ratio_range is None else float(np.random.uniform(*self.ratio_range))
        imgs, shapes, matrices = [], [], []
        for img in results['img']:
            height, width = img.shape[:2]
            new_w, new_h = self._target_size(width, height, ratio)
            if new_w < 1 or new_h < 1:
                raise ValueError(f'MultiViewResize would make a {width}x{height} image '
                                 f'{new_w}x{new_h}')
            imgs.append(mmcv.imresize(img, (new_w, new_h), interpolation=self.interpolation))
            shapes.append((new_h, new_w))
            matrices.append(image_affine_matrix(new_w / width, new_h / height))
        apply_image_affine(results, np.stack(matrices))
        results['img'] = imgs
        results['img_shape'] = shapes
        results['pad_shape'] = list(shapes)
        old_w, old_h = results.get('scale_factor', (1.0, 1.0))
        # The views share one size in practice; the first view's exact ratios are recorded.
        results['scale_factor'] = (old_w * matrices[0][0, 0], old_h * matrices[0][1, 1])
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, scale_factor={self.scale_factor}, '
                f'ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio}, '
                f'interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class MultiViewCrop(BaseTransform):
    """Crops the same window out of every view and shifts the principal points.

    Args:
        crop_size: (h, w) of the window; every view must be at least this large (no padding).
        position: 'random' (uniform top-left, one draw per call with ``np.random``, for
            training), 'center', or 'bottom' (horizontally centred, touching the bottom edge:
            drops the sky of driving images).
    """

    POSITIONS = ('random', 'center', 'bottom')

    def __init__(self, crop_size: Tuple[int, int], position: str = 'random') -> None:
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f'crop_size must be a positive (h, w), got {crop_size}')
        if position not in self.POSITIONS:
            raise ValueError(f'position must be one of {self.POSITIONS}, got {position!r}')
        self.crop_size = tuple(int(s) for s in crop_size)
        self.position = position

    def transform(self, results: dict) -> dict:
        height, width = _image_size(results)
        crop_h, crop_w = self.crop_size
        if crop_h > height or crop_w > width:
            raise ValueError(f'MultiViewCrop crop_size (h, w)={self.crop_size} is larger than '
                             f'the images ({height}, {width})')
        if self.position == 'random':
            y0 = int(np.random.randint(0, height - crop_h + 1))
            x0 = int(np.random.randint(0, width - crop_w + 1))
        elif self.position == 'center':
            y0, x0 = (height - crop_h) // 2, (width - crop_w) // 2
        else:
            y0, x0 = height - crop_h, (width - crop_w) // 2
        results['img'] = [img[y0:y0 + crop_h, x0:x0 + crop_w] for img in results['img']]
        apply_image_affine(results, image_affine_matrix(shift_x=-x0, shift_y=-y0))
        shapes = [(crop_h, crop_w)] * len(results['img'])
        results['img_shape'] = shapes
        results['pad_shape'] = list(shapes)
        old_x, old_y = results.get('crop_offset', (0, 0))
        # Offset in the image before the crop; accumulated over several crops.
        results['crop_offset'] = (old_x + x0, old_y + y0)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(crop_size={self.crop_size}, position={self.position!r})'


@TRANSFORMS.register_module()
class MultiViewFlip(BaseTransform):
    """Flips all views of a frame horizontally with probability ``prob`` (one draw per call with
    ``np.random``, shared by the views) and mirrors their intrinsics: ``u' = W - u``.

    The 3D scene and its boxes stay as they are: each flipped view acts as a mirrored camera
    whose ``lidar2img`` still maps every LiDAR point onto its (now mirrored) image content.
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        do_flip = bool(np.random.rand() < self.prob)
        if do_flip:
            matrices = np.stack([image_affine_matrix(scale_x=-1.0, shift_x=img.shape[1])
                                 for img in results['img']])
            results['img'] = [np.ascontiguousarray(img[:, ::-1]) for img in results['img']]
            apply_image_affine(results, matrices)
            # Two flips cancel.
            results['flip'] = not results.get('flip', False)
            results['flip_direction'] = 'horizontal' if results['flip'] else None
        else:
            results.setdefault('flip', False)
            results.setdefault('flip_direction', None)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class MultiViewPhotoMetricDistortion(BaseTransform):
    """mmdet's ``PhotoMetricDistortion`` (brightness, contrast, saturation, hue, channel swap,
    each at random) applied to every view with its own draws, as the official BEVFormer recipe's
    ``PhotoMetricDistortionMultiViewImage``; the views become float32. Put it before
    ``MultiViewResize``. Arguments are ``PhotoMetricDistortion``'s (defaults: the official
    ones). Unlike the official pipeline, the frames of one queue share the draws (the dataset
    gives each frame the same random state)."""

    def __init__(self, **kwargs) -> None:
        self.distortion = PhotoMetricDistortion(**kwargs)

    def transform(self, results: dict) -> dict:
        results['img'] = [self.distortion.transform(dict(img=img))['img']
                          for img in results['img']]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.distortion!r})'


@TRANSFORMS.register_module()
class PackBEVInputs(BaseTransform):
    """Packs a queue of frames (oldest first, current last) into BEVFormer's input.

    Input: a list of per-frame pipeline results (or one dict: a queue of one frame). Each frame is
    packed by mmdet3d's ``Pack3DDetInputs`` (the current frame with ``keys`` and ``meta_keys``,
    the earlier ones with their images only), then the queue is stacked on top.

    Output ``dict(inputs=dict(img=...), data_samples=Det3DDataSample)`` with T frames of N views:

    - ``inputs['img']``: (T * N, 3, H, W) tensor (dtype as loaded, BGR), frame-major: rows
      ``t * N .. t * N + N - 1`` are frame t's views in ``cam_names`` order.
    - metainfo, per frame (index t, oldest first):
      ``lidar2img``, ``cam2img``, ``lidar2cam``, ``img_aug_matrix``: (T, N, 4, 4) float64, each
      frame's cameras from that frame's own LiDAR frame; ``ego2global``, ``lidar2ego``:
      (T, 4, 4) float64; ``scene_token`` (list of T str, '' when the info has none),
      ``timestamp`` (list of T float, seconds), ``frame_tokens`` (list of T sample tokens),
      ``frame_sample_idx`` (list of T dataset indices), ``frame_idx`` (list of T int, -1 when
      the info has none); ``prev_token``: the current frame's ``prev`` sample token ('' at a
      scene start, None when the info has no temporal fields); ``can_bus``: (T, 18) float64,
      each frame's absolute CAN-bus vector (``BEVNuScenesDataset(with_can_bus=True)``), only
      when the frames have one.
    - metainfo, shared: ``num_frames`` T, ``num_views`` N, ``img_shape`` (H, W) of the image
      content (the same for every view and frame, else ValueError), ``ori_shape`` (H0, W0) as
      loaded, ``pad_shape`` (H, W) (the data preprocessor replaces it with the padded shape),
      ``cam_names``, ``box_type_3d`` (``LiDARInstance3DBoxes`` unless the dataset says otherwise)
      and ``box_mode_3d``; ``sample_idx`` and ``token`` of the current frame.
    - metainfo, the current frame's (the remaining ``meta_keys`` that ``Pack3DDetInputs`` finds):
      e.g. ``img_path``, ``scale_factor``, ``flip``, ``crop_offset``, ``ori_cam2img``,
      ``ori_lidar2img``.
    - ``gt_instances_3d`` of the current frame (when ``keys`` has them and the pipeline loaded
      them): ``bboxes_3d`` ``LiDARInstance3DBoxes`` (box_dim 9: x, y, z bottom centre, l, w, h,
      yaw, vx, vy with ``NuScenesDataset(with_velocity=True)``), ``labels_3d`` int64 tensor;
      ``eval_ann_info`` of the current frame in test mode.

    Args:
        keys: ``Pack3DDetInputs`` keys for the current frame.
        meta_keys: ``Pack3DDetInputs`` meta keys for the current frame; the stacked keys above
            are always set and override these.
    """

    DEFAULT_META_KEYS = ('img_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
                         'flip_direction', 'crop_offset', 'box_mode_3d', 'box_type_3d',
                         'sample_idx', 'token', 'cam_names', 'num_views', 'ori_cam2img',
                         'ori_lidar2img')

    def __init__(self,
                 keys: Sequence[str] = ('img', 'gt_bboxes_3d', 'gt_labels_3d'),
                 meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        if 'img' not in keys:
            raise ValueError(f"PackBEVInputs needs 'img' in keys, got {tuple(keys)}")
        self.keys = tuple(keys)
        self.meta_keys = tuple(meta_keys)
        self._pack_current = Pack3DDetInputs(keys=self.keys, meta_keys=self.meta_keys)
        self._pack_image = Pack3DDetInputs(keys=('img', ), meta_keys=())

    @staticmethod
    def _check_frame(frame: dict, t: int) -> None:
        for key in ('img', 'lidar2img', 'cam2img', 'lidar2cam', 'img_aug_matrix'):
            if key not in frame:
                raise KeyError(f'frame {t} of the queue has no {key!r}: put LoadMultiViewImages '
                               'in the per-frame pipeline')
        if 'ego2global' not in frame:
            raise KeyError(f"frame {t} of the queue has no 'ego2global' (sample "
                           f"{frame.get('token')})")
        if 'lidar2ego' not in frame.get('lidar_points', {}):
            raise KeyError(f"frame {t} of the queue has no lidar_points['lidar2ego'] (sample "
                           f"{frame.get('token')}): BEVFormer's BEV lives in the LiDAR frame")

    def transform(self, results: Union[dict, List[dict]]) -> dict:
        frames = [results] if isinstance(results, dict) else list(results)
        if not frames:
            raise ValueError('PackBEVInputs got an empty queue')
        for t, frame in enumerate(frames):
            self._check_frame(frame, t)
        with_can_bus = ['can_bus' in frame for frame in frames]
        if any(with_can_bus) and not all(with_can_bus):
            raise ValueError(f'frames {[t for t, has in enumerate(with_can_bus) if not has]} of '
                             'the queue have no can_bus while the others have one')

        num_views = len(frames[-1]['img'])
        cam_names = frames[-1].get('cam_names')
        image_sizes = set()
        for t, frame in enumerate(frames):
            if len(frame['img']) != num_views or frame.get('cam_names') != cam_names:
                raise ValueError(f'frame {t} of the queue has cameras {frame.get("cam_names")}, '
                                 f'the current frame {cam_names}')
            image_sizes |= {tuple(img.shape[:2]) for img in frame['img']}
        if len(image_sizes) != 1:
            raise ValueError(f'the views have different image sizes {sorted(image_sizes)}: '
                             'resize them to one size (MultiViewResize with keep_ratio=False)')
        img_shape = image_sizes.pop()

        # Pack3DDetInputs replaces values of its input dict: give it shallow copies, so a frame
        # that appears twice in the queue (a scene start) stays intact.
        packed_frames = [self._pack_image.pack_single_results(dict(frame))
                         for frame in frames[:-1]]
        packed_current = self._pack_current.pack_single_results(dict(frames[-1]))
        packed_frames.append(packed_current)
        img = torch.cat([packed['inputs']['img'] for packed in packed_frames])  # (T*N, 3, H, W)

        ori_shape_list = frames[-1].get('ori_shape', [img_shape])
        ori_shapes = {tuple(shape) for shape in ori_shape_list}
        data_sample = packed_current['data_samples']
        current = frames[-1]
        box_type_3d = current.get('box_type_3d', LiDARInstance3DBoxes)
        data_sample.set_metainfo(dict(
            num_frames=len(frames),
            num_views=num_views,
            cam_names=list(cam_names) if cam_names is not None else None,
            img_shape=img_shape,
            pad_shape=img_shape,
            ori_shape=ori_shapes.pop() if len(ori_shapes) == 1 else list(ori_shape_list),
            lidar2img=np.stack([np.asarray(f['lidar2img'], np.float64) for f in frames]),
            cam2img=np.stack([np.asarray(f['cam2img'], np.float64) for f in frames]),
            lidar2cam=np.stack([np.asarray(f['lidar2cam'], np.float64) for f in frames]),
            img_aug_matrix=np.stack([np.asarray(f['img_aug_matrix'], np.float64)
                                     for f in frames]),
            ego2global=np.stack([_pad_to_4x4(f['ego2global']) for f in frames]),
            lidar2ego=np.stack([_pad_to_4x4(f['lidar_points']['lidar2ego']) for f in frames]),
            scene_token=[str(f.get('scene_token') or '') for f in frames],
            timestamp=[float(f['timestamp']) if f.get('timestamp') is not None else float('nan')
                       for f in frames],
            frame_tokens=[f.get('token', '') for f in frames],
            # the current frame's previous keyframe in the database ('' at a scene start, None
            # when the infos have no temporal links): the test-time BEV memory checks it
            prev_token=None if current.get('prev') is None else str(current['prev']),
            frame_sample_idx=[f.get('sample_idx', -1) for f in frames],
            frame_idx=[int(f['frame_idx']) if f.get('frame_idx') is not None else -1
                       for f in frames],
            sample_idx=current.get('sample_idx', -1),
            token=current.get('token', ''),
            box_type_3d=box_type_3d,
            box_mode_3d=current.get('box_mode_3d', Box3DMode.LIDAR),
        ))
        if all(with_can_bus):
            data_sample.set_metainfo(dict(can_bus=np.stack(
                [np.asarray(f['can_bus'], np.float64).reshape(18) for f in frames])))
        return dict(inputs=dict(img=img), data_samples=data_sample)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(keys={self.keys}, meta_keys={self.meta_keys})'
