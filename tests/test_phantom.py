"""Issue 10, input 2: phantom sessions (docs/deviations.md D30, D31; docs/protocol.md §5.2).

The input: a listener whose handler sends ``b"hi"``, reads one message and closes; a client
that sends, reads ``b"hi"``, stays open 2 s and closes. Before the fix ``accept()`` returned a
second session, created by the client's late ACK of ``b"hi"``: the server closed its session
right after sending (KCP has no FIN, so the closed session is forgotten), the client's ACK
arrives one loop turn after ``b"hi"`` did, and kcp-go's rule "any datagram with a conv from an
unknown address creates a session" makes a session that will never receive data. kcp-go 5.6.1
does the same. The trigger is that one ACK, sent at once, so the client here stays open 0.3 s,
not 2 s: the mechanism is the same.

Expected (the issue's rule): no second session; the ACK is counted in ``Listener.stray``.
"""
from __future__ import annotations

import socket

import gevent
import pytest

import kcpgo
from kcpgo.sansio import CMD_ACK, CMD_PUSH, CMD_WASK, Connection, Demux, Route, Segment, Snmp
from kcpgo.sansio import encode_segment

LOCAL = ("127.0.0.1", 0)


def test_late_ack_after_the_server_closed_creates_no_session_sans_io() -> None:
    """The input, socket-free: a client and a server ``Connection`` with the listener's
    ``Demux`` routing the client's datagrams. After the server session read one message, sent
    ``b"hi"`` and was closed (forgotten by the listener), the client's ACK of ``b"hi"`` is routed
    from an address without a session. kcp-go 5.6.1 (and kcpgo before the fix): CREATE.
    Expected: DROP_NO_START, counted in ``Demux.stray``."""
    demux = Demux(None, Snmp())
    client = Connection(0x1234, mode="fast3", snmp=Snmp())
    client.send(b"question")
    first = client.datagrams_to_send(0)
    route, payload, conv = demux.route(first[0], None, True)
    assert (route, conv) == (Route.CREATE, 0x1234)
    server = Connection(conv, mode="fast3", snmp=Snmp())
    server.receive_payload(payload, 1)
    assert server.recv() == b"question"
    server.send(b"hi")
    for d in server.flush(2):                     # the reply and the ACK; then close()
        client.receive_datagram(d, 3)
    assert client.recv() == b"hi"
    late = client.datagrams_to_send(4)            # the client's ACK of b"hi"
    assert late, "the client must acknowledge b'hi'"
    assert [demux.route(d, None, True)[0].name for d in late] == ["DROP_NO_START"] * len(late)
    assert demux.stray == len(late)


class _Closed:
    """A closed server session on the in-memory network: it hears and sends nothing."""

    def receive_datagram(self, data, now):
        return False

    def next_deadline(self, now):
        return None

    def datagrams_to_send(self, now):
        return []


def test_late_datagrams_over_a_20ms_link_create_no_session_memnet() -> None:
    """The input over ``kcpgo.sansio.memnet`` (20 ms each way, fake clock): the server session
    reads the client's message, sends ``b"hi"`` and is closed at once; the client reads it and
    stays open 2 simulated seconds. Every datagram the client sends after the close is routed
    by the listener's ``Demux`` as from an address without a session. kcp-go 5.6.1 (and kcpgo
    before the fix): the first of them, the ACK of ``b"hi"``, is CREATE (a phantom session).
    Expected: all are DROP_NO_START, none CREATE."""
    from kcpgo.sansio import LinkProfile, Network
    client = Connection(0x1234, mode="fast3", snmp=Snmp())
    server = Connection(0x1234, mode="fast3", snmp=Snmp())
    net = Network(client, server, seed=1, profile=LinkProfile(delay=20))
    demux = Demux(None, Snmp())
    after_close = []

    def route(rng, data):                     # the client -> server link, as the listener sees it
        if net.ends[1] is not server:
            after_close.append(demux.route(data, None, True)[0].name)
        return data
    net.links[0].tamper = route
    client.send(b"question")
    while server.recv() != b"question":
        net.step()
    server.send(b"hi")
    net.step()                                # the reply (and the ACK) leave, then close()
    net.ends = (client, _Closed())
    while client.recv() != b"hi":
        net.step()
    until = net.now + 2000
    while net.now < until:
        net.step()
    assert after_close and set(after_close) == {"DROP_NO_START"}, after_close


def _serve(ln, accepted):
    """The issue's handler: send b"hi", read one message, close."""
    while True:
        try:
            s, _ = ln.accept()
        except OSError:
            return
        accepted.append(s)
        s.sendall(b"hi")
        s.recv(100)
        s.close()


def test_late_ack_after_the_server_closed_creates_no_session() -> None:
    """The input on sockets, loopback. kcp-go 5.6.1 and kcpgo before the fix: 2 sessions
    accepted (the second created by the client's late ACK). Expected: 1 accepted, none left,
    and the late datagram counted in ``Listener.stray``."""
    with kcpgo.listen(LOCAL, mode="fast3") as ln:
        accepted = []
        server = gevent.spawn(_serve, ln, accepted)
        c = kcpgo.dial(ln.getsockname(), mode="fast3", timeout=2)
        c.sendall(b"hello")
        assert c.recv(100) == b"hi"
        gevent.sleep(0.3)                      # "stays open": the late ACK arrives meanwhile
        c.close()
        gevent.sleep(0.05)
        assert len(accepted) == 1, accepted
        assert ln.session_count == 0 and ln.pending_count == 0
        assert ln.stray >= 1
    server.join(2)


def raw_push(conv: int, sn: int = 0, cmd: int = CMD_PUSH, data: bytes = b"x") -> bytes:
    return encode_segment(Segment(conv, cmd, 0, 32, 0, sn, 0, data if cmd == CMD_PUSH else b""))


@pytest.fixture
def raw():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(LOCAL)
    yield u
    u.close()


def test_late_duplicate_of_a_replaced_session_does_not_reset_the_live_one(raw) -> None:
    """The same mistake in the sn == 0 replacement rule (§5.2). A peer at one address restarts
    (conv 111 -> conv 222): the conv-222 session replaces the conv-111 one, as in kcp-go. Then a
    late duplicate of conv 111's first PUSH arrives, and then an ACK of sn 0 and a probe (sn 0)
    with conv 333 (datagrams of no new conversation). kcp-go 5.6.1 and kcpgo before the fix:
    each resets the live conv-222 session (ECONNRESET) and creates a phantom that takes over
    the address. Expected: the conv-222 session stays open and keeps receiving, nothing new is
    accepted, the three are counted in ``Listener.mismatched``; a genuine restart (conv 444,
    PUSH sn 0) still replaces it."""
    with kcpgo.listen(LOCAL, stream=True) as ln:
        ln.settimeout(2)
        to = ln.getsockname()
        raw.sendto(raw_push(111, data=b"old"), to)
        s1, _ = ln.accept()
        raw.sendto(raw_push(222, data=b"new"), to)
        s2, _ = ln.accept()
        assert s1.closed and s2.conv == 222
        raw.sendto(raw_push(111, data=b"old"), to)             # late duplicate
        raw.sendto(raw_push(333, 0, CMD_ACK), to)
        raw.sendto(raw_push(333, 0, CMD_WASK), to)
        raw.sendto(raw_push(222, 1, data=b"-more"), to)
        ln.settimeout(0.2)
        with pytest.raises(TimeoutError):
            ln.accept()
        assert not s2.closed and ln.session_count == 1 and ln.mismatched == 3
        s2.settimeout(2)
        got = b""
        while len(got) < 8:
            got += s2.recv(100)
        assert got == b"new-more"
        raw.sendto(raw_push(444, data=b"again"), to)           # a genuine restart
        ln.settimeout(2)
        s4, _ = ln.accept()
        assert s4.conv == 444 and s2.closed
        with pytest.raises(ConnectionResetError):
            s2.recv(100)
        s4.close()


@pytest.mark.parametrize("window, creates", [(None, False), ((1024, 1024), True)])
def test_the_start_window_is_the_listeners_receive_window(raw, window, creates) -> None:
    """A PUSH with sn 500 from a new address: beyond the default 32-segment receive window a
    new session gets, so it cannot begin a conversation (DROP_NO_START, counted in ``stray``);
    within it on a listener configured with ``window=(1024, 1024)``, whose sessions start with
    that window (D12), it can. kcp-go 5.6.1 and kcpgo before the fix: both create a session."""
    opts = {} if window is None else dict(window=window)
    with kcpgo.listen(LOCAL, **opts) as ln:
        raw.sendto(raw_push(7, sn=500), ln.getsockname())
        gevent.sleep(0.1)
        assert ln.pending_count == (1 if creates else 0)
        assert ln.stray == (0 if creates else 1)
