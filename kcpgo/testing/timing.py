"""Micro-benchmark timing for tools/bench_*.py: the best time per call over a few rounds.

Performance is measured with these tools, never with timed asserts (the machines are noisy):
report ratios against a baseline run side by side.
"""
from __future__ import annotations

import time
from typing import Callable

__all__ = ["best_seconds_per_call", "report"]


def best_seconds_per_call(fn: Callable[[], object], seconds: float) -> float:
    """Best seconds per call of ``fn()`` over 5 rounds lasting about ``seconds`` in total (a
    round is calibrated first by doubling the number of calls)."""
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t0
        if dt > seconds / 20:
            break
        calls *= 2
    per_round = max(1, int(calls * (seconds / 5) / dt))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        best = min(best, (time.perf_counter() - t0) / per_round)
    return best


def report(label: str, seconds_per_call: float, nbytes: int, width: int = 48) -> None:
    """One line: ``label``, µs per call and MB/s for ``nbytes`` bytes per call."""
    print(f"{label:{width}s} {seconds_per_call * 1e6:10.2f} µs/call "
          f"{nbytes / seconds_per_call / 1e6:9.1f} MB/s", flush=True)
