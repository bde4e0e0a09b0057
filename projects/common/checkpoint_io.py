"""Reading and writing mmengine checkpoints safely on torch >= 2.6.

torch >= 2.6 loads checkpoints with ``weights_only=True``: only tensors, plain containers and
allow-listed globals may be unpickled. mmengine 0.10.7 checkpoints also carry its
``HistoryBuffer`` (message hub), numpy arrays and scalars (logged values), and bound statistics
methods that pickle as ``getattr(HistoryBuffer, 'min')``. Resuming therefore fails out of the box.

Instead of turning full pickle back on, :func:`install` allows exactly those types, maps the
pickled ``builtins.getattr`` onto a function that only resolves ``HistoryBuffer``'s statistics
methods, and replaces mmengine's loader for local files with one that names the file when a
checkpoint holds anything else or is not a readable checkpoint (truncated, another format). It
also makes mmengine's local file writes atomic (write to a temporary file, then rename), so an
interrupted save never truncates the previous checkpoint; the temporary files of writers that
died are removed by the next write in their folder, and files get the permissions mmengine's
plain writes give them (0666 less the umask).
"""
import glob
import os
import os.path as osp
import pickle
import socket
import tempfile
import zipfile
from typing import Any, Callable, Union

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allowed set of types."""


class CorruptCheckpointError(ValueError):
    """A file is not a readable torch checkpoint (truncated, empty, or another kind of file)."""


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


def load_from_local_weights_only(filename: str,
                                 map_location: Union[str, Callable, None] = None) -> Any:
    """``torch.load`` with ``weights_only=True`` and an error naming the file on refusal."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: B902  (torch's unpickler raises many kinds on garbage)
        if not zipfile.is_zipfile(filename):
            raise CorruptCheckpointError(
                f'checkpoint file {filename!r} ({osp.getsize(filename)} bytes) is not a readable '
                f'torch checkpoint (truncated by an interrupted copy or a full disk, or another '
                f'kind of file): {type(error).__name__}: {str(error)[:200]}') from error
        if not isinstance(error, pickle.UnpicklingError):
            raise  # a whole checkpoint that fails for another reason (e.g. map_location)
        raise UnsafeCheckpointError(
            f'refusing to load checkpoint {filename!r}: it contains a pickled object that is not a '
            'tensor, a plain container or one of the mmengine/numpy types allowed by '
            f'projects.common.checkpoint_io.\n{error}\nIf you trust this file, allow the type with '
            'torch.serialization.add_safe_globals([...]) before loading it.') from error


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole torch zip checkpoint (its central directory, written last, is
    there): cheap, without loading it."""
    return osp.isfile(path) and zipfile.is_zipfile(path)


def _temporary_prefix() -> str:
    """Prefix of this process's temporary files: host and PID, so that a later writer can tell
    the leftovers of a dead process from a live writer's."""
    return f'.tmp-{socket.gethostname()}-{os.getpid()}-'


def remove_dead_writers_files(directory: str) -> None:
    """Remove the temporary files that writers on this host left when they were killed."""
    host_prefix = f'.tmp-{socket.gethostname()}-'
    for path in glob.glob(osp.join(glob.escape(directory), host_prefix + '*.part')):
        pid = osp.basename(path)[len(host_prefix):].split('-', 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(data: bytes, filepath: Union[str, os.PathLike]) -> None:
    """Write ``data`` to ``filepath`` through a temporary file in the same folder, then rename:
    an interrupted write leaves the old file (or none), never half a file."""
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    remove_dead_writers_files(directory)
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(), suffix='.part')
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
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
