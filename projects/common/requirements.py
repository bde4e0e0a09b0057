"""The optional 3D dependencies: BEVFormer needs mmdet3d and nuscenes-devkit (the ``nuscenes``
extra of setup.py; ``tools/install.sh`` installs them); the 2D families do not."""
from importlib.util import find_spec


def mmdet3d_installed() -> bool:
    """Whether mmdet3d is installed (an installed but broken mmdet3d still fails on import)."""
    return find_spec('mmdet3d') is not None


def require_mmdet3d(user: str) -> None:
    """ImportError saying what to install when mmdet3d is absent; ``user``: what needs it."""
    if not mmdet3d_installed():
        raise ImportError(f'{user} needs mmdet3d 1.4.0 and nuscenes-devkit 1.2.0: '
                          'pip install -e ".[nuscenes]" (tools/install.sh installs them)')
