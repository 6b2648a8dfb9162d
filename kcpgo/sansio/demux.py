"""The listener's demultiplexing rules (docs/protocol.md §5.2), sans-IO.

kcp-go's listener keys sessions by the remote address, not by conv. For each datagram that
passes the crypto check (:meth:`Demux.route`), with ``current`` the conv of the session this
address already has (or ``None``):

==========================  ====================================  =========================
datagram                    address has a session                 address has none
==========================  ====================================  =========================
fails the crypto/CRC check  DROP_CHECKSUM (counted InCsumErrors)  DROP_CHECKSUM
FEC parity (no conv)        FEED (the session's FEC decoder)      DROP_NO_CONV
conv == current             FEED                                  n/a
conv != current, sn == 0    REPLACE (the peer restarted)          n/a
conv != current, sn != 0    DROP_CONV_MISMATCH                    n/a
carries a conv              n/a                                   CREATE, if accepting
listener closed             (as above)                            DROP_NOT_ACCEPTING
==========================  ====================================  =========================

REPLACE means: close the old session (also when the listener no longer accepts), then treat
the datagram as from a new address: it creates a session if the listener accepts. CREATE is subject to the accept backlog
(:class:`Backlog`, kcpgo's flood protection; see docs/deviations.md): when it is full, waiting
sessions that already failed are evicted to make room, else the datagram is dropped
(DROP_BACKLOG_FULL). Pure code: bytes in, decisions out.
"""
from __future__ import annotations

from collections import deque
from enum import IntEnum
from typing import TYPE_CHECKING, Callable, Deque, Generic, Optional, Tuple, TypeVar

from ..snmp import DEFAULT_SNMP, Snmp
from .fec import FEC_HEADER_SIZE_PLUS2, TYPE_DATA, TYPE_PARITY
from .packet import PacketCodec
from .wire import peek_conv_sn

if TYPE_CHECKING:  # pragma: no cover
    from ..codec.crypt import BlockCrypt

__all__ = ["Route", "Demux", "Backlog", "ACCEPT_BACKLOG", "kcp_offset"]

#: §2.1 acceptBacklog: sessions created but not yet accepted.
ACCEPT_BACKLOG = 128


class Route(IntEnum):
    """What the listener does with one datagram (see the module's table)."""
    FEED = 1
    REPLACE = 2
    CREATE = 3
    DROP_CHECKSUM = 10
    DROP_NO_CONV = 11
    DROP_CONV_MISMATCH = 12
    DROP_NOT_ACCEPTING = 13
    DROP_BACKLOG_FULL = 14


def kcp_offset(payload: bytes) -> Optional[int]:
    """Where the KCP datagram starts in an opened payload (§2.2): 0 without FEC framing, 8 in
    a FEC data shard; ``None`` for FEC parity, which carries no conv."""
    flag = payload[4] | (payload[5] << 8)
    if flag == TYPE_DATA:
        return FEC_HEADER_SIZE_PLUS2
    if flag == TYPE_PARITY:
        return None
    return 0


class Demux:
    """Opens datagrams with the listener's cipher and applies the §5.2 rules."""

    def __init__(self, crypt: Optional["BlockCrypt"] = None, snmp: Optional[Snmp] = None) -> None:
        self.codec = PacketCodec(crypt, snmp=snmp if snmp is not None else DEFAULT_SNMP)

    def route(self, wire: bytes, current: Optional[int], accepting: bool
              ) -> Tuple[Route, Optional[bytes], int]:
        """``(route, payload, conv)`` for one datagram from an address whose session has conv
        ``current`` (``None``: no session). ``payload`` is the opened datagram for
        ``Connection.receive_payload`` (``None`` when dropped for its checksum); ``conv`` the
        conv a new session must take (0 unless CREATE/REPLACE)."""
        payload = self.codec.open(wire)
        if payload is None:
            return Route.DROP_CHECKSUM, None, 0
        off = kcp_offset(payload)
        head = None if off is None else peek_conv_sn(payload, off)
        if current is not None:
            if head is None or head[0] == current:
                return Route.FEED, payload, 0
            if head[1] != 0:
                return Route.DROP_CONV_MISMATCH, payload, 0
            return Route.REPLACE, payload, head[0]
        if head is None:
            return Route.DROP_NO_CONV, payload, 0
        if not accepting:
            return Route.DROP_NOT_ACCEPTING, payload, 0
        return Route.CREATE, payload, head[0]


T = TypeVar("T")


class Backlog(Generic[T]):
    """Sessions created but not yet accepted, at most ``limit`` (kcpgo's half-open cap).

    :meth:`make_room` evicts waiting items that ``failed(item)`` reports as failed (closing
    each with ``close(item)``) when the backlog is full; it counts them in :attr:`evicted`.
    """

    def __init__(self, limit: int = ACCEPT_BACKLOG) -> None:
        if limit < 1:
            raise ValueError("backlog must be >= 1")
        self.limit = limit
        self.items: Deque[T] = deque()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.items)

    def push(self, item: T) -> None:
        self.items.append(item)

    def pop(self) -> T:
        return self.items.popleft()

    def make_room(self, failed: Callable[[T], bool], close: Callable[[T], None]) -> bool:
        """Whether one more item fits, after evicting failed ones if the backlog is full."""
        items = self.items
        if len(items) < self.limit:
            return True
        if any(failed(s) for s in items):
            keep: Deque[T] = deque()
            for s in items:
                if failed(s):
                    self.evicted += 1
                    close(s)
                else:
                    keep.append(s)
            self.items = keep
        return len(self.items) < self.limit
