"""``kcpgo.sansio.smux_stack.SmuxStack``: smux over optional snappy over a KCP byte stream,
pure (docs/kcptun.md §2, 3, 4).

* framing auto-detection from the peer's first bytes in any split, down to one byte per call
  (kcptun.md §3.3), and the named mismatch errors of a fixed framing (kcptun.md §4.9);
* the bound on what is held while the framing is undecided (``_DETECT_LIMIT``), which must
  take the longest legal first chunk (a server's first frame may be a 32 KiB PSH);
* snappy corruption: the good frames before the bad chunk are delivered, then the session dies
  (kcptun.md §3.1: "a reader error is permanent");
* ``writes()``: one snappy chunk per smux frame, the stream identifier in front of the first,
  byte-identical to Go's writer (the known-answer bytes of kcptun.md §2);
* a seeded fuzz: random open/send/shutdown/close/read on many streams, both ends a
  ``SmuxStack`` (the server auto-detecting) over KCP on a lossy in-memory link; every byte
  that reaches a reader is a prefix of what was sent, and EOF comes after all of it
  (kcptun.md §4.5).
"""
from __future__ import annotations

import os
import random
from typing import Dict, List, Set

import pytest

from kcpgo.codec.snappy import STREAM_IDENTIFIER, SnappyDecoder, SnappyEncoder
from kcpgo.sansio import Connection, LinkProfile, Network
from kcpgo.sansio.kcptun_detect import Framing, describe
from kcpgo.sansio.smux import StreamReset
from kcpgo.sansio.smux import (SessionError, StreamData, StreamEnded, StreamOpened,
                               WindowUpdate)
from kcpgo.sansio.smux_frames import CMD_PSH, CMD_SYN, FrameParser, encode_frame
from kcpgo.sansio.smux_stack import _DETECT_LIMIT, FramingMismatch, SmuxStack
from kcpgo.snmp import Snmp

H = bytes.fromhex
FRAMINGS = [Framing(c, v) for c in (True, False) for v in (1, 2)]

# docs/kcptun.md §2: Go's snappy writer for a v1 client (SYN 3, PSH 3 "hello", PSH 3 256 x "A")
GO_SYN3 = H("ff060000734e61507059" "010c00004439ac2f" "0100000003000000")
GO_HELLO = H("0111000028beb005" "010205000300000068656c6c6f")
GO_256A = H("001c000075902789" "880220010200010300000041fe0100fe0100fe0100fa0100")


def client_bytes(framing: Framing, payload: bytes = b"hello") -> bytes:
    """What a client with ``framing`` writes for: open stream 3, send ``payload``."""
    c = SmuxStack(framing.smux_version, framing.compression, client=True)
    sid = c.smux.open_stream()
    c.smux.send(sid, payload)
    return b"".join(c.writes())


def feed(stack: SmuxStack, wire: bytes, pieces: List[int]) -> list:
    """Feed ``wire`` cut at the given piece sizes (cycled), collecting events."""
    events: list = []
    pos, i = 0, 0
    while pos < len(wire):
        n = pieces[i % len(pieces)]
        events += stack.receive(wire[pos:pos + n], now=0)
        pos += n
        i += 1
    return events


def data_of(events: list, sid: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, StreamData) and e.sid == sid)


def chunks(wire: bytes) -> List[bytes]:
    """Split a snappy framed stream into its chunks (kcptun.md §3.1: type u8 | length u24 |
    body)."""
    out, pos = [], 0
    while pos < len(wire):
        end = pos + 4 + int.from_bytes(wire[pos + 1:pos + 4], "little")
        assert end <= len(wire), "a write ended inside a chunk"
        out.append(wire[pos:end])
        pos = end
    return out


# -- detection (kcptun.md §3.3) --------------------------------------------------------------

@pytest.mark.parametrize("framing", FRAMINGS, ids=describe)
@pytest.mark.parametrize("pieces", [[1], [2, 3], [7], [1, 100], [10_000]],
                         ids=lambda p: "split" + "-".join(map(str, p)))
def test_auto_detection_in_any_split(framing, pieces):
    # A server following the peer decides from the first bytes however KCP cut them, and then
    # delivers exactly what a server configured with that framing would (kcptun.md §3.3).
    payload = os.urandom(300) + b"text " * 200
    wire = client_bytes(framing, payload)
    server = SmuxStack(None, None, client=False)
    assert server.framing is None and server.describe() == "auto"
    events = feed(server, wire, pieces)
    assert server.error is None
    assert server.framing == framing
    assert server.describe() == describe(framing)
    assert events[0] == StreamOpened(3)
    assert data_of(events, 3) == payload
    assert server.smux is not None and server.smux.version == framing.smux_version


@pytest.mark.parametrize("framing", FRAMINGS, ids=describe)
def test_nothing_is_decided_or_lost_before_the_deciding_byte(framing):
    # Fed one byte at a time, no event comes before the first whole frame, and the prefix
    # held while undecided is handed on in full (the SYN is not lost).
    wire = client_bytes(framing, b"")
    server = SmuxStack(None, None, client=False)
    seen = []
    for i in range(len(wire)):
        seen.append(server.receive(wire[i:i + 1], now=0))
    assert all(not ev for ev in seen[:-1])
    assert seen[-1] == [StreamOpened(3)]
    assert server.writes() == []        # nothing queued: a server never speaks first


@pytest.mark.parametrize("configured", [(None, True), (None, False), (1, None), (2, None)],
                         ids=["auto-version-snappy", "auto-version-nocomp",
                              "v1-auto-comp", "v2-auto-comp"])
@pytest.mark.parametrize("framing", FRAMINGS, ids=describe)
def test_half_auto_follows_the_free_part_and_names_the_fixed_one(configured, framing):
    version, compression = configured
    server = SmuxStack(version, compression, client=False)
    events = feed(server, client_bytes(framing), [5])
    fits = ((version is None or version == framing.smux_version)
            and (compression is None or compression == framing.compression))
    if fits:
        assert server.error is None and server.framing == framing
        assert data_of(events, 3) == b"hello"
    else:
        assert len(events) == 1 and isinstance(events[0], SessionError)
        err = events[0].error
        assert isinstance(err, FramingMismatch) and err.peer == framing
        # kcptun.md §4.9: the message names both sides as kcptun flags
        ours = Framing(framing.compression if compression is None else compression,
                       framing.smux_version if version is None else version)
        assert describe(framing) in str(err) and describe(ours) in str(err)


@pytest.mark.parametrize("ours", FRAMINGS, ids=describe)
@pytest.mark.parametrize("peer", FRAMINGS, ids=describe)
@pytest.mark.parametrize("role", ["server", "client"])
def test_fixed_framing_mismatch_is_named_at_once(ours, peer, role):
    stack = SmuxStack(ours.smux_version, ours.compression, client=(role == "client"))
    if role == "client":
        stack.smux.open_stream()
        stack.writes()
        # what a server with ``peer`` framing sends first: a NOP (kcptun.md §4.6)
        srv = SmuxStack(peer.smux_version, peer.compression, client=False, now=0,
                        keepalive_interval=10, keepalive_timeout=30)
        srv.timer(10)
        wire = b"".join(srv.writes())
    else:
        wire = client_bytes(peer)
    events = feed(stack, wire, [1])
    if ours == peer:
        assert stack.error is None and not any(isinstance(e, SessionError) for e in events)
        return
    assert [type(e) for e in events] == [SessionError]
    err = stack.error
    assert isinstance(err, FramingMismatch) and err.reason == "framing" and err.peer == peer
    assert f"the peer speaks kcptun's {describe(peer)}" in str(err)
    assert describe(ours) in str(err)
    # the session is dead for good: nothing more in, out or on the timer
    assert stack.receive(wire, now=1) == []
    assert stack.writes() == [] and stack.timer(10**9) == []
    assert stack.next_deadline(0) is None
    assert stack.smux is not None and stack.smux.closed


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02", b"\x07" * 20, b"GET / HTTP/1.0\r\n",
                                     b"\xff\x06\x00\x00sNaPpX", b"\xff\x05"],
                         ids=["zero", "x07", "http", "bad-identifier", "bad-id-length"])
def test_garbage_first_bytes_fail_the_session_not_the_caller(garbage):
    # docs/kcptun.md §3.3: the first byte is ff (snappy) or the smux version; anything else
    # (a wrong key decrypts to garbage) ends the session with a named error, no exception.
    server = SmuxStack(None, None, client=False)
    events = feed(server, garbage + b"\x00" * 64, [1])
    assert [type(e) for e in events] == [SessionError]
    err = events[0].error
    assert isinstance(err, FramingMismatch) and err.peer is None
    assert "kcptun" in str(err) or "snappy" in str(err)
    assert server.receive(b"\x01\x00\x00\x00\x03\x00\x00\x00", now=0) == []


def test_undecided_prefix_is_read_once():
    """A peer that dribbles its first snappy chunk one byte per KCP read costs linear time:
    each byte is decoded once (before, every piece re-decoded the whole prefix, up to 76 KB:
    quadratic, about 3e9 byte steps for one such peer)."""
    import time
    payload = os.urandom(60_000)
    client = SmuxStack(1, True, client=True)
    sid = client.smux.open_stream()
    client.smux.send(sid, payload)
    wire = b"".join(client.writes())
    server = SmuxStack(None, None, client=False)
    t = time.process_time()
    events = []
    for i in range(len(wire)):
        events += server.receive(wire[i:i + 1], now=0)
    assert time.process_time() - t < 5      # quadratic took minutes; linear takes ~0.1 s
    assert server.error is None and b"".join(e.data for e in events[1:]) == payload


def test_undecided_prefix_is_bounded_by_the_detect_limit():
    # A snappy stream that never shows a frame (identifier, then one long padding chunk, which
    # Go's reader skips, kcptun.md §3.1) is held for at most _DETECT_LIMIT bytes, then fails.
    pad = 3 * _DETECT_LIMIT
    wire = STREAM_IDENTIFIER + bytes([0xFE]) + pad.to_bytes(3, "little") + bytes(pad)
    server = SmuxStack(None, None, client=False)
    for i in range(0, len(wire), 97):
        events = server.receive(wire[i:i + 97], now=0)
        held = server._probe.buffered if server._probe is not None else 0
        assert held <= _DETECT_LIMIT
        if events:
            break
    assert [type(e) for e in events] == [SessionError]
    assert isinstance(events[0].error, FramingMismatch)
    assert i <= _DETECT_LIMIT + 97          # failed as soon as the limit was passed
    assert server._probe is None            # and nothing is kept


@pytest.mark.parametrize("frame_size,mss", [(4096, 1370), (32768, 1376), (32768, 1298)])
def test_a_first_chunk_longer_than_the_detect_limit_is_legal(frame_size, mss):
    # kcptun.md §3.1: a chunk body may be up to 76494 bytes; kcptun.md §3.2: one chunk per
    # frame. A server's first frame may be a PSH (v1: a reply; kcptun's are up to 4096
    # bytes, kcptun.md §4.3; kcpgo's up to 32768), one chunk of identifier + 8 + 4 + 8 +
    # payload bytes when the data does not compress, which KCP hands over in segments of
    # ``mss`` bytes (1376: kcpgo's default MTU without a cipher; 1298: kcptun's MTU 1350 with
    # aes and FEC). A kcptun-sized 4096-byte frame fails only when a segment boundary falls
    # within its last 26 bytes (here mss 1370); kcpgo's 32 KiB frames always did, with the
    # first limit of 4096 bytes. Expected: the data, no error.
    payload = os.urandom(frame_size)
    client = SmuxStack(1, True, client=True)
    sid = client.smux.open_stream()
    server = SmuxStack(1, True, client=False)
    server.receive(b"".join(client.writes()), now=0)
    server.smux.send(sid, payload)              # the server's first frame
    wire = b"".join(server.writes())
    assert len(wire) > 4096                     # longer than the old 4096-byte limit
    events = feed(client, wire, [mss])
    assert client.error is None, client.error
    assert data_of(events, sid) == payload


# -- snappy corruption (kcptun.md §3.1) ------------------------------------------------------

@pytest.mark.parametrize("where", ["crc", "type", "length"])
@pytest.mark.parametrize("pieces", [[100_000], [1], [13]], ids=["whole", "bytes", "13"])
def test_snappy_corruption_delivers_the_good_frames_then_kills_the_session(where, pieces):
    good = GO_SYN3 + GO_HELLO
    bad = bytearray(GO_256A)
    if where == "crc":
        bad[5] ^= 0x01                      # masked CRC of the uncompressed data
    elif where == "type":
        bad[0] = 0x05                       # reserved unskippable chunk type
    else:
        bad[1:4] = (90_000).to_bytes(3, "little")      # body over 76494 bytes
    server = SmuxStack(1, True, client=False)
    events = feed(server, good + bytes(bad) + GO_HELLO, pieces)
    assert events[:2] == [StreamOpened(3), StreamData(3, b"hello")]
    assert [type(e) for e in events[2:]] == [SessionError]
    err = events[-1].error
    assert err.reason == "snappy" and "snappy" in str(err)
    assert server.error is err and server.smux.closed
    assert server.receive(GO_HELLO, now=0) == []


def test_smux_error_inside_good_snappy_is_a_session_error_too():
    # A valid chunk carrying an invalid smux frame (unknown command 7, kcptun.md §4.2).
    enc = SnappyEncoder()
    wire = (enc.encode(encode_frame(1, CMD_SYN, 3))
            + enc.encode(encode_frame(1, CMD_PSH, 3, b"ok"))
            + enc.encode(bytes([1, 7, 0, 0, 3, 0, 0, 0])))
    server = SmuxStack(None, None, client=False)
    events = feed(server, wire, [3])
    assert events[:2] == [StreamOpened(3), StreamData(3, b"ok")]
    assert [type(e) for e in events[2:]] == [SessionError]
    assert events[-1].error.reason == "command"
    assert server.next_deadline(0) is None and server.timer(10**9) == []


# -- writes (kcptun.md §2, 3.2) --------------------------------------------------------------

def test_writes_reproduce_gos_known_answer_bytes():
    c = SmuxStack(1, True, client=True)
    sid = c.smux.open_stream()
    c.smux.send(sid, b"hello")
    c.smux.send(sid, b"A" * 256)
    assert c.writes() == [GO_SYN3, GO_HELLO, GO_256A]
    assert c.writes() == []


@pytest.mark.parametrize("version", [1, 2])
def test_one_snappy_chunk_per_frame_identifier_first(version):
    c = SmuxStack(version, True, client=True, max_frame_size=32768)
    sids = [c.smux.open_stream() for _ in range(3)]
    for sid in sids:
        c.smux.send(sid, os.urandom(40_000) + b"z" * 30_000)   # 3 frames: 32768, 32768, 4464
        c.smux.shutdown(sid)
    writes = c.writes()
    plain = SmuxStack(version, False, client=True, max_frame_size=32768)
    for sid in [plain.smux.open_stream() for _ in range(3)]:
        plain.smux.send(sid, b"\x00" * 70_000)
        plain.smux.shutdown(sid)
    frames = plain.writes()
    assert len(writes) == len(frames) == 3 * (1 + 3 + 1)
    assert writes[0].startswith(STREAM_IDENTIFIER)
    assert not any(STREAM_IDENTIFIER in w for w in writes[1:])
    dec = SnappyDecoder()
    parser = FrameParser(version)
    for i, w in enumerate(writes):
        body = w[len(STREAM_IDENTIFIER):] if i == 0 else w
        assert len(chunks(body)) == 1, f"write {i} is not one chunk"
        decoded = dec.feed(w)
        assert len(parser.feed(decoded)) == 1 and parser.buffered == 0   # exactly one frame
    assert dec.at_boundary


def test_writes_without_compression_are_the_frames_themselves():
    c = SmuxStack(2, False, client=True)
    sid = c.smux.open_stream()
    c.smux.send(sid, b"hi")
    assert c.writes() == [encode_frame(2, CMD_SYN, sid), encode_frame(2, CMD_PSH, sid, b"hi")]


def test_undecided_server_writes_nothing_and_has_no_timer():
    server = SmuxStack(None, None, client=False, keepalive_interval=1000,
                       keepalive_timeout=3000)
    assert server.writes() == [] and server.next_deadline(0) is None
    assert server.timer(10**6) == [] and not server.receive_paused
    assert server.first_byte is None
    server.receive(b"\xff\x06", now=0)
    assert server.first_byte == 0xFF        # kcptun.md §11: log the peer's first byte


def test_a_client_must_fix_its_framing():
    with pytest.raises(ValueError):
        SmuxStack(None, False, client=True)
    with pytest.raises(ValueError):
        SmuxStack(1, None, client=True)
    with pytest.raises(ValueError):
        SmuxStack(3, False, client=False)
    with pytest.raises(ValueError):      # checked at once, not at detection time
        SmuxStack(None, None, client=False, max_stream_buffer=10, max_receive_buffer=5)


# -- fuzz: random stream operations over KCP over a lossy link --------------------------------

class Side:
    """A pure stand-in for SmuxDriver: reads KCP while the bucket has room, keeps each stream's
    received bytes until the "application" reads them, writes frames while KCP's window has
    room."""

    def __init__(self, conn: Connection, stack: SmuxStack) -> None:
        self.conn, self.stack = conn, stack
        self.out: List[bytes] = []
        self.held: Dict[int, bytearray] = {}       # received, not yet read
        self.read: Dict[int, bytearray] = {}       # read by the application
        self.eof: Set[int] = set()
        self.closed: Set[int] = set()              # closed locally (unread bytes dropped)
        self.shut: Set[int] = set()                # FIN sent (shutdown or close)
        self.sent: Dict[int, bytearray] = {}
        self.accepted: List[int] = []

    def pump(self, now: int) -> None:
        self.out += self.stack.writes()
        while self.out and self.conn.writable():
            self.conn.send(self.out.pop(0))
        stack = self.stack
        while not stack.receive_paused:
            data = self.conn.recv_stream(1 << 20)
            if not data:
                break
            for ev in stack.receive(data, now):
                if isinstance(ev, StreamOpened):
                    self.accepted.append(ev.sid)
                    self.held[ev.sid], self.read[ev.sid] = bytearray(), bytearray()
                elif isinstance(ev, StreamData):
                    assert ev.sid not in self.closed
                    self.held[ev.sid] += ev.data
                elif isinstance(ev, StreamEnded):
                    assert ev.sid not in self.eof
                    self.eof.add(ev.sid)
                elif isinstance(ev, SessionError):
                    raise AssertionError(f"session died: {ev.error}")
                elif isinstance(ev, StreamReset):
                    # D46: the peer closed the stream while we wrote: after its FIN only
                    assert ev.sid in self.eof
                    self.shut.add(ev.sid)               # nothing more may be sent
                else:
                    assert isinstance(ev, WindowUpdate)

    def take(self, sid: int, n: int) -> None:
        got = self.held[sid][:n]
        del self.held[sid][:n]
        self.read[sid] += got
        self.stack.smux.consumed(sid, len(got))


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("framing", FRAMINGS, ids=describe)
def test_random_stream_operations_over_a_lossy_link(framing, seed):
    rng = random.Random(seed * 100 + framing.smux_version * 10 + framing.compression)
    conns = [Connection(0x7171, stream=True, mode="fast3", window=(128, 128), snmp=Snmp())
             for _ in range(2)]
    net = Network(conns[0], conns[1], seed=seed,
                  profile=LinkProfile(loss=0.05, delay=8, jitter=4))
    opts = dict(max_receive_buffer=200_000, max_stream_buffer=50_000, max_frame_size=4000,
                keepalive_interval=None, keepalive_timeout=None)
    client = Side(conns[0], SmuxStack(framing.smux_version, framing.compression,
                                      client=True, **opts))
    server = Side(conns[1], SmuxStack(None, None, client=False, **opts))
    sides = (client, server)

    def check(me: Side, peer: Side) -> None:
        for sid, held in me.held.items():
            if sid in me.closed:
                continue
            got = bytes(me.read[sid] + held)
            want = bytes(peer.sent.get(sid, b""))
            assert want.startswith(got), f"stream {sid}: bytes out of order or invented"
            if sid in me.eof:
                assert got == want and sid in peer.shut, f"stream {sid}: EOF before the data"

    def open_streams(side: Side) -> List[int]:
        sids = side.accepted if side is server else list(side.held)
        return [s for s in sids if s not in side.closed]

    for step in range(1500):
        for _ in range(rng.randrange(1, 4)):
            op = rng.random()
            if op < 0.05 and len(client.held) < 24:
                sid = client.stack.smux.open_stream()
                client.held[sid], client.read[sid] = bytearray(), bytearray()
                continue
            side = rng.choice(sides)
            sids = open_streams(side)
            if not sids:
                continue
            sid = rng.choice(sids)
            data = os.urandom(rng.choice([1, 100, 3000, 9000])) * rng.randrange(1, 3)
            if op < 0.55 and sid not in side.shut:
                n = side.stack.smux.send(sid, data)
                side.sent.setdefault(sid, bytearray()).extend(data[:n])
            elif op < 0.85:
                side.take(sid, rng.choice([1, 500, 10_000, 100_000]))
            elif op < 0.95 and sid not in side.shut:
                if op < 0.9:            # data and FIN in the same batch of frames
                    n = side.stack.smux.send(sid, data)
                    side.sent.setdefault(sid, bytearray()).extend(data[:n])
                side.stack.smux.shutdown(sid)
                side.shut.add(sid)
            elif op >= 0.97:
                side.stack.smux.close_stream(sid)
                side.closed.add(sid)
                side.shut.add(sid)
        for s in sides:
            s.pump(net.now)
        net.step()
        for s in sides:
            s.pump(net.now)
        check(client, server)
        check(server, client)

    # the end: everybody shuts down and reads everything; every stream that is still open on
    # a side gets EOF (the peer shut it down or closed it: FIN either way, after its data)
    for s in sides:
        for sid in open_streams(s):
            if sid not in s.shut:
                s.stack.smux.shutdown(sid)
                s.shut.add(sid)
    for _ in range(20_000):
        if all(sid in s.eof for s in sides for sid in open_streams(s)):
            break
        for s in sides:
            for sid in open_streams(s):
                if s.held[sid]:
                    s.take(sid, len(s.held[sid]))
            s.pump(net.now)
        net.step()
        for s in sides:
            s.pump(net.now)
    for me, peer in ((client, server), (server, client)):
        check(me, peer)
        for sid in open_streams(me):
            assert sid in me.eof, f"stream {sid}: no EOF after the peer's FIN"
            assert bytes(me.read[sid]) == bytes(peer.sent.get(sid, b""))
    assert client.stack.error is None and server.stack.error is None
    assert server.stack.framing == framing
    assert sum(len(v) for v in client.sent.values()) > 100_000
    assert sum(len(v) for v in server.sent.values()) > 100_000
    assert net.stats[0].dropped + net.stats[1].dropped > 0     # the link really lost some


def test_bucket_accounts_for_bytes_held_after_both_fins():
    """kcptun.md §4.7: the session bucket is what bounds a receiver's memory: tokens come back
    when the application reads bytes, or when a stream is closed locally and drops them. A
    stream that ended by FIN both ways (a half-close) still holds its unread bytes for the
    application (EOF after the data, kcptun.md §4.5) until they are read."""
    kw = dict(max_receive_buffer=100_000, max_stream_buffer=50_000)
    c = SmuxStack(1, False, client=True, **kw)
    s = SmuxStack(1, False, client=False, **kw)
    sid = c.smux.open_stream()
    c.smux.shutdown(sid)                        # request sent, then FIN: HTTP/1.0 style
    s.receive(b"".join(c.writes()), now=0)
    s.smux.send(sid, b"r" * 60_000)             # the reply, then FIN
    s.smux.shutdown(sid)
    events = c.receive(b"".join(s.writes()), now=0)
    assert data_of(events, sid) == b"r" * 60_000
    assert StreamEnded(sid, True) in events
    assert c.smux.bucket == 100_000 - 60_000    # nothing read yet: still held
    c.smux.consumed(sid, 60_000)                # the application reads it all
    assert c.smux.bucket == 100_000
