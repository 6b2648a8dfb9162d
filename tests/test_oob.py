"""[latest] OOB packets (kcp-go latest SendOOB / SetOOBHandler; docs/protocol.md §2.2(e),
docs/deviations.md D49): the wire layout, the receive rules, the listener's demultiplexing
and the socket API. The live cells against the latest kcp-go are in tests/interop/.

Expected values: the layout from kcp-go v5.6.72's fec.go (seqid 0xFFFFFFFF, type 0xF3, size
= 2 + 4 + n, conv, payload) and sess.go (needs FEC to send; payload at most KCP mtu - 4;
handed over whatever the receiver's FEC setting); the issue's rule that OOB never disturbs a
session or the listener's demultiplexing; socket-like blocking for ``recv_oob``.
"""
from __future__ import annotations

import errno
import struct
import threading
import time

import pytest

import kcpgo
from kcpgo.codec import crypt as _crypt
from kcpgo.sansio import Connection
from kcpgo.sansio.demux import Demux, Route
from kcpgo.sansio.fec import encode_oob, is_oob, parse_oob
from kcpgo.sansio.packet import OOB_QUEUE_MAX
from kcpgo.snmp import Snmp

LOCAL = ("127.0.0.1", 0)
FEC = dict(data_shards=10, parity_shards=3)


def test_layout_is_kcp_go_latests():
    """seqid FFFFFFFF | F3 00 | size = 2+4+n (LE) | conv (LE) | payload (fec.go sealOOB,
    encodeOOB; sess.go SendOOB)."""
    p = encode_oob(0x01020304, b"abc")
    assert p == b"\xff\xff\xff\xff\xf3\x00" + struct.pack("<H", 9) + bytes([4, 3, 2, 1]) + b"abc"
    assert is_oob(p) and parse_oob(p) == (0x01020304, b"abc")
    assert is_oob(encode_oob(7, b""))                     # an empty payload is an OOB too
    assert not is_oob(p[:11])


def test_connection_sends_only_with_fec_and_within_the_max_size():
    """kcp-go: "OOB requires FEC to be enabled"; GetOOBMaxSize = KCP mtu - 4."""
    plain = Connection(1)
    assert plain.oob_max_size == 0
    with pytest.raises(ValueError, match="FEC"):
        plain.oob_datagram(b"x")
    c = Connection(1, **FEC)
    assert c.oob_max_size == c.kcp.mtu - 4
    assert len(c.oob_datagram(b"x" * c.oob_max_size)) <= c.mtu
    with pytest.raises(ValueError, match="exceeds"):
        c.oob_datagram(b"x" * (c.oob_max_size + 1))


@pytest.mark.parametrize("crypt", [None, "aes", "aes-128-gcm"])
@pytest.mark.parametrize("receiver_fec", [False, True])
def test_received_oob_is_queued_never_fed_to_kcp(crypt, receiver_fec):
    """A sealed OOB packet reaches the receiver's OOB queue whatever the receiver's own FEC
    setting (sess.go kcpInput: typeOOB is handled before any FEC state), including one that
    starts with 4 zero bytes (a 5.6.1 receiver reads those as KCP sn 0) and an empty one
    (12 bytes after the crypto header: below 5.6.1's 24-byte minimum, §4.1); nothing goes to
    KCP (no data, no KCPInErrors); OOBPackets counts them."""
    block = _crypt.new(crypt, b"k" * 32) if crypt else None
    snmp = Snmp()
    tx = Connection(9, crypt=block, **FEC)
    rx = Connection(9, crypt=block, snmp=snmp, **(FEC if receiver_fec else {}))
    for payload in (b"\x00\x00\x00\x00hello", b"", b"x" * tx.oob_max_size):
        assert rx.receive_datagram(tx.oob_datagram(payload), 0)
        assert rx.recv_oob() == payload
    assert rx.recv_oob() is None
    assert not rx.readable()
    assert (snmp.OOBPackets, snmp.KCPInErrors) == (3, 0)


def test_the_queue_is_bounded_and_other_convs_are_dropped():
    """At most OOB_QUEUE_MAX payloads wait (memory stays bounded whatever a peer sends);
    an OOB of another conv is not this session's."""
    tx, rx = Connection(5, **FEC), Connection(5)
    for i in range(OOB_QUEUE_MAX + 3):
        rx.receive_datagram(tx.oob_datagram(b"%d" % i), 0)
    assert rx.oob_pending == OOB_QUEUE_MAX and rx.oob_dropped == 3
    assert rx.recv_oob() == b"0"
    rx.receive_datagram(Connection(6, **FEC).oob_datagram(b"other"), 0)
    assert rx.codec.oob_mismatched == 1 and rx.oob_pending == OOB_QUEUE_MAX - 1


def test_listener_demux_never_replaces_a_session_for_an_oob():
    """The 5.6.1 rule read an OOB payload starting with 4 zero bytes as conv 0xFFFFFFFF,
    sn 0, and replaced the live session (KCP-GO-LATEST.md item 2). Here an OOB of the
    session's conv is its input (FEED), of another conv is dropped, and from a new address it
    begins a session (as kcp-go latest's listener does, conv from offset 8)."""
    d = Demux()
    oob = Connection(42, **FEC).oob_datagram(b"\x00\x00\x00\x00" + b"z" * 20)
    assert d.route(oob, 42, True, 0, "a")[0] is Route.FEED
    assert d.route(oob, 41, True, 0, "a")[0] is Route.DROP_CONV_MISMATCH
    route, _, conv = d.route(oob, None, True, 0, "b")
    assert (route, conv) == (Route.CREATE, 42)
    d.conversation_closed("c", 42, 0)
    assert d.route(oob, None, True, 1, "c")[0] is Route.DROP_CLOSED
    assert d.route(oob, None, False, 1, "d")[0] is Route.DROP_NOT_ACCEPTING


def test_sockets_exchange_oob_beside_a_bulk_transfer():
    """kcpgo <-> kcpgo with FEC: OOB both ways while 1 MB flows; the stream is intact, each
    side's recv_oob returns what the other sent (loopback loses none), a handler gets them
    instead of the queue, and the listener still has exactly one session."""
    with kcpgo.listen(LOCAL, snmp=Snmp(), mode="fast3", stream=True, **FEC) as ln:
        c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), mode="fast3", stream=True, timeout=5,
                       **FEC)
        c.sendall(b"!")
        ln.settimeout(5)
        s, _ = ln.accept()
        s.settimeout(5)
        assert s.recv(1) == b"!"
        data = bytes(range(256)) * 4096
        got = bytearray()
        reader = threading.Thread(target=lambda: [got.extend(s.recv(1 << 16))
                                                   for _ in iter(lambda: len(got) < len(data),
                                                                 False)])
        reader.start()
        for i in range(10):
            c.send_oob(b"\x00\x00\x00\x00c2s-%d" % i)   # a 5.6.1 listener's "sn 0"
        c.sendall(data)
        reader.join(10)
        assert bytes(got) == data
        assert [s.recv_oob(100) for _ in range(10)] == [b"\x00\x00\x00\x00c2s-%d" % i
                                                         for i in range(10)]
        assert ln.session_count == 1 and s.conv == c.conv
        seen = []
        c.set_oob_handler(seen.append)
        for i in range(5):
            s.send_oob(b"s2c-%d" % i)
        deadline = time.monotonic() + 5
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [b"s2c-%d" % i for i in range(5)]
        c.close()
        s.close()


def test_socket_errors_and_blocking():
    """send_oob without FEC: OSError(EOPNOTSUPP); too big: EMSGSIZE; recv_oob honours the
    socket timeout (TimeoutError), non-blocking mode (BlockingIOError), bufsize (the rest of
    the payload is discarded, as a datagram socket's recv does) and close (EBADF)."""
    with kcpgo.listen(LOCAL, snmp=Snmp(), **FEC) as ln:
        plain = kcpgo.dial(ln.getsockname(), snmp=Snmp())
        with pytest.raises(OSError) as info:
            plain.send_oob(b"x")
        assert info.value.errno == errno.EOPNOTSUPP
        plain.close()
        c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), timeout=0.2, **FEC)
        with pytest.raises(OSError) as info:
            c.send_oob(b"x" * (c.oob_max_size + 1))
        assert info.value.errno == errno.EMSGSIZE
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            c.recv_oob(10)
        assert time.monotonic() - t0 >= 0.19
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.recv_oob(10)
        c.settimeout(5)
        c.send_oob(b"hello")                   # a new session from an OOB: latest's listener
        ln.settimeout(5)
        s, _ = ln.accept()
        assert s.recv_oob(3) == b"hel"
        box = {}

        def blocked():
            try:
                c.recv_oob(10)
            except OSError as e:
                box["errno"] = e.errno
        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.1)
        c.close()
        t.join(5)
        assert box == {"errno": errno.EBADF}
        s.close()
