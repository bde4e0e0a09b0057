"""Test a detector: python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] ..."""
import gc
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.engine.launch import test  # noqa: E402

if __name__ == '__main__':
    test()
    # the runner (with DDP and its process group) sits in reference cycles: free it now, while
    # the interpreter is whole, not in its shutdown (gloo threads then abort the process)
    gc.collect()
