"""The one wait loop shared by every blocking call: one greenlet per direction.

gevent's own socket raises ``ConcurrentObjectUseError`` when a second greenlet waits on a
direction another one waits on; kcpgo raises ``kcpgo.ConcurrentUseError`` likewise, and holds
the send direction for a whole ``sendall`` so that no other greenlet's bytes are spliced in.
"""
from __future__ import annotations

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


def test_second_receiver_raises_while_first_waits(pair):
    c, s = pair
    first = gevent.spawn(s.recv, 100)
    gevent.sleep(0.05)                      # first is blocked in recv
    with pytest.raises(kcpgo.ConcurrentUseError, match="receive"):
        s.recv(100)
    c.sendall(b"data")
    assert first.get(timeout=5) == b"data"  # the first receiver is unaffected
    c.sendall(b"more")
    assert s.recv(100) == b"more"           # and the direction is free again


def test_sendall_holds_the_send_direction(pair):
    c, s = pair
    c.set_window_size(4, 4)                 # a small window: sendall must block midway
    big = b"A" * 200_000
    writer = gevent.spawn(c.sendall, big)
    gevent.sleep(0.01)
    assert not writer.ready()
    with pytest.raises(kcpgo.ConcurrentUseError, match="send"):
        c.send(b"B" * 10)
    got = bytearray()
    while len(got) < len(big):
        got += s.recv(65536)
    writer.get(timeout=10)
    assert bytes(got) == big                # nothing spliced in
    c.sendall(b"after")
    assert s.recv(100) == b"after"


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
