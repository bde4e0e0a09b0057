"""Tests of the toy COCO-format shapes dataset generator (projects/datasets/toy_coco.py)."""
import importlib.util
import json
import os
import os.path as osp

import numpy as np
import pytest
from file_helpers import file_bytes
from PIL import Image

from projects.datasets import CLASSES, generate_toy_coco, prepare_toy_coco, toy_coco_ready

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Non-square, so that a height / width mix-up shows.
ARGS = dict(num_train=12, num_val=4, image_size=(96, 112), seed=3)


def _generate(out_dir, **overrides):
    return generate_toy_coco(out_dir, **{**ARGS, **overrides}, progress=False)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """Summary dict of one small generated dataset, shared by the read-only tests."""
    return _generate(tmp_path_factory.mktemp('toy_coco'))


def _load_coco(ann_file):
    from pycocotools.coco import COCO
    return COCO(ann_file)


def test_same_arguments_give_identical_files(tmp_path, dataset):
    _generate(tmp_path)
    assert file_bytes(tmp_path) == file_bytes(dataset['out_dir'])


def test_other_seed_gives_other_data(tmp_path, dataset):
    _generate(tmp_path, seed=ARGS['seed'] + 1)
    ann_file = 'annotations/instances_train.json'
    assert file_bytes(tmp_path)[ann_file] != file_bytes(dataset['out_dir'])[ann_file]


def test_val_split_does_not_depend_on_num_train(tmp_path, dataset):
    _generate(tmp_path, num_train=2)
    ours, reference = file_bytes(tmp_path), file_bytes(dataset['out_dir'])
    val_files = [path for path in reference if 'val' in path and 'manifest' not in path]
    assert val_files and all(ours[path] == reference[path] for path in val_files)


def test_summary_counts(dataset):
    for split in ('train', 'val'):
        info = dataset[split]
        with open(info['ann_file']) as f:
            coco = json.load(f)
        assert info['num_images'] == len(coco['images']) == ARGS[f'num_{split}']
        assert info['num_instances'] == len(coco['annotations'])
        assert sorted(os.listdir(info['img_dir'])) == [im['file_name'] for im in coco['images']]
    assert dataset['classes'] == CLASSES
    assert dataset['image_size'] == ARGS['image_size']


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_fields(dataset, split):
    coco = _load_coco(dataset[split]['ann_file'])
    assert {'info', 'licenses', 'images', 'annotations', 'categories'} <= set(coco.dataset)
    assert [(c['id'], c['name']) for c in coco.dataset['categories']] == list(
        enumerate(CLASSES, start=1))
    ann_ids = [ann['id'] for ann in coco.dataset['annotations']]
    assert len(set(ann_ids)) == len(ann_ids)
    height, width = ARGS['image_size']
    for img in coco.dataset['images']:
        assert (img['height'], img['width']) == (height, width)
        assert 1 <= len(coco.getAnnIds(imgIds=img['id'])) <= 4
    for ann in coco.dataset['annotations']:
        assert ann['iscrowd'] == 0
        assert ann['category_id'] in coco.cats


@pytest.mark.parametrize('split', ['train', 'val'])
def test_bbox_is_tight_box_of_polygon_inside_image(dataset, split):
    coco = _load_coco(dataset[split]['ann_file'])
    height, width = ARGS['image_size']
    for ann in coco.dataset['annotations']:
        (polygon,) = ann['segmentation']
        xy = np.asarray(polygon).reshape(-1, 2)
        x, y, w, h = ann['bbox']
        assert len(xy) >= 3 and w > 0 and h > 0
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        np.testing.assert_allclose([x, y, x + w, y + h], [*xy.min(0), *xy.max(0)], atol=0.011)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_masks_match_area_and_do_not_overlap(dataset, split):
    coco = _load_coco(dataset[split]['ann_file'])
    for img in coco.dataset['images']:
        covered = np.zeros((img['height'], img['width']), dtype=int)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            mask = coco.annToMask(ann)
            covered += mask
            # pycocotools decodes polygons approximately: a few edge pixels differ
            assert abs(mask.sum() - ann['area']) <= 0.05 * ann['area'] + 2
        assert covered.max() <= 1


def _pixel_centre_mask(polygon, height, width):
    """(height, width) bool: pixels whose centre lies inside ``polygon`` [x1, y1, x2, y2, ...]."""
    from matplotlib.path import Path
    rows, cols = np.mgrid[:height, :width]
    centres = np.stack([cols.ravel(), rows.ravel()], axis=1) + 0.5
    return Path(np.reshape(polygon, (-1, 2))).contains_points(centres).reshape(height, width)


def _outer_ring(mask):
    """(H, W) bool: pixels outside ``mask`` with a 4-neighbour inside it."""
    padded = np.pad(mask, 1)
    grown = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return grown & ~mask


def _off_colour(pixels, colour):
    """(N,) bool: which of the (N, 3) ``pixels`` are clearly (beyond noise) not ``colour``."""
    return np.abs(pixels.astype(float) - colour).max(axis=1) > 30


@pytest.mark.parametrize('split', ['train', 'val'])
def test_polygon_outlines_the_drawn_shape(dataset, split):
    """Every pixel centre inside the polygon has the shape's colour; the pixels around do not."""
    coco = _load_coco(dataset[split]['ann_file'])
    for img in coco.dataset['images']:
        image = np.asarray(Image.open(osp.join(dataset[split]['img_dir'], img['file_name'])))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            mask = _pixel_centre_mask(ann['segmentation'][0], img['height'], img['width'])
            assert mask.sum() == ann['area']
            colour = np.median(image[mask], axis=0)
            assert _off_colour(image[mask], colour).mean() < 0.01, ann['id']
            assert _off_colour(image[_outer_ring(mask)], colour).mean() > 0.95, ann['id']


def test_ready_and_prepare(tmp_path):
    assert not toy_coco_ready(tmp_path, **ARGS)
    assert prepare_toy_coco(tmp_path, **ARGS, progress=False)['generated']
    assert toy_coco_ready(tmp_path, **ARGS)
    assert not toy_coco_ready(tmp_path, **{**ARGS, 'seed': ARGS['seed'] + 1})
    kept = prepare_toy_coco(tmp_path, **ARGS, progress=False)
    assert not kept['generated'] and kept['train']['num_images'] == ARGS['num_train']
    assert prepare_toy_coco(tmp_path, **ARGS, force=True, progress=False)['generated']

    os.remove(osp.join(tmp_path, 'val', '000001.png'))
    assert not toy_coco_ready(tmp_path, **ARGS)


def test_regenerating_smaller_removes_stale_images(tmp_path):
    _generate(tmp_path, num_train=5)
    _generate(tmp_path, num_train=2)
    assert sorted(os.listdir(osp.join(tmp_path, 'train'))) == ['000000.png', '000001.png']


@pytest.mark.parametrize('overrides, parameter', [
    (dict(num_train=0), 'num_train'),
    (dict(num_train=2.5), 'num_train'),
    (dict(num_val=-1), 'num_val'),
    (dict(image_size=16), 'image_size'),
    (dict(image_size=(128, 20)), 'image_size'),
    (dict(image_size=(128, 128, 3)), 'image_size'),
    (dict(image_size='128'), 'image_size'),
    (dict(seed=-1), 'seed'),
    (dict(classes=('circle', 'hexagon')), 'classes'),
    (dict(classes=()), 'classes'),
    (dict(classes=('circle', 'circle')), 'classes'),
    (dict(classes='circle'), 'classes'),
])
def test_bad_arguments_name_the_parameter(tmp_path, overrides, parameter):
    with pytest.raises(ValueError, match=parameter):
        _generate(tmp_path, **overrides)
    with pytest.raises(ValueError, match=parameter):
        toy_coco_ready(tmp_path, **{**ARGS, **overrides})
    assert not os.listdir(tmp_path)  # nothing written


def test_class_subset_sets_category_order(tmp_path):
    classes = ('triangle', 'circle')
    summary = _generate(tmp_path, classes=classes, num_train=4, num_val=1)
    coco = _load_coco(summary['train']['ann_file'])
    assert [c['name'] for c in coco.dataset['categories']] == list(classes)
    assert {ann['category_id'] for ann in coco.dataset['annotations']} <= {1, 2}


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'make_toy_coco', osp.join(REPO_ROOT, 'tools', 'data', 'make_toy_coco.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(['--out-dir', str(tmp_path), '--num-train', '3', '--num-val', '2', '--size', '64',
              '80', '--no-progress'])
    summary = json.loads(capsys.readouterr().out)
    assert summary['generated'] and summary['image_size'] == [64, 80]
    assert toy_coco_ready(tmp_path, num_train=3, num_val=2, image_size=(64, 80), seed=0)


def test_mmdet_coco_dataset_loads_it(dataset):
    pytest.importorskip('mmcv')
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    split = dataset['train']
    dataset_kwargs = dict(data_root=dataset['out_dir'], metainfo=dict(classes=CLASSES),
                          ann_file=osp.relpath(split['ann_file'], dataset['out_dir']),
                          data_prefix=dict(img='train/'))
    raw = CocoDataset(**dataset_kwargs, pipeline=[])
    assert len(raw) == split['num_images']
    assert sum(len(raw[i]['instances']) for i in range(len(raw))) == split['num_instances']

    loaded = CocoDataset(**dataset_kwargs, pipeline=[
        LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True)])
    coco = _load_coco(split['ann_file'])
    for index in range(3):
        sample = loaded[index]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=sample['img_id']))
        assert sample['img'].shape == (*ARGS['image_size'], 3)
        expected_boxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
        np.testing.assert_allclose(sample['gt_bboxes'].numpy(), expected_boxes, atol=1e-4)
        assert sample['gt_bboxes_labels'].tolist() == [a['category_id'] - 1 for a in anns]
        assert len(sample['gt_masks']) == len(anns)
