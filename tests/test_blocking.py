"""The one wait loop shared by every blocking call: one greenlet per direction at a time.

A greenlet inside ``recv``, or inside ``send``/``sendall``, holds that direction; another
greenlet calling the same direction waits for its turn within its own timeout (docs/deviations.md
D19). Expected behaviour comes from the stdlib socket contract: a ``sendall``'s bytes arrive
contiguous, each ``recv`` returns data no other call returns, timeouts bound the whole call,
``close()`` makes every blocked call raise EBADF.
"""
from __future__ import annotations

import errno

import gevent
import pytest

import kcpgo
from kcpgo.snmp import Snmp

LOCAL = ("127.0.0.1", 0)


@pytest.fixture
def pair():
    ln = kcpgo.listen(LOCAL, snmp=Snmp(), mode="fast3", stream=True)
    c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), mode="fast3", stream=True, timeout=5)
    c.sendall(b"!")
    ln.settimeout(5)
    s, _ = ln.accept()
    s.settimeout(5)
    assert s.recv(1) == b"!"
    yield c, s
    c.close()
    s.close()
    ln.close()


def test_second_receiver_waits_for_its_turn(pair):
    c, s = pair
    first = gevent.spawn(s.recv, 100)
    gevent.sleep(0.05)                      # first is blocked in recv
    second = gevent.spawn(s.recv, 100)
    gevent.sleep(0.05)
    c.sendall(b"one")
    assert first.get(timeout=5) == b"one"
    assert not second.ready()               # its turn came, but there is nothing yet
    c.sendall(b"two")
    assert second.get(timeout=5) == b"two"


def test_queued_receiver_times_out_within_its_own_timeout(pair):
    c, s = pair
    first = gevent.spawn(s.recv, 100)
    gevent.sleep(0.02)
    s.settimeout(0.2)
    t = gevent.get_hub().loop.now()
    with pytest.raises(TimeoutError):
        s.recv(100)                          # the whole call, turn included, is bounded
    assert 0.15 <= gevent.get_hub().loop.now() - t < 1.0
    s.settimeout(0)
    with pytest.raises(BlockingIOError):     # non-blocking: busy means "would block"
        s.recv(100)
    c.sendall(b"x")
    assert first.get(timeout=5) == b"x"


def test_concurrent_sendalls_are_not_spliced(pair):
    c, s = pair
    c.set_window_size(4, 4)                 # a small window: each sendall blocks midway
    a, b = b"A" * 150_000, b"B" * 150_000
    wa = gevent.spawn(c.sendall, a)
    gevent.sleep(0.005)
    wb = gevent.spawn(c.sendall, b)
    got = bytearray()
    while len(got) < len(a) + len(b):
        got += s.recv(65536)
    wa.get(timeout=10)
    wb.get(timeout=10)
    assert bytes(got) == a + b              # A's bytes contiguous, then B's


def test_close_reaches_queued_greenlets(pair):
    c, s = pair
    s.settimeout(None)
    first = gevent.spawn(s.recv, 100)
    second = gevent.spawn(s.recv, 100)
    gevent.sleep(0.05)
    s.close()
    for g in (first, second):
        with pytest.raises(OSError) as e:
            g.get(timeout=5)
        assert e.value.errno == errno.EBADF


def test_receiving_and_sending_at_once_is_fine(pair):
    c, s = pair
    reader = gevent.spawn(s.recv, 100)
    gevent.sleep(0.02)
    s.sendall(b"ping")                      # another greenlet, the other direction
    assert c.recv(100) == b"ping"
    c.sendall(b"pong")
    assert reader.get(timeout=5) == b"pong"


def test_many_greenlets_may_accept():
    ln = kcpgo.listen(LOCAL, snmp=Snmp(), mode="fast3")
    ln.settimeout(5)
    try:
        waiters = [gevent.spawn(ln.accept) for _ in range(3)]
        gevent.sleep(0.02)
        clients = [kcpgo.dial(ln.getsockname(), snmp=Snmp(), mode="fast3") for _ in range(3)]
        for cl in clients:
            cl.sendall(b"hi")
        got = [w.get(timeout=5)[0] for w in waiters]
        assert len({id(x) for x in got}) == 3
        for x in got + clients:
            x.close()
    finally:
        ln.close()
