"""Every captured kcp-go 5.6.1 datagram through kcpgo's receive pipeline (packets.json).

Decrypt, CRC, FEC header and KCP segments must equal the recorded decode field by field, and
feeding each direction's datagrams to a fresh session must rebuild the exact byte streams.
"""
from __future__ import annotations

import pytest

from kcpgo import crypt as crypt_mod
from kcpgo.sansio import Connection
from kcpgo.sansio import decode_segments
from kcpgo.sansio import PacketCodec
from kcpgo.snmp import Snmp

from tests.support.vectors import h, load

CAPTURES = load("packets.json")["captures"]
IDS = [c["name"] for c in CAPTURES]


def make_crypt(cap):
    if cap["cipher"] is None:
        return None
    # The recorded key is what kcp-go's constructor got; new() slices kcptun's pass the same way.
    return crypt_mod.new(cap["cipher"], h(cap["key"]))


def test_capture_count():
    assert sum(len(c["datagrams"]) for c in CAPTURES) == 176


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_every_datagram_decodes_as_recorded(cap):
    snmp = Snmp()
    codec = PacketCodec(make_crypt(cap), cap["data_shards"], cap["parity_shards"], snmp)
    for dg in cap["datagrams"]:
        wire = h(dg["wire"])
        assert len(wire) == dg["len"] <= 1500
        payload = codec.open(wire)
        assert payload is not None, f"datagram {dg['index']} rejected"
        if dg["crypt"] is not None:
            plain = h(dg["crypt"]["decrypted"])
            assert dg["crypt"]["crc_ok"]
            assert payload == plain[20:]
            assert plain[:16] == h(dg["crypt"]["nonce"])
        fec = dg["fec"]
        if fec is None:
            kcp_bytes = payload
        else:
            seqid = int.from_bytes(payload[0:4], "little")
            ftype = int.from_bytes(payload[4:6], "little")
            assert (seqid, ftype) == (fec["seqid"], fec["type"])
            assert payload[6:] == h(fec["shard"])
            assert seqid % (cap["data_shards"] + cap["parity_shards"]) == fec["index_in_group"]
            if ftype == 0xF2:
                assert dg["kcp"] is None and dg["segments"] == []
                continue
            size = int.from_bytes(payload[6:8], "little")
            assert size == fec["size_field"] == len(payload) - 6
            kcp_bytes = payload[8:size + 6]
        assert kcp_bytes == h(dg["kcp"])
        segs = decode_segments(kcp_bytes)
        assert len(segs) == len(dg["segments"])
        for got, want in zip(segs, dg["segments"]):
            assert (got.conv, got.cmd, got.frg, got.wnd, got.ts, got.sn, got.una) == (
                want["conv"], want["cmd"], want["frg"], want["wnd"], want["ts"], want["sn"],
                want["una"])
            assert len(got.data) == want["len"] and got.data == h(want["data"])
            assert got.conv == cap["conv"]
    assert snmp.InCsumErrors == 0


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_byte_streams_rebuilt_by_receive_pipeline(cap):
    """Each direction's datagrams, fed to a session, yield exactly the messages written."""
    for direction in ("c2s", "s2c"):
        snmp = Snmp()
        conn = Connection(cap["conv"], crypt=make_crypt(cap), data_shards=cap["data_shards"],
                          parity_shards=cap["parity_shards"], snmp=snmp)
        now = 0
        got = []
        for dg in cap["datagrams"]:
            if dg["dir"] != direction:
                continue
            now += 1
            assert conn.receive_datagram(h(dg["wire"]), now)
            while (m := conn.recv()) is not None:
                got.append(m)
        want = [h(x) for m in cap["messages"] if m["dir"] == direction for x in m["data"]]
        assert b"".join(got) == b"".join(want)
        # Message mode and frg 0: every Write chunk (<= mss) is its own message.
        assert all(len(m) <= cap["mss"] for m in got)
        assert snmp.KCPInErrors == 0 and snmp.InCsumErrors == 0


@pytest.mark.parametrize("cap", [c for c in CAPTURES if c["data_shards"]], ids=lambda c: c["name"])
def test_single_loss_recovered_through_pipeline(cap):
    """Drop each data datagram of a complete FEC group in turn: the stream still arrives whole."""
    n = cap["data_shards"] + cap["parity_shards"]
    for direction in ("c2s", "s2c"):
        dgs = [d for d in cap["datagrams"] if d["dir"] == direction]
        groups = {}
        for d in dgs:
            groups.setdefault(d["fec"]["seqid"] // n, []).append(d)
        complete = [g for g in groups.values() if len(g) == n]
        want = b"".join(h(x) for m in cap["messages"] if m["dir"] == direction for x in m["data"])
        for group in complete:
            for victim in group:
                if victim["fec"]["type"] != 0xF1:
                    continue
                snmp = Snmp()
                conn = Connection(cap["conv"], crypt=make_crypt(cap),
                                  data_shards=cap["data_shards"],
                                  parity_shards=cap["parity_shards"], snmp=snmp)
                got = []
                for i, d in enumerate(dgs):
                    if d is not victim:
                        conn.receive_datagram(h(d["wire"]), i)
                    while (m := conn.recv()) is not None:
                        got.append(m)
                assert b"".join(got) == want, f"lost seqid {victim['fec']['seqid']}"
                assert snmp.FECRecovered >= 1


# ---------------------------------------------------------------- batches (PacketCodec.open_many)

BATCH_CIPHERS = ["aes", "tea", "xtea", "twofish", "salsa20", "aes-128-gcm", "none", None]


@pytest.mark.parametrize("name", BATCH_CIPHERS)
def test_open_many_matches_open_one_by_one(name):
    """A batch mixing valid datagrams of many sizes, datagrams shorter than the crypto header,
    corrupted ones (failed check) and valid ones whose plaintext is shorter than a KCP header
    opens to the same payloads as datagram-by-datagram ``open``, with OPEN_FAILED exactly
    where the check failed, and counts the same InCsumErrors (docs/protocol.md §4.1: a
    failed check is counted, a short datagram is not). The batch path decrypts every block
    at once (one OpenSSL call, or the pure ciphers' lanes), the single path one by one."""
    import random
    from kcpgo.sansio.packet import OPEN_FAILED
    rng = random.Random(name or "raw")
    crypt = crypt_mod.new(name, b"k" * 32) if name else None
    sealer = PacketCodec(crypt)
    wires = []
    for i in range(40):
        payload = bytes(rng.randrange(256) for _ in range(rng.choice((24, 25, 100, 1376))))
        wire = sealer.encode_many([payload])[0]
        kind = i % 5
        if kind == 1 and crypt is not None:
            wire = wire[:max(0, crypt.overhead - 1)]             # shorter than its header
        elif kind == 2:
            b = bytearray(wire)
            b[-1] ^= 0x40                                       # corrupted: check fails
            wire = bytes(b)
        elif kind == 3:
            wire = sealer.encode_many([payload[:10]])[0]         # plaintext < KCP header
        wires.append(wire)
    one, many = Snmp(), Snmp()
    a, b = PacketCodec(crypt_mod.new(name, b"k" * 32) if name else None, snmp=one), \
        PacketCodec(crypt_mod.new(name, b"k" * 32) if name else None, snmp=many)
    singles = [a._open(w) for w in wires]
    batch = b.open_many(wires)
    assert batch == singles
    assert one.InCsumErrors == many.InCsumErrors == b.csum_errors
    if name not in (None, "none"):
        assert OPEN_FAILED in batch and None in batch
    assert [a.open(w) for w in wires] == [p or None for p in singles]
