"""Tolerance checks that the numerics tests share."""


def assert_relative_close(actual, expected, tolerance):
    """max |actual - expected| <= tolerance * max |expected|."""
    scale = max(expected.abs().max().item(), 1e-6) if expected.numel() else 1.0
    assert (actual - expected).abs().max().item() <= tolerance * scale, (actual, expected)
