"""The sans-IO layers compose as kcptun stacks them: smux over snappy over a KCP stream-mode
session (docs/kcptun.md §2), over a lossy, reordering in-memory link with a simulated clock.

Each smux frame becomes one snappy chunk handed to KCP in one write (issue 11, item 2); the
receiver feeds whatever KCP returns (arbitrary splits) through the snappy decoder into the smux
parser. Expected: every stream's bytes arrive intact (sha256) in both versions, with and
without compression, and a half-closed stream still gets its reply (kcptun.md §4.5).
"""
from __future__ import annotations

import hashlib
import random

import pytest

from kcpgo.codec.snappy import SnappyDecoder, SnappyEncoder
from kcpgo.sansio import Connection, LinkProfile, Network
from kcpgo.sansio.smux import SmuxSession, StreamData, StreamEnded, StreamOpened
from kcpgo.snmp import Snmp


class End:
    """One side: a KCP Connection carrying a smux session, optionally snappy-framed."""

    def __init__(self, conn: Connection, smux: SmuxSession, compression: bool) -> None:
        self.conn, self.smux = conn, smux
        self.enc = SnappyEncoder() if compression else None
        self.dec = SnappyDecoder() if compression else None
        self.events: list = []

    def pump_out(self) -> None:
        for frame in self.smux.data_to_send():
            self.conn.send(self.enc.encode(frame) if self.enc else frame)

    def pump_in(self, now: int) -> None:
        while not self.smux.receive_paused:
            data = self.conn.recv()
            if data is None:
                return
            if self.dec is not None:
                data = self.dec.feed(data)
            if data:
                self.events.extend(self.smux.receive(data, now))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("compression", [True, False])
def test_streams_over_snappy_over_kcp_over_a_lossy_link(version, compression):
    rng = random.Random(version * 10 + compression)
    conns = [Connection(0x5151, stream=True, mode="fast3", window=(256, 256), snmp=Snmp())
             for _ in range(2)]
    link = LinkProfile(loss=0.05, delay=10, jitter=5)
    net = Network(conns[0], conns[1], seed=7, profile=link)
    client = End(conns[0], SmuxSession(version, client=True), compression)
    server = End(conns[1], SmuxSession(version, client=False), compression)

    # Five streams, 20-200 KB each (text-like, so snappy compresses), written in random pieces.
    payloads = {}
    for _ in range(5):
        sid = client.smux.open_stream()
        words = [rng.choice([b"alpha ", b"beta ", b"gamma ", bytes([rng.randrange(256)])])
                 for _ in range(rng.randrange(4000, 40000))]
        payloads[sid] = b"".join(words)
    offsets = dict.fromkeys(payloads, 0)
    received: dict = {}
    ended: set = set()
    replies: dict = {}

    while net.now < 120_000 and (len(ended) < len(payloads) or len(replies) < len(payloads)):
        for sid, data in payloads.items():
            off = offsets[sid]
            if off < len(data):
                piece = data[off:off + rng.randrange(1, 9000)]
                n = client.smux.send(sid, piece)
                offsets[sid] += n
                if offsets[sid] == len(data):
                    client.smux.shutdown(sid)          # half-close: FIN, keep reading
        client.pump_out()
        server.pump_out()
        net.step()
        client.pump_in(net.now)
        server.pump_in(net.now)
        for ev in server.events:
            if isinstance(ev, StreamData):
                received.setdefault(ev.sid, bytearray()).extend(ev.data)
                server.smux.consumed(ev.sid, len(ev.data))
            elif isinstance(ev, StreamEnded):
                ended.add(ev.sid)
                # reply after the client's FIN: the digest of what arrived, then FIN
                server.smux.send(ev.sid, hashlib.sha256(bytes(received.get(ev.sid, b""))).digest())
                server.smux.shutdown(ev.sid)
            else:
                assert isinstance(ev, StreamOpened), ev
        server.events.clear()
        for ev in client.events:
            if isinstance(ev, StreamData):
                replies.setdefault(ev.sid, bytearray()).extend(ev.data)
                client.smux.consumed(ev.sid, len(ev.data))
        client.events.clear()

    assert {sid: bytes(d) for sid, d in received.items()} == payloads
    for sid, data in payloads.items():
        assert bytes(replies[sid]) == hashlib.sha256(data).digest(), sid
    assert net.stats[0].dropped > 0            # the link really lost datagrams
