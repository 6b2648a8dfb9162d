"""Polling with a deadline, for the tests' asynchronous conditions (a counter the reader
thread or greenlet has yet to bump, a buffer a driver has yet to fill)."""
from __future__ import annotations

import time
from typing import Any, Callable

import gevent


def wait_until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
               step: float = 0.01) -> None:
    """Poll ``cond()`` with ``gevent.sleep(step)`` (greenlets and the hub keep running) until
    it is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        gevent.sleep(step)
