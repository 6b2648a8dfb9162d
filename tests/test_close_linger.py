"""``KCPSocket.close()`` delivers what was written in the background (docs/deviations.md D59).

Expected values come from TCP's close, as the stdlib's socket users know it (RFC 793,
section 3.5, CLOSE: "all outstanding SENDs will be transmitted ... before the connection is
closed"; Linux keeps sending a closed socket's queue): kcp-go's ``Close`` drops what is
unacknowledged, and a new user's ``sendall(20 MB); close(); exit`` lost 227 KiB.
"""
from __future__ import annotations

import hashlib
import os
import socket
import textwrap
import threading
import time

import gevent
import pytest

import kcpgo
from kcpgo.runtime import channel as channel_mod
from kcpgo.snmp import Snmp
from tests.support.children import run_child
from tests.support.waits import wait_until

LOCAL = ("127.0.0.1", 0)
OPTS = {"stream": True, "mode": "fast3", "window": (64, 64)}


def _reader(s, into):
    def run():
        while True:
            d = s.recv(65536)
            if not d:
                return
            into.append(d)
    return gevent.spawn(run)


def _connected(ln):
    """A client of ``ln`` and its accepted session, one byte b"x" exchanged."""
    c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), **OPTS)
    c.sendall(b"x")
    ln.settimeout(5)
    s, _ = ln.accept()
    assert s.recv(1) == b"x"
    return c, s


def test_close_returns_at_once_and_what_was_written_arrives():
    with kcpgo.listen(LOCAL, snmp=Snmp(), **OPTS) as ln:
        c, s = _connected(ln)
        got = [b"x"]
        reader = _reader(s, got)
        data = os.urandom(500_000)
        c.sendall(data)
        chan = c._chan
        # 64-segment windows: the last chunk is usually unacknowledged here, but a clean-
        # clone run saw every ACK in already (the reader's ACKs go out at its read, D60)
        left = chan.conn.waitsnd
        c.close()
        assert c.closed and chan.lingering == bool(left)    # lingers exactly with data left
        with pytest.raises(OSError):
            c.send(b"more")                     # the socket itself is closed (EBADF)
        wait_until(lambda: len(b"".join(got)) == 1 + len(data), 10, "every byte")
        assert b"".join(got) == b"x" + data
        # released by the peer's ACKs, not by the 10 s limit; its UDP socket closed then
        wait_until(lambda: chan.released, 5, "the release")
        wait_until(lambda: chan.endpoint.closed, 5, "the UDP socket closed")
        reader.kill()
        s.close()


def test_close_with_everything_acknowledged_releases_at_once():
    with kcpgo.listen(LOCAL, snmp=Snmp(), **OPTS) as ln:
        c, s = _connected(ln)
        c.drain(timeout=5)
        c.close()
        assert c._chan.released and not c._chan.lingering
        assert c._chan.endpoint.closed          # a client's UDP socket: closed on return
        s.close()


def test_close_of_a_session_that_never_heard_its_peer_releases_at_once():
    """Nothing would acknowledge (a wrong port, key or address): nothing to wait for."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(LOCAL)
    port = probe.getsockname()[1]
    probe.close()                               # nothing listens there now
    c = kcpgo.dial(("127.0.0.1", port), snmp=Snmp(), **OPTS)
    c.sendall(os.urandom(20_000))
    c.close()
    assert c._chan.released


def test_delivery_stops_at_the_linger_limit(monkeypatch):
    """A peer that stops acknowledging (here: its listener closed) holds the session no longer
    than LINGER."""
    monkeypatch.setattr(channel_mod, "LINGER", 0.5)
    ln = kcpgo.listen(LOCAL, snmp=Snmp(), **OPTS)
    c, s = _connected(ln)
    s.close()
    ln.close()                                  # nothing acknowledges from now on
    c.sendall(os.urandom(50_000))               # (within the 64-segment windows)
    chan = c._chan
    c.close()
    assert chan.lingering
    t = time.monotonic()
    wait_until(lambda: chan.released, 5, "the release")
    assert time.monotonic() - t < 3             # 0.5 s limit, far below the 10 s default


SENDER = textwrap.dedent("""
    import hashlib, os, sys
    import kcpgo
    data = os.urandom(4 << 20)
    s = kcpgo.dial(("127.0.0.1", int(sys.argv[1])), stream=True, mode="fast3",
                   window=(1024, 1024))
    s.sendall(data)
    s.close()                   # a TCP habit: close, then exit at once
    print('{"sha": "%s"}' % hashlib.sha256(data).hexdigest())
""")


def test_sendall_close_exit_delivers_everything():
    """The new user's script (thread mode): sendall(), close(), exit. Before D59 a 20 MB run
    lost 227 KiB; without close() it arrived (D48's exit linger)."""
    with kcpgo.listen(LOCAL, stream=True, mode="fast3", window=(1024, 1024)) as ln:
        got = []
        box = {}

        def receive():
            ln.settimeout(20)
            s, _ = ln.accept()
            s.settimeout(5)
            try:
                while True:
                    d = s.recv(1 << 16)
                    if not d:
                        break
                    got.append(d)
            except OSError:     # the sender is gone: no more data for 5 s
                pass
            s.close()
        t = threading.Thread(target=receive)   # (run_child blocks this thread's hub)
        t.start()
        box.update(run_child(SENDER, str(ln.getsockname()[1]), timeout=60))
        t.join(30)
    data = b"".join(got)
    assert len(data) == 4 << 20
    assert hashlib.sha256(data).hexdigest() == box["sha"]
