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

import struct
from enum import IntEnum
from typing import TYPE_CHECKING, Callable, Dict, Generic, Hashable, List, Optional, Tuple, TypeVar

from ..snmp import DEFAULT_SNMP, Snmp
from .fec import FEC_HEADER_SIZE_PLUS2, TYPE_DATA, TYPE_PARITY
from .packet import PacketCodec
from .wire import OVERHEAD, SN_OFFSET

if TYPE_CHECKING:  # pragma: no cover
    from ..codec.crypt import BlockCrypt

__all__ = ["Route", "Demux", "Backlog", "ACCEPT_BACKLOG"]

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


class Demux:
    """Opens datagrams with the listener's cipher and applies the §5.2 rules."""

    def __init__(self, crypt: Optional["BlockCrypt"] = None, snmp: Optional[Snmp] = None) -> None:
        self.codec = PacketCodec(crypt, snmp=snmp if snmp is not None else DEFAULT_SNMP)
        self._open = self.codec.open

    def route(self, wire: bytes, current: Optional[int], accepting: bool
              ) -> Tuple[Route, Optional[bytes], int]:
        """``(route, payload, conv)`` for one datagram from an address whose session has conv
        ``current`` (``None``: no session). ``payload`` is the opened datagram for
        ``Connection.receive_payload`` (``None`` when dropped for its checksum); ``conv`` the
        conv a new session must take (0 unless CREATE/REPLACE)."""
        # Runs once per datagram a listener receives: the headers are read in place (§2.2:
        # the KCP datagram starts after the 8-byte FEC header in a data shard; parity has none).
        payload = self._open(wire)
        if payload is None:
            return _DROP_CHECKSUM
        flag = payload[4] | (payload[5] << 8)
        if flag == TYPE_DATA:
            off = FEC_HEADER_SIZE_PLUS2
            has_conv = len(payload) >= FEC_HEADER_SIZE_PLUS2 + OVERHEAD
        else:
            off = 0
            has_conv = flag != TYPE_PARITY        # open() guarantees a whole header
        if current is not None:
            if not has_conv:
                return _FEED, payload, 0
            conv = _u32(payload, off)[0]
            if conv == current:
                return _FEED, payload, 0
            if _u32(payload, off + SN_OFFSET)[0] != 0:
                return _DROP_CONV_MISMATCH, payload, 0
            return _REPLACE, payload, conv
        if not has_conv:
            return _DROP_NO_CONV, payload, 0
        if not accepting:
            return _DROP_NOT_ACCEPTING, payload, 0
        return _CREATE, payload, _u32(payload, off)[0]


_FEED, _REPLACE, _CREATE = Route.FEED, Route.REPLACE, Route.CREATE
_DROP_CHECKSUM = (Route.DROP_CHECKSUM, None, 0)
_DROP_NO_CONV, _DROP_CONV_MISMATCH = Route.DROP_NO_CONV, Route.DROP_CONV_MISMATCH
_DROP_NOT_ACCEPTING = Route.DROP_NOT_ACCEPTING
_u32 = struct.Struct("<I").unpack_from


T = TypeVar("T")


class Backlog(Generic[T]):
    """Sessions created but not yet accepted, at most ``limit`` (kcpgo's half-open cap), in
    arrival order; every operation but eviction is O(1) (a listener under a flood releases
    thousands of sessions a second).

    :meth:`make_room` evicts waiting items that ``failed(item)`` reports as failed (closing
    each with ``close(item)``) when the backlog is full; it counts them in :attr:`evicted`.
    Items are found by a key (``push(item, key)``; the item itself by default).
    """

    def __init__(self, limit: int = ACCEPT_BACKLOG) -> None:
        if limit < 1:
            raise ValueError("backlog must be >= 1")
        self.limit = limit
        self._items: Dict[Hashable, T] = {}      # insertion-ordered: the accept order
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> List[T]:
        """The waiting items, oldest first."""
        return list(self._items.values())

    def push(self, item: T, key: Optional[Hashable] = None) -> None:
        self._items[item if key is None else key] = item

    def pop(self) -> T:
        """The oldest item (``KeyError`` if empty)."""
        items = self._items
        return items.pop(next(iter(items)))

    def discard(self, key: Hashable) -> None:
        """Forget the item pushed with ``key``, if it is still waiting."""
        self._items.pop(key, None)

    def make_room(self, failed: Callable[[T], bool], close: Callable[[T], None]) -> bool:
        """Whether one more item fits, after evicting failed ones if the backlog is full.
        ``close`` runs after the evicted items have left the backlog."""
        items = self._items
        if len(items) < self.limit:
            return True
        gone = [(k, s) for k, s in items.items() if failed(s)]
        for k, _ in gone:
            del items[k]
        self.evicted += len(gone)
        for _, s in gone:
            close(s)
        return len(items) < self.limit
