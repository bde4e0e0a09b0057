"""``GridMask``: the image augmentation BEVFormer trains with (Chen et al., "GridMask Data
Augmentation", 2020), as the official BEVFormer configs set it: on the normalised, padded images
of the current frame, in training only, one mask for all images of a batch.

The mask is a square grid of period ``d`` (drawn from [2, H)) whose lines, ``l = d * ratio``
pixels wide (rounded, 1 <= l < d) and starting at a random phase, are kept; the squares between
them are zeroed (the official ``mode=1``). It is drawn on a canvas 1.5 times the image and its
centre cut out, as the official code does (which lets it rotate the canvas; the official configs
do not rotate, and neither do we).
"""
import numpy as np
import torch
from torch import Tensor, nn

__all__ = ['GridMask']


class GridMask(nn.Module):
    """Args:
        prob: chance that a training batch is masked (official configs: 0.7).
        ratio: width of the kept grid lines as a fraction of the period (official: 0.5).
        use_h, use_w: keep horizontal / vertical lines (official: both).
    """

    def __init__(self, prob: float = 0.7, ratio: float = 0.5, use_h: bool = True,
                 use_w: bool = True) -> None:
        super().__init__()
        if not 0.0 <= prob <= 1.0 or not 0.0 < ratio < 1.0:
            raise ValueError(f'GridMask needs 0 <= prob <= 1 and 0 < ratio < 1, got prob={prob}, '
                             f'ratio={ratio}')
        self.prob, self.ratio, self.use_h, self.use_w = prob, ratio, use_h, use_w

    def draw_mask(self, height: int, width: int) -> np.ndarray:
        """(height, width) float32, 1 on the kept grid lines, 0 in the squares between."""
        canvas_h, canvas_w = int(1.5 * height), int(1.5 * width)
        period = np.random.randint(2, max(height, 3))
        line = min(max(int(period * self.ratio + 0.5), 1), period - 1)
        start_h, start_w = np.random.randint(period), np.random.randint(period)
        on_line = np.zeros((canvas_h, canvas_w), dtype=bool)
        if self.use_h:
            on_line |= self._lines(canvas_h, period, line, start_h)[:, None]
        if self.use_w:
            on_line |= self._lines(canvas_w, period, line, start_w)[None, :]
        top, left = (canvas_h - height) // 2, (canvas_w - width) // 2
        return on_line[top:top + height, left:left + width].astype(np.float32)

    @staticmethod
    def _lines(size: int, period: int, line: int, start: int) -> np.ndarray:
        """(size,) bool: the ``size // period`` lines ``[start + k * period, ... + line)``."""
        offset = np.arange(size) - start
        return (offset >= 0) & (offset % period < line) & (offset // period < size // period)

    def forward(self, images: Tensor) -> Tensor:
        """(n, c, H, W) -> the same images masked (unchanged in eval mode or when not drawn)."""
        if not self.training or np.random.rand() > self.prob:
            return images
        height, width = images.shape[-2:]
        mask = torch.from_numpy(self.draw_mask(height, width)).to(images)
        return images * mask
