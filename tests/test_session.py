"""The gevent runtime and socket facade, over real UDP on loopback (kcpgo on both ends)."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import select
import socket
import subprocess
import sys
import textwrap
import time

import gevent
import pytest
from gevent.select import select as gselect

import kcpgo
from kcpgo.runtime.udp import spawn_count
from kcpgo.snmp import Snmp
from tests.support.children import reap

LOCAL = ("127.0.0.1", 0)


@pytest.fixture
def pair():
    """A connected (client, server) pair with default (message-mode) settings."""
    made = []

    def make(**opts):
        ln = kcpgo.listen(LOCAL, snmp=Snmp(), **opts)
        c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), **opts)
        c.sendall(b"hello")
        ln.settimeout(5)
        s, addr = ln.accept()
        assert s.recv(100) == b"hello"
        assert addr == c.getsockname()[:2] or addr[1] == c.getsockname()[1]
        made.append((ln, c, s))
        return ln, c, s
    yield make
    for ln, c, s in made:
        c.close()
        s.close()
        ln.close()


def elapsed(fn):
    t = time.monotonic()
    try:
        fn()
    except Exception as e:
        return time.monotonic() - t, e
    return time.monotonic() - t, None


# ---------------------------------------------------------------- basic transfer


@pytest.mark.parametrize("opts", [
    {}, {"stream": True, "mode": "fast3"},
    {"crypt": "aes", "key": "k", "data_shards": 10, "parity_shards": 3, "mode": "fast2"},
    {"crypt": "salsa20", "key": b"0" * 32, "stream": True, "mtu": 1350, "window": (128, 512)},
])
def test_bulk_echo_both_ways(pair, opts):
    ln, c, s = pair(**opts)
    payload = os.urandom(3_000_000)

    def echo():
        got = 0
        while got < len(payload):
            d = s.recv(65536)
            s.sendall(d)
            got += len(d)
    g = gevent.spawn(echo)
    w = gevent.spawn(c.sendall, payload)
    buf = bytearray()
    while len(buf) < len(payload):
        buf += c.recv(1 << 20)
    g.get(timeout=10)
    w.get(timeout=10)
    assert hashlib.sha256(buf).digest() == hashlib.sha256(payload).digest()
    assert s.conv == c.conv


def test_message_mode_keeps_boundaries_and_leftover(pair):
    ln, c, s = pair()
    c.send(b"A" * 1000)
    c.send(b"B" * 10)
    assert s.recv(600) == b"A" * 600          # rest of the message kept, not merged
    assert s.recv(600) == b"A" * 400
    assert s.recv(600) == b"B" * 10


def test_recv_into_and_properties(pair):
    ln, c, s = pair()
    c.sendall(b"0123456789")
    buf = bytearray(4)
    assert s.recv_into(buf) == 4 and buf == b"0123"
    mv = memoryview(bytearray(100))
    assert s.recv_into(mv, 3) == 3 and bytes(mv[:3]) == b"456"
    assert c.family == socket.AF_INET and c.type == socket.SOCK_STREAM
    assert c.getpeername() == ln.getsockname()
    assert s.rto > 0 and s.srtt >= 0 and s.srttvar >= 0
    assert isinstance(c.conv, int) and 0 <= c.conv <= 0xFFFFFFFF


# ---------------------------------------------------------------- timeouts, non-blocking, close


@pytest.mark.parametrize("t", [0.05, 0.2, 0.5])
def test_recv_timeout_accuracy(pair, t):
    ln, c, s = pair()
    s.settimeout(t)
    assert s.gettimeout() == t
    took, err = elapsed(lambda: s.recv(10))
    assert isinstance(err, TimeoutError) and isinstance(err, socket.timeout)
    assert abs(took - t) < 0.05


def test_accept_timeout_accuracy():
    with kcpgo.listen(LOCAL) as ln:
        ln.settimeout(0.3)
        took, err = elapsed(ln.accept)
        assert isinstance(err, TimeoutError) and abs(took - 0.3) < 0.05


def test_nonblocking_recv_send_accept(pair):
    ln, c, s = pair(window=(4, 4))
    s.setblocking(False)
    assert not s.getblocking()
    with pytest.raises(BlockingIOError):
        s.recv(10)
    ln.setblocking(False)
    with pytest.raises(BlockingIOError):
        ln.accept()
    c.setblocking(False)
    with pytest.raises(BlockingIOError):
        for _ in range(100):                 # peer never reads: the window fills
            c.send(b"x" * 1300)
            gevent.sleep(0.001)


@pytest.mark.parametrize("op", ["recv", "send", "accept"])
def test_close_wakes_blocked_greenlet_with_ebadf(pair, op):
    ln, c, s = pair(window=(2, 2))
    if op == "recv":
        blocked, target = gevent.spawn(s.recv, 10), s
    elif op == "send":
        def fill():
            while True:
                c.send(b"y" * 1300)
        blocked, target = gevent.spawn(fill), c
    else:
        blocked, target = gevent.spawn(ln.accept), ln
    gevent.sleep(0.1)
    assert not blocked.ready()
    target.close()
    target.close()                              # idempotent
    blocked.join(timeout=2)
    assert isinstance(blocked.exception, OSError) and blocked.exception.errno == errno.EBADF
    with pytest.raises(OSError):
        (ln.accept() if op == "accept" else target.recv(1))


def test_shutdown_semantics(pair):
    ln, c, s = pair()
    s.shutdown(socket.SHUT_RD)
    assert s.recv(10) == b""
    c.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError):
        c.send(b"x")


def test_drain_waits_for_acknowledgement(pair):
    """drain() returns once the peer acknowledged everything sent so far: it has not
    returned while anything written is unacknowledged, and it returns once the reader
    drains. (While the peer reads nothing its window closes, and everything written before
    may be acknowledged with the writer still blocked: drain() may then return, so the
    check is "done exactly when nothing is unacknowledged"; asserting waitsnd > 0 raced the
    ACKs in a clean-clone run.)"""
    ln, c, s = pair(stream=True, window=(64, 64))
    go = gevent.event.Event()

    def read():
        go.wait()
        while True:
            s.recv(65536)
    reader = gevent.spawn(read)
    writer = gevent.spawn(c.sendall, os.urandom(500_000))
    drainer = gevent.spawn(c.drain, 10)
    gevent.sleep(0.3)
    assert drainer.ready() == (c._conn.waitsnd == 0), c._conn.waitsnd
    go.set()
    writer.join(10)
    drainer.join(10)
    assert drainer.successful() and writer.successful()
    c.drain(timeout=5)                  # (the first may end between two of sendall's chunks)
    assert c._conn.waitsnd == 0
    reader.kill()


# ---------------------------------------------------------------- makefile and select


def test_makefile_round_trip_text_and_binary(pair):
    ln, c, s = pair(stream=True)
    wf = c.makefile("w", encoding="utf-8", newline="\n")
    rf = s.makefile("rb")
    wf.write("first line\nsecond é line\n")
    wf.flush()
    assert rf.readline() == b"first line\n"
    text = io.TextIOWrapper(rf, encoding="utf-8")
    assert text.readline() == "second é line\n"
    wf.close()
    text.close()
    c.close()
    s.close()


def test_select_readiness_of_session_and_listener(pair):
    ln, c, s = pair()
    fd = s.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    c.sendall(b"ping")
    r, _, _ = gselect([fd], [], [], 2)
    assert r == [fd]
    assert s.recv(100) == b"ping"
    assert select.select([fd], [], [], 0)[0] == []
    lfd = ln.fileno()
    assert select.select([lfd], [], [], 0)[0] == []
    c2 = kcpgo.dial(ln.getsockname())
    c2.sendall(b"x")
    assert gselect([lfd], [], [], 2)[0] == [lfd]
    ln.accept()[0].close()
    assert select.select([lfd], [], [], 0)[0] == []
    c2.close()


# ---------------------------------------------------------------- back-pressure, dead peer


def test_send_blocks_when_window_full_and_resumes(pair):
    ln, c, s = pair(window=(8, 8))
    progress = []

    def writer():
        for i in range(60):
            c.sendall(b"z" * 1000)
            progress.append(i)
    w = gevent.spawn(writer)
    gevent.sleep(0.3)
    stalled_at = len(progress)
    assert stalled_at < 60                       # the reader never read: the writer blocked
    gevent.sleep(0.2)
    assert len(progress) == stalled_at           # ... and stays blocked
    got = 0
    while got < 60_000:
        got += len(s.recv(5000))
    w.join(timeout=5)
    assert len(progress) == 60


def test_dead_peer_raises_connection_reset():
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # receives, never answers
    quiet.bind(LOCAL)
    c = kcpgo.dial(quiet.getsockname(), mode="fast3")
    c.set_dead_link(4)
    blocked = gevent.spawn(c.recv, 10)
    c.sendall(b"anyone?")
    took, err = elapsed(lambda: blocked.get(timeout=5))
    assert isinstance(err, ConnectionResetError)
    with pytest.raises(ConnectionResetError):
        c.send(b"more")
    c.close()
    quiet.close()


def test_idle_timeout_raises_timeout_error():
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(LOCAL)
    c = kcpgo.dial(quiet.getsockname(), idle_timeout=0.3)
    took, err = elapsed(lambda: c.recv(10))
    assert isinstance(err, TimeoutError) and 0.25 < took < 0.45
    c.close()
    quiet.close()


# ---------------------------------------------------------------- listener rules


def _push(conv, sn=0):
    """One raw KCP PUSH datagram (no crypto, no FEC) with payload b"hi"."""
    from kcpgo.sansio import CMD_PUSH, Segment, encode_segment
    return encode_segment(Segment(conv, CMD_PUSH, 0, 32, 0, sn, 0, b"hi"))


def _raw_client(conv, sn=0):
    """A plain UDP socket (the caller closes it) and the PUSH it sends."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(LOCAL)
    return u, _push(conv, sn)


def test_listener_replaces_session_on_new_conv_with_sn_zero():
    with kcpgo.listen(LOCAL) as ln:
        ln.settimeout(2)
        u, seg = _raw_client(1111)
        u.sendto(seg, ln.getsockname())
        s1, _ = ln.accept()
        assert s1.conv == 1111
        u.sendto(_push(2222, sn=5), ln.getsockname())     # new conv, sn != 0: dropped
        ln.settimeout(0.2)
        with pytest.raises(TimeoutError):
            ln.accept()
        u.sendto(_push(2222, sn=0), ln.getsockname())       # new conv, sn == 0: replaces
        ln.settimeout(2)
        s2, _ = ln.accept()
        assert s2.conv == 2222 and s1.closed
        s2.close()
        u.close()


def test_listener_backlog_is_bounded():
    with kcpgo.listen(LOCAL, backlog=5) as ln:
        socks = []
        for i in range(12):
            u, seg = _raw_client(100 + i)
            u.sendto(seg, ln.getsockname())
            socks.append(u)
        gevent.sleep(0.2)
        assert ln.session_count == 5
        for u in socks:
            u.close()


def test_listener_close_keeps_accepted_sessions(pair):
    ln, c, s = pair()
    ln.close()
    with pytest.raises(OSError):
        ln.accept()
    c.sendall(b"still here")
    s.settimeout(2)
    assert s.recv(100) == b"still here"
    s.sendall(b"reply")
    c.settimeout(2)
    assert c.recv(100) == b"reply"


def test_serve_conn_leaves_callers_socket_open():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(LOCAL)
    ln = kcpgo.serve_conn(u)
    c = kcpgo.dial(u.getsockname())
    c.sendall(b"via serve_conn")
    ln.settimeout(2)
    s, _ = ln.accept()
    assert s.recv(100) == b"via serve_conn"
    s.close()
    ln.close()
    c.close()
    assert u.fileno() >= 0
    u.close()


def test_bad_arguments_raise_clearly():
    with pytest.raises(ValueError, match="needs a key"):
        kcpgo.dial(("127.0.0.1", 9), crypt="aes")
    with pytest.raises(ValueError, match="valid"):
        kcpgo.dial(("127.0.0.1", 9), crypt="rot13", key="k")
    with pytest.raises(ValueError, match="mode"):
        kcpgo.listen(LOCAL, mode="warp")
    with kcpgo.dial(("127.0.0.1", 9)) as c:
        with pytest.raises(ValueError):
            c.set_mtu(20)
        with pytest.raises(ValueError):
            c.settimeout(-1)
        with pytest.raises(ValueError):
            c.set_dscp(99)


def test_accepted_session_rejects_socket_options(pair):
    ln, c, s = pair()
    for call in (lambda: s.set_dscp(10), lambda: s.set_read_buffer(1 << 20),
                 lambda: s.set_write_buffer(1 << 20)):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EOPNOTSUPP
    c.set_dscp(46)
    c.set_read_buffer(1 << 20)
    ln.set_dscp(46)


# ---------------------------------------------------------------- scale


CLIENTS = textwrap.dedent("""
    import sys, gevent, kcpgo
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def one(i):
        c = kcpgo.dial((host, port), mode="fast3", timeout=20)
        msg = b"session %d" % i
        c.sendall(msg)
        assert c.recv(100) == msg
        return c
    socks = [g.get() for g in [gevent.spawn(one, i) for i in range(n)]]
    print("OK", len(socks), flush=True)
    sys.stdin.readline()
""")


def test_thousand_sessions_one_listener_constant_greenlets():
    n = 1000
    import gc
    gc.collect()                      # reap sessions earlier tests left to the GC
    gevent.sleep(0.05)
    with kcpgo.listen(LOCAL, mode="fast3") as ln:
        before = spawn_count()
        proc = subprocess.Popen([sys.executable, "-c", CLIENTS, "127.0.0.1",
                                 str(ln.getsockname()[1]), str(n)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sessions = []

        def serve(s):
            s.sendall(s.recv(100))
        ln.settimeout(30)
        for _ in range(n):
            s, _ = ln.accept()
            sessions.append(s)
            gevent.spawn(serve, s)
        line = gevent.get_hub().threadpool.spawn(proc.stdout.readline).get(timeout=60)
        assert line.strip() == f"OK {n}"
        during = spawn_count()
        # 1,000 sessions and still one reader (the listener's) plus the hub's scheduler. (A
        # reader another test left closing may end meanwhile: the count must not grow.)
        assert during["kcpgo-reader"] <= before["kcpgo-reader"]
        assert during["kcpgo-scheduler"] == before["kcpgo-scheduler"] == 1
        assert ln.session_count == n
        # Idle sessions have no timer: after the echoes, nothing stays scheduled per session.
        gevent.sleep(1.0)
        live = sum(1 for s in sessions if s._chan.timer.pending)
        assert live == 0
        proc.stdin.write("\n")
        proc.stdin.close()
        reap(proc)
        for s in sessions:
            s.close()
