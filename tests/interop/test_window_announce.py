"""Live: a kcp-go 5.6.1 sender and a kcpgo listener configured after accept (issue 10, input 1).

kcptun's server (and every kcp-go application: kcp-go has no other way) sets the windows on a
session after ``AcceptKCP``. Until then the session has kcp-go's default 32-segment windows;
a fast sender fills them and is told "window 0". The sans-IO side of the rule is in
tests/test_window_update.py; this runs it against the real kcp-go.
"""
from __future__ import annotations

import subprocess
import time

import gevent
import pytest

import kcpgo
from kcpgo.snmp import Snmp

from tests.support.gopeer import go_available
from tools.bench import build_gobench

GO_OK, GO_REASON = go_available()
pytestmark = pytest.mark.skipif(not GO_OK, reason=GO_REASON)

NBYTES = 4_000_000


def run_go_sink(addr) -> subprocess.CompletedProcess:
    """tools/gobench's sink client (kcp-go 5.6.1): fast3, stream mode, windows 1024, writes
    exactly NBYTES and closes. It never reads, so nothing but a window update can tell it
    that a closed window reopened."""
    argv = [build_gobench(), "-role", "client", "-mode", "sink", "-addr", "%s:%d" % addr[:2],
            "-bytes", str(NBYTES), "-duration", "20"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_go_561_sender_to_listener_configured_after_accept():
    """Expected: 4 MB arrive in well under kcp-go 5.6.1's 7000 ms zero-window probe timer
    (docs/protocol.md §1.1 PROBE_INIT, §1.9 phase 2). Before the fix kcpgo never announced
    the window it opened with ``set_window_size(1024, 1024)`` and the sender waited for its
    probe: 7.2 s in 2 runs of 3 for the issue's 20 MB, against 0.2 s with kcp-go's own
    listener (issue 10). The 300 ms pause before configuring makes the 32-segment window fill
    first, as when the application is slow to accept."""
    snmp = Snmp()
    with kcpgo.listen(("127.0.0.1", 0), snmp=snmp) as ln:       # kcp-go's defaults: 32/32
        client = gevent.get_hub().threadpool.spawn(run_go_sink, ln.getsockname())
        ln.settimeout(30)
        sess, _ = ln.accept()
        gevent.sleep(0.3)
        assert sess._conn.kcp.wnd_sent == 0          # the sender was told: window full
        start = time.monotonic()
        sess.set_mode("fast3")
        sess.set_stream_mode(True)
        sess.set_window_size(1024, 1024)
        sess.settimeout(30)
        total = 0
        while total < NBYTES:
            total += len(sess.recv(1 << 20))
        elapsed = time.monotonic() - start
        result = client.get(timeout=60)
        sess.close()
    assert result.returncode == 0, result.stderr
    assert total == NBYTES
    assert elapsed < 5.0, f"{elapsed:.1f} s: the sender waited for its 7 s window probe"
