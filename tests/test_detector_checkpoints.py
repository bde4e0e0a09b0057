"""Whole-detector checkpoints of other layouts load into our configs through mmengine's
``load_checkpoint`` (what ``tools/test.py CKPT`` and ``load_from`` use) and predict what the
detector they were saved from predicts: mmdet's own model, random weights, saved as mmdet saves a
detector."""
import os.path as osp

import mmdet
import torch
from backbone_helpers import randomize_
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from numeric_helpers import assert_relative_close

import projects  # noqa: F401  (registers our modules)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')


def _model(config: str):
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # no download: the weights come from the checkpoint
    return MODELS.build(cfg.model).eval()


def test_mmdet_swin_retinanet_checkpoint_predicts_the_same_through_our_config(tmp_path):
    register_all_modules(init_default_scope=False)
    reference = _model(osp.join(MMDET_CONFIGS, 'swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'))
    randomize_(reference)
    path = str(tmp_path / 'retinanet_swin-t_mmdet.pth')
    torch.save(dict(state_dict=reference.state_dict(), meta=dict(mmdet_version='3.3.0')), path)
    ours = _model(osp.join(REPO, 'configs/swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'))
    assert type(ours.backbone).__name__ == 'SwinBackbone'
    load_checkpoint(ours, path, map_location='cpu', strict=True)
    images = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference_feats, our_feats = reference.extract_feat(images), ours.extract_feat(images)
        reference_out, our_out = reference.bbox_head(reference_feats), ours.bbox_head(our_feats)
    # float32 sums in another order: equal to 1e-5 of the features' scale (~40 here)
    for reference_level, our_level in zip(reference_feats, our_feats):
        assert_relative_close(our_level, reference_level, 1e-5)
    for reference_level, our_level in zip(sum(reference_out, []), sum(our_out, [])):
        assert_relative_close(our_level, reference_level, 1e-5)
