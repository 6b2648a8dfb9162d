"""The listener's demultiplexing rules (docs/protocol.md §5.2), sans-IO.

kcp-go's listener keys sessions by the remote address, not by conv. For each datagram that
passes the crypto check (:meth:`Demux.route`), with ``current`` the conv of the session this
address already has (or ``None``):

==============================  ==================================  =========================
datagram                        address has a session               address has none
==============================  ==================================  =========================
fails the crypto/CRC check      DROP_CHECKSUM (InCsumErrors)        DROP_CHECKSUM
too short for a KCP header      DROP_TOO_SHORT (not counted) [3]    DROP_TOO_SHORT (stray)
FEC parity (no conv)            FEED (the session's FEC decoder)    DROP_NO_CONV
[latest] OOB, conv == current   FEED (the session's OOB queue)      n/a
[latest] OOB, another conv      DROP_CONV_MISMATCH (never REPLACE)  n/a
[latest] OOB [5]                (as above)                          CREATE, if accepting
conv == current                 FEED                                n/a
conv != current, a PUSH sn 0    REPLACE (the peer restarted) [1]    n/a
conv != current, otherwise      DROP_CONV_MISMATCH                  n/a
a PUSH with sn < window [2]     (as above)                          CREATE, if accepting
... of a conv closed here [4]   DROP_CONV_MISMATCH                  DROP_CLOSED (stray)
KCP, but no such PUSH           (as above)                          DROP_NO_START [2]
first header is not KCP         (as above)                          DROP_NOT_KCP [2]
listener closed                 (as above)                          DROP_NOT_ACCEPTING
==============================  ==================================  =========================

"A PUSH" means a PUSH segment anywhere in the datagram (after the FEC header of a data shard),
among the well-formed segments of the datagram's conv that KCP's input would process, whose
una is 0: its sender has received nothing of this conversation yet, as in every first
datagram of a conversation (a late PUSH of a conversation the listener already answered has
una > 0).

[1] kcp-go replaces on sn == 0 in the *first* segment, whatever its cmd. kcpgo requires a PUSH
    with sn 0 (an ACK of sn 0 or a probe cannot begin a conversation), and never lets a conv
    that this address used for a session that ended (replaced or closed) in the last
    :data:`CLOSED_TTL` ms take it back (a late duplicate of the old session's first PUSH),
    docs/deviations.md D31.
[2] kcp-go creates a session from any datagram with a conv (a late ACK, a probe, a mid-stream
    retransmission: a "phantom" session that never receives data). kcpgo creates one only from
    a datagram that can begin a conversation: a PUSH with sn below :attr:`Demux.window` (the
    receive window of a new session; sn counts from 0). Others are dropped and counted in
    :attr:`Demux.stray`, docs/deviations.md D30.
[3] Shorter than the crypto header, or a plaintext shorter than one KCP header: a port scan,
    a NAT keepalive. kcp-go drops it without counting it; it is no checksum failure (D33).
[4] TIME_WAIT-like: for :data:`CLOSED_TTL` ms after a session of (address, conv) ended
    (:meth:`Demux.conversation_closed`, or a REPLACE), that address cannot begin a session
    with that conv again: the late datagrams of a client whose server closed the session
    create no phantom (D30). A new conv from the address (a restarted client, a new dial)
    begins one at once. At most :data:`CLOSED_MAX` pairs are kept (oldest forgotten first).
[5] An OOB packet (FEC type 0xF3, §2.2(e)) carries its sender's conv at offset 8: as in kcp-go
    latest it begins a session from a new address (not of a conv that ended there, [4]) and is
    the session's OOB input; it never closes or replaces one. A 5.6.1 listener reads it as raw
    KCP of conv 0xFFFFFFFF, and replaced the live session when the payload began with 4 zero
    bytes (its "sn 0", §5.2 pitfall, docs/deviations.md D49).

REPLACE means: close the old session (also when the listener no longer accepts), then treat
the datagram as from a new address: it creates a session if the listener accepts. CREATE is
subject to the accept backlog (:class:`Backlog`, kcpgo's flood protection; see
docs/deviations.md): when it is full, waiting sessions that already failed are evicted to make
room, else the datagram is dropped (DROP_BACKLOG_FULL). :class:`BadSources` decides when a
listener warns about datagrams that keep failing the checksum (D33). Pure code: bytes in,
decisions out.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from enum import IntEnum
from typing import TYPE_CHECKING, Callable, Dict, Generic, Hashable, List, Optional, Tuple, TypeVar

from ..snmp import DEFAULT_SNMP, Snmp
from .fec import FEC_HEADER_SIZE_PLUS2, TYPE_DATA, TYPE_OOB, TYPE_PARITY, is_oob
from .kcpdefs import WND_RCV
from .packet import PacketCodec
from .wire import CMD_PUSH, CMD_WINS, OVERHEAD

if TYPE_CHECKING:  # pragma: no cover
    from ..codec.crypt import BlockCrypt
    from .connection import Connection

__all__ = ["Route", "Demux", "Backlog", "BadSources", "ACCEPT_BACKLOG", "CLOSED_TTL",
           "CLOSED_MAX", "receive_window"]

#: §2.1 acceptBacklog: sessions created but not yet accepted.
ACCEPT_BACKLOG = 128
#: D30/D31: how long (ms) an (address, conv) whose session ended cannot begin a session again,
#: and how many such pairs are kept at most (oldest forgotten first): the memory is bounded.
CLOSED_TTL = 30_000
CLOSED_MAX = 4096
#: A full backlog whose last scan found nothing failed is scanned again after this many ms at
#: the earliest: a dial storm brings one datagram per waiting client per RTO, and a scan per
#: datagram (O(backlog) each) took 7 % of a 5,000-session server's samples.
BACKLOG_RESCAN_MS = 50


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
    #: From an address without a session: KCP, but it cannot begin a conversation (an ACK,
    #: a probe, a mid-stream PUSH: kcp-go would create a phantom session), D30.
    DROP_NO_START = 15
    #: From an address without a session: the first header is not a KCP header (unknown cmd,
    #: length past the end): e.g. a peer that encrypts, talking to a listener that does not.
    DROP_NOT_KCP = 16
    #: Too short to hold a KCP header (after the crypto header): no checksum failure (D33).
    DROP_TOO_SHORT = 17
    #: From an address without a session: it would begin a conversation, but this address's
    #: session with that conv ended less than CLOSED_TTL ago (a late datagram), D30.
    DROP_CLOSED = 18


class Demux:
    """Opens datagrams with the listener's cipher and applies the §5.2 rules, with kcpgo's
    rules for who may begin a conversation (D30, D31; the module's table).

    ``window``: a PUSH from an address without a session creates one only if its sn is below
    this (the receive window a new session of the listener gets; kcp-go's default is 32,
    ``ValueError`` below 1). Counters: :attr:`stray` (DROP_NO_START, DROP_NOT_KCP, DROP_CLOSED
    and DROP_TOO_SHORT from an address without a session: datagrams kcp-go would have made a
    phantom session of, or ignored) and :attr:`mismatched` (DROP_CONV_MISMATCH); kcp-go has
    neither, so they are not SNMP fields.

    Time: ``now`` (ms, any monotonic origin) is read only where a session would begin or be
    replaced, to expire the memory of ended conversations (:data:`CLOSED_TTL`); a caller that
    never passes it gets a memory bounded by :data:`CLOSED_MAX` only.
    """

    def __init__(self, crypt: Optional["BlockCrypt"] = None, snmp: Optional[Snmp] = None,
                 window: int = WND_RCV) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 (segments), got {window!r}")
        self.codec = PacketCodec(crypt, snmp=snmp if snmp is not None else DEFAULT_SNMP)
        self._open = self.codec._open
        self.window = window
        self.stray = 0
        self.mismatched = 0
        #: (address, conv) of ended sessions -> when they may begin one again (ms), oldest
        #: first (D30, D31; at most CLOSED_MAX). An OrderedDict: taking from the front of a
        #: plain dict costs a scan over the slots already deleted there.
        self._closed: "OrderedDict[Tuple[Hashable, int], int]" = OrderedDict()
        self._now = 0                       # the latest ``now`` a caller gave

    def route(self, wire: bytes, current: Optional[int], accepting: bool,
              now: Optional[int] = None, addr: Hashable = None
              ) -> Tuple[Route, Optional[bytes], int]:
        """``(route, payload, conv)`` for one datagram from ``addr``, whose session has conv
        ``current`` (``None``: no session), at ``now`` (ms; ``None``: the latest given).
        ``payload`` is the opened datagram for ``Connection.receive_payload`` (``None`` when
        dropped for its checksum or length); ``conv`` the conv a new session must take (0
        unless CREATE/REPLACE)."""
        return self.route_opened(self._open(wire), current, accepting, now, addr)

    def open_many(self, wires: List[bytes]) -> List[Optional[bytes]]:
        """Open a batch of datagrams at once for :meth:`route_opened` (``PacketCodec.open_many``:
        one cipher call for all of them where the cipher allows it)."""
        return self.codec.open_many(wires)

    def route_opened(self, payload: Optional[bytes], current: Optional[int], accepting: bool,
                     now: Optional[int] = None, addr: Hashable = None
                     ) -> Tuple[Route, Optional[bytes], int]:
        """:meth:`route` for a datagram already opened by :meth:`open_many` (an entry of its
        result)."""
        # Runs once per datagram a listener receives: the headers are read in place (§2.2:
        # the KCP datagram starts after the 8-byte FEC header in a data shard; parity has none).
        if not payload:
            return self._unopened(payload, current)
        flag = payload[4] | (payload[5] << 8)
        if flag == TYPE_OOB and is_oob(payload):
            return self._oob(payload, current, accepting, now, addr)
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
            return self._other_conv(payload, off, conv, current, now, addr)
        if not has_conv:
            return _DROP_NO_CONV, payload, 0
        if not accepting:
            return _DROP_NOT_ACCEPTING, payload, 0
        conv, cmd, sn, una, ln = _conv_cmd_sn_una_len(payload, off)
        if (cmd == CMD_PUSH and sn < self.window and not una
                and ln <= len(payload) - off - OVERHEAD):
            start = _CREATE                     # a first PUSH: every new client's first datagram
        else:
            start = _opening(payload, off, conv, self.window)
        if start is _CREATE:
            if not self._closed or not self._ended((addr, conv), now):
                return _CREATE, payload, conv
            start = _DROP_CLOSED                # a late datagram of a conversation that ended
        self.stray += 1
        return start, payload, 0

    def _oob(self, payload: bytes, current: Optional[int], accepting: bool,
             now: Optional[int], addr: Hashable) -> Tuple[Route, Optional[bytes], int]:
        """An OOB packet, note [5]: its session's input, or a new session's first datagram."""
        conv = _u32(payload, FEC_HEADER_SIZE_PLUS2)[0]
        if current is not None:
            if conv == current:
                return _FEED, payload, 0
            self.mismatched += 1
            return _DROP_CONV_MISMATCH, payload, 0
        if not accepting:
            return _DROP_NOT_ACCEPTING, payload, 0
        if self._closed and self._ended((addr, conv), now):
            self.stray += 1
            return _DROP_CLOSED, payload, 0
        return _CREATE, payload, conv

    def _unopened(self, payload: Optional[bytes], current: Optional[int]
                  ) -> Tuple[Route, Optional[bytes], int]:
        """A datagram the codec refused: DROP_CHECKSUM if it failed the crypto check
        (``payload`` is OPEN_FAILED; the codec counted it in InCsumErrors), else
        DROP_TOO_SHORT (D33)."""
        if payload is not None:
            return _DROP_CHECKSUM
        if current is None:
            self.stray += 1
        return _DROP_TOO_SHORT

    def _other_conv(self, payload: bytes, off: int, conv: int, current: int,
                    now: Optional[int], addr: Hashable) -> Tuple[Route, Optional[bytes], int]:
        """Another conv from an address that has a session: the peer restarted (REPLACE) only
        if the datagram begins a conversation (a PUSH with sn 0) and its conv is not one this
        address ended recently (a late duplicate of an old session's first PUSH), D31."""
        if _opening(payload, off, conv, 1) is not _CREATE or (
                self._closed and self._ended((addr, conv), now)):
            self.mismatched += 1
            return _DROP_CONV_MISMATCH, payload, 0
        self.conversation_closed(addr, current, now)      # the session it replaces
        return _REPLACE, payload, conv

    def conversation_closed(self, addr: Hashable, conv: int, now: Optional[int] = None
                            ) -> None:
        """The session of ``conv`` at ``addr`` ended (closed, replaced, evicted) at ``now``
        (ms): for :data:`CLOSED_TTL` ms, datagrams of that conv from that address begin no
        session (D30) and do not replace another one (D31)."""
        if now is None:
            now = self._now
        else:
            self._now = now
        closed = self._closed
        key = (addr, conv)
        closed.pop(key, None)                   # re-inserted last: the order is by time
        while closed:                           # expired ones first (each goes once)
            oldest, until = next(iter(closed.items()))
            if until > now:
                break
            closed.popitem(last=False)
        closed[key] = now + CLOSED_TTL
        if len(closed) > CLOSED_MAX:
            closed.popitem(last=False)          # the oldest

    def _ended(self, key: Tuple[Hashable, int], now: Optional[int]) -> bool:
        """Whether ``key`` (address, conv) ended less than CLOSED_TTL ago. A late datagram
        does not extend that time."""
        until = self._closed.get(key)
        if until is None:
            return False
        if now is None:
            now = self._now
        else:
            self._now = now
        if now < until:
            return True
        del self._closed[key]
        return False


def receive_window(conn: "Connection") -> int:
    """The receive window (segments) of ``conn``: ``Demux(window=...)`` for a listener whose
    new sessions are built as ``conn`` was (D30)."""
    return conn.kcp.rcv_wnd


def _opening(payload: bytes, off: int, conv: int, limit: int) -> Route:
    """Whether the KCP datagram at ``off`` can begin a conversation: CREATE if, among the
    segments KCP's input would process (those before the first malformed one or one of another
    conv, §1.6), there is a PUSH with sn < ``limit`` and una 0; DROP_NOT_KCP if the first
    header is not a KCP header (unknown cmd, or a length past the end); else DROP_NO_START.
    sn counts from 0: every kcp-go session's first PUSH has sn 0 (§1.2), and una is 0 until
    its sender received something of the conversation (a late PUSH after the listener
    answered has una > 0)."""
    end = len(payload)
    first = off
    while end - off >= OVERHEAD:
        c, cmd, sn, una, ln = _conv_cmd_sn_una_len(payload, off)
        if c != conv or cmd < CMD_PUSH or cmd > CMD_WINS or ln > end - off - OVERHEAD:
            return _DROP_NOT_KCP if off == first else _DROP_NO_START
        if cmd == CMD_PUSH and sn < limit and not una:
            return _CREATE
        off += OVERHEAD + ln
    return _DROP_NO_START


_FEED, _REPLACE, _CREATE = Route.FEED, Route.REPLACE, Route.CREATE
_DROP_CHECKSUM = (Route.DROP_CHECKSUM, None, 0)
_DROP_TOO_SHORT = (Route.DROP_TOO_SHORT, None, 0)
_DROP_NO_CONV, _DROP_CONV_MISMATCH = Route.DROP_NO_CONV, Route.DROP_CONV_MISMATCH
_DROP_NOT_ACCEPTING, _DROP_CLOSED = Route.DROP_NOT_ACCEPTING, Route.DROP_CLOSED
_DROP_NO_START, _DROP_NOT_KCP = Route.DROP_NO_START, Route.DROP_NOT_KCP
#: §1.2 header <IBBHIIII: conv, cmd, (frg, wnd, ts skipped), sn, una, len.
_conv_cmd_sn_una_len = struct.Struct("<IB7xIII").unpack_from
_u32 = struct.Struct("<I").unpack_from


T = TypeVar("T")


class Backlog(Generic[T]):
    """Sessions created but not yet accepted, at most ``limit`` (kcpgo's half-open cap), in
    arrival order; every operation but eviction is O(1) (a listener under a flood releases
    thousands of sessions a second).

    :meth:`make_room` evicts waiting items that ``failed(item)`` reports as failed (closing
    each with ``close(item)``) when the backlog is full; it counts them in :attr:`evicted`.
    A full backlog is scanned at most once per :data:`BACKLOG_RESCAN_MS` while its scans find
    nothing to evict (an item that fails waits that much longer for its eviction).
    Items are found by a key (``push(item, key)``; the item itself by default).
    """

    def __init__(self, limit: int = ACCEPT_BACKLOG) -> None:
        if limit < 1:
            raise ValueError("backlog must be >= 1")
        self.limit = limit
        self._items: Dict[Hashable, T] = {}      # insertion-ordered: the accept order
        self.evicted = 0
        self._clean_at: Optional[int] = None    # when a scan of the full backlog found none

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

    def make_room(self, failed: Callable[[T], bool], close: Callable[[T], None],
                  now: int) -> bool:
        """Whether one more item fits, after evicting failed ones if the backlog is full (at
        most one scan per :data:`BACKLOG_RESCAN_MS` that finds none; ``now`` in ms). ``close``
        runs after the evicted items have left the backlog."""
        items = self._items
        if len(items) < self.limit:
            return True
        clean_at = self._clean_at
        if clean_at is not None and 0 <= now - clean_at < BACKLOG_RESCAN_MS:
            return False
        gone = [(k, s) for k, s in items.items() if failed(s)]
        self._clean_at = None if gone else now
        for k, _ in gone:
            del items[k]
        self.evicted += len(gone)
        for _, s in gone:
            close(s)
        return len(items) < self.limit


class BadSources:
    """When a listener warns that datagrams from an address keep failing the checksum (or are
    not KCP at all), docs/deviations.md D33. Sans-IO: the caller passes ``now`` (ms) and logs.

    :meth:`note` counts one bad datagram from ``addr``. Once one address has sent ``after``
    of them, a warning is due, at most one per ``interval`` ms for the whole listener; bad
    datagrams noted while a warning is held back are counted in :attr:`suppressed` and reported
    with the next one. Memory is bounded: counts are kept for the last ``size`` addresses only
    (a spoofed flood merely cycles them), :attr:`last` is the latest address, :attr:`total`
    the number noted.
    """

    def __init__(self, after: int = 3, interval: int = 10_000, size: int = 64) -> None:
        if after < 1 or interval < 0 or size < 1:
            raise ValueError("after and size must be >= 1, interval >= 0")
        self.after = after
        self.interval = interval
        self.size = size
        self.counts: Dict[Hashable, int] = {}       # insertion order: least recent first
        self.total = 0
        self.suppressed = 0
        self.last: Optional[Hashable] = None
        self._quiet_until: Optional[int] = None

    def note(self, addr: Hashable, now: int) -> Optional[Tuple[int, int]]:
        """Count one bad datagram; ``(bad datagrams from addr, suppressed since the last
        warning)`` when a warning is due now, else ``None``."""
        self.total += 1
        self.last = addr
        counts = self.counts
        n = counts.pop(addr, 0) + 1
        counts[addr] = n
        if len(counts) > self.size:
            del counts[next(iter(counts))]
        if n < self.after:
            return None
        if self._quiet_until is not None and now < self._quiet_until:
            self.suppressed += 1
            return None
        self._quiet_until = now + self.interval
        suppressed, self.suppressed = self.suppressed, 0
        return n, suppressed
