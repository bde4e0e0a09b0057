"""Every config in configs/ builds its model on CPU, uses our modules, and its backbone fits its neck."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import projects  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)


def _build(cfg: Config):
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmdet3d':
        from mmdet3d.registry import MODELS
    else:
        from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


def _backbone_and_neck(model, cfg: Config):
    """(backbone, neck, neck config) of a 2D detector or of a camera 3D detector."""
    if hasattr(model, 'img_backbone'):
        return model.img_backbone, model.img_neck, cfg.model.img_neck
    return model.backbone, model.neck, cfg.model.neck


def test_configs_found():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds_model(path):
    cfg = Config.fromfile(path)
    model = _build(cfg)
    ours = {type(m).__name__ for m in model.modules() if type(m).__module__.startswith('projects.')}
    assert ours, f'{path} builds no module of ours'
    # the backbone's outputs fit the neck: run both on a small image
    backbone, neck, neck_cfg = _backbone_and_neck(model, cfg)
    model.eval()
    with torch.no_grad():
        outputs = neck(backbone(torch.zeros(1, 3, 64, 96)))
    assert len(outputs) == neck_cfg.get('num_outs', len(outputs))
