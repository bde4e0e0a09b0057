"""What the generator tests share: a folder's files as bytes, for determinism checks; where the
real nuScenes demo frame is (the team's shared data beside the repository; tests using it skip
where it is absent)."""
import os
import os.path as osp

DEMO_ROOT = osp.normpath(osp.join(osp.dirname(osp.abspath(__file__)), '..', '..', 'shared',
                                  'data', 'nuscenes_demo'))
DEMO_INFO_PATH = osp.join(DEMO_ROOT, 'n015-2018-07-24-11-22-45+0800.pkl')


def file_bytes(root) -> dict:
    """{relative path: bytes} of every file under ``root``."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files
