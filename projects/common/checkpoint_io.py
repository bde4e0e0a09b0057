"""Reading and writing mmengine checkpoints safely on torch >= 2.6.

torch >= 2.6 loads checkpoints with ``weights_only=True``: only tensors, plain containers and
allow-listed globals may be unpickled. mmengine 0.10.7 checkpoints also carry its
``HistoryBuffer`` (message hub), numpy arrays and scalars (logged values), and bound statistics
methods that pickle as ``getattr(HistoryBuffer, 'min')``. Resuming therefore fails out of the box.

Instead of turning full pickle back on, :func:`install` allows exactly those types, maps the
pickled ``builtins.getattr`` onto a function that only resolves ``HistoryBuffer``'s statistics
methods, and replaces mmengine's loader for local files with one that names the file when a
checkpoint holds anything else. It also makes mmengine's local file writes atomic (write to a
temporary file, then rename), so an interrupted save never truncates the previous checkpoint.
"""
import os
import os.path as osp
import pickle
import tempfile
from typing import Any, Callable, Union

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allowed set of types."""


_DEFAULT_STATISTICS = {'min', 'max', 'current', 'mean'}


def _history_buffer_attribute(owner: Any, name: str) -> Callable:
    """Stands in for ``builtins.getattr`` while unpickling: resolves only the statistics
    methods (``min``, ``max``, ``current``, ``mean`` and registered ones) of HistoryBuffer."""
    allowed = _DEFAULT_STATISTICS | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'refusing getattr({owner!r}, {name!r}): only HistoryBuffer statistics methods are '
        'allowed in a checkpoint')


def _numpy_globals() -> list:
    """numpy types found in mmengine checkpoints, under numpy 1.x and 2.x module paths."""
    multiarray = np.core.multiarray
    allowed = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed.append((multiarray.scalar, f'{module}.scalar'))
        allowed.append((multiarray._reconstruct, f'{module}._reconstruct'))
    # numpy >= 1.25 may pickle a dtype by its class, e.g. numpy.dtypes.Float64DType.
    for name in dir(np.dtypes):
        dtype_class = getattr(np.dtypes, name)
        if isinstance(dtype_class, type) and issubclass(dtype_class, np.dtype):
            allowed.append((dtype_class, f'numpy.dtypes.{name}'))
    return allowed


def checkpoint_safe_globals() -> list:
    """Everything beyond torch's defaults that an mmengine/mmdet checkpoint may contain."""
    return [HistoryBuffer, (_history_buffer_attribute, 'builtins.getattr')] + _numpy_globals()


def load_from_local_weights_only(filename: str, map_location: Union[str, Callable, None] = None) -> Any:
    """``torch.load`` with ``weights_only=True`` and an error naming the file on refusal."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f'refusing to load checkpoint {filename!r}: it contains a pickled object that is not a '
            'tensor, a plain container or one of the mmengine/numpy types allowed by '
            f'projects.common.checkpoint_io.\n{error}\nIf you trust this file, allow the type with '
            'torch.serialization.add_safe_globals([...]) before loading it.') from error


def write_atomic(data: bytes, filepath: Union[str, os.PathLike]) -> None:
    """Write ``data`` to ``filepath`` through a temporary file in the same folder, then rename:
    an interrupted write leaves the old file (or none), never half a file."""
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix='.part')
    try:
        with os.fdopen(handle, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, filepath)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (:func:`write_atomic`)."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        write_atomic(obj, filepath)


_installed = False


def install() -> None:
    """Allow the checkpoint types, take over local checkpoint loading and atomic writes.
    Idempotent; runs when ``projects`` is imported."""
    global _installed
    if _installed:
        return
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    # mmengine's own extension points; `force` replaces its plain-pickle local loader and its
    # non-atomic local writer (model registries are never overridden).
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    _installed = True
