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

    class Closed(FakeSock):
        def recvmsg(self, *a):
            raise OSError(errno.EBADF, "closed")
    assert icmp.IcmpErrors(Closed([])).drain() == 0
