"""Wall-clock time and peak memory of one callable, for benchmarks that compare implementations.

``measure(fn, repeats, warmup, device)`` is the API; ``measure_interleaved`` runs it for several
callables in alternation (fair under load from other processes), ``round_ratios`` compares two of
them round by round. Peak memory is the growth above
what was resident in the process (CPU) or allocated to tensors (CUDA) just before the timed calls:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory only).
* CPU: the kernel's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset through
  ``/proc/self/clear_refs`` before the calls, minus the resident set at that moment. That is exact
  for whatever the process touches (every tensor, allocator overhead), with no sampling gaps; free
  heap memory is returned to the system first (``malloc_trim``) so that the baseline holds no
  reusable memory that would hide growth. Linux only; elsewhere the peak is reported as None.
  ``tracemalloc`` would miss tensors: torch allocates outside Python's allocator.
"""
import ctypes
import re
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

__all__ = ['measure', 'interleaved_samples', 'measure_interleaved', 'summarize',
           'round_ratios', 'format_mib']

_STATUS = '/proc/self/status'
_CLEAR_REFS = '/proc/self/clear_refs'


def measure(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
            device: Union[str, torch.device] = 'cpu') -> Tuple[float, Optional[int]]:
    """Calls ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns:
        (median seconds per call, peak bytes above the pre-call baseline over the timed calls, or
        None where the platform cannot measure it). ``fn``'s results are dropped after each call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f'measure needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}')
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    memory = _CudaPeak(device) if device.type == 'cuda' else _ResidentPeak()
    memory.start()
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), memory.peak()


def interleaved_samples(fns: Dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
                        device: Union[str, torch.device] = 'cpu'
                        ) -> Dict[str, List[Tuple[float, Optional[int]]]]:
    """Calls the callables in rounds, one timed call of each per round (after ``warmup`` untimed
    calls of each), so that load from other processes on a shared machine hits them alike.

    Returns:
        name -> one (seconds, peak bytes or None) per round, as :func:`measure` gives for one call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f'measure needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}')
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(measure(fn, repeats=1, warmup=0, device=device))
    return samples


def measure_interleaved(fns: Dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
                        device: Union[str, torch.device] = 'cpu'
                        ) -> Dict[str, Tuple[float, Optional[int]]]:
    """:func:`measure` for several callables, in the rounds of :func:`interleaved_samples`.

    Returns:
        name -> (median seconds per call, largest peak bytes over its calls, or None).
    """
    samples = interleaved_samples(fns, repeats, warmup, device)
    return {name: summarize(runs) for name, runs in samples.items()}


def summarize(runs: List[Tuple[float, Optional[int]]]) -> Tuple[float, Optional[int]]:
    """One callable's :func:`interleaved_samples` -> (median seconds per call, largest peak bytes
    over its calls, or None)."""
    return (statistics.median(s for s, _ in runs),
            None if any(p is None for _, p in runs) else max(p for _, p in runs))


def round_ratios(slower: List[Tuple[float, Any]],
                 faster: List[Tuple[float, Any]]) -> Tuple[float, float, float]:
    """Speed of ``faster`` relative to ``slower`` from :func:`interleaved_samples` rounds: the
    lower quartile, median and upper quartile of the per-round time ratios slower / faster.
    A round's two calls ran back to back, so a ratio of the same round cancels most of a
    shared machine's slow drifts, which a ratio of medians does not."""
    ratios = sorted(a / b for (a, _), (b, _) in zip(slower, faster))
    quartiles = (statistics.quantiles(ratios, n=4, method='inclusive') if len(ratios) > 1
                 else ratios * 3)
    return quartiles[0], statistics.median(ratios), quartiles[2]


def format_mib(num_bytes: Optional[int], decimals: int = 0) -> str:
    """``num_bytes`` as '12 MiB' (``decimals`` after the point), or 'n/a' where the platform could
    not measure it."""
    return 'n/a' if num_bytes is None else f'{num_bytes / 2**20:.{decimals}f} MiB'


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class _CudaPeak:
    """Peak tensor memory on one CUDA device above what was allocated at ``start``."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.baseline = torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) - self.baseline


class _ResidentPeak:
    """Peak resident memory of this process above its resident memory at ``start`` (Linux)."""

    def start(self) -> None:
        _release_free_heap()
        try:
            with open(_CLEAR_REFS, 'w') as clear_refs:
                clear_refs.write('5')  # resets VmHWM to the current resident set
            self.baseline = _status_bytes('VmRSS')
        except OSError:
            self.baseline = None

    def peak(self) -> Optional[int]:
        if self.baseline is None:
            return None
        return _status_bytes('VmHWM') - self.baseline


def _status_bytes(field: str) -> int:
    with open(_STATUS) as status:
        return int(re.search(rf'^{field}:\s+(\d+) kB', status.read(), re.MULTILINE).group(1)) * 1024


def _release_free_heap() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass
