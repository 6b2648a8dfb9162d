"""Issue 10, items 6, 7, 8 and 10, and the protocol-core audit: limits that can wedge a session,
calls that fail after changing state, readiness that lies, segments cut for an old MTU.

Every test states its expected value and where it comes from. All of them fail on the code
before issue 10 (checked against a clone of that revision).
"""
from __future__ import annotations

import array
import errno
import os
import select
import time

import gevent
import pytest

import kcpgo
from kcpgo.sansio import CMD_PUSH, KCP, Connection, Segment, decode_segments, encode_segment
from kcpgo.sansio.kcpdefs import FLUSH_FULL, WINS_RETRIES
from kcpgo.snmp import Snmp

CONV = 0x10
MSS = 1376                      # default mtu 1400 - 24 (docs/protocol.md §1.4)
LOCAL = ("127.0.0.1", 0)


def pump_kcp(a: KCP, b: KCP, steps: int = 3000, start: int = 0, sent=None):
    """Drive a -> b over a clean link with a 10 ms clock; return the messages b received.
    ``sent`` collects every datagram a emits."""
    got = []
    now = start
    for _ in range(steps):
        for d in a.update(now):
            if sent is not None:
                sent.append(d)
            b.input(d, now)
        for d in b.update(now, flush_acks=True):
            a.input(d, now)
        while (m := b.recv()) is not None:
            got.append(m)
        if not a.wait_snd() and not b.rcv_buf and not b.rcv_queue:
            break
        now += 10
    return got


def pump_conn(a: Connection, b: Connection, steps: int = 5000, start: int = 0, sent=None):
    """Drive two Connections over a clean link; return what b received (stream joined)."""
    got = bytearray()
    now = start
    for _ in range(steps):
        for d in a.datagrams_to_send(now):
            if sent is not None:
                sent.append(d)
            b.receive_datagram(d, now)
        for d in b.datagrams_to_send(now):
            a.receive_datagram(d, now)
        while (m := b.recv()) is not None:
            got += m
        if not a.waitsnd and not b.kcp.rcv_queue and not b.kcp.rcv_buf:
            break
        now += 10
    return bytes(got)


def push(sn: int, data: bytes = b"", frg: int = 0, una: int = 0) -> bytes:
    return encode_segment(Segment(CONV, CMD_PUSH, frg, 32, 0, sn, una, data))


# ---------------------------------------------------------------- item 6: fragments > window


def test_message_of_33_fragments_refused_32_delivered():
    """Issue 10 item 6: two default KCP objects, message mode. A message of 33 x mss bytes was
    accepted and never delivered (the receiver's rcv_queue holds rcv_wnd = 32 segments and a
    message leaves it only whole: skywind3000/kcp#140, protocol.md §1.5 "a message of count
    fragments can only be reassembled if the receiver's rcv_wnd is at least count").
    Expected: send refuses it with ValueError naming 33 fragments and the limit 32 (kcp-go's
    default rcv_wnd, WND_RCV in §1.1) and queues nothing; 32 x mss is delivered whole."""
    a, b = KCP(CONV, snmp=Snmp()), KCP(CONV, snmp=Snmp())
    with pytest.raises(ValueError, match=r"45408 bytes needs 33 fragments.*limit is 32"):
        a.send(b"x" * (33 * MSS))
    assert a.wait_snd() == 0
    msg = os.urandom(32 * MSS)
    assert a.send(msg) == len(msg)
    assert pump_kcp(a, b) == [msg]


def test_max_fragments_is_the_receivers_window_contract():
    """D20: max_fragments (default 32) can be raised up to the u8 frg field's 255 when the
    peer's rcv_wnd is known to be that large; then such a message is delivered (protocol.md
    §1.5). Outside 1..255: ValueError, unchanged."""
    a, b = KCP(CONV, snmp=Snmp()), KCP(CONV, snmp=Snmp())
    assert a.max_fragments == 32
    for bad in (0, 256):
        with pytest.raises(ValueError):
            a.max_fragments = bad
    assert a.max_fragments == 32
    a.max_fragments = 100
    b.set_wndsize(128, 128)
    a.set_wndsize(128, 128)
    msg = os.urandom(100 * MSS)
    a.send(msg)
    assert pump_kcp(a, b) == [msg]


@pytest.mark.parametrize("frags", [33, 127, 255])
def test_receiver_delivers_messages_longer_than_its_window(frags):
    """The receive side of item 6: a C KCP peer sends messages of up to 127 fragments and a
    raw kcp-go ``Send`` up to 255 (protocol.md §1.5), and kcp-go's receiver with its default
    32-segment rcv_wnd never delivers them (skywind3000/kcp#140). Expected: a default kcpgo
    receiver (rcv_wnd 32) delivers the whole message (D20's receive side), and never holds
    more than the message's fragments in its queue."""
    a, b = KCP(CONV, snmp=Snmp()), KCP(CONV, snmp=Snmp())
    a.max_fragments = 255                   # the sender plays a peer without kcpgo's limit
    a.set_wndsize(128, 32)
    assert b.rcv_wnd == 32
    msg = os.urandom(frags * MSS - 7)
    a.send(msg)
    assert pump_kcp(a, b) == [msg]
    assert not b.rcv_queue and not b.rcv_buf


def test_receiver_accepts_the_window_it_announces_for_a_long_message():
    """Review of issue 10 (``/tmp/break10/oversize_window_mismatch.py``): while a message of
    more fragments than rcv_wnd completes, flush announces its missing fragments (D20's
    receive side), but input accepted only sn < rcv_nxt + rcv_wnd (kcp-go's rule), so a
    segment the peer was invited to send was dropped without ACK whenever one before it was
    lost, and cost an RTO retransmission. Receiver rcv_wnd 16, a 40-fragment message; sn
    0..15 arrive (queue full, head misses 24: announced window 24), sn 16 is lost, 17..39
    arrive. Expected: all 23 are ACKed and kept (before: sn 32..39, beyond rcv_nxt 16 + 16,
    were dropped, 15 ACKs), sn 40 (beyond both the message and rcv_nxt + rcv_wnd) is not;
    once sn 16 arrives, the message; queue + buffer never above the 40 fragments."""
    b = KCP(CONV, snmp=Snmp())
    b.set_wndsize(16, 16)
    b.input(b"".join(push(sn, b"%02d" % sn, frg=39 - sn) for sn in range(16)), 0)
    assert (len(b.rcv_queue), b.rcv_nxt) == (16, 16)
    acks = [s for d in b.flush(0) for s in decode_segments(d)]
    assert {s.wnd for s in acks} == {24}
    b.input(b"".join(push(sn, b"%02d" % sn, frg=39 - sn) for sn in range(17, 40))
            + push(40, b"xx", frg=0), 0)
    acks = [s for d in b.flush(0) for s in decode_segments(d)]
    assert sorted(s.sn for s in acks) == list(range(17, 40))
    assert len(b.rcv_buf) == 23 and b.snmp.RepeatSegs == 1          # sn 40
    b.input(push(16, b"16", frg=23), 0)
    assert len(b.rcv_queue) + len(b.rcv_buf) == 40
    assert b.recv() == b"".join(b"%02d" % sn for sn in range(40))


def test_long_messages_over_a_lossy_link_need_no_rto_storm():
    """The same review finding end to end: ten 255-fragment messages from a sender with
    max_fragments 255 to a receiver with rcv_wnd 16, 2 % loss on the data direction (seeded),
    10 ms delay. Expected: the receiver drops no PUSH (RepeatSegs 0: the link neither
    duplicates nor reorders, so every drop was a segment outside the accepted window) and the
    transfer ends as with rcv_wnd 256. Measured by the reproduction: before, 4203 drops and
    4299 RTO retransmissions (done at 2332 ms); after, 0 and 0 (759 ms)."""
    import random
    rnd = random.Random(1)
    a = Connection(CONV, mode="fast3", window=(1024, 1024), snmp=Snmp())
    b = Connection(CONV, mode="fast3", window=(16, 16), snmp=Snmp())
    a.kcp.max_fragments = 255
    msgs = [bytes([i]) * (a.mss * 255) for i in range(10)]
    for m in msgs:
        a.kcp.send(m)
    flying = []                       # (deliver_at, destination, datagram)
    got = []
    now = 0
    while now < 20000 and len(got) < len(msgs):
        for src, dst in ((a, b), (b, a)):
            for d in src.datagrams_to_send(now):
                if src is b or rnd.random() >= 0.02:
                    flying.append((now + 10, dst, d))
        due = [f for f in flying if f[0] <= now]
        flying = [f for f in flying if f[0] > now]
        for _, dst, d in due:
            dst.receive_datagram(d, now)
        while (m := b.recv()) is not None:
            got.append(m)
        now += 1
    assert got == msgs
    assert b.snmp.RepeatSegs == 0 and a.snmp.LostSegs == 0
    assert now < 2000


def test_connection_message_mode_large_send_arrives_as_mss_chunks():
    """Item 6, the sans-IO facade: Connection.send is kcp-go's session Write (protocol.md §5.4,
    §8.17): a buffer of 300 x mss + 5 bytes (more than 255 fragments) is accepted, cut into
    chunks of at most mss bytes with frg 0, and each chunk is one message: recv returns 301
    messages, the first 300 exactly mss (1376) bytes, the last 5, joined equal to the input."""
    a, b = Connection(CONV), Connection(CONV)
    assert a.mss == b.mss == MSS
    payload = os.urandom(300 * MSS + 5)
    assert a.send(payload) == len(payload)
    msgs = []
    now = 0
    for _ in range(3000):
        for d in a.datagrams_to_send(now):
            assert all(s.frg == 0 for s in decode_segments(d[:]))
            b.receive_datagram(d, now)
        for d in b.datagrams_to_send(now):
            a.receive_datagram(d, now)
        while (m := b.recv()) is not None:
            msgs.append(m)
        if not a.waitsnd:
            break
        now += 10
    assert [len(m) for m in msgs] == [MSS] * 300 + [5]
    assert b"".join(msgs) == payload


def test_socket_message_mode_large_sendall_arrives_in_mss_chunks():
    """Item 6 at the socket facade (README "Session options", KCPSocket.send docstring): in
    message mode a sendall of 40 x mss + 7 bytes (more fragments than the 32-segment window)
    is delivered; each recv returns one chunk of at most mss bytes (40 of 1376, then 7), and a
    send of exactly mss bytes arrives whole in one recv."""
    ln = kcpgo.listen(LOCAL, snmp=Snmp())
    c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), timeout=10)
    try:
        assert c.mss == MSS
        c.sendall(b"hi")
        ln.settimeout(5)
        s, _ = ln.accept()
        s.settimeout(10)
        assert s.recv(100) == b"hi"
        payload = os.urandom(40 * MSS + 7)
        w = gevent.spawn(c.sendall, payload)
        sizes = []
        got = bytearray()
        while len(got) < len(payload):
            d = s.recv(1 << 20)
            sizes.append(len(d))
            got += d
        w.get(timeout=10)
        assert bytes(got) == payload
        assert sizes == [MSS] * 40 + [7]
        one = os.urandom(MSS)
        c.sendall(one)
        assert s.recv(1 << 20) == one
        s.close()
    finally:
        c.close()
        ln.close()


# ---------------------------------------------------------------- item 7: failed calls


def test_stream_send_takes_everything_or_nothing():
    """Issue 10 item 7 (skywind3000/kcp#373): stream-mode send(b"a"*10), then
    send(b"b"*352247). Before: ValueError "message of 350881 bytes" (a wrong size) with 1,366
    bytes of the second call already queued. Expected now: stream mode has no fragment limit
    (every segment has frg 0, D21), so the call returns 352247 and the queue holds exactly
    b"a"*10 + b"b"*352247 in segments of at most mss bytes."""
    k = KCP(CONV, snmp=Snmp())
    k.stream = True
    k.send(b"a" * 10)
    assert k.send(b"b" * 352247) == 352247
    assert b"".join(r[0] for r in k.snd_queue) == b"a" * 10 + b"b" * 352247
    assert all(len(r[0]) <= MSS and r[1] == 0 for r in k.snd_queue)


def test_message_send_that_raises_queues_nothing_and_states_sizes():
    """Item 7 in message mode: a refused send changes nothing (kcp-go returns -2 after topping
    up, protocol.md §1.5 step 3); the message states the buffer's real size (45409 bytes),
    the fragments it needs (34 of at most 1376 bytes) and the limit (32)."""
    k = KCP(CONV, snmp=Snmp())
    k.send(b"a" * 10)
    before = [list(r) for r in k.snd_queue]
    with pytest.raises(ValueError) as ei:
        k.send(b"b" * (33 * MSS + 1))
    assert "45409 bytes needs 34 fragments of at most 1376 bytes" in str(ei.value)
    assert "limit is 32" in str(ei.value)
    assert [list(r) for r in k.snd_queue] == before


def test_write_returns_bytes_queued_for_any_buffer():
    """Item 7, wrong sizes: write/send of an array('i') returned its item count (2) while 8
    bytes were queued; the count must be the bytes taken (socket.send's contract, stdlib
    docs). A non-buffer (an int: bytes(5) would be 5 zero bytes) raises TypeError, queueing
    nothing."""
    k = KCP(CONV, snmp=Snmp())
    assert k.write(array.array("i", [1, 2])) == 8
    assert k.send(array.array("i", [3])) == 4
    assert sum(len(r[0]) for r in k.snd_queue) == 12
    for call in (k.write, k.send):
        with pytest.raises(TypeError):
            call(5)
    assert k.wait_snd() == 2


def test_setters_that_raise_change_nothing():
    """Item 7 as a kind: set_nodelay(1, "x", 2, 1) applied nodelay=1 before failing on the
    interval; set_mtu(1000.5), Connection.set_window_size(64.5, 64) and dead_link = 2.5 were
    accepted and left floats in integer state. kcp-go's setters take ints (protocol.md §1.11,
    §5.5). Expected: TypeError and every field unchanged."""
    k = KCP(CONV, snmp=Snmp())
    with pytest.raises(TypeError):
        k.set_nodelay(1, "x", 2, 1)
    assert (k.nodelay, k.rx_minrto, k.interval, k.fastresend, k.nocwnd) == (0, 100, 100, 0, 0)
    with pytest.raises(TypeError):
        k.set_mtu(1000.5)
    assert (k.mtu, k.mss) == (1400, MSS)
    c = Connection(CONV)
    with pytest.raises(TypeError):
        c.set_window_size(64.5, 64)
    assert (c.kcp.snd_wnd, c.kcp.rcv_wnd) == (32, 32)
    with pytest.raises(TypeError):
        c.set_mtu(1000.5)
    assert (c.mtu, c.kcp.mtu) == (1400, 1400)
    with pytest.raises(TypeError):
        c.dead_link = 2.5
    assert c.dead_link == 20


def _pair():
    ln = kcpgo.listen(LOCAL, snmp=Snmp())
    c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), timeout=5)
    c.sendall(b"hi")
    ln.settimeout(5)
    s, _ = ln.accept()
    s.settimeout(5)
    assert s.recv(100) == b"hi"
    # Acknowledged, so the next send leaves at once: in kcp-go's default mode the congestion
    # window is 1 segment while "hi" is in flight, and the peer's ACK waits for its tick.
    c.drain(5)
    return ln, c, s


def test_socket_recv_that_raises_loses_no_data():
    """Item 7 at the facade: recv_into(bytes_object) took the next message, then failed to
    store it (TypeError), losing it; recv(1.5) likewise. socket.recv_into/recv raise TypeError
    before receiving anything (stdlib socket docs). Expected: TypeError, and the message is
    still returned by the next recv."""
    ln, c, s = _pair()
    try:
        c.sendall(b"precious")
        for _ in range(100):
            if s._conn.readable():
                break
            gevent.sleep(0.01)
        with pytest.raises(TypeError):
            s.recv_into(b"12345678")
        with pytest.raises(TypeError):
            s.recv(1.5)
        assert s.recv(100) == b"precious"
    finally:
        s.close()
        c.close()
        ln.close()


# ---------------------------------------------------------------- item 8: readiness


def test_empty_push_is_not_readable_sansio():
    """Issue 10 item 8, sans-IO: an empty PUSH (C KCP's ikcp_send(kcp, buf, 0) sends one;
    KumoKyaku/kcp#27) made Connection.readable() True while recv() returned None. Readiness
    must equal "recv would return data" (D10, D22): False with only the empty message, True
    with data behind it, False again after that data was read, in both modes."""
    for stream in (False, True):
        b = Connection(CONV, stream=stream)
        b.receive_datagram(push(0), 0)
        assert b.readable() is False
        assert b.recv() is None and b.recv_stream(100) == b""
        b.receive_datagram(push(1) + push(2, b"data") + push(3), 0)
        assert b.readable() is True
        assert (b.recv_stream(100) if stream else b.recv()) == b"data"
        assert b.readable() is False
        assert not b.kcp.rcv_queue          # the trailing empty message is gone too


def test_empty_pushes_never_hold_the_window_closed():
    """Item 8, the wedge behind the lie: 40 empty PUSHes fill a 32-segment receive queue; a
    reader that only calls recv when readable() says so (a select loop) must still get the
    data sent behind them, and readable() must never be True when recv returns None."""
    a = KCP(CONV, snmp=Snmp())
    b = Connection(CONV)
    for _ in range(40):
        a.snd_queue.append([b"", 0, 0, 0, 0, 0, 0, 0])
    a.write(b"payload")
    got = []
    now = 0
    for _ in range(300):
        for d in a.update(now):
            b.receive_datagram(d, now)
        for d in b.datagrams_to_send(now):
            a.input(d, now)
        if b.readable():
            m = b.recv()
            assert m is not None
            got.append(m)
        now += 10
    assert got == [b"payload"]


@pytest.mark.parametrize("stream", [False, True])
def test_empty_push_fileno_matches_recv(stream):
    """Item 8 at the socket: one 24-byte PUSH with no payload on an established session, then
    data. fileno() must be readable exactly when recv would not block (KCPSocket.fileno
    docstring; select semantics, stdlib select docs): not readable after the empty PUSH
    alone (a non-blocking recv raises BlockingIOError), readable once data follows, and not
    readable again after that data was read."""
    ln = kcpgo.listen(LOCAL, snmp=Snmp(), stream=stream)
    c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), timeout=5, stream=stream)
    try:
        c.sendall(b"hi")
        ln.settimeout(5)
        s, _ = ln.accept()
        s.settimeout(5)
        assert s.recv(100) == b"hi"
        fd = s.fileno()

        def inject_empty():
            conn = c._conn
            conn.kcp.snd_queue.append([b"", 0, 0, 0, 0, 0, 0, 0])
            conn.kcp.flush_requested = FLUSH_FULL
            c._chan.flush()

        inject_empty()
        gevent.sleep(0.3)                   # delivered and acknowledged on loopback
        assert c._conn.waitsnd == 0
        assert select.select([fd], [], [], 0)[0] == []
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(100)
        c.sendall(b"data")
        inject_empty()
        for _ in range(100):
            if select.select([fd], [], [], 0)[0]:
                break
            gevent.sleep(0.01)
        assert s.recv(100) == b"data"
        gevent.sleep(0.1)
        assert select.select([fd], [], [], 0)[0] == []
        with pytest.raises(BlockingIOError):
            s.recv(100)
        s.close()
    finally:
        c.close()
        ln.close()


def test_readiness_that_reopens_the_window_announces_it():
    """A raw peer fills a kcpgo client's 32-slot receive queue with empty PUSHes (C KCP sends
    one for ikcp_send(kcp, buf, 0)); the client announces window 0. The application's first
    ``fileno()`` computes readiness, which consumes them (D22) and so reopens the window
    while the session is idle (nothing in flight, no timer). Expected: the client sends a
    WINS (cmd 84) announcing 32 within 1 s. Source: D35 (a window that opened is announced
    at once) and C KCP's fast recover (ikcp_recv: a queue drained from >= rcv_wnd sets
    IKCP_ASK_TELL, sent by the next flush). Before (issue 10 review, fileno_wins.py): nothing
    was sent, an idle session has no timer, so a peer without a probe timer short enough
    waits (7 s for kcp-go 5.6.1). This peer sends no PUSH after it, so D60 repeats the WINS
    (after rx_rto, then twice the wait each time): every one announces 32."""
    import socket
    from kcpgo.sansio.wire import CMD_WINS
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(LOCAL)
    raw.setblocking(False)
    c = kcpgo.dial(raw.getsockname(), timeout=5)

    def rx(seconds):
        segs = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                d, addr = raw.recvfrom(2000)
                segs += [(seg, addr) for seg in decode_segments(d)]
            except BlockingIOError:
                gevent.sleep(0.01)
        return segs
    try:
        c.sendall(b"hello")
        seg, addr = rx(0.3)[0]
        raw.sendto(b"".join(encode_segment(Segment(seg.conv, CMD_PUSH, 0, 128, 0, sn, 1, b""))
                            for sn in range(32)), addr)
        assert [s.wnd for s, _ in rx(0.5)][-1:] == [0]   # the queue is full: window 0
        assert select.select([c.fileno()], [], [], 0)[0] == []     # nothing to read
        wins = [s.wnd for s, _ in rx(1.0) if s.cmd == CMD_WINS]
        assert wins[:1] == [32] and set(wins) == {32}, wins
        assert len(wins) <= 1 + WINS_RETRIES, wins
    finally:
        c.close()
        raw.close()


# ---------------------------------------------------------------- item 10: lowering the MTU


def test_lowered_mtu_recuts_the_stream_queue():
    """Issue 10 item 10: a 300 KB stream transfer whose session MTU drops from 1400 to 300
    after the first flush. Before: 220-236 datagrams above 300 bytes (segments queued before
    the change kept their 1376-byte cut). Expected: only the 32 segments already in flight
    may exceed it (they keep their sn, D23) and on a clean link none is retransmitted, so 0
    datagrams above 300 bytes after the change; the data arrives intact."""
    a = Connection(CONV, stream=True, mode="fast3")     # nc=1: the first flush sends 32
    b = Connection(CONV, stream=True, mode="fast3")
    payload = os.urandom(300_000)
    a.send(payload)
    first = []
    got = bytearray()
    for d in a.datagrams_to_send(0):
        first.append(d)
        b.receive_datagram(d, 0)
    assert len(first) == 32 and a.in_flight == 32
    a.set_mtu(300)
    later = []
    got += pump_conn(a, b, start=10, sent=later)
    assert bytes(got) == payload
    assert [len(d) for d in later if len(d) > 300] == []
    assert len(later) == -(-(300_000 - 32 * MSS) // 276)    # one 276-byte segment each


def test_lowered_mtu_refragments_whole_messages_only():
    """Item 10, message mode: three 3000-byte messages (3 fragments at mss 1376); a 4-segment
    window lets the first flush send message 1 and the first fragment of message 2. Lowering
    the KCP mtu to 324 (mss 300) re-cuts message 3 into 10 fragments (frg 9..0, protocol.md
    §1.5) and keeps message 2's remaining fragments (1376, 248 bytes; frg 1, 0): the receiver
    counts on their number. All three messages arrive intact."""
    a, b = KCP(CONV, snmp=Snmp()), KCP(CONV, snmp=Snmp())
    a.set_nodelay(-1, -1, -1, 1)             # no cwnd: the first flush fills the window
    a.set_wndsize(4, 32)
    msgs = [os.urandom(3000) for _ in range(3)]
    for m in msgs:
        a.send(m)
    got = []
    for d in a.flush(0):
        b.input(d, 0)
    assert a.snd_nxt == 4
    a.set_mtu(324)
    assert [(len(r[0]), r[1]) for r in a.snd_queue] == \
        [(1376, 1), (248, 0)] + [(300, 9 - i) for i in range(10)]
    while (m := b.recv()) is not None:
        got.append(m)
    got += pump_kcp(a, b, start=10)
    assert got == msgs


def test_lowered_mtu_that_cannot_recut_changes_nothing():
    """Item 10 with item 7's rule: a queued 20-fragment message cannot be re-cut for mss 76
    (363 fragments > max_fragments 32: the receiver could never reassemble it, D20).
    Expected: set_mtu raises ValueError naming the sizes, and mtu, mss and the queue are
    unchanged (the call changes nothing)."""
    k = KCP(CONV, snmp=Snmp())
    k.send(b"m" * (20 * MSS))
    before = [list(r) for r in k.snd_queue]
    with pytest.raises(ValueError, match=r"27520 bytes would need 363 fragments"):
        k.set_mtu(100)
    assert (k.mtu, k.mss) == (1400, MSS)
    assert [list(r) for r in k.snd_queue] == before


def test_lowered_mtu_cuts_write_chunks_into_separate_messages():
    """Review of issue 10 (``/tmp/break10/setmtu_raises.py``): ``KCP.write`` (what
    Connection.send and the socket facade use) queues frg-0 chunks, each a message of its own
    ("no fragments", D20), but set_mtu re-cut a queued 1376-byte chunk as a 39-fragment
    message: ``Connection.set_mtu(60)`` raised ValueError (39 > max_fragments 32) or not
    depending on what was queued, and a kcp-go peer with rcv_wnd < 39 could never deliver
    it. Expected (D23): set_mtu(60) succeeds (mss 36); the first chunk, already sent, keeps
    its 1376 bytes; each of the two queued ones becomes ceil(1376 / 36) = 39 segments (38 of
    36 bytes, one of 8), all frg 0; the peer receives them as separate messages whose bytes
    join to the input. A 100-byte message queued by message-mode ``KCP.send`` is still
    re-fragmented whole, 3 fragments (frg 2, 1, 0; protocol.md §1.5), beside them."""
    a = Connection(CONV, mode="fast3", snmp=Snmp())
    a.kcp.snd_wnd = 1                       # only the first chunk enters the window
    data = os.urandom(3 * MSS)
    a.send(data)
    assert a.datagrams_to_send(0) and len(a.kcp.snd_queue) == 2
    msg = os.urandom(100)
    a.kcp.send(msg)                          # a message: 1 fragment at mss 1376
    a.set_mtu(60)
    assert a.mss == 36
    recs = [(len(r[0]), r[1]) for r in a.kcp.snd_queue]
    assert recs == ([(36, 0)] * 38 + [(8, 0)]) * 2 + [(36, 2), (36, 1), (28, 0)]
    b = Connection(CONV, snmp=Snmp())
    a2 = Connection(CONV, mode="fast3", snmp=Snmp())
    a2.kcp.snd_wnd = 1
    a2.send(data)
    first = a2.datagrams_to_send(0)
    a2.set_mtu(60)
    for d in first:
        b.receive_datagram(d, 0)
    got = []
    now = 10
    while (a2.waitsnd or b.kcp.rcv_queue) and now < 60000:
        for d in a2.datagrams_to_send(now):
            b.receive_datagram(d, now)
        for d in b.datagrams_to_send(now):
            a2.receive_datagram(d, now)
        while (m := b.recv()) is not None:
            got.append(m)
        now += 10
    assert b"".join(got) == data
    assert [len(m) for m in got] == [MSS] + ([36] * 38 + [8]) * 2


# ---------------------------------------------------------------- audit


def test_non_int_clock_changes_nothing():
    """Audit (a failed call must leave no state behind): update(1.5) with data queued admitted
    the segments into snd_buf (snd_nxt advanced), then raised TypeError at ``now & MASK``
    before stamping them or arming their timer, so they were never sent: the session wedged.
    input(ack, 1.5) slid the window, then raised at the RTT sample. The clock is an integer
    ms count (kcp.py module docstring; protocol.md §8.10). Expected: TypeError before any
    change, and the data is then delivered normally."""
    a, b = KCP(CONV, snmp=Snmp()), KCP(CONV, snmp=Snmp())
    a.set_nodelay(-1, -1, -1, 1)
    a.write(b"wedge?")
    with pytest.raises(TypeError):
        a.update(1.5)
    assert (a.snd_nxt, a.wait_snd(), len(a.snd_queue)) == (0, 1, 1)
    with pytest.raises(TypeError):
        Connection(CONV).flush(1.5)
    out = a.update(0)
    for d in out:
        b.input(d, 0)
    acks = b.flush(0)
    with pytest.raises(TypeError):
        a.input(acks[0], 1.5)
    assert a.snd_una == 0
    assert a.input(acks[0], 5) == 0 and a.snd_una == 1
    assert b.recv() == b"wedge?"


def test_misnumbered_fragments_never_crash_recv():
    """Audit (state behind a failed call / a limit that wedges): a peer that numbers fragments
    wrongly (frg 1, 1: two segments, no frg 0) made peek_size report a 4-byte message and
    Connection.recv raise IndexError from an empty deque. C KCP's ikcp_recv stops at the end
    of the queue (protocol.md §1.7). Expected: no message until a frg-0 segment ends it
    (peek_size -1, recv None, readable False), then the three segments as one message."""
    b = Connection(CONV)
    b.receive_datagram(push(0, b"ab", frg=1) + push(1, b"cd", frg=1), 0)
    assert b.kcp.peek_size() == -1
    assert b.readable() is False
    assert b.recv() is None
    b.receive_datagram(push(2, b"ef", frg=0), 0)
    assert b.kcp.peek_size() == 6
    assert b.recv() == b"abcdef"


@pytest.mark.parametrize("call", ["recv", "recv_stream"])
def test_misnumbered_fragments_never_crash_kcp_recv(call):
    """Review of issue 10 (``/tmp/break10/kcp_recv_misnumbered.py``): D24's guard covered
    Connection only; the public sans-IO ``KCP.recv`` / ``KCP.recv_stream`` on fragments
    numbered (1, 1) with no frg-0 end raised IndexError from an empty deque and had already
    emptied the queue. Expected (D24, peek_size -1): ``None`` / ``b""`` with both segments
    still queued, then the three segments as one message once a frg-0 segment ends it."""
    k = KCP(CONV, snmp=Snmp())
    assert k.input(push(0, b"ab", frg=1) + push(1, b"cd", frg=1), 0) == 0
    read = (lambda: k.recv()) if call == "recv" else (lambda: k.recv_stream(100))
    assert read() == (None if call == "recv" else b"")
    assert len(k.rcv_queue) == 2
    k.input(push(2, b"ef", frg=0), 0)
    assert read() == b"abcdef" and not k.rcv_queue


@pytest.mark.parametrize("call", ["recv", "recv_stream"])
def test_recv_after_close_receiving_drains_the_queue_then_returns_nothing(call):
    """A review's note (issue 15 stop): ``Connection.recv()`` after ``close_receiving()``
    raised IndexError once the queue emptied while the old window still held in-order
    segments out of it (the queue-refill rule read the head of an empty queue with a window
    of 0). Expected, from ``close_receiving``'s contract (docs/deviations.md D59) and
    ``recv``'s ("``None`` if none is ready"): the 4 queued messages, then nothing, with the
    4 held segments left undelivered."""
    b = Connection(CONV, window=(4, 4))
    b.receive_datagram(b"".join(push(sn, b"m%d" % sn) for sn in range(8)), 0)
    assert len(b.kcp.rcv_queue) == 4 and len(b.kcp.rcv_buf) == 4    # window 4: 4 held
    b.close_receiving()
    if call == "recv":
        got = [b.recv() for _ in range(5)]
        assert got == [b"m0", b"m1", b"m2", b"m3", None]
    else:
        got = [b.recv_stream(2) for _ in range(5)]
        assert got == [b"m0", b"m1", b"m2", b"m3", b""]
    assert len(b.kcp.rcv_buf) == 4 and b.readable() is False


def test_kcp_set_wndsize_takes_ints_only():
    """Review of issue 10: ``KCP.set_wndsize(1.5, 32)`` was accepted and stored a float
    snd_wnd (flush then raised TypeError on ``range``); only ``Connection.set_window_size``
    checked. kcp-go's ``WndSize`` takes ints (protocol.md §1.11); D21: a call that raises
    changes nothing. Expected: TypeError, both windows unchanged (32, 32)."""
    k = KCP(CONV, snmp=Snmp())
    for args in ((1.5, 32), (32, 1.5), ("64", 64)):
        with pytest.raises(TypeError):
            k.set_wndsize(*args)
        assert (k.snd_wnd, k.rcv_wnd) == (32, 32)


# ---------------------------------------------------------------- send errors after queueing


@pytest.mark.parametrize("err", [errno.ENOBUFS, errno.EPERM, errno.EMSGSIZE])
def test_send_that_hits_a_transient_socket_error_succeeds_and_delivers(err):
    """Item 7's kind at the socket layer: ``sendall`` queues the data in KCP, then flushes.
    A flush that meets ENOBUFS (full device queue), EPERM (a firewall rule) or EMSGSIZE used
    to raise from ``sendall`` with the data already queued, so a retry duplicated it.
    Expected (UDP semantics, Linux udp(7): these errors lose the datagram; KCP retransmits):
    the call returns normally, the drop is counted, and the peer receives the bytes once."""
    ln, c, s = _pair()
    try:
        ep = c._chan.endpoint
        real = ep._sendto
        failures = [3]

        def flaky(data, addr):
            if failures[0]:
                failures[0] -= 1
                raise OSError(err, os.strerror(err))
            return real(data, addr)
        ep._sendto = flaky
        ep.gso = False
        c.sendall(b"once")
        assert ep.send_drops >= 1 and ep.last_send_error.errno == err
        got = b""
        while len(got) < 4:
            got += s.recv(100)
        assert got == b"once"
    finally:
        c.close()
        s.close()
        ln.close()


@pytest.mark.parametrize("fail_at, sent", [(1, 0), (2, 64)])
def test_a_transient_error_part_way_through_a_gso_flush_counts_what_was_sent(fail_at, sent):
    """``UDPEndpoint.send_many`` with UDP GSO: 100 datagrams of 1,000 bytes leave as two
    ``sendmsg`` calls (64 segments, the kernel's limit, then 36). When call ``fail_at`` meets
    ENOBUFS, what the earlier calls sent is sent: OutPkts = ``sent`` (0 or 64), OutBytes =
    1,000 x that, and only the rest is a drop: send_drops = 100 - ``sent``, last_send_error
    ENOBUFS. Source: Linux udp(7)/sendmsg(2) (a GSO send is all or nothing; the earlier one
    went out) and kcp-go's OutPkts (datagrams written). Before (issue 10 review): all 100
    were counted as dropped and OutPkts stayed 0."""
    import socket
    from kcpgo.runtime.udp import UDPEndpoint
    snmp = Snmp()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(LOCAL)
    ep = UDPEndpoint(UDPEndpoint.open(LOCAL), lambda b, n: None, snmp=snmp)
    try:
        calls = []

        def sendmsg(buffers, cmsg, flags, address):
            calls.append(len(buffers[0]))
            if len(calls) == fail_at:
                raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
            return len(buffers[0])
        ep._sendmsg = sendmsg
        ep.gso = True
        ep.send_many([b"x" * 1000] * 100, rx.getsockname())
        assert calls[:fail_at] == [64_000, 36_000][:fail_at]
        assert (snmp.OutPkts, snmp.OutBytes) == (sent, sent * 1000)
        assert ep.send_drops == 100 - sent and ep.last_send_error.errno == errno.ENOBUFS
    finally:
        ep.close()
        rx.close()


def test_send_that_hits_a_fatal_socket_error_returns_then_fails_the_session():
    """A socket error that is not a drop (here EBADF) after the data was queued: ``sendall``
    still returns (it queued everything; a retry would duplicate it, D21), and the error is
    latched: the next call raises it, as a TCP socket reports an asynchronous error on the
    next call (stdlib socket semantics)."""
    ln, c, s = _pair()
    try:
        ep = c._chan.endpoint

        def broken(data, addr):
            raise OSError(errno.EBADF, "Bad file descriptor")
        ep._sendto = broken
        ep.gso = False
        c.sendall(b"x")
        with pytest.raises(OSError) as info:
            c.sendall(b"y")
        assert info.value.errno == errno.EBADF
    finally:
        c.close()
        s.close()
        ln.close()


def test_a_peer_dead_behind_a_closed_window_is_declared_dead():
    """docs/deviations.md D47. B's application never reads, so B's window closes while it has
    ACKed everything; then B dies. Only WASK probes leave A, and in kcp-go they never count
    toward dead_link: A's writer would wait for ever. In kcpgo unanswered probes count, as
    TCP's persist timer gives up on a peer that answers no zero-window probe. A live B answers
    every WASK (WINS), so the same time with B alive leaves A alive."""
    from kcpgo.sansio.connection import Connection

    def run(b_alive_after):
        a = Connection(1, mode="fast3", window=(256, 256))
        a.kcp.probe_init = 500                  # the sockets' policy (kcp-go latest's)
        a.dead_link = 6
        b = Connection(1, mode="fast3", window=(256, 256))
        now = 1000
        for _ in range(200):                    # A writes while it may; B never reads
            room = a.send_room()
            if room:
                a.send(b"x" * room)
            for d in a.datagrams_to_send(now):
                b.receive_datagram(d, now)
            for d in b.datagrams_to_send(now):
                a.receive_datagram(d, now)
            now += 10
        assert a.kcp.rmt_wnd == 0 and not a.kcp.snd_buf        # the trap: all ACKed, window 0
        end = now + 60_000
        while now < end and not a.dead:
            for d in a.datagrams_to_send(now):
                if b_alive_after:
                    b.receive_datagram(d, now)
                    for r in b.datagrams_to_send(now):
                        a.receive_datagram(r, now)
            nd = a.next_deadline(now)
            now = max(now + 1, nd if nd is not None else end)
        return a.dead, now - (end - 60_000)
    dead, after = run(b_alive_after=False)
    # 6 probes, each wait 1.5x the previous one (from wherever the backoff stood when B
    # died: it grows while B answers "window 0"); here 35 s, against never before
    assert dead and after < 60_000
    dead, _ = run(b_alive_after=True)
    assert not dead                             # a live peer answers: never declared dead
