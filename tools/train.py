"""Train a detector: python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] ..."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.engine.launch import train  # noqa: E402

if __name__ == '__main__':
    train()
