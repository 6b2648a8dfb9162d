"""The one clock of kcpgo: every session deadline, timeout and timestamp is read here.

The sans-IO layers (``kcpgo.sansio``) never read time; the runtime passes them ``now`` in
integer milliseconds from :func:`now_ms`. Blocking calls measure their timeouts (seconds) with
:func:`monotonic`. Both are the same monotonic clock.
"""
from __future__ import annotations

import time

__all__ = ["monotonic", "now_ms"]

#: Seconds, monotonic (timeouts and deadlines of blocking calls).
monotonic = time.monotonic


def now_ms() -> int:
    """The millisecond clock every session of this process uses (monotonic)."""
    return int(monotonic() * 1000)
