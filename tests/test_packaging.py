"""The package's contract with its optional 3D dependencies: without mmdet3d, the 2D families,
tools and toy data work and the 3D parts say what to install."""
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

WITHOUT_MMDET3D = '''
import sys
sys.modules['mmdet3d'] = None  # import mmdet3d raises ImportError, as when it is not installed
import projects
from mmdet.registry import MODELS
from projects.datasets import prepare_toy_coco
from projects.engine import launch
assert all(name in MODELS for name in ('SwinBackbone', 'PVTV2Backbone', 'MOABackbone'))
assert not hasattr(projects, 'bevformer')
TOY = 'configs/bevformer/bevformer_nano_1xb2-24e_toy-nuscenes.py'
for attempt in (lambda: __import__('projects.bevformer'), lambda: launch.train([TOY])):
    try:
        attempt()
    except ImportError as error:
        assert 'needs mmdet3d 1.4.0' in str(error) and 'pip install -e ".[nuscenes]"' in str(error)
    else:
        raise AssertionError('no ImportError')
print('ok')
'''


def test_2d_families_import_without_mmdet3d_and_3d_parts_say_what_to_install():
    result = subprocess.run([sys.executable, '-c', WITHOUT_MMDET3D], cwd=REPO, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-3000:]
