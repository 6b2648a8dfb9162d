"""A dial to a port nobody listens on is named as such (docs/deviations.md D57).

The input (a new user's first hour): ``kcpgo.dial(("127.0.0.1", port))`` to a port with no
server, ``sendall``, ``recv`` with a timeout. Before the fix the error said "nothing came
back; check the address and port, ... and that key/crypt/FEC settings match": the same as a
wrong key, because an unconnected UDP socket never reports the ICMP port unreachable that
Linux answers with (RFC 1122, section 4.1.3.1; ip(7) ``IP_RECVERR``). Expected: the timeout and
dead-link errors count the ICMP errors and say that nothing listens on that port; the
session keeps sending (a server may start later), and the socket's error queue is drained.
"""
from __future__ import annotations

import errno
import select
import socket
import struct
import sys

import pytest

import kcpgo
from kcpgo.runtime import icmp
from tests.support.icmp_forge import can_forge, forge

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="IP_RECVERR is Linux's")
FAST = dict(mode="fast3")
REFUSED = "ICMP port unreachable error"


def closed_port(family: int, host: str) -> tuple:
    """An address where nothing listens: a port just bound and released."""
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        u.bind((host, 0))
        return u.getsockname()[:2]


def families():
    out = [(socket.AF_INET, "127.0.0.1")]
    if socket.has_ipv6:
        try:
            closed_port(socket.AF_INET6, "::1")
            out.append((socket.AF_INET6, "::1"))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("family, host", families(), ids=lambda v: str(v))
def test_timeout_names_the_port_unreachable(family, host) -> None:
    addr = closed_port(family, host)
    c = kcpgo.dial(addr, **FAST)
    c.sendall(b"anyone?")
    c.settimeout(0.5)
    with pytest.raises(TimeoutError) as info:
        c.recv(100)
    c.close()
    text = str(info.value)
    assert REFUSED in text and "(nothing listens on that UDP port there)" in text, text
    assert "a server that starts later is reached" in text, text
    assert "key/crypt/FEC" not in text, text        # not mistaken for a wrong key any more


def test_dead_link_names_it_and_the_error_queue_is_drained() -> None:
    """The dead-link error carries it too. The socket must not stay ``POLLERR`` (an undrained
    error queue wakes the reader for ever and holds receive memory): after the session died
    (it sends nothing more), a zero-timeout poll of its socket shows no ``POLLERR``."""
    c = kcpgo.dial(closed_port(socket.AF_INET, "127.0.0.1"), **FAST)
    c.set_dead_link(3)
    c.sendall(b"anyone?")
    c.settimeout(5)
    with pytest.raises(ConnectionResetError) as dead:
        c.recv(100)
    assert REFUSED in str(dead.value), dead.value
    # the session has ended: no promise that it keeps sending (a new user's finding)
    assert "a server that starts later is reached" not in str(dead.value), dead.value
    endpoint = c._channel().endpoint
    assert endpoint.icmp is not None and endpoint.icmp.total >= 1
    p = select.poll()
    p.register(endpoint.sock.fileno(), select.POLLIN)
    for _ in range(20):
        events = dict(p.poll(0)).get(endpoint.sock.fileno(), 0)
        if not events & select.POLLERR:
            break
        endpoint.icmp.drain()   # an error that came while we looked: the reader drains too
    assert not events & select.POLLERR
    c.close()


# ---------------------------------------------------------------- any ICMP error, forged

# (type, code) of errors that leave no routing state behind (not "fragmentation needed" or
# "packet too big": they cache a path MTU for the loopback, which other tests would feel)
FORGED = [
    (socket.AF_INET, 3, 2, "protocol unreachable"),          # ENOPROTOOPT
    (socket.AF_INET, 12, 0, "parameter problem"),            # EPROTO
    (socket.AF_INET, 3, 7, "host unknown"),                  # EHOSTDOWN
    (socket.AF_INET6, 1, 1, "administratively prohibited"),  # EACCES
    (socket.AF_INET6, 4, 0, "parameter problem"),            # EPROTO
]


def _silent(family: int):
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    return u


@pytest.mark.parametrize("family, icmp_type, code, kind", FORGED,
                         ids=[f"v{4 if f == socket.AF_INET else 6}-{k}" for f, _, _, k in FORGED])
def test_no_icmp_error_fails_a_session(family, icmp_type, code, kind) -> None:
    """With the reports on, Linux reports every ICMP error, not only "port unreachable". A
    reviewer forged them (a router on the path sends them, and anyone can spoof one): before
    the fix, each ended the session with its errno (ENOPROTOOPT, EPROTO, EHOSTDOWN, EACCES).
    Expected: counted and named, the session goes on (the timeout is the plain one)."""
    if not can_forge(family):
        pytest.skip("forging ICMP needs a raw socket (root or CAP_NET_RAW)")
    peer = _silent(family)
    c = kcpgo.dial(peer.getsockname(), **FAST)
    c.sendall(b"anyone?")
    local = c._channel().endpoint.sock.getsockname()
    forge(family, (peer.getsockname()[0], local[1]), peer.getsockname()[:2], icmp_type, code)
    c.settimeout(0.6)
    with pytest.raises(TimeoutError) as info:
        c.recv(100)
    assert c._channel().endpoint.error is None
    assert f"1 ICMP {kind} error came back" in str(info.value), info.value
    c.sendall(b"still here")        # the session still works
    c.close()
    peer.close()


def test_a_session_that_heard_its_peer_gets_no_icmp_reports() -> None:
    """Once the peer was heard the reports are switched off: an established session is
    kcp-go's again, no ICMP error reaches it (before: a forged or real one ended it, path MTU
    discovery's "packet too big" included)."""
    if not can_forge(socket.AF_INET):
        pytest.skip("forging ICMP needs a raw socket (root or CAP_NET_RAW)")
    with kcpgo.listen(("127.0.0.1", 0), **FAST) as ln:
        c = kcpgo.dial(ln.getsockname(), timeout=5, **FAST)
        c.sendall(b"ping")
        ln.settimeout(5)
        s, _ = ln.accept()
        s.settimeout(5)
        assert s.recv(10) == b"ping"
        s.sendall(b"pong")
        assert c.recv(10) == b"pong"
        endpoint = c._channel().endpoint
        assert endpoint.icmp is None
        local = endpoint.sock.getsockname()
        forge(socket.AF_INET, ("127.0.0.1", local[1]), ln.getsockname()[:2], 3, 2)
        c.sendall(b"ping2")
        assert s.recv(10) == b"ping2"
        s.sendall(b"pong2")
        assert c.recv(10) == b"pong2"
        assert endpoint.error is None
        c.close()
        s.close()


# ---------------------------------------------------------------- the error queue, sans kernel

def _entry(err: int, dest) -> tuple:
    """What ``recvmsg(.., MSG_ERRQUEUE)`` returns for one queued ICMP error."""
    ee = struct.pack("=IBBBBII", err, 2, 3, 3, 0, 0, 0) + bytes(16)
    return b"x", [(0, icmp.IP_RECVERR, ee)], 0, dest


class FakeSock:
    family = socket.AF_INET

    def __init__(self, entries):
        self.entries = list(entries)

    def recvmsg(self, bufsize, ancsize, flags):
        assert flags == icmp.MSG_ERRQUEUE
        if not self.entries:
            raise BlockingIOError(errno.EAGAIN, "empty")
        return self.entries.pop(0)


def test_drain_counts_per_destination_and_errno() -> None:
    a, b = ("10.0.0.1", 4000), ("10.0.0.2", 4000)
    q = icmp.IcmpErrors(FakeSock([_entry(errno.ECONNREFUSED, a)] * 3
                                 + [_entry(errno.EHOSTUNREACH, b),
                                    (b"x", [(0, 99, b"junk")], 0, a)]))     # not an error
    assert q.drain() == 5 and q.total == 5
    assert q.counts == {a: {errno.ECONNREFUSED: 3}, b: {errno.EHOSTUNREACH: 1}}
    assert q.about(a) == "3 ICMP port unreachable errors came back (nothing listens on " \
                         "that UDP port there)"
    assert q.about(b) == "1 ICMP host unreachable error came back"
    assert q.about(("10.0.0.3", 1)) == ""


def test_drain_is_bounded_and_never_raises() -> None:
    """Hostile or endless errors: one drain reads at most DRAIN_LIMIT entries; at most
    MAX_DESTINATIONS destinations are kept; a socket error ends the drain quietly."""
    many = [_entry(errno.ECONNREFUSED, ("10.0.%d.%d" % divmod(i, 256), 1)) for i in range(500)]
    q = icmp.IcmpErrors(FakeSock(many))
    assert q.drain() == icmp.DRAIN_LIMIT
    assert len(q.counts) <= icmp.MAX_DESTINATIONS
    while q.drain():
        pass
    assert q.total == 500 and len(q.counts) <= icmp.MAX_DESTINATIONS

    assert icmp.IcmpErrors(FakeSock([])).drain() == 0

    class Closed(FakeSock):
        def recvmsg(self, *a):
            raise OSError(errno.EBADF, "closed")
    assert icmp.IcmpErrors(Closed([])).drain() == 0


def test_feedback_tells_icmp_reports_from_a_sends_own_errors() -> None:
    """A read raises none of ICMP_ERRNOS by itself: all are reports. A send's EACCES can be
    its own (a broadcast address without SO_BROADCAST): a report only if the queue holds or
    held that errno (a read may have drained the entry first)."""
    q = icmp.IcmpErrors(FakeSock([]))
    assert q.feedback(errno.EACCES, True)
    assert not q.feedback(errno.EACCES, False)      # nothing queued, never seen: its own
    assert not q.feedback(errno.EBADF, True)        # not an ICMP errno at all
    q = icmp.IcmpErrors(FakeSock([_entry(errno.EACCES, ("10.0.0.1", 1))]))
    assert q.feedback(errno.EACCES, False)          # queued: a report
    assert q.feedback(errno.EACCES, False)          # drained before: still one
