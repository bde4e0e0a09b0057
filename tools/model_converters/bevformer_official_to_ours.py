"""Convert an official BEVFormer checkpoint (fundamentalvision/BEVFormer, mmdet3d 0.17) to
BEVFormerDetector weights (mmdet3d 1.x):

    python tools/model_converters/bevformer_official_to_ours.py SRC DST [--report] [--unsafe-pickle]

SRC is loaded with torch.load(weights_only=True); --unsafe-pickle (only for files you trust)
allows any pickled object. DST is written atomically as dict(state_dict, meta=dict(converted_from,
dropped, ...)). The key mapping, what is dropped and why: projects/bevformer/convert.py.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import projects  # noqa: E402,F401  (safe checkpoint loading)
from projects.bevformer.convert import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
