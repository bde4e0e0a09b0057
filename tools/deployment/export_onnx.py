"""Export a detector to ONNX: python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --out FILE
[--shape H W] [--part detector|backbone] [--dynamic] [--opset N] [--verify] (docs/deployment.md)."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.deploy.cli import export_main  # noqa: E402

if __name__ == '__main__':
    export_main()
