"""The listener's demultiplexing rules as a sans-IO table (docs/protocol.md §5.2), no sockets.

Expected routes come from kcp-go 5.6.1's listener (§5.2): sessions are keyed by address; a
different conv from a known address replaces the session only when its sn is 0; FEC parity
alone cannot create a session; a failed CRC never reaches the table. Where kcpgo's rules differ
(issue 10: only a datagram that can begin a conversation creates or replaces a session,
docs/deviations.md D30, D31; the checksum warning, D33) each test says so.
"""
from __future__ import annotations

import pytest

from kcpgo.codec import crypt
from kcpgo.sansio import (CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, Backlog, Connection, Demux,
                          FECEncoder, Route, Segment, Snmp, encode_segment)
from kcpgo.sansio.demux import BACKLOG_RESCAN_MS


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
    assert d.route(b"\x00" * 10, None, True)[0] is Route.DROP_TOO_SHORT  # too short: no csum
    assert snmp.InCsumErrors == 2


def test_a_batch_routes_each_datagram_as_alone() -> None:
    """A listener opens a whole batch at once (``Demux.open_many``, one cipher call) and
    routes the entries with ``route_opened``. Each must get the route it gets alone: a
    corrupted datagram between two valid ones is DROP_CHECKSUM (counted once), a short one
    DROP_TOO_SHORT (not counted), and the valid ones are routed as before. (The single path
    told the two failures apart by the change of the checksum counter, which a batch that
    opens everything first would have confused: every failure after the first counted as
    too short, and the listener's bad-datagram warning would not have seen them, D33.)"""
    snmp = Snmp()
    block = crypt.new("aes", crypt.derive_key("k"))
    d = Demux(block, snmp)
    good = block.seal(kcp_datagram(3, 0))
    bad = bytearray(good)
    bad[-1] ^= 1
    batch = [good, bytes(bad), b"\x00" * 10, bytes(bad), block.seal(kcp_datagram(3, 1))]
    routes = [d.route_opened(p, None, True)[0] for p in d.open_many(batch)]
    assert routes == [Route.CREATE, Route.DROP_CHECKSUM, Route.DROP_TOO_SHORT,
                      Route.DROP_CHECKSUM, Route.CREATE]
    assert snmp.InCsumErrors == 2


def test_too_short_is_not_a_checksum_failure() -> None:
    """A datagram too short for a KCP header (a 1-byte NAT keepalive, a port scan) is not a
    checksum failure: kcp-go drops it without counting (5.6.1 packetInput: ``len(data) >=
    nonceSize+crcSize`` before the CRC check; a plaintext below IKCP_OVERHEAD is skipped),
    so InCsumErrors stays 0 and the route is DROP_TOO_SHORT, counted in ``stray`` only from
    an address without a session. A 30-byte datagram that aes cannot authenticate is one
    (InCsumErrors 1, DROP_CHECKSUM). Without a cipher nothing can fail the checksum: short
    bytes are DROP_TOO_SHORT too. Before the fix both were DROP_CHECKSUM (issue 10 review,
    /tmp/break10/short_datagrams_warning.py)."""
    snmp = Snmp()
    d = Demux(crypt.new("aes", crypt.derive_key("k")), snmp)
    for wire in (b"\x00", b"\x00" * 19, b"\x00" * 10):
        assert d.route(wire, None, True) == (Route.DROP_TOO_SHORT, None, 0)
    assert d.route(b"\x00", 5, True) == (Route.DROP_TOO_SHORT, None, 0)
    assert snmp.InCsumErrors == 0 and d.stray == 3
    assert d.route(b"\x01" * 30, None, True) == (Route.DROP_CHECKSUM, None, 0)
    assert snmp.InCsumErrors == 1 and d.stray == 3
    assert d.route(b"\x00", None, True)[0] is Route.DROP_TOO_SHORT     # and after one
    plain = Demux(None, Snmp())
    assert plain.route(b"\x00" * 23, None, True) == (Route.DROP_TOO_SHORT, None, 0)


def test_backlog_evicts_only_failed_entries() -> None:
    b: Backlog[str] = Backlog(2)
    b.push("ok")
    dead = lambda s: s.startswith("dead")                     # noqa: E731
    assert b.make_room(dead, lambda s: None, 0)
    b.push("dead-1")
    closed = []
    assert b.make_room(dead, closed.append, 0)   # evicts dead-1
    assert closed == ["dead-1"] and b.evicted == 1 and b.items == ["ok"]
    b.push("ok2")
    assert not b.make_room(dead, closed.append, 0)   # full, all alive
    assert b.pop() == "ok" and len(b) == 1
    b.push("x", key=7)
    b.discard(7)
    b.discard(7)                                       # already gone: no error
    assert b.items == ["ok2"]
    with pytest.raises(ValueError, match=">= 1"):
        Backlog(0)


def test_full_backlog_is_rescanned_only_after_rescan_interval() -> None:
    """A dial storm brings a CREATE datagram per waiting client per RTO into a full backlog;
    each used to scan all of it (7 % of a 5,000-session server's samples, py-spy). A scan
    that finds nothing to evict holds for BACKLOG_RESCAN_MS; a session that failed meanwhile
    is evicted by the first scan after that."""
    b: Backlog[str] = Backlog(3)
    for s in ("a", "b", "c"):
        b.push(s)
    scanned: list = []
    dead: set = set()

    def failed(s: str) -> bool:
        scanned.append(s)
        return s in dead

    assert not b.make_room(failed, lambda s: None, 1000)
    assert scanned == ["a", "b", "c"]
    dead.add("b")
    for now in (1000, 1001, 1000 + BACKLOG_RESCAN_MS - 1):
        assert not b.make_room(failed, lambda s: None, now)
    assert len(scanned) == 3                           # held: no scan
    closed: list = []
    assert b.make_room(failed, closed.append, 1000 + BACKLOG_RESCAN_MS)
    assert closed == ["b"] and b.evicted == 1
    b.push("d")
    assert not b.make_room(failed, lambda s: None, 1000 + BACKLOG_RESCAN_MS)   # scans: none
    assert not b.make_room(failed, lambda s: None, 999)    # the clock went back: scans again
    assert len(scanned) == 3 + 3 + 3 + 3


# ---------------------------------------------------------------- issue 10, input 2 (D30, D31)

def route_name(d: Demux, wire: bytes, current, conv: bool = False):
    """The route's name (and with ``conv`` the conv): a route kcp-go 5.6.1 lacks still fails as
    an assertion that shows what the code before the fix decided."""
    route, _, c = d.route(wire, current, True)
    return (route.name, c) if conv else route.name


def packed(*segments: bytes) -> bytes:
    """Several KCP segments in one datagram, as kcp-go's flush packs them (ACKs first)."""
    return b"".join(segments)


def test_only_a_push_below_the_window_begins_a_conversation() -> None:
    """Issue 10 input 2 (phantom sessions), rule: a datagram from an address without a
    session creates one only if it carries a PUSH whose sn is below the receive window of a new
    session (kcp-go default 32, sn counted from 0). kcp-go 5.6.1 creates a session from any
    datagram with a conv (docs/protocol.md §5.2 "Consequences"), so before the fix every route
    below was CREATE. Expected: ACK-only, WASK, WINS and a PUSH with sn >= 32 are DROP_NO_START
    and counted in ``stray``; a PUSH with sn 0 or 31, also packed after ACKs, is CREATE."""
    d = Demux(None, Snmp())
    for cmd in (CMD_ACK, CMD_WASK, CMD_WINS):
        assert route_name(d, kcp_datagram(7, 0, cmd), None, conv=True) == ("DROP_NO_START", 0)
    assert route_name(d, kcp_datagram(7, 32), None) == "DROP_NO_START"
    assert route_name(d, kcp_datagram(7, 1000), None) == "DROP_NO_START"
    assert d.stray == 5 and d.window == 32
    assert route_name(d, kcp_datagram(7, 0), None, conv=True) == ("CREATE", 7)
    assert route_name(d, kcp_datagram(7, 31), None, conv=True) == ("CREATE", 7)
    late_acks_then_push = packed(kcp_datagram(7, 3, CMD_ACK), kcp_datagram(7, 4, CMD_ACK),
                                 kcp_datagram(7, 2))
    assert route_name(d, late_acks_then_push, None, conv=True) == ("CREATE", 7)
    # the payload of a CREATE still feeds the new session exactly as before
    _, payload, _ = d.route(packed(kcp_datagram(7, 9, CMD_ACK), kcp_datagram(7, 0)), None, True)
    conn = Connection(7)
    conn.receive_payload(payload, 0)
    assert conn.recv() == b"x"
    # the window is the listener's configured one
    wide = Demux(None, Snmp(), window=1024)
    assert route_name(wide, kcp_datagram(7, 500), None) == "CREATE"
    assert route_name(wide, kcp_datagram(7, 1024), None) == "DROP_NO_START"
    with pytest.raises(ValueError, match="window"):
        Demux(None, Snmp(), window=0)
    assert d.stray == 5 and wide.stray == 1


def test_bytes_that_are_not_kcp_create_nothing() -> None:
    """A datagram from a new address whose first header is not KCP (unknown cmd, a length past
    the end: e.g. a peer that encrypts talking to a listener that does not) is DROP_NOT_KCP;
    kcp-go 5.6.1 creates a session from it (§5.2). A well-formed segment followed by garbage
    still counts by its good part, as KCP's input processes segments before a bad one (§1.6)."""
    d = Demux(None, Snmp())
    bad_cmd = bytearray(kcp_datagram(7, 0))
    bad_cmd[4] = 0x10
    assert route_name(d, bytes(bad_cmd), None) == "DROP_NOT_KCP"
    too_long = bytearray(kcp_datagram(7, 0))
    too_long[20] = 200                                   # len field past the datagram's end
    assert route_name(d, bytes(too_long), None) == "DROP_NOT_KCP"
    assert route_name(d, kcp_datagram(7, 0) + b"\xff" * 30, None) == "CREATE"
    assert route_name(d, kcp_datagram(7, 0, CMD_ACK) + bytes(bad_cmd), None) == \
        "DROP_NO_START"
    other_conv_push = kcp_datagram(8, 0)                  # KCP's input stops at another conv
    assert route_name(d, kcp_datagram(7, 0, CMD_ACK) + other_conv_push, None) == \
        "DROP_NO_START"
    assert d.stray == 4


def test_fec_first_datagrams_of_a_kcp_go_client_begin_a_conversation() -> None:
    """With FEC 10/3 a kcp-go client's first datagrams are the data shards of the first group,
    carrying PUSH sn 0..9, then 3 parity shards (§2.2, §2.4). Expected: each data shard alone
    can begin the session (the first may be lost), parity alone cannot (DROP_NO_CONV, as in
    kcp-go), and an ACK-only data shard (a late ACK with FEC framing) is DROP_NO_START."""
    enc = FECEncoder(10, 3)
    shards = []
    for sn in range(10):
        shards.extend(enc.encode(kcp_datagram(9, sn)))
    assert len(shards) == 13
    d = Demux(None, Snmp())
    for shard in shards[:10]:
        assert route_name(d, shard, None, conv=True) == ("CREATE", 9)
    for parity in shards[10:]:
        assert route_name(d, parity, None) == "DROP_NO_CONV"
    late_ack = FECEncoder(10, 3).encode(kcp_datagram(9, 57, CMD_ACK))[0]
    assert route_name(d, late_ack, None) == "DROP_NO_START"
    assert route_name(d, FECEncoder(10, 3).encode(kcp_datagram(9, 40))[0], None) == \
        "DROP_NO_START"


def test_only_a_new_conversation_replaces_a_live_session() -> None:
    """The sn == 0 replacement rule (§5.2) stays for a restarted peer: another conv whose PUSH
    has sn 0 replaces the session (also packed after other segments, which kcp-go's first-header
    test misses). kcp-go 5.6.1 looks only at the first segment's sn, so before the fix an ACK of
    sn 0 or a probe (sn 0) with another conv replaced a live session, and so did a late
    duplicate of the replaced session's first PUSH, which then took the address back from the
    live one (whose later datagrams, sn != 0, were all dropped). Expected: those are
    DROP_CONV_MISMATCH (counted in ``mismatched``); a further genuine restart still replaces."""
    d = Demux(None, Snmp())
    assert route_name(d, kcp_datagram(2, 0, CMD_ACK), 1) == "DROP_CONV_MISMATCH"
    assert route_name(d, kcp_datagram(2, 0, CMD_WASK), 1) == "DROP_CONV_MISMATCH"
    assert route_name(d, kcp_datagram(2, 1), 1) == "DROP_CONV_MISMATCH"
    assert d.mismatched == 3
    restart = packed(kcp_datagram(2, 7, CMD_ACK), kcp_datagram(2, 0))
    assert route_name(d, restart, 1, conv=True) == ("REPLACE", 2)      # conv 2 replaced conv 1
    stale = kcp_datagram(1, 0)                        # a late copy of conv 1's first PUSH
    assert route_name(d, stale, 2) == "DROP_CONV_MISMATCH"
    assert route_name(d, kcp_datagram(3, 0), 2, conv=True) == ("REPLACE", 3)   # restarted again
    for old in (1, 2):
        assert route_name(d, kcp_datagram(old, 0), 3) == "DROP_CONV_MISMATCH"
    assert d.mismatched == 6


def test_a_replaced_conv_may_return_after_30_s() -> None:
    """D31's memory of replaced convs expires: a client that restarts with a conv its address
    used before (kcp-go NewConn3 or kcpgo ``dial(conv=...)`` with a fixed conv, from a fixed
    port) replaces the live session once the old one ended CLOSED_TTL = 30,000 ms ago;
    before, it was locked out until the live session ended (issue 10 review,
    /tmp/break10/demux_cases.py). A late duplicate within the 30 s is still refused, and does
    not extend them. Expected: X -> Y at t=1000; X at t=30,999 DROP_CONV_MISMATCH, at
    t=31,000 REPLACE. ``now`` is optional: without it the latest ``now`` given applies."""
    from kcpgo.sansio.demux import CLOSED_TTL
    assert CLOSED_TTL == 30_000
    d = Demux(None, Snmp())
    addr = ("10.0.0.1", 4000)
    assert d.route(kcp_datagram(1, 0), None, True, 0, addr)[::2] == (Route.CREATE, 1)
    assert d.route(kcp_datagram(2, 0), 1, True, 1000, addr)[::2] == (Route.REPLACE, 2)
    for t in (1001, 20_000, 30_999):                  # late duplicates of X's first PUSH
        assert d.route(kcp_datagram(1, 0), 2, True, t, addr)[0] is Route.DROP_CONV_MISMATCH
    assert d.route(kcp_datagram(1, 0), 2, True, addr=addr)[0] is Route.DROP_CONV_MISMATCH
    assert d.route(kcp_datagram(1, 0), 2, True, 31_000, addr)[::2] == (Route.REPLACE, 1)
    # the memory is per address: another address may use conv 2 at once
    assert d.route(kcp_datagram(2, 0), 7, True, 31_001, ("10.0.0.2", 1))[0] is Route.REPLACE


def test_bad_sources_warn_rate_limited_with_bounded_memory() -> None:
    """Issue 10 input 9: a listener warns when datagrams from an address keep failing the
    checksum, at most once per interval, reporting how many it held back, and keeps counts for
    a bounded number of addresses (a spoofed flood must not grow it). Expected values follow
    from the parameters: after=3, interval=10,000 ms, size=4."""
    from kcpgo.sansio.demux import BadSources
    b = BadSources(after=3, interval=10_000, size=4)
    a = ("127.0.0.1", 9000)
    assert b.note(a, 0) is None and b.note(a, 1) is None
    assert b.note(a, 2) == (3, 0)                     # the third keeps failing: warn
    assert [b.note(a, t) for t in range(3, 8)] == [None] * 5
    assert b.note(("10.0.0.1", 1), 9) is None         # one bad datagram: no warning
    assert b.note(a, 10_002) == (9, 5)                # next interval: 5 were held back
    for i in range(10_000):                           # a spoofed flood: one datagram each
        assert b.note(("10.1.%d.%d" % divmod(i, 256), i), 20_000 + i) is None
    assert len(b.counts) == 4 and b.total == 10_010 and b.last == ("10.1.39.15", 9999)
    with pytest.raises(ValueError):
        BadSources(after=0)
