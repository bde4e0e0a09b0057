"""Installs the importable package ``projects``: transformer plugins for MMDetection 3.x /
MMDetection3D 1.x.

Use ``bash tools/install.sh`` on a fresh machine: it builds mmcv 2.1.0 against the installed torch
(there is no prebuilt wheel for torch > 2.1) before installing this package in editable mode.
"""
from setuptools import find_packages, setup

setup(
    name='mm-transformer-plugins',
    version='0.1.0',
    description='Swin v1/v2, PVT, MOA, fast deformable attention and BEVFormer plugins for '
    'MMDetection 3.x and MMDetection3D 1.x on current PyTorch',
    python_requires='>=3.10',
    packages=find_packages(include=['projects', 'projects.*']),
    # Pinned: mmdet 3.3 / mmdet3d 1.4 assert mmcv<2.2; mmengine 0.10.7 and mmcv's setup.py need
    # pkg_resources (setuptools<81); nuscenes-devkit needs numpy<2. torch itself is left to the
    # user's install (tools/install.sh keeps an installed torch), so no torch pin here pulls a
    # CUDA build.
    install_requires=[
        'mmengine==0.10.7',
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'numpy<2',
        'setuptools<81',
        'pycocotools',
        'matplotlib',
    ],
    extras_require={
        # triton: the deformable-attention kernels are tested on the CPU in Triton's interpreter
        'tests': ['pytest', 'triton'],
        # style checks (tools/lint.sh, .pre-commit-config.yaml; configured in setup.cfg)
        'lint': ['flake8==7.5.0', 'isort==9.0.2', 'codespell==2.4.3'],
        'nuscenes': ['mmdet3d==1.4.0', 'nuscenes-devkit==1.2.0'],
        # ONNX export (tools/deployment): ml_dtypes >= 0.6 (pulled by onnx) needs numpy 2
        'deploy': ['onnx==1.23.2', 'onnxruntime==1.32.0', 'onnxscript==0.7.2', 'ml_dtypes<0.6'],
    },
)
