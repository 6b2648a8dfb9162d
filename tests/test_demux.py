"""The listener's demultiplexing rules as a sans-IO table (docs/protocol.md §5.2), no sockets.

Expected routes come from kcp-go 5.6.1's listener (§5.2): sessions are keyed by address; a
different conv from a known address replaces the session only when its sn is 0; FEC parity
alone cannot create a session; a failed CRC never reaches the table.
"""
from __future__ import annotations

import pytest

from kcpgo.codec import crypt
from kcpgo.sansio import (CMD_ACK, CMD_PUSH, Backlog, Connection, Demux, FECEncoder, Route,
                          Segment, Snmp, encode_segment)


def kcp_datagram(conv: int, sn: int, cmd: int = CMD_PUSH, data: bytes = b"x") -> bytes:
    return encode_segment(Segment(conv, cmd, 0, 32, 0, sn, 0, data if cmd == CMD_PUSH else b""))


def test_routes_without_cipher() -> None:
    d = Demux(None, Snmp())
    first = kcp_datagram(7, 0)
    assert d.route(first, None, True)[::2] == (Route.CREATE, 7)
    assert d.route(first, None, False)[0] is Route.DROP_NOT_ACCEPTING
    assert d.route(kcp_datagram(7, 5), 7, True)[0] is Route.FEED
    # a restarted peer: another conv with sn 0 replaces, also while not accepting (then the
    # old session is closed and nothing new is created)
    assert d.route(kcp_datagram(8, 0), 7, True)[::2] == (Route.REPLACE, 8)
    assert d.route(kcp_datagram(8, 0), 7, False)[0] is Route.REPLACE
    assert d.route(kcp_datagram(8, 3), 7, True)[0] is Route.DROP_CONV_MISMATCH
    assert d.route(kcp_datagram(8, 3, CMD_ACK), 7, True)[0] is Route.DROP_CONV_MISMATCH
    # the payload handed on is exactly what Connection.receive_payload takes
    route, payload, _ = d.route(first, None, True)
    conn = Connection(7, mode="fast3")
    conn.receive_payload(payload, 0)
    assert conn.recv() == b"x"


def test_fec_parity_feeds_but_never_creates() -> None:
    enc = FECEncoder(2, 1)
    data1 = enc.encode(kcp_datagram(9, 0))
    data2, parity = enc.encode(kcp_datagram(9, 1))
    d = Demux(None, Snmp())
    assert d.route(data1[0], None, True)[::2] == (Route.CREATE, 9)     # conv after the FEC header
    assert d.route(parity, None, True)[0] is Route.DROP_NO_CONV
    assert d.route(parity, 9, True)[0] is Route.FEED
    assert d.route(data2, 9, True)[0] is Route.FEED


def test_checksum_failures_are_counted_and_dropped() -> None:
    snmp = Snmp()
    block = crypt.new("aes", crypt.derive_key("k"))
    d = Demux(block, snmp)
    good = block.seal(kcp_datagram(3, 0))
    assert d.route(good, None, True)[::2] == (Route.CREATE, 3)
    bad = bytearray(good)
    bad[-1] ^= 1
    assert d.route(bytes(bad), None, True) == (Route.DROP_CHECKSUM, None, 0)
    assert d.route(bytes(bad), 3, True)[0] is Route.DROP_CHECKSUM
    assert snmp.InCsumErrors == 2
    assert d.route(b"\x00" * 10, None, True)[0] is Route.DROP_CHECKSUM   # too short


def test_backlog_evicts_only_failed_entries() -> None:
    b: Backlog[str] = Backlog(2)
    b.push("ok")
    assert b.make_room(lambda s: s.startswith("dead"), lambda s: None)
    b.push("dead-1")
    closed = []
    assert b.make_room(lambda s: s.startswith("dead"), closed.append)   # evicts dead-1
    assert closed == ["dead-1"] and b.evicted == 1 and b.items == ["ok"]
    b.push("ok2")
    assert not b.make_room(lambda s: s.startswith("dead"), closed.append)   # full, all alive
    assert b.pop() == "ok" and len(b) == 1
    b.push("x", key=7)
    b.discard(7)
    b.discard(7)                                       # already gone: no error
    assert b.items == ["ok2"]
    with pytest.raises(ValueError, match=">= 1"):
        Backlog(0)
