"""projects.common.benchmark: rounds of interleaved calls and the per-round speed ratio."""
import time

import pytest

from projects.common.benchmark import interleaved_samples, round_ratios, summarize


def test_round_ratios_are_quartiles_of_the_per_round_ratios():
    slower = [(2.0, None), (8.0, None), (6.0, None)]
    faster = [(1.0, None), (2.0, None), (2.0, None)]  # ratios 2, 4, 3
    assert round_ratios(slower, faster) == (2.5, 3.0, 3.5)
    assert round_ratios(slower[:1], faster[:1]) == (2.0, 2.0, 2.0)


def test_interleaved_samples_time_every_call_of_every_round():
    calls = []
    samples = interleaved_samples({
        'slow': lambda: (calls.append('slow'), time.sleep(0.004)),
        'fast': lambda: (calls.append('fast'), time.sleep(0.002)),
    }, repeats=3, warmup=1)
    assert calls == ['slow', 'fast'] + ['slow', 'fast'] * 3  # warm-up, then alternating rounds
    assert [len(runs) for runs in samples.values()] == [3, 3]
    low, median, high = round_ratios(samples['slow'], samples['fast'])
    assert 1.2 < low <= median <= high
    seconds, _ = summarize(samples['slow'])
    assert seconds >= 0.004


def test_interleaved_samples_refuse_no_repeats():
    with pytest.raises(ValueError, match='repeats >= 1'):
        interleaved_samples({'x': lambda: None}, repeats=0)
