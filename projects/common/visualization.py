"""Prediction pictures that show each object's best guess on top."""
from mmdet.registry import VISUALIZERS
from mmdet.visualization import DetLocalVisualizer

__all__ = ['ScoreOrderedDetVisualizer']


@VISUALIZERS.register_module()
class ScoreOrderedDetVisualizer(DetLocalVisualizer):
    """mmdet's ``DetLocalVisualizer``, drawing predicted instances from the lowest score to the
    highest.

    Detectors return instances best first and mmdet draws them in that order, so where several
    classes pass the score threshold on one object (common for RetinaNet's sigmoid scores), the
    weakest box and label end on top and hide the best one. Drawing in ascending score order puts
    the best one on top; what is drawn is otherwise the same.
    """

    def _draw_instances(self, image, instances, classes, palette):
        if 'scores' in instances and len(instances) > 1:
            instances = instances[instances.scores.argsort()]
        return super()._draw_instances(image, instances, classes, palette)
