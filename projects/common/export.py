"""Export mode: which code path a module takes while it is traced for ONNX.

Some of our fast paths do not trace: the oneDNN linear of ``window_ops``
(``mkldnn._linear_pointwise``, an op with no ONNX function), autograd Functions (the window
reordering, the deformable attention), caches of index tensors, row chunking (a Split that ONNX
Runtime rejects at odd sizes) and ``embedding_bag`` (exported as an ONNX Loop, an order of magnitude
slower). Each such place asks :func:`is_exporting` and takes its plain PyTorch formulation instead,
with the same results within float32 rounding. The exporter's own tracing switches it on
(``torch.onnx.export``, with either exporter, and ``torch.export``); :func:`export_mode` switches it
on by hand, e.g. to compare the two paths in eager mode.
"""
import contextlib
import functools
from typing import Callable, Iterator

import torch

__all__ = ['is_exporting', 'export_mode', 'cache_unless_exporting']

_forced = False


def is_exporting() -> bool:
    """True while the model is traced for export (or inside :func:`export_mode`)."""
    return _forced or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


@contextlib.contextmanager
def export_mode() -> Iterator[None]:
    """Runs the enclosed code on the export paths, traced or not."""
    global _forced
    previous, _forced = _forced, True
    try:
        yield
    finally:
        _forced = previous


def cache_unless_exporting(maxsize: int) -> Callable[[Callable], Callable]:
    """``functools.lru_cache(maxsize)`` for functions that build index tensors from Python values,
    bypassed while exporting: traced tensors must not enter the cache (and the graph computes
    them, or folds them into constants)."""

    def decorate(function: Callable) -> Callable:
        cached = functools.lru_cache(maxsize=maxsize)(function)

        @functools.wraps(function)
        def call(*args, **kwargs):
            return function(*args, **kwargs) if is_exporting() else cached(*args, **kwargs)

        call.cache_clear = cached.cache_clear
        return call

    return decorate
