"""The receive path's shortcuts: ``Connection.has_output`` (the runtime's check after a batch)
and ``Channel.on_batch``'s data-before-parity order (tools/bench_rx.py measures both).

The channel runs on a stand-in endpoint and runtime (no socket, no hub): ``on_batch`` is driven
directly with datagrams from a sans-IO peer.
"""
from __future__ import annotations

import random

from kcpgo import crypt
from kcpgo.runtime.channel import Channel
from kcpgo.runtime.clock import now_ms
from kcpgo.sansio import Connection
from kcpgo.sansio.fec import TYPE_PARITY
from kcpgo.snmp import Snmp

KEY = crypt.derive_key("rx path")
PEER = ("192.0.2.1", 4000)


def pair(fec=(10, 3)):
    ends = [Connection(7, crypt=crypt.new("aes", KEY), data_shards=fec[0], parity_shards=fec[1],
                       mode="fast3", snmp=Snmp(), stream=True) for _ in range(2)]
    return ends[0], ends[1]


# ---------------------------------------------------------------------------- has_output

def test_has_output_false_means_datagrams_to_send_has_nothing():
    """Over a lossy exchange with retransmissions, every has_output(now) that is False is
    followed by datagrams_to_send(now, acks=False) returning nothing."""
    rnd = random.Random(1)
    a, b = pair()
    now = 0
    checked = {False: 0, True: 0}
    sent = 0
    for _ in range(3000):
        if sent < 400_000 and a.writable():
            sent += a.send(rnd.randbytes(rnd.randint(1, 3000)))
        for src, dst in ((a, b), (b, a)):
            for conn in (src,):
                has = conn.has_output(now)
                out = conn.datagrams_to_send(now, acks=False)
                checked[has] += 1
                if not has:
                    assert out == []
                for d in out + conn.flush_acks(now):
                    if rnd.random() > 0.1:
                        dst.receive_datagram(d, now)
        while b.recv_stream(65536):
            pass
        now += rnd.choice((0, 1, 1, 5, 30))
    assert checked[False] > 100 and checked[True] > 100


# ---------------------------------------------------------------------------- data first

class _Timer:
    at = None
    pending = False

    def schedule(self, deadline):
        pass

    def cancel(self):
        pass

    def close(self):
        pass


class _Runtime:
    io_thread = False
    forked = False

    def __init__(self):
        self.soon = []

    def timer(self, callback):
        return _Timer()

    def call_soon(self, callback):
        self.soon.append(callback)


class _Endpoint:
    closed = False
    send_drops = 0
    icmp = None             # a client endpoint's ICMP reports (D57): none in memory

    def __init__(self):
        self.runtime = _Runtime()
        self.sent = []

    def send_many(self, datagrams, address, local=None):
        self.sent.extend(datagrams)

    def poll(self):
        pass


def client(peer_conn):
    conn = pair()[0]
    chan = Channel(conn, _Endpoint(), PEER, on_release=lambda _: None)
    seen = []

    def on_update():
        # what the owner finds when told: data ready, and parity fed so far
        data = b""
        while conn.readable():
            data += conn.recv_stream(65536)
        seen.append((data, conn.snmp.FECParityShards))
    chan.on_update = on_update
    return chan, conn, seen


def burst(conn, data, now):
    """A batch of what ``conn`` sends for one write of ``data``, as the reader hands it over."""
    conn.send(data)
    return [(d, PEER) for d in conn.datagrams_to_send(now)]


def test_reply_is_told_before_its_groups_parity_is_fed():
    server, _ = pair()
    chan, conn, seen = client(server)
    now = now_ms()
    for i in range(9):                          # 9 data shards of group 0, one batch each
        chan.on_batch(burst(server, b"x%d" % i, now), now)
    assert chan.heard and conn.snmp.FECParityShards == 0
    seen.clear()
    batch = burst(server, b"reply", now)       # the 10th data shard, then 3 parity
    assert len(batch) == 4 and [conn.codec.open(d)[4] == TYPE_PARITY for d, _ in batch] == \
        [False, True, True, True]
    chan.on_batch(batch, now)
    assert seen[0] == (b"reply", 0)             # told before any parity was fed
    assert conn.snmp.FECParityShards == 3
    assert all(data == b"" for data, _ in seen[1:])


def test_parity_that_recovers_a_lost_shard_is_still_fed_and_told():
    server, _ = pair()
    chan, conn, seen = client(server)
    now = now_ms()
    chan.on_batch(burst(server, b"m0;", now), now)
    seen.clear()
    wire = []
    for i in range(1, 10):
        wire += burst(server, b"m%d;" % i, now)
    assert len(wire) == 12                      # data shards 1..9 of group 0, its parity
    del wire[2]                                 # data shard 3 is lost
    chan.on_batch(wire, now)                    # shards 4..9 wait in KCP for 3
    assert seen[0] == (b"m1;m2;", 0)            # told of the data first
    assert seen[-1] == (b"m3;m4;m5;m6;m7;m8;m9;", 3)    # then of what the parity rebuilt
    assert conn.snmp.FECRecovered == 1


def test_without_parity_in_the_batch_the_owner_is_told_once():
    server, _ = pair()
    chan, conn, seen = client(server)
    now = now_ms()
    chan.on_batch(burst(server, b"a", now), now)
    seen.clear()
    chan.on_batch(burst(server, b"b", now) + burst(server, b"c", now), now)
    assert [data for data, _ in seen] == [b"bc"]


def test_a_session_already_readable_is_not_told_early():
    """An owner that does not read (flow control) is told once per batch, not also before
    the parity."""
    server, _ = pair()
    chan, conn, _ = client(server)
    calls = []
    chan.on_update = lambda: calls.append(conn.snmp.FECParityShards)
    now = now_ms()
    for i in range(9):
        chan.on_batch(burst(server, b"y", now), now)
    calls.clear()
    chan.on_batch(burst(server, b"z", now), now)    # completes the group: 3 parity follow
    assert calls == [3]


def test_receive_datagram_can_hold_parity_back():
    """``receive_datagram(..., parity=list)``: parity is opened and handed back, data is fed;
    feeding the parity later with receive_payload counts and drops it as usual."""
    a, b = pair()
    wire = []
    for i in range(10):
        a.send(b"%d" % i)
        wire += a.datagrams_to_send(0)
    held = []
    assert all(b.receive_datagram(d, 0, held) for d in wire)
    assert len(held) == 3 and all(p[4] == TYPE_PARITY for p in held)
    assert b.snmp.FECParityShards == 0 and b.recv_stream(100) == b"0123456789"
    for p in held:
        b.receive_payload(p, 0)
    assert b.snmp.FECParityShards == 3 and b.codec.fec_decoder._count == 0
    bad = wire[0][:-1] + bytes([wire[0][-1] ^ 1])       # fails the CRC check
    assert not b.receive_datagram(bad, 0, held) and len(held) == 3
