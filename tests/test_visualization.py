"""ScoreOrderedDetVisualizer against mmdet's DetLocalVisualizer given the instances in ascending
score order."""
import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData

from projects.common.visualization import ScoreOrderedDetVisualizer

META = dict(classes=('circle', 'square', 'cross'),
            palette=[(220, 20, 60), (0, 0, 230), (0, 160, 0)])


def painted(visualizer, instances) -> np.ndarray:
    """``instances`` (predictions) drawn by ``visualizer`` on a grey 96x96 image."""
    visualizer.dataset_meta = META
    sample = DetDataSample()
    sample.pred_instances = instances
    visualizer.add_datasample('sample', np.full((96, 96, 3), 128, np.uint8), sample,
                              draw_gt=False, show=False, pred_score_thr=0.3)
    return visualizer.get_image()


def test_best_prediction_is_drawn_last():
    # one object, three class guesses as a detector returns them (best first), and a weak one
    # below the threshold
    instances = InstanceData(
        bboxes=torch.tensor([[20., 20., 70., 70.], [21., 19., 71., 69.], [19., 21., 69., 71.],
                             [5., 5., 30., 30.]]),
        labels=torch.tensor([1, 0, 2, 0]), scores=torch.tensor([0.8, 0.5, 0.35, 0.1]))
    ours = painted(ScoreOrderedDetVisualizer(name='test_ours'), instances)
    reference = DetLocalVisualizer(name='test_reference')
    assert np.array_equal(ours, painted(reference, instances[[3, 2, 1, 0]]))
    assert not np.array_equal(ours, painted(reference, instances))  # mmdet: the 0.35 one on top
