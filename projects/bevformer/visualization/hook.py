"""``BEVVisualizationHook``, registered in mmdet3d's ``HOOKS``: draws BEVFormer's test (and, when
asked, validation) predictions with :func:`~.render.render_data_sample`, one PNG per sample
(``tools/test.py --show-dir``)."""
import os
import os.path as osp
import sys
import warnings
from typing import Optional, Sequence

import numpy as np
from mmdet3d.registry import HOOKS
from mmengine.hooks import Hook

from ...datasets.nuscenes_infos import NUSCENES_CLASSES
from .data import _data_notice, _sample_name
from .draw import DEFAULT_POINT_CLOUD_RANGE
from .render import _caption, render_data_sample

__all__ = ['BEVVisualizationHook']


def _has_display() -> bool:
    if sys.platform.startswith('linux'):
        return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))
    return True


@HOOKS.register_module()
class BEVVisualizationHook(Hook):
    """Draws BEVFormer's test predictions (and the ground truth) with :func:`render_predictions`:
    the six cameras as the network saw them and a BEV panel, one PNG per sample.

    ``tools/test.py CONFIG CKPT --show-dir vis`` sets ``draw=True`` and ``test_out_dir='vis'``
    (mmdet's ``trigger_visualization_hook``): every ``interval``-th test sample is written to
    ``<work_dir>/<timestamp>/vis/<sample token>.png`` (its sample index when it has no token).
    With ``draw=True`` and neither ``test_out_dir`` nor a usable ``show``, the PNGs go to
    ``<work_dir>/<timestamp>/vis_test``. During validation the hook does nothing unless ``draw``;
    then the first sample of every ``interval``-th batch is written to
    ``<work_dir>/<timestamp>/vis_val/iter_<training iteration>/``.

    Config: ``default_hooks = dict(visualization=dict(type='BEVVisualizationHook', draw=False))``.

    Args:
        draw: draw at all (``--show`` / ``--show-dir`` turn it on).
        interval: draw every ``interval``-th test sample (validation: batch).
        score_threshold: the lowest prediction score drawn.
        show: also show each picture in a window (needs a display and an OpenCV with GUI
            support; ignored with a warning otherwise).
        wait_time: seconds each shown picture stays (``--wait-time``); 0 waits for a key.
        test_out_dir: directory for the test PNGs, relative to ``<work_dir>/<timestamp>``
            (absolute paths are kept).
        draw_gt: draw the ground truth when the samples carry it (``eval_ann_info`` in test mode).
        point_cloud_range: BEV panel range; None takes the model's ``encoder.point_cloud_range``
            (else nuScenes' +-51.2 m).
        notice: licence line under each picture; None: the nuScenes notice (the toy world's for
            a generated toy nuScenes data root).
        dpi: pixels per inch of the PNGs (a camera panel is 5 inches wide).
        backend_args: mmengine file backend arguments for reading the images back.
    """

    priority = 'NORMAL'

    def __init__(self, draw: bool = False, interval: int = 1, score_threshold: float = 0.3,
                 show: bool = False, wait_time: float = 0.0, test_out_dir: Optional[str] = None,
                 draw_gt: bool = True, point_cloud_range: Optional[Sequence[float]] = None,
                 notice: Optional[str] = None, dpi: int = 100,
                 backend_args: Optional[dict] = None) -> None:
        if int(interval) != interval or interval < 1:
            raise ValueError(f'interval must be a positive integer, got {interval}')
        if not 0 <= score_threshold <= 1:
            raise ValueError(f'score_threshold must be in [0, 1], got {score_threshold}')
        if point_cloud_range is not None and len(point_cloud_range) != 6:
            raise ValueError('point_cloud_range must be (x_min, y_min, z_min, x_max, y_max, '
                             f'z_max), got {point_cloud_range}')
        self.draw = bool(draw)
        self.interval = int(interval)
        self.score_threshold = float(score_threshold)
        self.show = bool(show)
        self.wait_time = float(wait_time)
        self.test_out_dir = test_out_dir
        self.draw_gt = draw_gt
        self.point_cloud_range = point_cloud_range
        self.notice = notice
        self.dpi = int(dpi)
        self.backend_args = backend_args
        if self.show and not _has_display():
            warnings.warn('BEVVisualizationHook: show=True ignored, no display (DISPLAY is not '
                          'set); use --show-dir to write the pictures')
            self.show = False
        self._test_count = 0
        self._out_dir: Optional[str] = None
        self._test_settings: Optional[dict] = None

    # ---- settings taken from the runner
    @staticmethod
    def _dataset(runner, mode: str):
        loop = getattr(runner, f'{mode}_loop', None)
        return getattr(getattr(loop, 'dataloader', None), 'dataset', None)

    def _settings(self, runner, mode: str) -> dict:
        dataset = self._dataset(runner, mode)
        meta = dict(getattr(dataset, 'metainfo', None) or
                    getattr(runner.visualizer, 'dataset_meta', None) or {})
        point_cloud_range = self.point_cloud_range
        if point_cloud_range is None:
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            encoder = getattr(model, 'encoder', None)
            point_cloud_range = getattr(encoder, 'point_cloud_range', DEFAULT_POINT_CLOUD_RANGE)
        notice = self.notice
        if notice is None:
            notice = _data_notice(getattr(dataset, 'data_root', None))
        return dict(class_names=tuple(meta.get('classes') or NUSCENES_CLASSES),
                    point_cloud_range=tuple(point_cloud_range), notice=notice)

    def _draw(self, data_sample, settings: dict, fallback_index: int,
              out_dir: Optional[str]) -> None:
        meta = data_sample.metainfo
        name = _sample_name(meta, fallback_index)
        picture = render_data_sample(
            data_sample, settings['class_names'], self.score_threshold,
            settings['point_cloud_range'], _caption(meta, name, settings['notice']),
            draw_gt=self.draw_gt, backend_args=self.backend_args, dpi=self.dpi)
        if out_dir is not None:
            import mmcv
            mmcv.imwrite(picture[..., ::-1], osp.join(out_dir, f'{name}.png'))
        if self.show:
            self._show(picture, name)

    def _show(self, picture: np.ndarray, name: str) -> None:
        import mmcv
        try:
            mmcv.imshow(picture[..., ::-1], win_name='BEVFormer predictions',
                        wait_time=int(self.wait_time * 1000))
        except Exception as error:  # an OpenCV without GUI support (opencv-*-headless)
            warnings.warn(f'BEVVisualizationHook: cannot show {name} ({error}); show disabled')
            self.show = False

    # ---- test
    def before_test(self, runner) -> None:
        self._test_count = 0
        self._out_dir = None
        if not self.draw:
            return
        if self.test_out_dir is not None:
            self._out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
        elif not self.show:
            self._out_dir = osp.join(runner.work_dir, runner.timestamp, 'vis_test')
        if self._out_dir is not None:
            os.makedirs(self._out_dir, exist_ok=True)
            runner.logger.info(f'BEVVisualizationHook: writing pictures of the test samples '
                               f'(every {self.interval}) to {self._out_dir}')
        self._test_settings = self._settings(runner, 'test')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or not outputs:
            return
        if self._test_settings is None:  # driven without before_test
            self.before_test(runner)
        for data_sample in outputs:
            index = self._test_count
            self._test_count += 1
            if index % self.interval == 0:
                self._draw(data_sample, self._test_settings, index, self._out_dir)

    # ---- validation
    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or not outputs or batch_idx % self.interval:
            return
        out_dir = osp.join(runner.work_dir, runner.timestamp, 'vis_val', f'iter_{runner.iter}')
        self._draw(outputs[0], self._settings(runner, 'val'), batch_idx, out_dir)
