"""Every config in configs/ builds its model on CPU, uses our modules, its backbone fits its neck,
and the backbone is the published architecture its name says."""
import glob
import os.path as osp
import re

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


# name in the config file -> (class, channels of stage 1, blocks per stage, '-li'), as published:
# Swin (Liu et al. 2021, Table 1), Swin V2-T, PVT-S (Wang et al. 2021), PVTv2 (Wang et al. 2022),
# MOA-T (the paper's three stages plus the detection layout's fourth)
ARCHITECTURES = {
    'swin-t': ('SwinBackbone', 96, [2, 2, 6, 2], None),
    'swin-s': ('SwinBackbone', 96, [2, 2, 18, 2], None),
    'swin-b': ('SwinBackbone', 128, [2, 2, 18, 2], None),
    'swinv2-t': ('SwinV2Backbone', 96, [2, 2, 6, 2], None),
    'pvt-s': ('PVTBackbone', 64, [3, 4, 6, 3], False),
    'pvtv2-b0': ('PVTV2Backbone', 32, [2, 2, 2, 2], False),
    'pvtv2-b2': ('PVTV2Backbone', 64, [3, 4, 6, 3], False),
    'pvtv2-b2-li': ('PVTV2Backbone', 64, [3, 4, 6, 3], True),
    'moa-t': ('MOABackbone', 96, [2, 2, 8], None),  # or with a fourth stage (detection layout)
}


def check_architecture(backbone, config_name: str) -> None:
    """The backbone is the architecture that ``config_name`` names (no-op for other names)."""
    found = re.search(r'_(swinv2-t|swin-[tsb]|pvtv2-b\d(-li)?|pvt-s|moa-t)', config_name)
    if found is None:
        return
    cls, width, depths, linear = ARCHITECTURES[found.group(1)]
    assert type(backbone).__name__ == cls
    assert backbone.num_features[0] == width
    assert [len(stage.blocks) for stage in backbone.stages] in (depths, depths + [2])
    if linear is not None:
        assert backbone.linear == linear
    window = re.search(r'-w(\d+)', config_name)
    if window:
        assert backbone.stages[0].window_size == int(window.group(1))


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds_the_model_its_name_says(path):
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
    check_architecture(backbone, osp.basename(path))
