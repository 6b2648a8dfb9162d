"""SNMP-style counters with kcp-go's names (docs/protocol.md §5.11, v5.6.1 field order).

kcp-go keeps one global ``DefaultSnmp``; kcpgo does the same (:data:`DEFAULT_SNMP`) but every
component also accepts its own :class:`Snmp`, so tests and embedders can count in isolation.
Counters are plain integer attributes: hot paths add to them once per batch, never per byte.
"""
from __future__ import annotations

from typing import Dict, List

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


class Snmp:
    """A set of kcp-go counters. All fields start at zero."""

    __slots__ = FIELDS

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Set every counter to zero."""
        for name in FIELDS:
            setattr(self, name, 0)

    @staticmethod
    def header() -> List[str]:
        """Field names in kcp-go's order."""
        return list(FIELDS)

    def to_list(self) -> List[str]:
        """Values as decimal strings in header order (kcp-go ``ToSlice``)."""
        return [str(getattr(self, name)) for name in FIELDS]

    def snapshot(self) -> Dict[str, int]:
        """A point-in-time copy as a dict."""
        return {name: getattr(self, name) for name in FIELDS}

    def copy(self) -> "Snmp":
        """An independent copy (kcp-go ``Copy``)."""
        other = Snmp()
        for name in FIELDS:
            setattr(other, name, getattr(self, name))
        return other

    def __repr__(self) -> str:
        nonzero = ", ".join(f"{k}={v}" for k, v in self.snapshot().items() if v)
        return f"Snmp({nonzero})"


#: Process-wide counters, the equivalent of kcp-go's ``DefaultSnmp``.
DEFAULT_SNMP = Snmp()
