"""Replay of the kcp-go captures through kcpgo's SEND path, byte for byte.

For each capture a kcpgo client and server make the same calls kcp-go's did (the same Writes,
the same settings, flushes at the recorded clock, the recorded nonces): every datagram kcpgo
emits must equal the captured kcp-go datagram exactly: KCP headers, segmentation, ACK
filtering, FEC seqids and parity, CRC and ciphertext.
"""
from __future__ import annotations

from itertools import groupby
from typing import Iterator, List

import pytest

from kcpgo import crypt as crypt_mod
from kcpgo.sansio import Connection
from kcpgo.sansio import CMD_PUSH
from kcpgo.snmp import Snmp

from tests.support.vectors import h, load

CAPTURES = load("packets.json")["captures"]


class RecordedNonces:
    """A cipher whose seal() takes the next nonce kcp-go used instead of a random one."""

    def __init__(self, inner, nonces: Iterator[bytes]) -> None:
        self.inner = inner
        self.nonces = nonces
        self.header_size = inner.header_size
        self.overhead = inner.overhead
        self.open = inner.open

    def seal(self, payload: bytes, nonce=None) -> bytes:
        return self.inner.seal(payload, next(self.nonces))

    def seal_many(self, payloads):
        return [self.seal(p) for p in payloads]


def endpoint(cap, direction: str) -> Connection:
    crypt = None
    if cap["cipher"] is not None:
        nonces = iter([h(d["crypt"]["nonce"]) for d in cap["datagrams"] if d["dir"] == direction])
        crypt = RecordedNonces(crypt_mod.new(cap["cipher"], h(cap["key"])), nonces)
    conn = Connection(cap["conv"], crypt=crypt, data_shards=cap["data_shards"],
                      parity_shards=cap["parity_shards"], mtu=1400, snmp=Snmp())
    conn.kcp.set_nodelay(0, 20, 2, 1)   # the capture's SetNoDelay(0, 20, 2, 1); message mode
    return conn


def chunks(cap, direction: str, mss: int) -> List[bytes]:
    """What each side's Write/WriteBuffers handed to KCP, in order, one entry per buffer."""
    return [h(x) for m in cap["messages"] if m["dir"] == direction for x in m["data"]]


@pytest.mark.parametrize("cap", CAPTURES, ids=[c["name"] for c in CAPTURES])
def test_send_path_reproduces_capture(cap):
    sides = {"c2s": endpoint(cap, "c2s"), "s2c": endpoint(cap, "s2c")}
    other = {"c2s": "s2c", "s2c": "c2s"}
    pending = {d: chunks(cap, d, cap["mss"]) for d in sides}
    queued_segments = {d: 0 for d in sides}
    mss = cap["mss"]
    assert sides["c2s"].kcp.mss == mss
    now = 0
    for direction, run in groupby(cap["datagrams"], key=lambda d: d["dir"]):
        run = list(run)
        conn = sides[direction]
        pushes = [s for d in run for s in d["segments"] if s["cmd"] == CMD_PUSH]
        if pushes:
            now = pushes[0]["ts"]
            # Make the Writes that produced these segments (Write cuts buffers at mss).
            need = max(s["sn"] for s in pushes) + 1
            while queued_segments[direction] < need:
                buf = pending[direction].pop(0)
                conn.send(buf)
                queued_segments[direction] += (len(buf) + mss - 1) // mss
        # The application's reads are timed by the wnd kcp-go advertised (free queue slots).
        wnd = run[0]["segments"][0]["wnd"] if run[0]["segments"] else None
        while wnd is not None and len(conn.kcp.rcv_queue) > conn.kcp.rcv_wnd - wnd:
            conn.recv()
        produced = conn.flush(now)
        assert [p.hex() for p in produced] == [d["wire"] for d in run], \
            f"{cap['name']}: datagrams {[d['index'] for d in run]} differ"
        peer = sides[other[direction]]
        for d in run:
            assert peer.receive_datagram(h(d["wire"]), now)
    assert not pending["c2s"] and not pending["s2c"]
