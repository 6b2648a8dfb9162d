"""Suite-wide pytest setup: the ``slow`` marker, and the ``raw`` fixture (a plain UDP socket
on 127.0.0.1 for sending hand-made datagrams).

(The repository root is on ``sys.path`` through setup.cfg's ``pythonpath``, for
``tests.support`` and the ``tools.*`` runners the tests smoke-test.)

Long variants (20 MB soak matrix, 50 MB / 30 % loss soak, the 1,000,000-datagram fuzz, the full
flood and churn) are marked ``slow`` and skipped unless asked for, so ``python -m pytest -q``
stays fast::

    KCPGO_SLOW=1 python -m pytest -q tests/test_soak.py      # or: python -m pytest -m slow
"""
from __future__ import annotations

import os
import signal
import socket

import pytest


def pytest_configure(config):
    # A suite started in the background by a non-interactive shell (``cmd &``) inherits SIGINT
    # ignored, and so would every process it starts: the tests that press Ctrl-C on a child
    # (exit status 130) would then see it run on. Children get the default disposition back.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers", "slow: long-running variant; runs only with KCPGO_SLOW=1 or -m slow")


def _slow_requested(config) -> bool:
    if os.environ.get("KCPGO_SLOW", "") not in ("", "0"):
        return True
    expr = config.getoption("markexpr", "") or ""
    return "slow" in expr and "not slow" not in expr


def pytest_collection_modifyitems(config, items):
    if _slow_requested(config):
        return
    skip = pytest.mark.skip(reason="slow variant: set KCPGO_SLOW=1 (or -m slow) to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def raw():
    """A plain UDP socket bound to 127.0.0.1, for hand-made datagrams (closed afterwards)."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    yield u
    u.close()
