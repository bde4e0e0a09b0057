"""A deterministic toy COCO-format detection / instance-segmentation dataset of flat shapes.

Every image shows 1-4 filled shapes (``CLASSES``: circle, square, triangle, cross) of random
size (15-50 % of the shorter image side), rotation, position and colour on a textured, noisy
background. Shapes never touch each other and always lie fully inside the image, so each
annotation's polygon is exactly the object's visible outline, and its ``bbox`` is the tight box
of that polygon. Colours are independent of the class: a detector must learn the shape.

Layout written by :func:`generate_toy_coco`::

    out_dir/
        train/000000.png ...             RGB uint8 images, (height, width, 3)
        val/000000.png ...
        annotations/instances_train.json COCO: info, licenses, images, annotations, categories
        annotations/instances_val.json
        toy_coco_manifest.json           generator arguments; written last, marks completeness

Config use (mmdet ``CocoDataset``)::

    metainfo = dict(classes=('circle', 'square', 'triangle', 'cross'))
    dataset = dict(type='CocoDataset', data_root='data/toy_coco/', metainfo=metainfo,
                   ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'))

Pixel convention (the COCO / pycocotools one): pixel ``(row, col)`` covers the square
``[col, col + 1) x [row, row + 1)``; it belongs to a shape when its centre lies inside the polygon.
The image is drawn with this rule, which is also how ``pycocotools`` decodes a polygon (its
rasterization is approximate: a few edge pixels per shape differ), so ``COCO.annToMask``
reproduces the drawn pixels and ``area`` (the drawn pixel count) to within 1-3 %. PIL's
``ImageDraw.polygon`` is not used: it also fills every pixel the outline touches, about 10 % more
than COCO's decoding for shapes this small.

Everything is a function of the arguments: image ``i`` of a split is drawn from its own
``numpy.random.Generator`` seeded with ``(seed, split, i)``, so the same arguments give
byte-identical PNG and JSON files, and changing ``num_train`` leaves the val split unchanged.
"""
import json
import os
import os.path as osp
import re
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from tqdm import tqdm  # an mmdet dependency

from ..common.checkpoint_io import write_atomic

__all__ = ['CLASSES', 'METAINFO', 'generate_toy_coco', 'toy_coco_ready', 'prepare_toy_coco']


def _regular_polygon(num_vertices: int, start_angle: float) -> np.ndarray:
    """(num_vertices, 2) vertices on the unit circle, counter-clockwise from ``start_angle``."""
    angles = start_angle + 2 * np.pi * np.arange(num_vertices) / num_vertices
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _cross_polygon(half_width: float = 0.35) -> np.ndarray:
    """(12, 2) vertices of a plus sign whose arm corners lie on the unit circle."""
    w = half_width
    a = np.sqrt(1 - w * w)
    return np.array([[a, w], [w, w], [w, a], [-w, a], [-w, w], [-a, w],
                     [-a, -w], [-w, -w], [-w, -a], [w, -a], [w, -w], [a, -w]])


# Each shape as a polygon inscribed in the unit circle, centred on the origin: (num_vertices, 2).
_UNIT_SHAPES: Dict[str, np.ndarray] = {
    'circle': _regular_polygon(32, 0.0),
    'square': _regular_polygon(4, np.pi / 4),
    'triangle': _regular_polygon(3, np.pi / 2),
    'cross': _cross_polygon(),
}

CLASSES: Tuple[str, ...] = tuple(_UNIT_SHAPES)
METAINFO = dict(
    classes=CLASSES, palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75), (255, 160, 0)])

FORMAT_VERSION = 1  # bump when the drawing changes, so toy_coco_ready() rejects old datasets
MIN_IMAGE_SIDE = 32
MAX_OBJECTS = 4
OBJECT_SIZE_RANGE = (0.15, 0.5)  # shape diameter as a fraction of the shorter image side
MAX_BOX_IOU = 0.3
PLACEMENT_TRIES = 30
MIN_COLOUR_DISTANCE = 120.0  # Euclidean RGB distance between a shape and the background colour
TEXTURE_AMPLITUDE = 25.0  # +- grey levels of the smooth background texture
NOISE_STD = 6.0  # grey levels of per-pixel noise over the whole image
SPLITS = ('train', 'val')
MANIFEST_NAME = 'toy_coco_manifest.json'
_IMAGE_NAME = re.compile(r'^(\d{6})\.png$')


# ----------------------------------------------------------------------------- validation
def _check_count(name: str, value) -> int:
    """``value`` as an int >= 1, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    return int(value)


def _check_image_size(image_size) -> Tuple[int, int]:
    """``image_size`` (int, or (height, width)) as a (height, width) pair of ints."""
    pair = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    try:
        height, width = pair
    except (TypeError, ValueError):
        height = width = None
    if not all(isinstance(side, (int, np.integer)) and not isinstance(side, bool)
               and side >= MIN_IMAGE_SIDE for side in (height, width)):
        raise ValueError(f'image_size must be an int or a (height, width) pair of ints >= '
                         f'{MIN_IMAGE_SIDE}, got {image_size!r}')
    return int(height), int(width)


def _check_seed(seed) -> int:
    """``seed`` as an int >= 0 (what ``numpy.random.default_rng`` accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be an int >= 0, got {seed!r}')
    return int(seed)


def _check_classes(classes) -> Tuple[str, ...]:
    """``classes`` as a non-empty tuple of distinct names from ``CLASSES``."""
    if isinstance(classes, str):
        raise ValueError(f'classes must be a sequence of names from {CLASSES}, got the string '
                         f'{classes!r}')
    classes = tuple(classes)
    unknown = [name for name in classes if name not in _UNIT_SHAPES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise ValueError(f'classes must be a non-empty sequence of distinct names from '
                         f'{CLASSES}, got {classes!r}')
    return classes


def _checked_args(num_train, num_val, image_size, seed, classes) -> dict:
    """The generator arguments, validated and in JSON-friendly form (also the manifest)."""
    return dict(num_train=_check_count('num_train', num_train),
                num_val=_check_count('num_val', num_val),
                image_size=list(_check_image_size(image_size)),
                seed=_check_seed(seed),
                classes=list(_check_classes(classes)))


# ----------------------------------------------------------------------------- geometry
def _place_polygon(unit_polygon: np.ndarray, centre: Tuple[float, float], radius: float,
                   angle: float) -> np.ndarray:
    """(N, 2) unit polygon rotated by ``angle``, scaled by ``radius``, moved to ``centre``.

    Coordinates are rounded to 0.01 px, the precision stored in the JSON, so that the drawn
    pixels come from exactly the annotated polygon.
    """
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    return np.round(unit_polygon @ rotation.T * radius + np.asarray(centre), 2)


def _rasterize(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of the pixels whose centres lie inside ``polygon`` (N, 2) xy.

    Even-odd rule: a pixel centre is inside when a ray towards +x crosses an odd number of edges.
    """
    x_start, y_start = np.floor(polygon.min(axis=0)).astype(int).clip(0)
    x_stop, y_stop = np.ceil(polygon.max(axis=0)).astype(int)
    x_stop, y_stop = min(x_stop, width), min(y_stop, height)
    centres_x = np.arange(x_start, x_stop)[None, None, :] + 0.5  # (1, 1, w)
    centres_y = np.arange(y_start, y_stop)[None, :, None] + 0.5  # (1, h, 1)
    x0, y0 = (polygon[:, i, None, None] for i in (0, 1))  # (E, 1, 1) edge starts
    x1, y1 = (np.roll(polygon, 1, axis=0)[:, i, None, None] for i in (0, 1))  # edge ends
    spans_row = (y0 > centres_y) != (y1 > centres_y)  # (E, h, 1)
    dy = np.where(y1 == y0, 1.0, y1 - y0)  # horizontal edges never span a row
    crossing_x = x0 + (centres_y - y0) * (x1 - x0) / dy  # (E, h, 1)
    crossings = spans_row & (centres_x < crossing_x)  # (E, h, w)
    mask = np.zeros((height, width), dtype=bool)
    mask[y_start:y_stop, x_start:x_stop] = np.logical_xor.reduce(crossings, axis=0)
    return mask


def _tight_box(polygon: np.ndarray, height: int, width: int) -> List[float]:
    """COCO ``[x, y, w, h]`` of the tight box around ``polygon`` (N, 2), clipped to the image."""
    x_min, y_min = np.maximum(polygon.min(axis=0), 0.0)
    x_max, y_max = np.minimum(polygon.max(axis=0), (width, height))
    return [round(float(v), 2) for v in (x_min, y_min, x_max - x_min, y_max - y_min)]


def _box_iou(box: Sequence[float], boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """(len(boxes),) IoU of one COCO ``[x, y, w, h]`` box with each of ``boxes``."""
    if not boxes:
        return np.zeros(0)
    x, y, w, h = box
    others = np.asarray(boxes, dtype=float)  # (M, 4)
    inter_w = (np.minimum(x + w, others[:, 0] + others[:, 2]) - np.maximum(x, others[:, 0]))
    inter_h = (np.minimum(y + h, others[:, 1] + others[:, 3]) - np.maximum(y, others[:, 1]))
    inter = inter_w.clip(0) * inter_h.clip(0)
    return inter / (w * h + others[:, 2] * others[:, 3] - inter)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool mask grown by one pixel in the 8-neighbourhood."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    grown = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy:dy + height, dx:dx + width]
    return grown


# ----------------------------------------------------------------------------- one image
def _background(rng: np.random.Generator, height: int,
                width: int) -> Tuple[np.ndarray, np.ndarray]:
    """A smooth random texture around a random base colour.

    Returns the (height, width, 3) float32 image and the (3,) base colour.
    """
    base_colour = rng.uniform(40, 215, size=3)
    coarse = rng.uniform(-TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE, size=(4, 4)).astype(np.float32)
    texture = Image.fromarray(coarse, mode='F').resize((width, height), Image.BILINEAR)
    image = base_colour[None, None, :] + np.asarray(texture)[:, :, None]
    return image.astype(np.float32), base_colour


def _shape_colour(rng: np.random.Generator, base_colour: np.ndarray) -> np.ndarray:
    """(3,) RGB colour at least ``MIN_COLOUR_DISTANCE`` away from ``base_colour``."""
    while True:
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - base_colour) >= MIN_COLOUR_DISTANCE:
            return colour


def _sample_shape(rng: np.random.Generator, unit_polygon: np.ndarray, height: int,
                  width: int) -> np.ndarray:
    """(N, 2) polygon of random size, rotation and position, fully inside the image."""
    low, high = OBJECT_SIZE_RANGE
    radius = rng.uniform(low, high) * min(height, width) / 2
    centre = (rng.uniform(radius, width - radius), rng.uniform(radius, height - radius))
    return _place_polygon(unit_polygon, centre, radius, rng.uniform(0, 2 * np.pi))


def _draw_image(rng: np.random.Generator, height: int, width: int,
                classes: Sequence[str]) -> Tuple[np.ndarray, List[dict]]:
    """Draw one image.

    Returns the (height, width, 3) uint8 RGB image and one dict per shape with ``label``
    (index into ``classes``), ``polygon`` ((N, 2) xy), ``bbox`` (COCO xywh) and ``area`` (pixels).
    A shape whose placement fails ``PLACEMENT_TRIES`` times (too close to the others) is left out.
    """
    image, base_colour = _background(rng, height, width)
    occupied = np.zeros((height, width), dtype=bool)
    objects: List[dict] = []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        label = int(rng.integers(len(classes)))
        colour = _shape_colour(rng, base_colour)
        for _ in range(PLACEMENT_TRIES):
            polygon = _sample_shape(rng, _UNIT_SHAPES[classes[label]], height, width)
            bbox = _tight_box(polygon, height, width)
            if np.any(_box_iou(bbox, [obj['bbox'] for obj in objects]) > MAX_BOX_IOU):
                continue
            mask = _rasterize(polygon, height, width)
            if np.any(_dilate(mask) & occupied):
                continue
            image[mask] = colour
            occupied |= mask
            objects.append(dict(label=label, polygon=polygon, bbox=bbox, area=int(mask.sum())))
            break
    image += rng.normal(0, NOISE_STD, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), objects


# ----------------------------------------------------------------------------- files
def _split_paths(out_dir: str, split: str) -> Tuple[str, str]:
    """(image directory, annotation file) of one split."""
    return (osp.join(out_dir, split), osp.join(out_dir, 'annotations', f'instances_{split}.json'))


def _image_name(index: int) -> str:
    """File name of image ``index`` (from 0) of a split, e.g. ``000042.png``."""
    return f'{index:06d}.png'


def _write_json(path: str, obj) -> None:
    """Write ``obj`` as compact JSON, atomically (a reader never sees a partial file)."""
    write_atomic(json.dumps(obj, separators=(',', ':')).encode(), path)


def _remove_stale_images(img_dir: str, num_images: int) -> None:
    """Delete numbered PNGs left in ``img_dir`` by an earlier, larger generation."""
    for name in os.listdir(img_dir):
        match = _IMAGE_NAME.match(name)
        if match and int(match.group(1)) >= num_images:
            os.remove(osp.join(img_dir, name))


def _coco_header(split: str, args: dict) -> dict:
    """COCO ``info``, ``licenses`` and ``categories`` (ids from 1, in ``args['classes']`` order)."""
    return dict(
        info=dict(description=f"Toy shapes, split {split}, seed {args['seed']}",
                  version=str(FORMAT_VERSION), contributor='projects.datasets.toy_coco'),
        licenses=[dict(id=1, name='CC0 1.0',
                       url='https://creativecommons.org/publicdomain/zero/1.0/')],
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(args['classes'])])


def _generate_split(out_dir: str, split: str, num_images: int, args: dict,
                    progress_bar: tqdm) -> int:
    """Write one split's images and COCO annotation file; return its number of instances."""
    img_dir, ann_file = _split_paths(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    height, width = args['image_size']
    coco = dict(_coco_header(split, args), images=[], annotations=[])
    for index in range(num_images):
        rng = np.random.default_rng([args['seed'], SPLITS.index(split), index])
        image, objects = _draw_image(rng, height, width, args['classes'])
        Image.fromarray(image).save(osp.join(img_dir, _image_name(index)))
        image_id = index + 1
        coco['images'].append(dict(id=image_id, file_name=_image_name(index), height=height,
                                   width=width, license=1))
        for obj in objects:
            coco['annotations'].append(dict(
                id=len(coco['annotations']) + 1, image_id=image_id,
                category_id=obj['label'] + 1, bbox=obj['bbox'], area=float(obj['area']),
                iscrowd=0, segmentation=[[float(v) for v in obj['polygon'].ravel()]]))
        progress_bar.update()
    _write_json(ann_file, coco)
    _remove_stale_images(img_dir, num_images)
    return len(coco['annotations'])


def _summary(out_dir: str, manifest: dict, generated: bool) -> dict:
    """The summary returned by :func:`generate_toy_coco` and :func:`prepare_toy_coco`."""
    args = manifest['args']
    summary = dict(out_dir=out_dir, generated=generated, classes=tuple(args['classes']),
                   image_size=tuple(args['image_size']))
    for split in SPLITS:
        img_dir, ann_file = _split_paths(out_dir, split)
        summary[split] = dict(img_dir=img_dir, ann_file=ann_file,
                              num_images=args[f'num_{split}'],
                              num_instances=manifest['num_instances'][split])
    return summary


def _read_manifest(out_dir: str):
    """The manifest dict, or None when it is missing or unreadable."""
    try:
        with open(osp.join(out_dir, MANIFEST_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- public API
def generate_toy_coco(out_dir: Union[str, os.PathLike], num_train: int = 400,
                      num_val: int = 100, image_size: Union[int, Tuple[int, int]] = 128,
                      seed: int = 0, classes: Sequence[str] = CLASSES,
                      progress: bool = True) -> dict:
    """Generate (or overwrite) the toy dataset under ``out_dir``; see the module docstring.

    Args:
        out_dir: dataset root; created if missing.
        num_train, num_val: number of images per split (>= 1).
        image_size: int or (height, width), each >= 32.
        seed: int >= 0; the same arguments always give byte-identical files.
        classes: names from ``CLASSES`` to draw; category ids are 1..len(classes) in this order.
        progress: show a progress bar.

    Returns:
        dict with ``out_dir``, ``generated`` (True), ``classes``, ``image_size`` (height, width)
        and per split (``'train'``, ``'val'``) a dict of ``img_dir``, ``ann_file``,
        ``num_images``, ``num_instances``.
    """
    args = _checked_args(num_train, num_val, image_size, seed, classes)
    out_dir = os.fspath(out_dir)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    manifest_path = osp.join(out_dir, MANIFEST_NAME)
    if osp.exists(manifest_path):
        os.remove(manifest_path)  # an interrupted run must not look complete
    with tqdm(total=args['num_train'] + args['num_val'], desc='toy_coco', unit='img',
              disable=not progress) as progress_bar:
        num_instances = {split: _generate_split(out_dir, split, args[f'num_{split}'], args,
                                                progress_bar) for split in SPLITS}
    manifest = dict(generator='projects.datasets.toy_coco', format_version=FORMAT_VERSION,
                    args=args, num_instances=num_instances)
    _write_json(manifest_path, manifest)
    return _summary(out_dir, manifest, generated=True)


def toy_coco_ready(out_dir: Union[str, os.PathLike], num_train: int = 400, num_val: int = 100,
                   image_size: Union[int, Tuple[int, int]] = 128, seed: int = 0,
                   classes: Sequence[str] = CLASSES) -> bool:
    """Whether ``out_dir`` holds a complete dataset generated with exactly these arguments.

    True when the manifest (written last by :func:`generate_toy_coco`) matches the arguments and
    the generator version, and both annotation files and every image file exist.
    """
    args = _checked_args(num_train, num_val, image_size, seed, classes)
    out_dir = os.fspath(out_dir)
    manifest = _read_manifest(out_dir)
    if (manifest is None or manifest.get('format_version') != FORMAT_VERSION
            or manifest.get('args') != args):
        return False
    for split in SPLITS:
        img_dir, ann_file = _split_paths(out_dir, split)
        if not osp.isfile(ann_file) or not all(
                osp.isfile(osp.join(img_dir, _image_name(i)))
                for i in range(args[f'num_{split}'])):
            return False
    return True


def prepare_toy_coco(out_dir: Union[str, os.PathLike], num_train: int = 400,
                     num_val: int = 100, image_size: Union[int, Tuple[int, int]] = 128,
                     seed: int = 0, classes: Sequence[str] = CLASSES, force: bool = False,
                     progress: bool = True) -> dict:
    """Generate the dataset unless ``out_dir`` already holds it (see :func:`toy_coco_ready`).

    ``force=True`` regenerates anyway. Returns the summary of :func:`generate_toy_coco`, with
    ``generated`` False when the existing dataset was kept.
    """
    if not force and toy_coco_ready(out_dir, num_train, num_val, image_size, seed, classes):
        out_dir = os.fspath(out_dir)
        return _summary(out_dir, _read_manifest(out_dir), generated=False)
    return generate_toy_coco(out_dir, num_train, num_val, image_size, seed, classes, progress)
