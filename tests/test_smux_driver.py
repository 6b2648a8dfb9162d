"""smux sessions over real loopback KCP: ``SmuxDriver`` under ``SmuxSession`` /
``SmuxListener`` (issue 11 item 3; docs/kcptun.md §4).

* streams in both roles (a listener's sessions never open streams, kcptun.md §4.4), 50
  concurrent sha256-checked streams in each framing, the accept timeout;
* session death (kcptun.md §4.6, 4.9, 11): keepalive timeout when the path is cut, a
  protocol error injected with a hand-made KCP client, the KCP idle timeout, a restarted
  peer; every blocked and later call raises ``ConnectionResetError`` naming the cause, after
  the bytes already received; ``SmuxSession.close()`` and ``SmuxListener.close()``;
* flow control: in v2 a stream nobody reads never stalls the others (kcptun.md §4.8); in v1
  the whole session stalls once the bucket is full and resumes when the slow stream is read
  (kcptun.md §4.7); what the receiver buffers stays within the bucket plus one frame;
* ``accept_limit``: streams beyond it are refused with FIN and counted;
* framing: a listener following each client (kcptun.md §3.3), a fixed one naming a mismatch
  on ``kcpgo.smux`` with both sides' kcptun flags (kcptun.md §4.9), garbage first bytes.
"""
from __future__ import annotations

import errno
import gc
import hashlib
import logging
import os
import random
import socket
import time
import warnings
import weakref

import gevent
import gevent.select
import gevent.socket
import pytest

import kcpgo
from tests.support.streams import connect, read_all, read_exactly
from tests.support.waits import wait_until
from kcpgo.sansio.smux import SmuxStreamError
from kcpgo.sansio.smux_frames import CMD_PSH, CMD_SYN, encode_frame
from kcpgo.testing import Impairment, Relay

FRAMINGS = [(1, False), (1, True), (2, False), (2, True)]
FRAMING_IDS = ["v1", "v1-snappy", "v2", "v2-snappy"]
FLAGS = {(1, False): "--smuxver 1 --nocomp", (1, True): "--smuxver 1",
         (2, False): "--smuxver 2 --nocomp", (2, True): "--smuxver 2"}
CUT = Impairment(loss=1.0)
#: A short keepalive, so that death by keepalive takes about a second (kcptun.md §4.6).
SHORT = dict(keepalive=0.2, keepalive_timeout=1.0)


@pytest.fixture(autouse=True)
def _guard():
    """No test may hang the suite: a blocked call that never returns fails the test."""
    with gevent.Timeout(40, AssertionError("test took over 40 s (a call hung?)")):
        yield


@pytest.fixture
def closing():
    """``closing(obj)`` registers a listener/session/relay to close after the test."""
    made = []
    yield lambda obj: made.append(obj) or obj
    for obj in reversed(made):
        obj.close()


@pytest.fixture
def hub_errors(monkeypatch):
    """Exceptions that reached the gevent hub (escaped a reader or timer callback)."""
    hub = gevent.get_hub()
    seen = []
    original = hub.handle_error

    def record(context, kind, value, tb):
        seen.append((context, kind, value))
        return original(context, kind, value, tb)
    monkeypatch.setattr(hub, "handle_error", record)
    return seen


def listen(closing, version=1, compression=False, **kw):
    return closing(kcpgo.listen_smux(("127.0.0.1", 0), smux_version=version,
                                     compression=compression, **kw))


def dial(closing, address, version=1, compression=False, **kw):
    return closing(kcpgo.dial_smux(address, smux_version=version, compression=compression,
                                   **kw))


def buffered(session) -> int:
    """Received stream bytes the session holds for the application (driver buffers)."""
    return sum(b.size for b in session._driver.streams.values())


def payload(rng: random.Random, n: int) -> bytes:
    """Half text (snappy compresses it), half random."""
    words = b"".join(rng.choice([b"alpha ", b"beta ", b"gamma "]) for _ in range(n // 12))
    return (words + rng.randbytes(n - len(words)))[:n]


class RawPeer:
    """A hand-driven KCP client without smux: a sans-IO Connection (no cipher, stream mode,
    as the listener's; fast3 so that its window is not held by congestion control) and a UDP
    socket whose ACKs a greenlet feeds back; ``send`` puts bytes in its KCP stream at once."""

    def __init__(self, address, conv: int = 0x51F0CAFE, sock=None) -> None:
        self.address = address
        if sock is None:
            sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.conn = kcpgo.Options(stream=True, mode="fast3").connection(conv)
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            data, _ = self.sock.recvfrom(65536)
            self.conn.receive_datagram(data, int(time.monotonic() * 1000))

    def send(self, data: bytes) -> None:
        self.conn.send(data)
        now = int(time.monotonic() * 1000)
        # at once, no timer (KCP's very first flush only opens its congestion window)
        for d in self.conn.flush(now) or self.conn.flush(now):
            self.sock.sendto(d, self.address)

    def close(self) -> None:
        self._reader.kill()
        self.sock.close()


# -- streams and sessions -------------------------------------------------------------------

def test_session_surface_in_both_roles(closing):
    lst = listen(closing)
    sess = dial(closing, lst.getsockname())
    assert sess.framing == "--smuxver 1 --nocomp" and not sess.closed and sess.error is None
    c, s = connect(lst, sess)
    server_session = s.session
    assert server_session.framing == sess.framing and server_session.conv == sess.conv
    assert sess.streams == 1 and server_session.streams == 1 and lst.sessions == 1
    # kcptun.md §4.4: a server never opens streams towards a client
    with pytest.raises(SmuxStreamError, match="never opens"):
        server_session.open_stream()
    assert server_session.streams == 1
    # a client is never offered streams: accept_stream honours the session's timeout
    sess.settimeout(0)
    with pytest.raises(BlockingIOError):
        sess.accept_stream()
    sess.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sess.accept_stream()
    # a listener session's accept_stream takes that session's next stream
    c2 = sess.open_stream()
    server_session.settimeout(5)
    s2 = server_session.accept_stream()
    c2.sendall(b"via the session")
    assert s2.recv(100) == b"via the session" and s2.sid == c2.sid == 5
    assert server_session.streams == 2
    for x in (c, s, c2, s2):
        x.close()
    assert sess.streams == 0
    wait_until(lambda: server_session.streams == 0)


@pytest.mark.parametrize("version", [1, 2])
def test_no_stream_state_is_left_behind(closing, version):
    # Every way a stream can end (either side closes first, half-closes both ways, closed
    # before it was accepted, closed with unread bytes) leaves nothing in either session:
    # kcptun.md §4.5, a stream is forgotten once closed locally.
    lst = listen(closing, version)
    sess = dial(closing, lst.getsockname(), version)
    server_sessions = set()
    for i in range(120):
        way = i % 4
        c = sess.open_stream()
        c.sendall(b"x" * (i * 97))
        if way == 3:
            c.close()                           # before the server accepted it
        s, _ = lst.accept()
        server_sessions.add(s.session)
        s.settimeout(5)
        if way != 3:                            # (a closed stream's settimeout: EBADF)
            c.settimeout(5)
        if way == 0:
            c.close()
            s.close()
        elif way == 1:
            s.sendall(b"unread reply")
            s.close()
            c.close()
        elif way == 2:
            c.shutdown(socket.SHUT_WR)
            assert read_all(s) == b"x" * (i * 97)
            s.shutdown(socket.SHUT_WR)
            assert read_all(c) == b""
            c.close()
            s.close()
        else:
            assert read_all(s) == b"x" * (i * 97)
            s.close()
    (server,) = server_sessions
    assert sess.streams == 0
    wait_until(lambda: not server._driver.streams and not sess._driver.streams,
               what="both drivers empty")
    assert server.streams == 0
    assert sess._driver.stack.smux.streams() == [] == server._driver.stack.smux.streams()
    assert server._driver.stack.smux.bucket == server._driver.stack.smux.max_receive_buffer
    assert sess._driver.stack.smux.bucket == sess._driver.stack.smux.max_receive_buffer


@pytest.mark.parametrize("taker", ["session", "listener"])
def test_session_fileno_is_readable_exactly_when_accept_stream_would_not_block(closing, taker):
    lst = listen(closing)
    sess = dial(closing, lst.getsockname())
    c, s = connect(lst, sess)
    server = s.session
    fd = server.fileno()

    def readable(timeout=0.0):
        return bool(gevent.select.select([fd], [], [], timeout)[0])
    assert not readable()
    c2 = sess.open_stream()
    assert readable(5)                          # a stream is waiting
    server.settimeout(5)
    s2 = server.accept_stream() if taker == "session" else lst.accept()[0]
    assert s2.sid == c2.sid
    assert not server._driver.accept_queue      # accept_stream would block now ...
    assert not readable()                       # ... so the fd is not readable
    server.settimeout(0)
    with pytest.raises(BlockingIOError):
        server.accept_stream()
    for x in (c, s, c2, s2):
        x.close()


def test_accept_timeouts(closing):
    lst = listen(closing)
    lst.settimeout(0)
    with pytest.raises(BlockingIOError):
        lst.accept()
    lst.settimeout(0.3)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        lst.accept()
    assert time.monotonic() - t0 >= 0.29


@pytest.mark.parametrize("framing", FRAMINGS, ids=FRAMING_IDS)
def test_fifty_concurrent_streams_both_ways(closing, framing):
    # Each stream: the client sends its payload and half-closes; the server reads to EOF,
    # then sends back the sha256 of what it got and the bytes reversed (its first frame of
    # the session is then up to 32 KiB: the client's framing check takes it, kcptun.md §3.1).
    lst = listen(closing, *framing)
    sess = dial(closing, lst.getsockname(), *framing)
    rng = random.Random(sum(framing))
    payloads = [payload(rng, rng.randrange(1, 120_000)) for _ in range(50)]

    def server():
        handlers = []
        for _ in payloads:
            s, _ = lst.accept()
            handlers.append(gevent.spawn(handle, s))
        gevent.joinall(handlers, raise_error=True)

    def handle(s):
        s.settimeout(20)
        got = read_all(s)
        s.sendall(hashlib.sha256(got).digest() + got[::-1])
        s.close()

    def client(data):
        c = sess.open_stream()
        c.settimeout(20)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        reply = read_all(c)
        c.close()
        return reply

    lst.settimeout(20)
    srv = gevent.spawn(server)
    clients = [gevent.spawn(client, p) for p in payloads]
    gevent.joinall(clients + [srv], raise_error=True)
    for p, g in zip(payloads, clients):
        assert g.value == hashlib.sha256(p).digest() + p[::-1]
    assert sess.streams == 0 and sess.error is None and lst.sessions == 1


# -- session death ---------------------------------------------------------------------------

def test_keepalive_timeout_fails_every_blocked_and_later_call(closing, caplog):
    caplog.set_level(logging.WARNING, logger="kcpgo.smux")
    lst = listen(closing, **SHORT)
    relay = closing(Relay(lst.getsockname()).start())
    sess = dial(closing, relay.address, **SHORT)
    c, s = connect(lst, sess)
    c2, s2 = connect(lst, sess)
    s.sendall(b"tail")                          # received before the cut, read after it
    wait_until(lambda: c._buf.size == 4)
    relay.set_impairment(up=CUT, down=CUT)      # the peer vanishes
    t0 = time.monotonic()
    c.settimeout(None)
    c2.settimeout(None)
    sess.settimeout(None)
    blocked = [gevent.spawn(c2.recv, 10), gevent.spawn(c2.sendall, os.urandom(2 << 20)),
               gevent.spawn(sess.accept_stream)]
    gevent.joinall(blocked, timeout=10)
    took = time.monotonic() - t0
    for g in blocked:
        assert isinstance(g.exception, ConnectionResetError), g.exception
        assert "keepalive" in str(g.exception)
    # kcptun.md §4.6: nothing for a timeout period -> dead, at the first or second check
    assert 0.9 <= took < 5, took
    assert c.recv(10) == b"tail"                # the bytes already received come first
    for call in (lambda: c.recv(10), lambda: c.send(b"x"), lambda: c2.sendall(b"x"),
                 sess.open_stream, sess.accept_stream):
        with pytest.raises(ConnectionResetError, match="keepalive"):
            call()
    assert sess.closed and isinstance(sess.error, ConnectionResetError)
    assert c.closed
    # the server's side dies the same way, and the listener forgets the session
    with pytest.raises(ConnectionResetError, match="keepalive"):
        s2.recv(10)
    wait_until(lambda: lst.sessions == 0)
    assert any("keepalive" in r.getMessage() and r.name == "kcpgo.smux" for r in caplog.records)
    for x in (c, s, c2, s2):
        x.close()


def test_kcp_idle_timeout_fails_the_streams_naming_it(closing):
    lst = listen(closing)
    relay = closing(Relay(lst.getsockname()).start())
    sess = dial(closing, relay.address, idle_timeout=0.5)
    c, s = connect(lst, sess)
    relay.set_impairment(up=CUT, down=CUT)
    c.settimeout(None)
    with pytest.raises(ConnectionResetError) as info:
        c.recv(10)
    text = str(info.value)
    assert "KCP session" in text and "no datagram from the peer for 0.5 s" in text
    assert sess.error is not None and "0.5 s" in str(sess.error)
    c.close()
    s.close()


@pytest.mark.slow
def test_kcp_dead_link_fails_the_streams_naming_it(closing):
    # docs/protocol.md: a segment sent dead_link (20) times ends the KCP session; the smux
    # streams on it fail naming that (about 6 s with fast3, hence slow).
    lst = listen(closing, mode="fast3")
    relay = closing(Relay(lst.getsockname()).start())
    sess = dial(closing, relay.address, mode="fast3")
    c, s = connect(lst, sess, timeout=30)
    relay.set_impairment(up=CUT, down=CUT)
    c.sendall(b"x" * 100)
    with pytest.raises(ConnectionResetError, match="stopped acknowledging"):
        c.recv(10)
    with pytest.raises(ConnectionResetError, match="stopped acknowledging"):
        sess.open_stream()
    c.close()
    s.close()


def test_protocol_error_fails_the_streams_after_their_data(closing, caplog, hub_errors):
    # A valid SYN and PSH, then a frame with command 7 (kcptun.md §4.2: protocol error).
    caplog.set_level(logging.WARNING, logger="kcpgo.smux")
    lst = listen(closing)
    peer = closing(RawPeer(lst.getsockname()))
    peer.send(encode_frame(1, CMD_SYN, 3) + encode_frame(1, CMD_PSH, 3, b"hello"))
    lst.settimeout(5)
    s, addr = lst.accept()
    assert addr == peer.sock.getsockname()
    s.settimeout(5)
    assert s.recv(100) == b"hello"
    # (a session that dies before its stream is accepted takes the stream with it, as a TCP
    # connection reset in the accept queue: so the bad frame comes after the accept)
    peer.send(encode_frame(1, CMD_PSH, 3, b"more") + bytes([1, 7, 0, 0, 3, 0, 0, 0]))
    wait_until(lambda: s.session.closed, what="the session's death")
    assert s.recv(100) == b"more"               # the bytes before the bad frame come first
    with pytest.raises(ConnectionResetError, match="smux command 7 unknown"):
        s.recv(100)
    with pytest.raises(ConnectionResetError, match="smux command 7 unknown"):
        s.sendall(b"x")
    assert s.session.error is not None and lst.sessions == 0
    assert any("smux command 7 unknown" in r.getMessage() for r in caplog.records)
    assert not hub_errors
    s.close()


def test_a_restarted_peer_resets_the_old_session(closing):
    # The same address begins a new conversation (PUSH sn 0, new conv): the old session's
    # streams fail naming it, like a TCP RST (docs/protocol.md listener rules).
    lst = listen(closing)
    old = closing(RawPeer(lst.getsockname(), conv=0x1111))
    old.send(encode_frame(1, CMD_SYN, 3) + encode_frame(1, CMD_PSH, 3, b"one"))
    lst.settimeout(5)
    s, _ = lst.accept()
    s.settimeout(5)
    assert s.recv(10) == b"one"
    old._reader.kill()
    new = closing(RawPeer(lst.getsockname(), conv=0x2222, sock=old.sock))
    new.send(encode_frame(1, CMD_SYN, 3) + encode_frame(1, CMD_PSH, 3, b"two"))
    s2, _ = lst.accept()
    s2.settimeout(5)
    assert s2.recv(10) == b"two"
    with pytest.raises(ConnectionResetError, match="restarted"):
        s.recv(10)
    s.close()
    s2.close()


def test_garbage_first_bytes_kill_only_that_session(closing, caplog, hub_errors):
    caplog.set_level(logging.WARNING, logger="kcpgo.smux")
    lst = listen(closing, None, None)
    peer = closing(RawPeer(lst.getsockname()))
    peer.send(b"\x07not kcptun at all" * 10)
    wait_until(lambda: any("neither snappy" in r.getMessage() for r in caplog.records),
               what="the WARNING on kcpgo.smux")
    # the KCP session is released just after the WARNING (a full run asserted in between)
    wait_until(lambda: lst.listener.session_count == 0, what="the KCP session released")
    assert lst.sessions == 0 and lst.listener.session_count == 0
    assert not hub_errors
    lst.settimeout(0)
    with pytest.raises(BlockingIOError):
        lst.accept()
    # the listener serves the next client as if nothing happened
    sess = dial(closing, lst.getsockname(), 2, True)
    c, s = connect(lst, sess)
    c.sendall(b"fine")
    assert s.recv(10) == b"fine"
    c.close()
    s.close()


def test_session_close_wakes_everything_blocked(closing):
    lst = listen(closing, 2, False)
    sess = dial(closing, lst.getsockname(), 2, False)
    c, s = connect(lst, sess)
    c2, s2 = connect(lst, sess)
    for x in (c, c2):
        x.settimeout(None)
    sess.settimeout(None)
    recv = gevent.spawn(c.recv, 10)
    send = gevent.spawn(c2.sendall, os.urandom(4 << 20))    # v2, unread: blocks on window
    accept = gevent.spawn(sess.accept_stream)
    gevent.sleep(0.3)
    assert not any(g.ready() for g in (recv, send, accept))
    sess.close()
    sess.close()                                # idempotent
    gevent.joinall([recv, send, accept], timeout=5)
    for g in (recv, send):
        assert isinstance(g.exception, ConnectionResetError), g.exception
        assert "closed locally" in str(g.exception)
    assert isinstance(accept.exception, OSError) and accept.exception.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        sess.open_stream()
    assert info.value.errno == errno.EBADF
    assert sess.closed and sess.error is None   # closed locally is not a failure
    for x in (c, s, c2, s2):
        x.close()


@pytest.mark.parametrize("version,compression", FRAMINGS, ids=FRAMING_IDS)
def test_session_close_ends_the_peers_open_streams(closing, version, compression):
    """D61: ``SmuxSession.close()`` with streams still open. smux sends no FIN then
    (kcptun.md §4.5): the peer's streams stay open until its keepalive timeout (30 s by
    default; a new user's tunnel left them so on SIGTERM). Expected, as if each socket were
    closed: the peer reads what was written, then EOF; a stream still waiting in the peer's
    accept queue ends the same way. (5 s timeouts: without the FIN the reads time out.)"""
    lst = listen(closing, version, compression)
    sess = dial(closing, lst.getsockname(), version, compression)
    c, s = connect(lst, sess)
    c2, s2 = connect(lst, sess)
    c3 = sess.open_stream()
    c3.sendall(b"queued")
    c.sendall(b"last words")
    gevent.sleep(0.2)                           # c3's SYN and data are in
    sess.close()
    lst.settimeout(5)
    s3, _ = lst.accept()
    for srv, expect in ((s, b"last words"), (s2, b""), (s3, b"queued")):
        srv.settimeout(5)
        assert read_all(srv) == expect
        srv.close()
    for x in (c, c2, c3):
        with pytest.raises(ConnectionResetError, match="closed locally"):
            x.recv(1)


@pytest.mark.parametrize("linger", [10.0, 0.0])
def test_session_close_sends_the_fins_with_or_without_linger(closing, linger):
    """A reviewer's finding: the driver's close without linger (taken when the runtime's
    thread has ended) released the session before its FINs reached KCP, so the peer's
    stream never ended. Expected with both: the peer reads EOF (D61)."""
    lst = listen(closing, mode="fast3")
    sess = dial(closing, lst.getsockname(), mode="fast3")
    c, s = connect(lst, sess)
    c.sendall(b"hi")
    assert read_exactly(s, 2) == b"hi"
    with sess._runtime.lock:
        sess._driver.close(linger)
    s.settimeout(5)
    assert s.recv(10) == b""


def _written_and_closed_through_loss(closing, seed):
    """A fast3 session through a relay losing 10 % each way, 300 KB written on one stream
    and the stream closed (its FIN queued): ``(listener, session, data)``."""
    lst = listen(closing, mode="fast3")
    relay = closing(Relay(lst.getsockname(), up=Impairment(loss=0.1),
                          down=Impairment(loss=0.1), seed=seed).start())
    sess = kcpgo.dial_smux(relay.address, mode="fast3")
    data = os.urandom(300_000)
    c = sess.open_stream()
    c.sendall(data)
    c.close()
    return lst, sess, data


def test_what_was_written_before_session_close_still_arrives(closing):
    # A closed TCP socket still delivers its send queue; SmuxSession.close() likewise keeps
    # sending (and retransmitting, 10 % loss each way here) what was written, FINs included,
    # until the peer acknowledged it (kcpgo.runtime.smux_driver.LINGER).
    lst, sess, data = _written_and_closed_through_loss(closing, seed=5)
    sess.close(linger=0)                        # at once: most of it is not acknowledged yet
    assert sess.closed and sess.error is None
    lst.settimeout(10)
    s, _ = lst.accept()
    s.settimeout(10)
    assert read_all(s) == data                  # everything, then EOF (the FIN arrived too)
    s.close()
    wait_until(lambda: sess._driver.closed, timeout=12, what="the lingering session ended")


def test_session_close_with_linger_waits_until_what_was_written_is_acknowledged(closing):
    """``SmuxSession.close(linger)`` (its docstring: "wait, at most that many seconds,
    until the peer acknowledged it all") returned at once: it asked ``Runtime.can_wait()``
    while holding the stack lock, which always answers no then (a reviewer's script: 0.0 s
    with data unacknowledged). It returns now once the driver has finished: everything
    written, and the stream's FIN, acknowledged through a link losing 10 % each way."""
    lst, sess, data = _written_and_closed_through_loss(closing, seed=7)

    def serve():
        lst.settimeout(10)
        s, _ = lst.accept()
        s.settimeout(10)
        got = read_all(s)
        s.close()
        return got
    reader = gevent.spawn(serve)
    sess.close(linger=10)
    assert sess._driver.closed                  # finished: nothing left unacknowledged
    assert reader.get(timeout=10) == data


def test_close_does_not_wait_for_a_peer_never_heard(closing):
    """A peer that never answered (nothing listens, a wrong key) acknowledges nothing:
    ``close()`` returns without lingering, where the wait would last all of ``linger``
    (a reviewer's script: 9-10 s with the default, after close() began lingering)."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)    # bound, never read
    hole.bind(("127.0.0.1", 0))
    try:
        sess = kcpgo.dial_smux(hole.getsockname(), mode="fast3")
        c = sess.open_stream()
        c.sendall(b"hello")
        t0 = time.monotonic()
        sess.close(linger=30)
        assert time.monotonic() - t0 < 5          # not the linger (10 s: the driver's own)
        assert not sess._chan.heard
    finally:
        hole.close()


def test_an_open_stream_of_a_closed_session_still_names_its_addresses(closing):
    """Closing the session leaves its streams open (until used): their getpeername and
    getsockname still answer, as before closed objects raised EBADF from them (a
    reviewer's script); the session's own raise."""
    lst = listen(closing)
    sess = dial(closing, lst.getsockname())
    st = sess.open_stream()
    peer, local = st.getpeername(), st.getsockname()
    sess.close(0)
    assert (st.getpeername(), st.getsockname()) == (peer, local)
    with pytest.raises(OSError) as info:
        sess.getpeername()
    assert info.value.errno == errno.EBADF
    st.close()


def test_listener_close_keeps_accepted_streams_and_then_closes_the_socket(closing):
    lst = listen(closing)
    sess = dial(closing, lst.getsockname())
    c, s = connect(lst, sess)
    lst.settimeout(None)
    waiting = gevent.spawn(lst.accept)
    gevent.sleep(0.1)
    lst.close()
    with pytest.raises(OSError) as info:
        waiting.get(timeout=5)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        lst.accept()
    # the accepted stream works both ways while it is open
    c.sendall(b"after close")
    assert s.recv(100) == b"after close"
    s.sendall(b"reply")
    assert c.recv(100) == b"reply"
    sock = lst.listener._endpoint.sock
    assert sock.fileno() != -1
    s.close()                                   # the last stream of the last session
    wait_until(lambda: sock.fileno() == -1, what="the UDP socket closed")
    assert lst.sessions == 0


def test_listener_close_refuses_new_streams_of_live_sessions(closing):
    lst = listen(closing)
    sess = dial(closing, lst.getsockname())
    c, s = connect(lst, sess)
    lst.close()
    late = sess.open_stream()
    late.settimeout(2)
    assert late.recv(10) == b""                 # refused: FIN, as accept_limit does
    for x in (c, s, late):
        x.close()


def test_an_idle_session_lives_on_its_keepalives(closing):
    # kcptun.md §4.6: NOPs every interval keep a session with nothing to say alive through
    # several timeout periods (here 2.5 s of silence with a 1 s timeout).
    lst = listen(closing, **SHORT)
    sess = dial(closing, lst.getsockname(), **SHORT)
    c, s = connect(lst, sess)
    gevent.sleep(2.5)
    c.sendall(b"still there?")
    assert s.recv(100) == b"still there?"
    s.sendall(b"yes")
    assert c.recv(10) == b"yes"
    assert sess.error is None and s.session.error is None
    c.close()
    s.close()


def test_an_unreferenced_session_is_closed_with_a_resource_warning(closing):
    lst = listen(closing)
    sess = kcpgo.dial_smux(lst.getsockname())
    endpoint = sess._chan.endpoint
    ref = weakref.ref(sess)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del sess
            gc.collect()
            gevent.sleep(0.05)
        assert any(issubclass(w.category, ResourceWarning) for w in caught)
        assert endpoint.closed
        del caught                              # a recorded warning holds its source
        gc.collect()
        assert ref() is None
    finally:
        if ref() is not None:
            ref().close()


# -- flow control ----------------------------------------------------------------------------

@pytest.mark.parametrize("compression", [False, True], ids=["nocomp", "snappy"])
def test_v2_slow_reader_never_stalls_another_stream(closing, compression):
    # kcptun.md §4.8: a stream nobody reads holds at most its window (262144 before the first
    # UPD); the other stream of the same session keeps moving megabytes both ways.
    lst = listen(closing, 2, compression)
    sess = dial(closing, lst.getsockname(), 2, compression)
    ca, sa = connect(lst, sess)
    cb, sb = connect(lst, sess)
    slow = os.urandom(3 << 20)
    writer = gevent.spawn(ca.sendall, slow)
    wait_until(lambda: sa._buf.size >= 262144, what="the slow stream's window filled")
    fast = os.urandom(4 << 20)
    echo_back = gevent.spawn(lambda: sb.sendall(hashlib.sha256(read_all(sb)).digest()))
    cb.sendall(fast)
    cb.shutdown(socket.SHUT_WR)
    assert cb.recv(100) == hashlib.sha256(fast).digest()
    echo_back.get(timeout=10)
    assert not writer.ready()                   # the slow stream is still blocked ...
    assert sa._buf.size <= 262144               # ... holding no more than its window
    assert hashlib.sha256(read_exactly(sa, len(slow))).digest() == hashlib.sha256(slow).digest()
    writer.get(timeout=10)
    for x in (ca, sa, cb, sb):
        x.close()


def test_v1_session_stalls_on_a_full_bucket_and_resumes(closing):
    # kcptun.md §4.7: v1 has only the session bucket; a stream nobody reads fills it, then no
    # stream of the session moves; reading the slow stream resumes everything. Memory: the
    # receiver holds at most the bucket plus one frame.
    bucket, frame = 256 * 1024, 32768
    lst = listen(closing, max_receive_buffer=bucket)
    sess = dial(closing, lst.getsockname())
    ca, sa = connect(lst, sess)
    cb, sb = connect(lst, sess)
    slow = os.urandom(1 << 20)
    writer = gevent.spawn(ca.sendall, slow)
    session = sa.session
    wait_until(lambda: buffered(session) >= bucket, what="the bucket filled")
    other = gevent.spawn(cb.sendall, b"b" * 10_000)
    sb.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sb.recv(100)                            # the whole session is stalled
    assert buffered(session) <= bucket + frame
    assert not writer.ready()
    got = read_exactly(sa, len(slow))           # read the slow stream: everything resumes
    assert got == slow
    sb.settimeout(10)
    assert read_exactly(sb, 10_000) == b"b" * 10_000
    gevent.joinall([writer, other], raise_error=True)
    for x in (ca, sa, cb, sb):
        x.close()


def test_a_stalled_v1_session_outlives_its_keepalive_timeout(closing):
    # kcptun.md §4.6: the timeout check skips a session whose bucket is exhausted (its
    # reader stopped reading KCP on purpose, kcptun.md §4.7), so a stall longer than the
    # keepalive timeout is not a death; the stalled data all arrives once the slow stream is read.
    bucket = 128 * 1024
    lst = listen(closing, max_receive_buffer=bucket, **SHORT)
    sess = dial(closing, lst.getsockname(), **SHORT)
    ca, sa = connect(lst, sess)
    data = os.urandom(1 << 20)
    writer = gevent.spawn(ca.sendall, data)
    wait_until(lambda: buffered(sa.session) >= bucket, what="the bucket filled")
    gevent.sleep(2.5)
    assert sess.error is None and sa.session.error is None
    assert read_exactly(sa, len(data)) == data
    writer.get(timeout=10)
    ca.close()
    sa.close()


def test_v1_memory_stays_within_bucket_plus_one_frame_with_a_large_window(closing):
    bucket, frame = 256 * 1024, 32768
    lst = listen(closing, max_receive_buffer=bucket, window=(1024, 1024))
    sess = dial(closing, lst.getsockname(), window=(1024, 1024))
    ca, sa = connect(lst, sess)
    writer = gevent.spawn(ca.sendall, os.urandom(8 << 20))
    session = sa.session
    kcp = session._driver.conn.kcp
    wait_until(lambda: len(kcp.rcv_queue) >= 900, what="KCP's receive queue filled")
    assert buffered(session) <= bucket + frame
    sa.recv(1000)                               # the application reads a little
    assert buffered(session) <= bucket + frame, buffered(session)
    writer.kill()
    ca.close()
    sa.close()


def test_half_closed_streams_stay_within_the_bucket(closing):
    # Many HTTP/1.0-style requests (request, SHUT_WR, read the reply later): replies of 200 KB
    # each, one after another, to a client with a 256 KiB bucket that reads nothing yet.
    bucket, frame = 256 * 1024, 32768
    lst = listen(closing)
    sess = dial(closing, lst.getsockname(), max_receive_buffer=bucket)
    clients = []
    for _ in range(8):
        c = sess.open_stream()
        c.sendall(b"GET")
        c.shutdown(socket.SHUT_WR)
        clients.append(c)

    def server():
        for _ in clients:
            s, _ = lst.accept()
            read_all(s)
            s.sendall(os.urandom(200_000))
            s.close()
    srv = gevent.spawn(server)
    gevent.sleep(1.5)
    held = buffered(sess)
    srv.kill()
    for c in clients:
        c.close()
    assert held <= bucket + frame, held


# -- accept_limit ------------------------------------------------------------------------------

def test_streams_beyond_the_accept_limit_wait_and_are_all_served(closing):
    """docs/deviations.md D41: with accept_limit streams waiting the session stops reading
    (smux's acceptBacklog back-pressure), so later streams and their data wait in KCP, not in
    memory here; every stream is served once the application accepts (kcp-go's smux never
    refuses one; refusing cut off 1,980 of 6,000 tunnelled connections in a burst)."""
    lst = listen(closing, accept_limit=4)
    sess = dial(closing, lst.getsockname())
    c0, s0 = connect(lst, sess)
    server_session = s0.session
    extra = [sess.open_stream() for _ in range(10)]
    for c in extra:
        c.settimeout(5)
        c.sendall(b"x")
    wait_until(lambda: len(server_session._driver.accept_queue) >= 4, what="4 waiting")
    gevent.sleep(0.3)
    assert server_session.refused == 0
    assert len(server_session._driver.accept_queue) <= 10     # one read's SYNs at most
    accepted = [lst.accept()[0] for _ in range(10)]
    assert sorted(a.sid for a in accepted) == sorted(c.sid for c in extra)
    for a in accepted:
        a.settimeout(5)
        assert a.recv(10) == b"x"
    assert server_session.refused == 0 and lst.sessions == 1
    for x in accepted + extra + [c0, s0]:
        x.close()


def test_a_burst_of_streams_is_served_in_full(closing):
    """1,500 streams opened at once on one session with the default accept_limit (1024): all
    are accepted and answered (breaker's reproducer: about 465 were refused before)."""
    lst = listen(closing)
    sess = dial(closing, lst.getsockname())
    n = 1500
    streams = [sess.open_stream() for _ in range(n)]
    for c in streams:
        c.sendall(b"x")
    lst.settimeout(10)
    got = []

    def serve(s):
        s.settimeout(10)
        got.append(s.recv(1))
        s.close()
    # each stream in a greenlet, as a server does: its data may wait behind SYNs that only
    # an accept lets the session read (smux's acceptBacklog works the same way)
    handlers = [gevent.spawn(serve, lst.accept()[0]) for _ in range(n)]
    gevent.joinall(handlers, timeout=20, raise_error=True)
    assert got == [b"x"] * n
    for c in streams:
        c.close()


# -- framing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("framing", FRAMINGS, ids=FRAMING_IDS)
def test_auto_listener_follows_each_client(closing, framing):
    lst = listen(closing, None, None)
    sess = dial(closing, lst.getsockname(), *framing)
    c, s = connect(lst, sess)
    data = os.urandom(100_000)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    assert read_all(s) == data
    s.sendall(b"ok")
    s.close()
    assert c.recv(10) == b"ok" and c.recv(10) == b""
    assert s.session.framing == FLAGS[framing]
    c.close()


def test_one_auto_listener_serves_every_framing_at_once(closing):
    lst = listen(closing, None, None)
    sessions = [dial(closing, lst.getsockname(), *f) for f in FRAMINGS]
    pairs = [connect(lst, sess) for sess in sessions]
    for i, (c, s) in enumerate(pairs):
        c.sendall(b"client %d" % i)
    for i, (c, s) in enumerate(pairs):
        assert s.recv(100) == b"client %d" % i
        assert s.session.framing == FLAGS[FRAMINGS[i]]
        c.close()
        s.close()
    assert lst.sessions == 4


@pytest.mark.parametrize("client", [(2, False), (1, True), (2, True)],
                         ids=["v2", "v1-snappy", "v2-snappy"])
def test_fixed_listener_names_a_mismatched_client(closing, caplog, client):
    # kcptun.md §4.9: nothing is negotiated. The server logs both sides' kcptun flags; the
    # client hears nothing (the server sends no error) and its streams fail when its
    # keepalive timeout expires (1 s here; kcptun's 30 s by default).
    caplog.set_level(logging.WARNING, logger="kcpgo.smux")
    lst = listen(closing, 1, False)
    sess = dial(closing, lst.getsockname(), *client, **SHORT)
    c = sess.open_stream()
    c.sendall(b"hello")
    c.settimeout(None)
    t0 = time.monotonic()
    with pytest.raises(ConnectionResetError, match="keepalive"):
        c.recv(10)
    took = time.monotonic() - t0
    assert took < 5, took
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "kcpgo.smux" and r.levelno == logging.WARNING]
    assert any(FLAGS[client] in m and "--smuxver 1 --nocomp" in m and "mismatch" in m
               for m in warnings), warnings
    assert lst.sessions == 0
    c.close()


def test_a_stream_timeout_names_the_framing_when_the_peer_sends_no_smux_frame(closing):
    """A new user's first try against kcptun: ``dial_smux`` with the default
    ``compression=False`` to a server running snappy framing, then ``recv`` with a
    timeout: a bare "timed out", with ``diagnosis()`` empty (the KCP session answers). The
    timeout now says the peer's KCP answers but no smux frame came, with this side's
    framing and what kcptun runs (kcptun.md §4.9)."""
    lst = listen(closing, 2, True)                      # fixed framing: does not follow
    sess = dial(closing, lst.getsockname())             # --smuxver 1 --nocomp
    c = sess.open_stream()
    c.sendall(b"hello")
    c.settimeout(1.5)
    with pytest.raises(TimeoutError) as info:
        c.recv(10)
    text = str(info.value)
    assert "sent no smux frame" in text and "--smuxver 1 --nocomp" in text, text
    assert "compression=True" in text, text
    c.close()
    sess.close(linger=0)        # its FIN would wait the linger for a peer that went silent


def test_config_errors_are_reported_before_any_socket(closing):
    with pytest.raises(ValueError, match="stream"):
        kcpgo.dial_smux(("127.0.0.1", 9), stream=False)
    with pytest.raises(ValueError):
        kcpgo.dial_smux(("127.0.0.1", 9), smux_version=3)
    with pytest.raises(ValueError):
        kcpgo.dial_smux(("127.0.0.1", 9), smux_version=None)       # a client must choose
    with pytest.raises(ValueError):
        kcpgo.dial_smux(("127.0.0.1", 9), keepalive=40, keepalive_timeout=30)
    with pytest.raises(ValueError):
        kcpgo.listen_smux(("127.0.0.1", 0), max_stream_buffer=10, max_receive_buffer=5)
    with pytest.raises(TypeError):
        kcpgo.listen_smux(("127.0.0.1", 0), compression="yes")


CLIENT_THAT_EXITS = r"""
import hashlib, sys, kcpgo
data = bytes(range(256)) * (3_000_000 // 256)
with kcpgo.dial_smux(("127.0.0.1", int(sys.argv[1])), mode="fast3") as sess:
    s = sess.open_stream()
    s.sendall(data)
    s.close()
print(hashlib.sha256(data).hexdigest())
"""


def test_a_client_that_exits_after_closing_its_session_loses_nothing(closing):
    """A script that writes, closes its stream and leaves the session's ``with`` block, then
    exits: over TCP the kernel delivers what was written after the process ends (close(2));
    here SmuxSession.close() waits for the peer's ACKs (up to 10 s) so the server reads every
    byte and then EOF. Before, the process ended with ~70 KB unsent and the server's read hung
    until the keepalive timeout."""
    import subprocess
    import sys
    lst = listen(closing)
    port = lst.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_THAT_EXITS, str(port)],
                            stdout=subprocess.PIPE, text=True)
    lst.settimeout(20)
    s, _ = lst.accept()
    s.settimeout(20)
    got = read_all(s)
    out, _ = gevent.get_hub().threadpool.spawn(proc.communicate, timeout=30).get()
    assert hashlib.sha256(got).hexdigest() == out.strip()
    assert len(got) == 3_000_000 // 256 * 256
    s.close()
