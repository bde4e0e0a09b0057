"""Train a detector: python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] ..."""
import gc
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.engine.launch import train  # noqa: E402

if __name__ == '__main__':
    train()
    # the runner (with DDP and its process group) sits in reference cycles: free it now, while
    # the interpreter is whole, not in its shutdown (gloo threads then abort the process)
    gc.collect()
