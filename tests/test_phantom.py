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


def _serve(ln, accepted, reply_first=True):
    """The issue's handler: send b"hi", read one message, close (``reply_first=False``:
    phantom2.py's, read one message, send b"hi", close at once)."""
    while True:
        try:
            s, _ = ln.accept()
        except OSError:
            return
        accepted.append(s)
        if reply_first:
            s.sendall(b"hi")
            s.recv(100)
        else:
            s.recv(100)
            s.sendall(b"hi")
        s.close()


def test_late_ack_after_the_server_closed_creates_no_session() -> None:
    """The input on sockets, loopback. kcp-go 5.6.1 and kcpgo before the fix: 2 sessions
    accepted (the second created by the client's late ACK). Expected: 1 accepted, none left.
    Before D59 the late ACK was counted in ``Listener.stray``; now the closed session still
    delivers b"hi" when it comes (docs/deviations.md D59), so it takes that ACK and ends."""
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
        assert accepted[0]._chan.released
    server.join(2)


def raw_push(conv: int, sn: int = 0, cmd: int = CMD_PUSH, data: bytes = b"x") -> bytes:
    return encode_segment(Segment(conv, cmd, 0, 32, 0, sn, 0, data if cmd == CMD_PUSH else b""))


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


# ------------------------------------------------------------------ late PUSH (TIME_WAIT)


def test_late_push_after_the_server_closed_creates_no_session_sans_io() -> None:
    """The new user's variant (phantom2.py ``late-push``): after the server session sent
    ``b"hi"`` and was closed, the client sends one more message. Its PUSH has sn 1, below the
    32-segment window, so kcp-go 5.6.1 (and kcpgo after D30 alone) creates a session whose
    rcv_nxt is 0: it never delivers anything. Two rules stop it (D30): a PUSH with una > 0 (its
    sender already received something of the conversation, here ``b"hi"``) never begins one,
    remembered or not: DROP_NO_START; and the listener remembers for CLOSED_TTL = 30 s that
    (address, conv) ended (``Demux.conversation_closed``), which stops the late PUSHes of a
    conversation the server never answered (una 0): DROP_CLOSED until 30 s after the close.
    Both are counted in ``stray``. A new conv from the same address (a restarted client) is
    CREATE at once. Source: kcp-go's rule that sn and una count from 0 in every new conversation
    (§1.2: snd_nxt = rcv_nxt = 0 at creation; every segment carries una = rcv_nxt)."""
    from kcpgo.sansio.demux import CLOSED_TTL
    addr = ("192.0.2.7", 5000)
    demux = Demux(None, Snmp())
    client = Connection(0x1234, mode="fast3", snmp=Snmp())
    client.send(b"question")
    route, payload, conv = demux.route(client.datagrams_to_send(0)[0], None, True, 0, addr)
    assert (route, conv) == (Route.CREATE, 0x1234)
    server = Connection(conv, mode="fast3", snmp=Snmp())
    server.receive_payload(payload, 1)
    assert server.recv() == b"question"
    server.send(b"hi")
    for d in server.flush(2):
        client.receive_datagram(d, 3)
    demux.conversation_closed(addr, conv, 2)          # the handler closed the session
    assert client.recv() == b"hi"
    client.send(b"more")
    late = client.datagrams_to_send(4)                # ACK of b"hi" + PUSH sn 1, una 1
    assert any(b"more" in d for d in late)
    for now in (5, 2 + CLOSED_TTL):                   # remembered, and after it expired
        assert [demux.route(d, None, True, now, addr)[0].name for d in late] == \
            ["DROP_NO_START"] * len(late)             # una 1: never a first datagram
    assert demux.stray == 2 * len(late)
    # a late PUSH of a conversation the server never answered (una 0) is only refused
    # while remembered
    silent = Connection(0x5678, mode="fast3", snmp=Snmp())
    silent.send(b"a")
    silent.send(b"b")
    first, *_ = silent.datagrams_to_send(0)
    assert demux.route(first, None, True, 10, addr)[0] is Route.CREATE
    demux.conversation_closed(addr, 0x5678, 20)
    assert demux.route(first, None, True, 21, addr)[0] is Route.DROP_CLOSED
    assert demux.route(first, None, True, 20 + CLOSED_TTL - 1, addr)[0] is Route.DROP_CLOSED
    assert demux.route(first, None, True, 20 + CLOSED_TTL, addr)[0] is Route.CREATE
    # a restarted client (new conv) at the same address begins at once
    fresh = Connection(0x9999, mode="fast3", snmp=Snmp())
    fresh.send(b"hello")
    assert demux.route(fresh.datagrams_to_send(30)[0], None, True, 30, addr)[::2] == \
        (Route.CREATE, 0x9999)


def test_the_memory_of_ended_conversations_is_bounded() -> None:
    """CLOSED_MAX = 4096 (address, conv) pairs at most, oldest forgotten first, and expired
    ones are dropped as new ones come: a listener that closes sessions at any rate (a flood
    of one-datagram clients) keeps a bounded table. Source: the issue's memory rule (spoofed
    floods must not grow state; README "Reliability")."""
    from kcpgo.sansio.demux import CLOSED_MAX, CLOSED_TTL
    assert CLOSED_MAX == 4096
    demux = Demux(None, Snmp())
    for i in range(10_000):
        demux.conversation_closed(("10.0.%d.%d" % divmod(i % 65536, 256), i), i, 0)
    assert len(demux._closed) == CLOSED_MAX
    demux.conversation_closed(("10.9.9.9", 1), 1, CLOSED_TTL)   # all the others expired
    assert len(demux._closed) == 1


def test_late_push_after_the_server_closed_creates_no_session() -> None:
    """phantom2.py ``late-push`` on sockets: a client sends, reads ``b"hi"`` from a handler
    that closed at once, then sends ``b"more"``. kcp-go 5.6.1 and kcpgo before the fix:
    ``accept()`` returns a second session (conv = the client's) that never receives anything,
    while the client's drain() succeeds (that session ACKed b"more"). Expected: one session
    accepted; b"more" is dropped and counted in ``stray``."""
    with kcpgo.listen(LOCAL, mode="fast3") as ln:
        accepted = []
        server = gevent.spawn(_serve, ln, accepted, False)
        c = kcpgo.dial(ln.getsockname(), mode="fast3", timeout=2)
        c.sendall(b"hello")
        assert c.recv(100) == b"hi"
        c.sendall(b"more")
        gevent.sleep(0.5)
        c.close()
        assert len(accepted) == 1, accepted
        assert ln.session_count == 0 and ln.pending_count == 0 and ln.stray >= 1
    server.join(2)


def test_a_closed_conv_is_refused_but_a_new_conv_from_the_address_begins_at_once(raw) -> None:
    """From one address (a raw socket): conv 111 asks, the handler answers and closes. Then
    conv 111's late PUSHes arrive: sn 1 with una 1 (it got the answer: DROP_NO_START) and
    sn 1 with una 0 (as if it had not: DROP_CLOSED): no session, counted in ``stray``. Then
    the client restarts with conv 222 from the same address: accepted at once. kcp-go
    5.6.1: a session for each of the late PUSHes (both have sn < 32). Source: D30's
    TIME_WAIT-like rule (30 s per (address, conv)) and the una rule (a conversation's first
    datagrams carry una 0)."""
    def push(conv, sn, una, data):
        return encode_segment(Segment(conv, CMD_PUSH, 0, 32, 0, sn, una, data))
    with kcpgo.listen(LOCAL, stream=True) as ln:
        accepted = []
        server = gevent.spawn(_serve, ln, accepted, False)
        to = ln.getsockname()
        raw.sendto(push(111, 0, 0, b"q"), to)
        gevent.sleep(0.2)                              # answered and closed meanwhile
        # closed, it still delivers its answer (D59) until this ACK of it
        assert len(accepted) == 1 and accepted[0]._chan.lingering
        raw.sendto(encode_segment(Segment(111, CMD_ACK, 0, 32, 0, 0, 1, b"")), to)
        gevent.sleep(0.2)
        assert ln.session_count == 0
        raw.sendto(push(111, 1, 1, b"late"), to)
        raw.sendto(push(111, 1, 0, b"late"), to)
        gevent.sleep(0.2)
        assert len(accepted) == 1 and ln.pending_count == 0 and ln.stray == 2
        raw.sendto(push(222, 0, 0, b"new"), to)
        gevent.sleep(0.2)
        assert len(accepted) == 2 and accepted[1].conv == 222
        ln.close()
    server.join(2)
