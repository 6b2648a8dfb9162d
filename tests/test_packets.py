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
