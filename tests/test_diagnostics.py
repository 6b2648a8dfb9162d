"""Issue 10, input 9: a wrong key looks like a dead server (docs/deviations.md D33).

The input: client and server with different keys (or ciphers, or crypto on one side only).
Before the fix the client got a bare ``TimeoutError("timed out")`` after its timeout, the
server logged nothing at any level, and only ``InCsumErrors`` moved (kcp-go behaves the same:
a datagram that fails the CRC is counted and dropped, §4.1).

Expected (the issue's rule): while a session has never received a valid datagram, its
timeout, idle-timeout and dead-link errors say so, name the likely causes (key, cipher, FEC,
address) and the counters; a listener logs a rate-limited WARNING on ``kcpgo.listener`` when
datagrams from an address keep failing the checksum. FEC on one side only is not such a case
between kcpgo peers: a kcpgo session decodes a FEC peer (§2.7), so that pair just works.
"""
from __future__ import annotations

import errno
import logging
import socket
import time

import gevent
import gevent.socket
import pytest

import kcpgo
from kcpgo.codec import crypt
from kcpgo.sansio import CMD_PUSH, Segment, encode_segment
from kcpgo.server import KCPServer
from kcpgo.snmp import Snmp

LOCAL = ("127.0.0.1", 0)
FAST = dict(mode="fast3")


def where(addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def timed_out_recv(c, timeout=0.4) -> str:
    c.settimeout(timeout)
    with pytest.raises(TimeoutError) as info:
        c.recv(100)
    return str(info.value)


@pytest.mark.parametrize("server, client", [
    (dict(crypt="aes", key="right"), dict(crypt="aes", key="wrong")),          # key
    (dict(crypt="aes", key="k"), dict(crypt="salsa20", key="k")),              # cipher
    (dict(crypt="aes", key="k"), dict()),                                      # server only
    (dict(), dict(crypt="aes", key="k")),                                      # client only
], ids=["key", "cipher", "crypt-on-server-only", "crypt-on-client-only"])
def test_mismatched_crypto_is_explained_on_both_sides(caplog, server, client) -> None:
    """Before the fix: the client's recv raised ``TimeoutError('timed out')`` and the listener
    logged nothing. Expected: the client's error says that no valid datagram came from the
    server's address and names key/crypt/FEC; the listener logs one WARNING naming the client's
    address (checksum failures, or, on a listener without crypt, datagrams that are not KCP);
    ``accept`` times out saying the same."""
    caplog.set_level(logging.WARNING, logger="kcpgo")
    with kcpgo.listen(LOCAL, **FAST, **server) as ln:
        c = kcpgo.dial(ln.getsockname(), **FAST, **client)
        c.sendall(b"hello?")
        ln.settimeout(0.5)
        with pytest.raises(TimeoutError) as acc:
            ln.accept()                        # the client keeps retransmitting meanwhile
        msg = timed_out_recv(c)
        me = where(c.getsockname())
        server_at = where(ln.getsockname())
        c.close()
    assert msg.startswith(f"timed out; no valid datagram received from {server_at} in "), msg
    assert "key/crypt/FEC" in msg, msg
    assert "key/crypt" in str(acc.value) and me.split(":")[1] in str(acc.value), acc.value
    warnings = [r for r in caplog.records if r.name == "kcpgo.listener"]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    text = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING and me.split(":")[1] in text, text
    if server:
        assert "failed the checksum/authentication" in text and "key/crypt" in text, text
    else:
        assert "not KCP" in text and "encrypts" in text, text


@pytest.mark.parametrize("server", [dict(), dict(crypt="aes", key="k")], ids=["plain", "aes"])
def test_short_datagrams_are_no_checksum_failure(caplog, server) -> None:
    """Datagrams too short for a KCP header (three 1-byte UDP keepalives, a port scanner)
    sent to a listener, with and without a cipher. kcp-go counts them nowhere (5.6.1
    packetInput checks the length before the CRC; InCsumErrors stays 0). Before (issue 10
    review, short_datagrams_warning.py): the listener's WARNING said they "failed the
    checksum/authentication (InCsumErrors ...)" with InCsumErrors 0, even without a cipher.
    Expected: InCsumErrors 0, bad_datagrams 0, no WARNING, ``accept()`` times out plainly;
    three 60-byte non-KCP datagrams then do warn, worded by what happened: "failed the
    checksum/authentication" (aes, InCsumErrors 3) or "are not KCP" (no cipher)."""
    caplog.set_level(logging.WARNING, logger="kcpgo")
    snmp = Snmp()
    with kcpgo.listen(LOCAL, snmp=snmp, **server) as ln, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        ln.settimeout(0.3)
        for _ in range(3):
            raw.sendto(b"\x00", ln.getsockname())
        with pytest.raises(TimeoutError) as acc:
            ln.accept()
        assert str(acc.value) == "timed out"
        assert snmp.InCsumErrors == 0 and ln.bad_datagrams == 0 and ln.stray == 3
        assert [r for r in caplog.records if r.name == "kcpgo.listener"] == []
        for _ in range(3):
            raw.sendto(b"\xff" * 60, ln.getsockname())
        with pytest.raises(TimeoutError) as acc:
            ln.accept()
        texts = [r.getMessage() for r in caplog.records if r.name == "kcpgo.listener"]
        assert len(texts) == 1 and ln.bad_datagrams == 3, texts
        if server:
            assert snmp.InCsumErrors == 3
            assert "3 datagrams" in texts[0] and "failed the checksum" in texts[0], texts
            assert "3 datagrams failed the checksum/authentication" in str(acc.value)
        else:
            assert "are not KCP" in texts[0] and "checksum" not in texts[0], texts
            assert "3 datagrams were not KCP" in str(acc.value), acc.value


def test_kcpserver_logs_the_warning(caplog) -> None:
    """KCPServer (socketserver) sits on the same listener, so a client with the wrong key is
    reported there too. Before the fix: nothing logged. Expected: one WARNING, no handler run."""
    caplog.set_level(logging.WARNING, logger="kcpgo")
    ran = []

    class Handler:
        def __init__(self, *a):
            ran.append(a)

    server = KCPServer(LOCAL, Handler, crypt="aes", key="right", **FAST)
    g = gevent.spawn(server.serve_forever, 0.05)
    try:
        c = kcpgo.dial(server.server_address, crypt="aes", key="wrong", **FAST)
        c.sendall(b"hello?")
        # The warning needs 3 bad datagrams: the first send and the retransmissions at
        # ~200 ms and ~500 ms (initial RTO 200 ms, x1.5 with nodelay): wait up to 2 s.
        for _ in range(40):
            gevent.sleep(0.05)
            if any(r.name == "kcpgo.listener" for r in caplog.records):
                break
        c.close()
    finally:
        server.shutdown()
        server.server_close()
        g.join(5)
    texts = [r.getMessage() for r in caplog.records if r.name == "kcpgo.listener"]
    assert len(texts) == 1 and "checksum" in texts[0], texts
    assert ran == []


def _answering(key: str, every: float = 0.0):
    """A UDP peer (a greenlet) that answers every datagram with a KCP PUSH sealed under
    ``key``; with ``every`` (seconds) it also keeps sending one that often."""
    u = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(LOCAL)
    block = crypt.new("aes", crypt.derive_key(key))
    reply = block.seal(encode_segment(Segment(1, CMD_PUSH, 0, 32, 0, 0, 0, b"x")))

    def chatter(addr):
        while True:
            gevent.sleep(every)
            u.sendto(reply, addr)

    def run():
        talker = None
        try:
            while True:
                data, addr = u.recvfrom(2048)
                u.sendto(reply, addr)
                if every and talker is None:
                    talker = gevent.spawn(chatter, addr)
        finally:
            if talker is not None:
                talker.kill()
    return u, gevent.spawn(run)


def test_replies_that_fail_the_checksum_are_counted_in_the_error() -> None:
    """A peer that answers with another key: every reply fails the client's CRC check. Before
    the fix: ``TimeoutError('timed out')``. Expected: the count of those replies and
    InCsumErrors in the message (the issue's example: "N datagrams from it failed the checksum
    (InCsumErrors): check key/crypt/FEC settings match the peer")."""
    u, g = _answering("other")
    c = kcpgo.dial(u.getsockname(), crypt="aes", key="mine", snmp=Snmp(), **FAST)
    c.sendall(b"hello?")
    msg = timed_out_recv(c)
    n = c.snmp.InCsumErrors
    c.close()
    g.kill()
    u.close()
    assert n >= 2, n
    assert f"; {n} datagrams from it failed the checksum/authentication (InCsumErrors): " \
           f"check that key/crypt/FEC settings match the peer's" in msg, msg


def test_idle_timeout_is_not_held_off_by_datagrams_that_fail_the_checksum() -> None:
    """The same mistake in the idle timer: datagrams that fail the crypto check counted as
    "a datagram from the peer", so a peer that keeps sending with the wrong key (every 50 ms
    here) kept ``idle_timeout`` (0.3 s) from ever firing. Expected: ``TimeoutError(ETIMEDOUT)``
    after about 0.3 s whose message has the diagnosis; before the fix, no idle timeout within
    the 1.5 s socket timeout (a plain "timed out")."""
    u, g = _answering("other", every=0.05)
    c = kcpgo.dial(u.getsockname(), crypt="aes", key="mine", idle_timeout=0.3, **FAST)
    c.sendall(b"hello?")
    c.settimeout(1.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        c.recv(100)
    took = time.monotonic() - t0
    c.close()
    g.kill()
    u.close()
    assert info.value.errno == errno.ETIMEDOUT and took < 0.8, (info.value, took)
    assert "no datagram from the peer for 0.3 s; no valid datagram received from" in \
        str(info.value) and "InCsumErrors" in str(info.value), info.value


@pytest.fixture
def quiet():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)      # receives, never answers
    u.bind(LOCAL)
    yield u
    u.close()


def test_dead_link_and_idle_timeout_say_nothing_came_back(quiet) -> None:
    """A peer that never answers (wrong address or port, no server, or a server that drops
    what it cannot decrypt). Before the fix: "peer stopped acknowledging (a segment was sent 3
    times)" and "no datagram from the peer for 0.3 s". Expected: both add "no valid datagram
    received from <address>" and the causes to check (address, port, key/crypt/FEC)."""
    c = kcpgo.dial(quiet.getsockname(), **FAST)
    c.set_dead_link(3)
    c.sendall(b"anyone?")
    c.settimeout(5)
    with pytest.raises(ConnectionResetError) as dead:
        c.recv(100)
    c.close()
    c = kcpgo.dial(quiet.getsockname(), idle_timeout=0.3, **FAST)
    c.sendall(b"anyone?")
    c.settimeout(5)
    with pytest.raises(TimeoutError) as idle:
        c.recv(100)
    c.close()
    for err in (dead.value, idle.value):
        text = str(err)
        assert f"; no valid datagram received from {where(quiet.getsockname())} in " in text
        assert "nothing came back; check the address and port" in text and \
            "key/crypt/FEC" in text, text


def test_replies_from_another_address_are_named(quiet) -> None:
    """Datagrams that reach the client from an address it did not dial are dropped (InErrs,
    docs/deviations.md D13), which a multi-homed server answering from another address causes.
    Expected: the timeout says so; before the fix, "timed out"."""
    c = kcpgo.dial(quiet.getsockname(), **FAST)
    c.sendall(b"hello?")
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.sendto(b"x" * 30, ("127.0.0.1", c.getsockname()[1]))
    other.sendto(b"x" * 30, ("127.0.0.1", c.getsockname()[1]))
    gevent.sleep(0.05)
    msg = timed_out_recv(c, 0.2)
    c.close()
    other.close()
    assert "; 2 came from other addresses and were dropped (InErrs): the peer may answer " \
           "from another address" in msg, msg


def test_a_session_that_sent_nothing_says_so(quiet) -> None:
    """KCP has no handshake: a client that only waits has told the server nothing. Expected:
    the timeout says no valid datagram came and that nothing was sent yet; before the fix,
    "timed out"."""
    c = kcpgo.dial(quiet.getsockname(), **FAST)
    msg = timed_out_recv(c, 0.2)
    c.close()
    assert "no valid datagram received from" in msg and "nothing was sent yet" in msg, msg


def test_a_session_that_heard_its_peer_keeps_the_plain_timeout() -> None:
    """Once a valid datagram arrived, a timeout is an ordinary one: ``TimeoutError('timed
    out')`` exactly, as socket.socket raises (no diagnosis, nothing logged). Passes before and
    after the fix; guards against a misleading diagnosis."""
    with kcpgo.listen(LOCAL, crypt="aes", key="k", **FAST) as ln:
        ln.settimeout(2)
        c = kcpgo.dial(ln.getsockname(), crypt="aes", key="k", **FAST)
        c.sendall(b"ping")
        s, _ = ln.accept()
        assert s.recv(10) == b"ping"
        s.sendall(b"pong")
        c.settimeout(2)
        assert c.recv(10) == b"pong"
        assert timed_out_recv(c, 0.1) == "timed out"
        assert timed_out_recv(s, 0.1) == "timed out"
        ln.settimeout(0.1)
        with pytest.raises(TimeoutError) as acc:
            ln.accept()
        assert str(acc.value) == "timed out"
        c.close()
        s.close()


def test_send_and_drain_timeouts_explain_too(quiet) -> None:
    """``send``/``sendall`` block on a window the silent peer never opens, ``drain`` on ACKs
    that never come: their ``TimeoutError`` carries the same diagnosis. Before the fix: "timed
    out"."""
    c = kcpgo.dial(quiet.getsockname(), **FAST)
    c.settimeout(0.3)
    with pytest.raises(TimeoutError) as sending:
        c.sendall(b"x" * 200_000)              # far more than the 32-segment window
    with pytest.raises(TimeoutError) as draining:
        c.drain(0.1)
    c.close()
    for err in (sending.value, draining.value):
        assert str(err).startswith("timed out; no valid datagram received from "
                                   f"{where(quiet.getsockname())} in "), err
        assert "nothing came back" in str(err), err


def test_an_smux_streams_timeout_says_why_as_a_sessions_does():
    """A stream's TimeoutError on a session that never heard from its peer carries the same
    diagnosis as a bare session's (D33): with nothing listening, "no valid datagram received
    ... nothing came back". It said only "timed out" over smux (a new user's finding)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(LOCAL)                                # a port where nothing answers
        sess = kcpgo.dial_smux(u.getsockname(), timeout=0.3)
        s = sess.open_stream()
        s.sendall(b"hello")
        with pytest.raises(TimeoutError, match="no valid datagram received"):
            s.recv(10)
        sess.close(linger=0)
