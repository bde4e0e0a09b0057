# The toy MOA RetinaNet with the official code's MOA block and layouts (moa_style='official'),
# trained from scratch on the same schedule as the paper-style toy config, to compare the two
# (docs/official_differences.md).
_base_ = './retinanet_moa-nano_fpn_1xb8-50e_toy-coco.py'

model = dict(backbone=dict(moa_style='official'))
