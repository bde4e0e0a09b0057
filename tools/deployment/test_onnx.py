"""Evaluate an exported detector in ONNX Runtime: python tools/deployment/test_onnx.py CONFIG
FILE.onnx [--cfg-options ...] (the config's test set and metric, as tools/test.py)."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from projects.deploy.cli import test_main  # noqa: E402

if __name__ == '__main__':
    test_main()
