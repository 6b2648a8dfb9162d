"""``kcpgo.Stream``: one smux stream with the blocking socket API and TCP's semantics, over real
loopback UDP (issue 11 item 3; docs/kcptun.md §4.5).

Expected values come from the standard library's socket documentation and TCP:

* ``recv`` returns ``b""`` once the peer's FIN arrived and every byte before it was read, and
  keeps returning it (EOF); ``shutdown(SHUT_WR)`` sends FIN and the peer can still reply (a
  half-close, the HTTP/1.0 pattern); ``send`` after ``SHUT_WR`` raises ``BrokenPipeError``
  (EPIPE, as send(2)); ``SHUT_RD`` makes ``recv`` return ``b""``;
* timeouts as ``socket.settimeout``: 0 raises ``BlockingIOError``, t raises ``TimeoutError``
  (``socket.timeout``) after about t, ``None`` blocks;
* ``close()`` is idempotent, wakes a greenlet blocked on the object with ``OSError(EBADF)``
  (gevent's socket), and every later call raises EBADF, as on a closed socket;
* ``makefile`` / ``recv_into`` / ``fileno`` readiness / ``getpeername`` / context manager /
  ``ResourceWarning`` when an unclosed stream is collected, as ``socket.socket``.
"""
from __future__ import annotations

import errno
import gc
import hashlib
import os
import socket
import time
import warnings

import gevent
import gevent.select
import pytest

import kcpgo
from tests.support.streams import connect, read_all, read_exactly
from tests.support.waits import wait_until

FRAMINGS = [(1, False), (1, True), (2, False), (2, True)]
FRAMING_IDS = ["v1", "v1-snappy", "v2", "v2-snappy"]


@pytest.fixture(autouse=True)
def _guard():
    """No test may hang the suite: a blocked call that never returns fails the test."""
    with gevent.Timeout(30, AssertionError("test took over 30 s (a call hung?)")):
        yield


@pytest.fixture
def smux():
    """``smux(version, compression, server={...}, client={...}) -> (listener, session)`` on
    loopback; everything made is closed after the test."""
    made = []

    def make(version=1, compression=False, server=None, client=None):
        lst = kcpgo.listen_smux(("127.0.0.1", 0), smux_version=version,
                                compression=compression, **(server or {}))
        made.append(lst)
        sess = kcpgo.dial_smux(lst.getsockname(), smux_version=version,
                               compression=compression, **(client or {}))
        made.append(sess)
        return lst, sess

    yield make
    for obj in reversed(made):
        obj.close()


# -- EOF and half-close -------------------------------------------------------------------

@pytest.mark.parametrize("framing", FRAMINGS, ids=FRAMING_IDS)
def test_eof_comes_after_every_byte_before_the_fin(smux, framing):
    lst, sess = smux(*framing)
    c, s = connect(lst, sess)
    payload = os.urandom(200_000)               # < 256 KiB: no v2 UPD needed (kcptun.md §4.8)
    c.sendall(payload)
    c.close()                                   # FIN after the data
    wait_until(lambda: s._buf.eof)              # FIN in: the data is all buffered already
    assert read_all(s) == payload               # ... and is still delivered first
    assert s.recv(10) == b"" and s.recv(10) == b""    # EOF stays EOF
    s.close()


@pytest.mark.parametrize("framing", FRAMINGS, ids=FRAMING_IDS)
def test_half_close_then_the_peer_replies(smux, framing):
    # HTTP/1.0: the client sends its request and shuts down its side; the server reads to
    # EOF, replies (more than a v2 window, kcptun.md §4.8) and closes; the client reads the
    # reply to EOF: a status line, then the digest of the request and a body in one write
    # (a first frame of 32 KiB: the client's framing check must take it, kcptun.md §3.1).
    lst, sess = smux(*framing)
    c, s = connect(lst, sess)
    request = b"GET / HTTP/1.0\r\n\r\n" + os.urandom(100_000)
    body = os.urandom(600_000)

    def server():
        got = read_all(s)                      # EOF after the client's SHUT_WR
        s.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + hashlib.sha256(got).digest() + body)
        s.close()

    g = gevent.spawn(server)
    c.sendall(request)
    c.shutdown(socket.SHUT_WR)
    reply = read_all(c)
    g.get()
    assert reply == b"HTTP/1.0 200 OK\r\n\r\n" + hashlib.sha256(request).digest() + body
    c.close()


def test_send_after_shut_wr_raises_broken_pipe(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    c.shutdown(socket.SHUT_WR)
    for call in (lambda: c.send(b"x"), lambda: c.sendall(b"xyz"), lambda: c.sendall(b"")):
        with pytest.raises(BrokenPipeError) as info:
            call()
        assert info.value.errno == errno.EPIPE
    assert s.recv(10) == b""                    # the FIN reached the peer
    s.sendall(b"still here")                    # the other direction is open
    assert c.recv(100) == b"still here"
    c.close()
    s.close()


def test_shutdown_after_fin_both_ways_raises_at_most_an_oserror(smux):
    # socket docs: shutdown errors are OSError; socketserver.TCPServer.shutdown_request does
    # ``try: request.shutdown(SHUT_WR) except OSError: pass``: a handler that half-closed
    # its stream itself must not make that raise something else.
    lst, sess = smux()
    c, s = connect(lst, sess)
    s.shutdown(socket.SHUT_WR)                  # the handler half-closes
    assert c.recv(10) == b""
    c.close()                                   # the client closes: FIN both ways
    wait_until(lambda: s._buf.eof)
    for how in (socket.SHUT_WR, socket.SHUT_RDWR):
        try:
            s.shutdown(how)
        except OSError:
            pass
    s.close()


def test_shut_rd_returns_eof_and_never_holds_the_session(smux):
    # SHUT_RD: recv returns b"" at once and from then on; bytes the peer keeps sending are
    # dropped as they arrive, so they never exhaust the v1 session bucket (kcptun.md §4.7):
    # here 4 x the server's bucket goes to the shut stream while another stream of the same
    # session keeps echoing.
    bucket = 256 * 1024
    lst, sess = smux(1, False, server=dict(max_receive_buffer=bucket))
    c1, s1 = connect(lst, sess)
    c2, s2 = connect(lst, sess)
    s1.sendall(b"x")
    assert c1.recv(1) == b"x"
    s1.shutdown(socket.SHUT_RD)
    assert s1.recv(100) == b"" and s1.recv(100) == b""
    flood = gevent.spawn(c1.sendall, os.urandom(4 * bucket))

    def echo():
        while True:
            data = s2.recv(65536)
            if not data:
                break
            s2.sendall(data)
        s2.close()
    e = gevent.spawn(echo)
    for _ in range(20):
        piece = os.urandom(20_000)
        c2.sendall(piece)
        got = b""
        while len(got) < len(piece):
            got += c2.recv(len(piece) - len(got))
        assert got == piece
    flood.get(timeout=10)                       # the whole flood was taken and dropped
    c2.shutdown(socket.SHUT_WR)
    assert read_all(c2) == b""
    e.get(timeout=5)
    s1.sendall(b"reply")                        # SHUT_RD leaves the sending side open
    assert c1.recv(10) == b"reply"
    assert sum(b.size for b in s1.session._driver.streams.values()) == 0
    for x in (c1, s1, c2):
        x.close()


# -- timeouts ---------------------------------------------------------------------------

def test_timeouts_as_socket_settimeout(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    c.settimeout(0)
    assert c.gettimeout() == 0.0 and not c.getblocking()
    with pytest.raises(BlockingIOError):
        c.recv(10)
    c.setblocking(True)
    assert c.gettimeout() is None and c.getblocking()
    c.settimeout(0.3)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        c.recv(10)
    assert time.monotonic() - t0 >= 0.29        # not before the timeout
    assert issubclass(socket.timeout, TimeoutError)
    with pytest.raises(ValueError):
        c.settimeout(-1)
    # None blocks until data comes
    c.settimeout(None)
    g = gevent.spawn(c.recv, 10)
    gevent.sleep(0.3)
    assert not g.ready()
    s.sendall(b"late")
    assert g.get(timeout=5) == b"late"
    c.close()
    s.close()


def test_send_timeouts_on_a_window_that_stays_closed(smux):
    # v2: a stream whose reader never reads takes 256 KiB before the first UPD
    # (kcptun.md §4.8), then send blocks: TimeoutError after the timeout, BlockingIOError
    # at 0.
    lst, sess = smux(2, False)
    c, s = connect(lst, sess)
    c.settimeout(0.5)
    with pytest.raises(TimeoutError):
        c.sendall(os.urandom(2 * 1024 * 1024))
    c.settimeout(0)
    with pytest.raises(BlockingIOError):
        c.send(b"x" * 100_000)
    c.close()
    s.close()


def test_initial_stream_timeouts_come_from_dial_and_listen(smux):
    lst, sess = smux(server=dict(timeout=0.25), client=dict(timeout=0.5))
    c = sess.open_stream()
    s, _ = lst.accept()
    assert c.gettimeout() == 0.5 and s.gettimeout() == 0.25
    with pytest.raises(TimeoutError):
        s.recv(1)
    c.close()
    s.close()


# -- close --------------------------------------------------------------------------------

@pytest.mark.parametrize("blocked", ["recv", "sendall", "both"])
def test_close_from_another_greenlet_wakes_blocked_calls_with_ebadf(smux, blocked):
    lst, sess = smux(2, False)
    c, s = connect(lst, sess)
    c.settimeout(None)
    greenlets = []
    if blocked in ("recv", "both"):
        greenlets.append(gevent.spawn(c.recv, 10))                         # nothing comes
    if blocked in ("sendall", "both"):
        greenlets.append(gevent.spawn(c.sendall, os.urandom(4 * 1024 * 1024)))  # v2 window
    gevent.sleep(0.3)
    assert not any(g.ready() for g in greenlets)
    c.close()
    for g in greenlets:
        with pytest.raises(OSError) as info:
            g.get(timeout=5)
        assert info.value.errno == errno.EBADF
    s.close()


def test_close_is_idempotent_and_every_later_call_raises_ebadf(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    c.close()
    c.close()
    assert c.closed
    calls = [lambda: c.recv(1), lambda: c.recv(0), lambda: c.recv_into(bytearray(4)),
             lambda: c.send(b"x"), lambda: c.sendall(b"x"),
             lambda: c.shutdown(socket.SHUT_RDWR)]
    for call in calls:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF
    assert c.fileno() == -1                     # as socket.fileno() after close
    assert s.recv(10) == b""                    # close sent FIN
    assert sess.streams == 0
    s.close()


def test_context_manager_closes_and_sends_fin(smux):
    lst, sess = smux()
    with sess.open_stream() as c:
        c.sendall(b"bye")
        s, _ = lst.accept()
    assert c.closed
    s.settimeout(5)
    assert read_all(s) == b"bye"
    s.close()


def test_unclosed_stream_warns_when_collected(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    c.sendall(b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del c
        gc.collect()
        gevent.sleep(0.05)
    assert any(issubclass(w.category, ResourceWarning) and "unclosed" in str(w.message)
               for w in caught)
    assert sess.streams == 0                    # and it was closed: FIN to the peer
    assert read_all(s) == b"x"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.close()
        del s
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# -- file and buffer API ------------------------------------------------------------------

def test_makefile_reads_to_eof_and_lines(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    s.sendall(b"first line\nsecond line\n" + b"rest" * 10_000)
    s.close()
    f = c.makefile("rb")
    assert f.readline() == b"first line\n"
    assert f.readline() == b"second line\n"
    assert f.read() == b"rest" * 10_000        # read() ends at EOF
    assert f.read() == b""
    # socket semantics: close() of the stream is deferred while a file object is open
    c.close()
    assert not c._released
    f.close()
    assert c._released and sess.streams == 0


def test_makefile_write_and_text_mode(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    w = c.makefile("w", encoding="utf-8")
    w.write("héllo\nwörld\n")
    w.flush()
    r = s.makefile("r", encoding="utf-8", newline="")
    assert r.readline() == "héllo\n" and r.readline() == "wörld\n"
    w.close()
    c.close()
    assert r.readline() == ""                   # EOF
    r.close()
    s.close()


def test_recv_into(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    s.sendall(b"0123456789")
    buf = bytearray(4)
    assert c.recv_into(buf) == 4 and buf == b"0123"
    big = bytearray(100)
    assert c.recv_into(big, 3) == 3 and big[:3] == b"456"
    mv = memoryview(bytearray(10))
    n = c.recv_into(mv)
    assert mv[:n].tobytes() == b"789"
    with pytest.raises(TypeError):
        c.recv_into(b"read-only")
    with pytest.raises(ValueError):
        c.recv_into(bytearray(4), -1)
    s.close()
    assert c.recv_into(bytearray(4)) == 0      # EOF
    c.close()


# -- readiness ---------------------------------------------------------------------------

def readable(stream, timeout=0.0) -> bool:
    r, _, _ = gevent.select.select([stream.fileno()], [], [], timeout)
    return bool(r)


def test_fileno_is_readable_exactly_when_recv_would_not_block(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    fd = c.fileno()
    assert fd == c.fileno() and fd >= 0
    assert not readable(c)
    s.sendall(b"abc")
    assert readable(c, 5)
    assert c.recv(2) == b"ab"
    assert readable(c)                          # one byte left
    assert c.recv(10) == b"c"
    assert not readable(c, 0.1)
    s.shutdown(socket.SHUT_WR)                  # EOF
    assert readable(c, 5)
    assert c.recv(10) == b""
    assert readable(c)                          # EOF stays readable
    # SHUT_RD makes it readable too (recv returns b"")
    c2, s2 = connect(lst, sess)
    assert not readable(s2, 0.05)
    s2.shutdown(socket.SHUT_RD)
    assert readable(s2)
    for x in (c, s, c2, s2):
        x.close()


def test_fileno_is_readable_when_the_session_dies(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    assert not readable(s, 0.05)
    sess.close()
    # the client's streams fail at once and are readable (recv raises) ...
    assert readable(c)
    with pytest.raises(ConnectionResetError):
        c.recv(1)
    # ... and the server's end reads EOF: the close sent a FIN for the open stream (D61)
    assert readable(s, 2)
    assert s.recv(1) == b""
    s.close()


# -- names -------------------------------------------------------------------------------

def test_names_and_ids(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    assert c.getpeername() == lst.getsockname()
    # the client's UDP socket is bound to the wildcard address (as kcpgo.dial's): its port
    assert s.getpeername()[1] == c.getsockname()[1] == sess.getsockname()[1]
    assert s.getsockname() == lst.getsockname()
    assert c.family == socket.AF_INET and c.type == socket.SOCK_STREAM
    # kcptun.md §4.4: client-opened ids are 3, 5, 7, ...
    c2 = sess.open_stream()
    assert (c.sid, c2.sid) == (3, 5) and s.sid == 3
    assert s.session is not sess and c.session is sess
    assert "sid=3" in repr(c)
    for x in (c, s, c2):
        x.close()


def test_sockopts_tcp_nodelay_and_keepalive_accepted(smux):
    lst, sess = smux()
    c, s = connect(lst, sess)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    with pytest.raises(OSError):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    c.close()
    s.close()


# -- concurrency on one stream ------------------------------------------------------------

def test_two_senders_never_splice_their_sendalls(smux):
    # one greenlet per direction at a time (gevent's socket): each sendall arrives whole
    lst, sess = smux(2, False)
    c, s = connect(lst, sess)
    a, b = b"A" * 700_000, b"B" * 700_000
    ga, gb = gevent.spawn(c.sendall, a), gevent.spawn(c.sendall, b)
    got = bytearray()
    while len(got) < len(a) + len(b):
        got += s.recv(1 << 20)
    gevent.joinall([ga, gb], raise_error=True)
    assert bytes(got) in (a + b, b + a)
    c.close()
    s.close()


@pytest.mark.parametrize("version", [1, 2])
def test_sender_to_a_closed_stream_does_not_hang(smux, version):
    # The server handler closes without reading a large upload (an HTTP server refusing a
    # POST): the client's sendall must end with an OSError, not wait forever (v2: for window)
    # or lose everything silently (v1): TCP answers data after close with RST, and kcpgo
    # with a second FIN (docs/deviations.md D46).
    lst, sess = smux(version, False)
    c, s = connect(lst, sess)
    c.settimeout(None)
    s.close()
    assert c.recv(10) == b""                    # the FIN is in
    with pytest.raises(ConnectionResetError, match="D46"):
        with gevent.Timeout(2, AssertionError("sendall still blocked after 2 s")):
            c.sendall(os.urandom(4 * 1024 * 1024))
    assert c.recv(10) == b""                    # reading still ends in EOF
    c.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_early_reply_stays_readable_after_the_reset(smux, version):
    # HTTP 413: the server reads the first bytes of a large upload, replies and closes. As
    # after a TCP RST the client's sendall fails (docs/deviations.md D46), and the reply that
    # arrived before is still read, then EOF.
    lst, sess = smux(version, False)
    c = sess.open_stream()
    c.settimeout(10)
    upload = gevent.spawn(c.sendall, os.urandom(4 << 20))
    lst.settimeout(10)
    s, _ = lst.accept()
    s.settimeout(10)
    assert len(read_exactly(s, 10)) == 10
    s.sendall(b"HTTP/1.0 413 Too Large\r\n\r\n")
    s.close()
    gevent.joinall([upload], timeout=10)
    assert isinstance(upload.exception, ConnectionResetError), upload.exception
    assert read_all(c) == b"HTTP/1.0 413 Too Large\r\n\r\n"
    with pytest.raises(ConnectionResetError):
        c.send(b"more")
    assert sess.error is None                   # only the stream was reset
    c.close()
    assert sess.streams == 0



def test_a_sendall_timeout_bounds_the_whole_call(smux):
    # socket docs: the timeout applies to the whole sendall (CPython's deadline), not to each
    # wait: a peer that keeps reading slowly (v2 window updates keep coming) does not let a
    # 4 MiB sendall with a 0.5 s timeout run on for seconds.
    lst, sess = smux(2, False)
    c, s = connect(lst, sess)

    def slow_reader():
        while True:
            if not s.recv(8192):
                return
            gevent.sleep(0.02)
    reader = gevent.spawn(slow_reader)
    c.settimeout(0.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        c.sendall(os.urandom(4 << 20))
    took = time.monotonic() - t0
    assert 0.45 <= took < 3, took
    reader.kill()
    c.close()
    s.close()
