"""kcpgo.Snmp: kcp-go's counter names and CSV columns, 5.6.1's and the latest's (issue 13
item 4; docs/protocol.md §5.11).

The expected lists are copied from the Go sources, named at each list: Debian's kcp-go 5.6.1
(``/usr/share/gocode/src/github.com/xtaci/kcp-go/snmp.go``, ``Header()``) and kcp-go v5.6.72
(``/work/shared/peers/kcp-go-latest/kcp-go-v5.6.72.tar.gz``, ``kcp-go/snmp.go``, ``Header()``
and ``ToSlice()``). When the tarball is there, one test also reads its ``Header()`` to check
the hard-coded list against it.
"""
from __future__ import annotations

import os
import re
import tarfile

import pytest

from kcpgo.sansio.connection import Connection
from kcpgo.sansio.fec import FECDecoder, FECEncoder
from kcpgo.snmp import COUNTERS, LATEST_ONLY, VERSIONS, Snmp

#: kcp-go 5.6.1 snmp.go ``Header()`` (Debian golang-github-xtaci-kcp-dev 5.6.1).
HEADER_561 = [
    "BytesSent", "BytesReceived", "MaxConn", "ActiveOpens", "PassiveOpens", "CurrEstab",
    "InErrs", "InCsumErrors", "KCPInErrors", "InPkts", "OutPkts", "InSegs", "OutSegs",
    "InBytes", "OutBytes", "RetransSegs", "FastRetransSegs", "EarlyRetransSegs", "LostSegs",
    "RepeatSegs", "FECParityShards", "FECErrs", "FECRecovered", "FECShortShards",
]
#: kcp-go v5.6.72 snmp.go ``Header()`` (30 names).
HEADER_LATEST = [
    "BytesSent", "BytesReceived", "MaxConn", "ActiveOpens", "PassiveOpens", "CurrEstab",
    "InErrs", "InCsumErrors", "KCPInErrors", "InPkts", "OutPkts", "InSegs", "OutSegs",
    "InBytes", "OutBytes", "RetransSegs", "FastRetransSegs", "EarlyRetransSegs", "LostSegs",
    "RepeatSegs", "FECFullShards", "FECParityShards", "FECErrs", "FECRecovered", "FECShardSet",
    "FECShardMin", "RingBufferSndQueue", "RingBufferRcvQueue", "RingBufferSndBuffer",
    "OOBPackets",
]
#: kcp-go v5.6.72 snmp.go ``ToSlice()``: the struct field of each column, in order (the same
#: as the header but for ``FECFullShardSet`` under the column ``FECFullShards``).
FIELDS_LATEST = HEADER_LATEST[:20] + ["FECFullShardSet"] + HEADER_LATEST[21:]
#: Fields new in the latest's ``Snmp`` struct (KCP-GO-LATEST.md, "SNMP counters").
NEW_FIELDS = ["FECFullShardSet", "FECShardSet", "FECShardMin", "RingBufferSndQueue",
              "RingBufferRcvQueue", "RingBufferSndBuffer", "OOBPackets"]
TARBALL = "/work/shared/peers/kcp-go-latest/kcp-go-v5.6.72.tar.gz"


def test_every_counter_is_annotated_for_type_checkers():
    """``Snmp`` declares each counter as an ``int`` annotation (its ``__slots__`` alone leave
    ``snmp.OutPkts`` unknown to mypy; issue 14's ``mypy --strict`` program reads counters).
    Expected: the annotations are exactly :data:`kcpgo.snmp.COUNTERS`, in order, all int."""
    from kcpgo.snmp import COUNTERS
    import typing
    hints = typing.get_type_hints(Snmp)
    assert tuple(Snmp.__annotations__) == COUNTERS
    assert set(hints.values()) == {int}


def test_default_header_is_561():
    """kcptun's --snmplog files and every existing caller keep kcp-go 5.6.1's 24 columns."""
    assert Snmp.header() == HEADER_561
    assert Snmp.header("5.6.1") == HEADER_561
    assert len(Snmp().to_list()) == 24 and len(Snmp().to_list("5.6.1")) == 24


def test_latest_header_is_kcp_go_v5_6_72():
    assert Snmp.header("latest") == HEADER_LATEST
    assert len(Snmp().to_list("latest")) == 30
    assert VERSIONS == ("5.6.1", "latest")


@pytest.mark.skipif(not os.path.exists(TARBALL), reason=f"{TARBALL} not present")
def test_hardcoded_latest_header_matches_the_bundled_source():
    """The list above, read again from ``Header()`` in the bundled snmp.go."""
    with tarfile.open(TARBALL) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/snmp.go"))
        source = tar.extractfile(member).read().decode()
    body = re.search(r"func \(s \*Snmp\) Header\(\) \[\]string \{(.*?)\n\}", source, re.S)
    assert re.findall(r'"(\w+)"', body.group(1)) == HEADER_LATEST
    slice_ = re.search(r"func \(s \*Snmp\) ToSlice\(\) \[\]string \{(.*?)\n\}", source, re.S)
    assert re.findall(r"snmp\.(\w+), 10\)", slice_.group(1)) == FIELDS_LATEST


def test_unknown_version_raises_value_error():
    for bad in ("5.6.72", "", None, 2):
        with pytest.raises(ValueError, match="valid: 5.6.1, latest"):
            Snmp.header(bad)
        with pytest.raises(ValueError, match="valid: 5.6.1, latest"):
            Snmp().to_list(bad)


def test_to_list_puts_each_counter_under_its_column():
    """Every counter a distinct value: column i of to_list(v) is the counter header(v)[i]
    names (FECFullShards is the field FECFullShardSet, as in kcp-go's ToSlice)."""
    s = Snmp()
    for i, name in enumerate(COUNTERS):
        setattr(s, name, 1000 + i)
    for version, fields in (("5.6.1", HEADER_561), ("latest", FIELDS_LATEST)):
        assert s.to_list(version) == [str(getattr(s, f)) for f in fields]
    assert "FECShortShards" not in Snmp.header("latest")      # removed in the latest


def test_new_counters_exist_start_at_zero_and_are_copied_and_reset():
    """kcp-go ``Copy``/``Reset`` cover every field; so do kcpgo's, the new ones included."""
    assert list(LATEST_ONLY) == NEW_FIELDS
    s = Snmp()
    assert all(getattr(s, f) == 0 for f in NEW_FIELDS)
    for i, name in enumerate(COUNTERS):
        setattr(s, name, i + 1)
    c = s.copy()
    assert c.snapshot() == s.snapshot() and c is not s
    assert set(s.snapshot()) == set(HEADER_561) | set(NEW_FIELDS)
    c.OOBPackets += 1
    assert s.OOBPackets == len(COUNTERS)                     # independent
    s.reset()
    assert set(s.snapshot().values()) == {0}
    with pytest.raises(AttributeError):
        s.FECFullShards = 1                                   # a column name, not a field


# ---------------------------------------------------------------------- where they are counted


def _group(enc, k):
    """One FEC group of ``k`` KCP-sized payloads: its data and parity packets."""
    out = []
    for i in range(k):
        out += enc.encode(bytes([i]) * (30 + i))
    return out[:k], out[k:]


def test_fec_decoder_counts_full_shard_sets_and_gauges():
    """kcp-go latest fec.go: FECFullShardSet += 1 when a shard set's data shards all arrived
    (no recovery), FECShardSet = shard sets held, FECShardMin = the newest shard set's id
    (seqid // (data + parity)). Three groups of 10/3: the first two complete (full), the third
    loses one data shard and is rebuilt from parity (not full)."""
    snmp = Snmp()
    enc, dec = FECEncoder(10, 3), FECDecoder(10, 3, snmp)
    now = 0
    recovered = []
    for g in range(3):
        data, parity = _group(enc, 10)
        if g == 2:
            data = data[1:]                                     # lose the first data shard
        for p in data + parity:
            recovered += dec.decode(p, now)
    assert snmp.FECFullShardSet == 2
    assert recovered == [bytes([0]) * 30]
    assert snmp.FECShardMin == 2                                # seqids 26..38: set 2
    # kcpgo's decoder drops a group once it is complete or rebuilt, and the parity that comes
    # after (all 3 of each full group, the last 2 of the rebuilt one) with it (FECDecoder: a
    # finished group; kcp-go latest drops shards of sets up to its minShardId): none held
    assert snmp.FECShardSet == 0 and snmp.FECParityShards == 9
    data, _ = _group(enc, 10)
    dec.decode(data[0], now)                                    # a new group: set 3
    assert snmp.FECShardMin == 3 and snmp.FECShardSet == 1


def test_ring_buffer_gauges_are_the_kcp_queue_lengths():
    """kcp-go latest kcp.go ``flush`` stores len(snd_queue), len(rcv_queue) and len(snd_buf)
    (segments) in RingBufferSndQueue/RcvQueue/SndBuffer at its end. 20000 bytes are 15
    segments of mss 1376; a send window of 4 puts 4 in flight and keeps 11 queued; the
    receiver holds the 4 in its receive queue until the application reads them."""
    sa, sb = Snmp(), Snmp()
    a = Connection(1, snmp=sa, window=(4, 32), mode="fast3")    # nc=1: the window alone
    b = Connection(1, snmp=sb, mode="fast3")
    a.send(b"x" * 20_000)
    out = a.flush(0)
    assert (sa.RingBufferSndQueue, sa.RingBufferSndBuffer) == (11, 4)
    for d in out:
        b.receive_datagram(d, 1)
    b.flush(1)
    assert sb.RingBufferRcvQueue == 4
    while b.recv() is not None:
        pass
    b.flush(2)
    assert sb.RingBufferRcvQueue == 0


def test_snapshot_repr_lists_new_counters():
    s = Snmp()
    s.OOBPackets = 3
    assert "OOBPackets=3" in repr(s)
    assert s.snapshot()["OOBPackets"] == 3
