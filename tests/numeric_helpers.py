"""Tolerance checks that the numerics tests share (one place: every test compares through these)."""
from typing import Sequence

import torch


def assert_max_abs_close(actual: torch.Tensor, expected: torch.Tensor, atol: float,
                         what: str = '') -> None:
    """Same shape and max |actual - expected| <= ``atol``."""
    assert actual.shape == expected.shape, f'{what}: shape {actual.shape} != {expected.shape}'
    error = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert error <= atol, f'{what}: max error {error:.3g} > {atol:g}'


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float,
                          min_scale: float = 1e-6, what: str = '') -> None:
    """Same shape and max |actual - expected| <= ``tolerance`` x the scale of ``expected``
    (its largest magnitude, at least ``min_scale``)."""
    scale = max(expected.abs().max().item(), min_scale) if expected.numel() else 1.0
    assert_max_abs_close(actual, expected, tolerance * scale, f'{what} (scale {scale:.3g})')


def assert_outputs_close(ours: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                         atol: float = 1e-4) -> None:
    """Two lists of feature maps: same length, shapes, and values within ``atol``."""
    assert len(ours) == len(reference)
    for i, (a, b) in enumerate(zip(ours, reference)):
        assert_max_abs_close(a, b, atol, f'output {i}')
