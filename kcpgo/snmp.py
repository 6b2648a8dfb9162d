"""SNMP-style counters with kcp-go's names (docs/protocol.md §5.11), in the column layouts of
kcp-go 5.6.1 (24 columns, the default) and of the latest kcp-go (v5.6.72, 30 columns).

kcp-go keeps one global ``DefaultSnmp``; kcpgo does the same (:data:`DEFAULT_SNMP`) but every
component also accepts its own :class:`Snmp`, so tests and embedders can count in isolation.
Counters are plain integer attributes: hot paths add to them once per batch, never per byte.

One :class:`Snmp` holds the counters of both versions (:data:`COUNTERS`); ``header(version)``
and ``to_list(version)`` pick the columns. The latest kcp-go (``snmp.go``) dropped
``FECShortShards`` and added seven counters (:data:`LATEST_ONLY`); one of them is named
differently in its header: attribute ``FECFullShardSet``, column ``FECFullShards``. kcpgo
counts them where it has the event:

* ``FECFullShardSet``: FEC groups whose data shards all arrived (nothing to recover), counted
  by :class:`~kcpgo.sansio.fec.FECDecoder` when the last one arrives (kcp-go latest: when a
  shard set reaches ``dataShards`` packets and all are data; the same event);
* ``FECShardSet`` (gauge): groups the decoder holds now (kcp-go latest: its shard-set map);
* ``FECShardMin`` (gauge): despite the name, the shard-set id (``seqid // (data + parity)``)
  of the newest group the decoder opened, as kcp-go latest stores ``newestShardId`` there;
* ``RingBufferSndQueue``, ``RingBufferRcvQueue``, ``RingBufferSndBuffer`` (gauges): segments
  in KCP's send queue, receive queue and send buffer, stored at the end of each full KCP
  flush (``kcpgo.sansio.kcp_output``), as kcp-go latest's flush does (it also runs one every
  interval when idle; kcpgo's idle sessions do not flush, so the values are the last busy
  ones);
* ``OOBPackets``: out-of-band packets received (docs/protocol.md §2.2(e)).

The gauges are stored, not added, by whichever session or decoder ran last: with several
sessions on one :class:`Snmp` (the global one) they describe one of them, as in kcp-go.
The columns both versions share keep kcpgo's one meaning in both layouts: ``FECErrs`` and
``FECRecovered`` are counted as 5.6.1 counts them (kcpgo's decoder is 5.6.1's, §2.6.1), not
as the latest's Reed-Solomon failures and rebuilt shards (§5.11).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

#: Header order of kcp-go 5.6.1 ``Snmp.Header()``.
FIELDS: tuple = (
    "BytesSent",         # Write returned: bytes accepted from the user
    "BytesReceived",     # Read returned: bytes handed to the user
    "MaxConn",           # high-water mark of CurrEstab
    "ActiveOpens",       # client sessions created
    "PassiveOpens",      # listener sessions created
    "CurrEstab",         # sessions open now
    "InErrs",            # client: datagram from an unexpected source (and other dropped input)
    "InCsumErrors",      # CRC32 mismatch / AEAD authentication failure
    "KCPInErrors",       # KCP input returned an error
    "InPkts",            # datagrams reaching the FEC/KCP demux
    "OutPkts",           # datagrams written
    "InSegs",            # KCP segments parsed
    "OutSegs",           # KCP segments encoded (ACK, WASK, WINS, PUSH incl. retransmissions)
    "InBytes",           # plaintext bytes reaching the demux (after the crypto header)
    "OutBytes",          # on-wire bytes written
    "RetransSegs",       # fast + early + RTO retransmissions
    "FastRetransSegs",   # fast retransmissions
    "EarlyRetransSegs",  # early retransmissions
    "LostSegs",          # RTO retransmissions
    "RepeatSegs",        # duplicate / already delivered / out-of-window PUSH
    "FECParityShards",   # parity datagrams received
    "FECErrs",           # recovered shard with an invalid size field
    "FECRecovered",      # recovered shards accepted by KCP
    "FECShortShards",    # data shard evicted from the full FEC receive queue
)

#: Counters of the latest kcp-go that 5.6.1 does not have (module docstring for what each is).
LATEST_ONLY: Tuple[str, ...] = (
    "FECFullShardSet",      # FEC groups complete without recovery (header: FECFullShards)
    "FECShardSet",          # gauge: FEC groups held by the decoder
    "FECShardMin",          # gauge: shard-set id of the newest FEC group (kcp-go's misnomer)
    "RingBufferSndQueue",   # gauge: segments in KCP's send queue
    "RingBufferRcvQueue",   # gauge: segments in KCP's receive queue
    "RingBufferSndBuffer",  # gauge: segments in KCP's send buffer (in flight)
    "OOBPackets",           # out-of-band packets received
)

#: Every counter an :class:`Snmp` holds (attribute names): 5.6.1's, then the latest's new ones.
COUNTERS: Tuple[str, ...] = FIELDS + LATEST_ONLY

#: The column layouts :meth:`Snmp.header` knows; the first is the default.
VERSIONS: Tuple[str, ...] = ("5.6.1", "latest")

#: Attribute of each column of the latest kcp-go's ``Header()``/``ToSlice()`` (v5.6.72
#: ``snmp.go``), in its order: 5.6.1's first 20, then the FEC and ring-buffer counters.
_LATEST_ATTRS: Tuple[str, ...] = FIELDS[:20] + (
    "FECFullShardSet", "FECParityShards", "FECErrs", "FECRecovered", "FECShardSet",
    "FECShardMin", "RingBufferSndQueue", "RingBufferRcvQueue", "RingBufferSndBuffer",
    "OOBPackets",
)
#: Column names where the latest's header differs from the attribute name.
_LATEST_RENAMED = {"FECFullShardSet": "FECFullShards"}

_COLUMNS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    # version: (attributes in column order, column names)
    "5.6.1": (FIELDS, FIELDS),
    "latest": (_LATEST_ATTRS, tuple(_LATEST_RENAMED.get(a, a) for a in _LATEST_ATTRS)),
}


def _layout(version: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    try:
        return _COLUMNS[version]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kcp-go SNMP version {version!r}; valid: "
                         f"{', '.join(VERSIONS)}") from None


class Snmp:
    """A set of kcp-go counters (:data:`COUNTERS`, both versions' names). All start at zero."""

    __slots__ = COUNTERS
    # Each counter, for type checkers (a test checks these are COUNTERS, in order):
    BytesSent: int
    BytesReceived: int
    MaxConn: int
    ActiveOpens: int
    PassiveOpens: int
    CurrEstab: int
    InErrs: int
    InCsumErrors: int
    KCPInErrors: int
    InPkts: int
    OutPkts: int
    InSegs: int
    OutSegs: int
    InBytes: int
    OutBytes: int
    RetransSegs: int
    FastRetransSegs: int
    EarlyRetransSegs: int
    LostSegs: int
    RepeatSegs: int
    FECParityShards: int
    FECErrs: int
    FECRecovered: int
    FECShortShards: int
    FECFullShardSet: int
    FECShardSet: int
    FECShardMin: int
    RingBufferSndQueue: int
    RingBufferRcvQueue: int
    RingBufferSndBuffer: int
    OOBPackets: int

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Set every counter to zero (kcp-go ``Reset``), the latest's included."""
        for name in COUNTERS:
            setattr(self, name, 0)

    @staticmethod
    def header(version: str = "5.6.1") -> List[str]:
        """Column names of kcp-go ``Snmp.Header()``: ``"5.6.1"`` (default; 24 names, as
        Debian's kcp-go and kcptun 20210922 write them) or ``"latest"`` (30 names, kcp-go
        v5.6.72 ``snmp.go``, as current kcptun releases write them). ``ValueError`` for
        another version."""
        return list(_layout(version)[1])

    def to_list(self, version: str = "5.6.1") -> List[str]:
        """Values as decimal strings in the order of :meth:`header` of ``version`` (kcp-go
        ``ToSlice``). ``ValueError`` for an unknown version."""
        return [str(getattr(self, name)) for name in _layout(version)[0]]

    def snapshot(self) -> Dict[str, int]:
        """A point-in-time copy of every counter as a dict, by attribute name (5.6.1's
        counters first, then :data:`LATEST_ONLY`)."""
        return {name: getattr(self, name) for name in COUNTERS}

    def copy(self) -> "Snmp":
        """An independent copy of every counter (kcp-go ``Copy``)."""
        other = Snmp()
        for name in COUNTERS:
            setattr(other, name, getattr(self, name))
        return other

    def __repr__(self) -> str:
        nonzero = ", ".join(f"{k}={v}" for k, v in self.snapshot().items() if v)
        return f"Snmp({nonzero})"


#: Process-wide counters, the equivalent of kcp-go's ``DefaultSnmp``.
DEFAULT_SNMP = Snmp()
