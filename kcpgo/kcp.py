"""The KCP ARQ state machine, as kcp-go 5.6.1 runs it (PROTOCOL.md §1). Sans-IO.

Drivers (the only ways state changes):

* API calls: :meth:`KCP.send` / :meth:`KCP.write` queue data, :meth:`KCP.recv` takes it out;
* ``input(datagram, now)``: one received KCP datagram (segments after FEC/crypto are stripped);
* ``flush(now)``: returns the datagrams to transmit now (ACKs, probes, new data, retransmissions).

``now`` is an integer millisecond clock supplied by the caller; nothing here reads time, sockets
or globals (except the SNMP counters object it is given). :meth:`KCP.check` says when the next
``flush`` is due, or ``None`` when the session is idle and needs no timer at all.

Behaviour follows kcp-go, not C KCP, wherever they differ (§1.12): RTO formula and linear
back-off, per-datagram RTT sampling, early retransmit, the ACK filter, cwnd wrap, no fastlimit,
acked segments kept until ``una`` passes them.

Implementation notes (why it looks the way it does; Python pays per operation):

* Sequence numbers are kept internally as unbounded integers and only masked to u32 on the wire;
  a wire value is mapped back with one signed-difference step. That removes ``diff()`` calls
  from every comparison.
* ``snd_buf`` is a deque indexed by ``sn - snd_una``; an acked segment's slot becomes ``None``
  (kcp-go keeps it until ``una`` passes), so ACK handling is O(1).
* Segments still unacked below the highest individually-acked sn ("holes") are tracked in a
  sorted list; only they can collect duplicate ACKs, so fast/early retransmit never scans the
  whole window (kcp-go scans it per ACK).
* Retransmission timers live in a heap with one entry per flush batch (all segments first sent
  by one flush share a deadline) plus one per retransmitted segment; stale entries are skipped
  lazily by comparing the segment's current deadline.
"""
from __future__ import annotations

import struct
from collections import deque
from heapq import heappop, heappush
from typing import Deque, List, NamedTuple, Optional

from .snmp import DEFAULT_SNMP, Snmp

__all__ = ["KCP", "Segment", "decode_segments", "encode_segment",
           "FLUSH_NONE", "FLUSH_ACK_ONLY", "FLUSH_FULL"]

# §1.1 constants.
RTO_NDL = 30          # minimum RTO with nodelay
RTO_MIN = 100         # minimum RTO without nodelay
RTO_DEF = 200         # initial rx_rto
RTO_MAX = 60000       # clamp for rx_rto (not for a segment's backed-off rto)
CMD_PUSH = 81
CMD_ACK = 82
CMD_WASK = 83
CMD_WINS = 84
ASK_SEND = 1          # send WASK at next flush
ASK_TELL = 2          # send WINS at next flush
WND_SND = 32
WND_RCV = 32          # kcp-go's default (C KCP: 128)
MTU_DEF = 1400
INTERVAL = 100
OVERHEAD = 24         # segment header size
DEADLINK = 20
THRESH_INIT = 2
THRESH_MIN = 2
PROBE_INIT = 7000     # [5.6.1]
PROBE_INIT_LATEST = 500   # [latest]
PROBE_LIMIT = 120000
MAX_FRAGMENTS = 255   # §1.5: kcp-go's Send refuses more
MAX_WINDOW = 0xFFFF   # the wnd field is u16 (§8.6)

#: Values of :attr:`KCP.flush_requested`.
FLUSH_NONE = 0
FLUSH_ACK_ONLY = 1
FLUSH_FULL = 2

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_HDR = struct.Struct("<IBBHIIII")   # §1.2: conv cmd frg wnd ts sn una len, little-endian
_pack = _HDR.pack
_unpack_from = _HDR.unpack_from

# Fields of a send-side segment record (a small list, mutated in place).
_D, _FRG, _TS, _XMIT, _RESEND, _RTO, _FASTACK = range(7)


class Segment(NamedTuple):
    """One decoded KCP segment (§1.2)."""
    conv: int
    cmd: int
    frg: int
    wnd: int
    ts: int
    sn: int
    una: int
    data: bytes


def encode_segment(seg: Segment) -> bytes:
    """Wire bytes of one segment: the 24-byte header then its data."""
    return _pack(seg.conv, seg.cmd, seg.frg, seg.wnd, seg.ts, seg.sn, seg.una,
                 len(seg.data)) + seg.data


def decode_segments(data: bytes) -> List[Segment]:
    """Split a KCP datagram into segments; ``ValueError`` if a length field overruns it.

    For inspection and tests; :meth:`KCP.input` parses on its own hot path. A trailing
    fragment shorter than a header is ignored, as KCP input does.
    """
    segs = []
    off = 0
    end = len(data)
    while end - off >= OVERHEAD:
        conv, cmd, frg, wnd, ts, sn, una, ln = _unpack_from(data, off)
        off += OVERHEAD
        if end - off < ln:
            raise ValueError(f"segment length {ln} overruns the datagram at offset {off}")
        segs.append(Segment(conv, cmd, frg, wnd, ts, sn, una, bytes(data[off:off + ln])))
        off += ln
    return segs


def _diff(a: int, b: int) -> int:
    """Signed 32-bit difference ``a - b`` (Go's ``_itimediff``)."""
    return ((a - b + _HALF) & _MASK) - _HALF


class KCP:
    """One KCP conversation endpoint (kcp-go 5.6.1 semantics).

    ``mtu`` is the largest KCP datagram this object emits; the packet pipeline passes the session
    MTU minus its own FEC/crypto header bytes, which gives kcp-go's on-wire limit (§1.4).
    """

    def __init__(self, conv: int, *, mtu: int = MTU_DEF, snmp: Optional[Snmp] = None) -> None:
        if not 0 <= conv <= _MASK:
            raise ValueError(f"conv must be a u32, got {conv!r}")
        self.conv = conv
        self.snmp = snmp if snmp is not None else DEFAULT_SNMP
        self.mtu = MTU_DEF
        self.mss = MTU_DEF - OVERHEAD
        self.set_mtu(mtu)
        # Send side; sn values are unbounded ints, masked on the wire.
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_queue: Deque[list] = deque()
        self.snd_buf: Deque[Optional[list]] = deque()
        self._holes: List[int] = []      # unacked sns below _ack_hi, ascending
        self._ack_hi = -1                # highest sn acked individually (or snd_una - 1)
        self._timers: List[tuple] = []   # heap of (resend_at, first_sn, end_sn)
        # Receive side.
        self.rcv_nxt = 0
        self.rcv_buf: dict = {}          # sn -> (frg, data), out of order, within the window
        self.rcv_queue: Deque[tuple] = deque()   # (frg, data), in order, ready for recv()
        self._acks: List[int] = []       # flat [sn, ts, sn, ts, ...] pending ACKs
        # Windows and congestion control.
        self.snd_wnd = WND_SND
        self.rcv_wnd = WND_RCV
        self.rmt_wnd = WND_RCV
        self.cwnd = 0
        self.incr = 0
        self.ssthresh = THRESH_INIT
        # Timing.
        self.rx_srtt = 0
        self.rx_rttvar = 0
        self.rx_rto = RTO_DEF
        self.rx_minrto = RTO_MIN
        self.interval = INTERVAL
        self.nodelay = 0
        self.fastresend = 0
        self.nocwnd = 0
        self.stream = False
        self.dead_link = DEADLINK
        #: Set once any segment has been transmitted ``dead_link`` times (kcp-go sets
        #: ``state = 0xFFFFFFFF`` and never reads it; the session layer may act on it).
        self.dead = False
        # Window probing.
        #: First wait before probing a closed window: 7000 ms in 5.6.1, 500 in kcp-go latest.
        self.probe_init = PROBE_INIT
        self.probe = 0
        self.probe_wait = 0
        self.ts_probe = 0
        #: What ``input``/``recv`` asked for (kcp-go flushes inside Input; a driver flushes
        #: once per batch instead): FLUSH_NONE, FLUSH_ACK_ONLY or FLUSH_FULL.
        self.flush_requested = FLUSH_NONE
        self.ack_nodelay = False
        #: At most this many new segments enter the window per flush (None: all that fit,
        #: as in kcp-go). A driver that encodes slowly sets it so that a flush's timestamps
        #: stay close to the real transmission time; the rest is flushed on the next turn.
        self.admit_limit: Optional[int] = None
        self._next_flush: Optional[int] = None   # absolute ms of the next periodic flush

    # ------------------------------------------------------------------ configuration

    def set_mtu(self, mtu: int) -> None:
        """Set the largest KCP datagram size. ``ValueError`` if it cannot hold a header and data."""
        if not OVERHEAD < mtu <= 1500:
            raise ValueError(f"KCP mtu must be in {OVERHEAD + 1}..1500, got {mtu!r}")
        self.mtu = mtu
        self.mss = mtu - OVERHEAD

    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """kcp-go ``NoDelay``: each argument applies only if >= 0; interval clamps to 10..5000."""
        if nodelay >= 0:
            self.nodelay = nodelay
            self.rx_minrto = RTO_NDL if nodelay else RTO_MIN
        if interval >= 0:
            self.interval = min(max(interval, 10), 5000)
        if resend >= 0:
            self.fastresend = resend
        if nc >= 0:
            self.nocwnd = nc

    def set_wndsize(self, sndwnd: int, rcvwnd: int) -> None:
        """kcp-go ``WndSize``: positive values apply (no minimum); rcv window must fit u16."""
        if rcvwnd > MAX_WINDOW or sndwnd > MAX_WINDOW:
            raise ValueError(f"window sizes must be <= {MAX_WINDOW} (the wnd field is u16)")
        if sndwnd > 0:
            self.snd_wnd = sndwnd
        if rcvwnd > 0:
            self.rcv_wnd = rcvwnd

    # ------------------------------------------------------------------ state queries

    @property
    def rto(self) -> int:
        return self.rx_rto

    @property
    def srtt(self) -> int:
        return self.rx_srtt

    @property
    def rttvar(self) -> int:
        return self.rx_rttvar

    def wait_snd(self) -> int:
        """Segments queued or in flight, acked-but-not-passed included (kcp-go ``WaitSnd``)."""
        return len(self.snd_buf) + len(self.snd_queue)

    def peek_size(self) -> int:
        """Size of the next complete message, or -1 if none (kcp-go ``PeekSize``)."""
        rq = self.rcv_queue
        if not rq:
            return -1
        frg, data = rq[0]
        if frg == 0:
            return len(data)
        if len(rq) < frg + 1:
            return -1
        total = 0
        for frg, data in rq:
            total += len(data)
            if frg == 0:
                break
        return total

    def check(self, now: int) -> Optional[int]:
        """Absolute ms at which :meth:`flush` has work to do next, or ``None`` if nothing.

        kcp-go flushes every ``interval`` while a session is active. A flush has work only if
        something is queued, ACKs or probes are pending, or a segment collected duplicate ACKs;
        otherwise the only future work is a retransmission or, while the peer advertises a
        zero window, the window probe, so the deadline is the earliest of those. Skipping the
        empty flushes in between changes nothing on the wire and lets thousands of sessions
        with a message in flight sleep (kcp-go spends most of its CPU on those ticks).
        """
        if self.flush_requested:
            return now
        return self._work_due(now)

    def _work_due(self, now: int) -> Optional[int]:
        if self._tick_needed():
            nxt = self._next_flush
            return now if nxt is None else nxt
        due = self._earliest_timer()
        if self.rmt_wnd == 0:
            # kcp-go probes a closed window even with nothing queued (a blocked writer
            # queues nothing here); until the first flush has set the probe timer, flush now.
            probe = self.ts_probe if self.probe_wait else now
            if due is None or probe < due:
                due = probe
        return due

    def _tick_needed(self) -> bool:
        """Whether the periodic flush would do more than retransmit or probe on a timer."""
        if self._acks or self.probe or self.snd_queue:
            return True
        buf = self.snd_buf
        if not buf:
            return False
        snd_una = self.snd_una
        for h in self._holes:
            if buf[h - snd_una][_FASTACK]:
                return True                  # fast/early retransmit at the next flush
        return False

    def _earliest_timer(self) -> Optional[int]:
        """Deadline of the first retransmission timer still covering an unacked segment."""
        timers = self._timers
        una = self.snd_una
        while timers and timers[0][2] <= una:
            heappop(timers)                  # every segment of that entry is gone
        if not timers:
            return None
        return timers[0][0]

    # ------------------------------------------------------------------ application side

    def send(self, data: bytes) -> None:
        """Queue one message (kcp-go ``KCP.Send``), fragmenting it into <= mss segments.

        Stream mode first tops up the last queued segment. Raises ``ValueError`` for an empty
        buffer or a message needing more than 255 fragments (kcp-go returns -1 / -2); in stream
        mode bytes already appended to the tail stay queued, as in kcp-go.
        """
        if not data:
            raise ValueError("cannot send an empty message")
        data = bytes(data)
        mss = self.mss
        sq = self.snd_queue
        if self.stream and sq:
            tail = sq[-1]
            room = mss - len(tail[_D])
            if room > 0:
                tail[_D] += data[:room]
                data = data[room:]
                if not data:
                    return
        n = len(data)
        count = (n + mss - 1) // mss
        if count > MAX_FRAGMENTS:
            raise ValueError(f"message of {n} bytes needs {count} fragments; the limit is "
                             f"{MAX_FRAGMENTS} (mss {mss})")
        stream = self.stream
        for i in range(count):
            frg = 0 if stream else count - i - 1
            sq.append([data[i * mss:(i + 1) * mss], frg, 0, 0, 0, 0, 0])

    def write(self, data: bytes) -> int:
        """Queue a byte buffer the way kcp-go's session ``Write`` does (§1.5, §5.4).

        The buffer is cut into <= mss chunks with one :meth:`send` each, so every segment has
        frg 0 and there is no 255-fragment limit. In stream mode that packs bytes contiguously
        (the first chunk tops up the queued tail). Returns ``len(data)``.
        """
        n = len(data)
        if n == 0:
            return 0
        data = bytes(data)
        mss = self.mss
        sq = self.snd_queue
        off = 0
        if self.stream and sq:
            tail = sq[-1]
            room = mss - len(tail[_D])
            if room > 0:
                tail[_D] += data[:room]
                off = room
        append = sq.append
        for o in range(off, n, mss):
            append([data[o:o + mss], 0, 0, 0, 0, 0, 0])
        return n

    def recv(self) -> Optional[bytes]:
        """Take the next complete message, or ``None`` (kcp-go ``Recv``).

        In stream mode every segment is a message. Draining a full receive queue requests a WINS
        window update (``probe``), so the peer learns the window reopened.
        """
        rq = self.rcv_queue
        if not rq:
            return None
        rcv_wnd = self.rcv_wnd
        fast_recover = len(rq) >= rcv_wnd
        frg, data = rq[0]
        if frg == 0:
            rq.popleft()
        else:
            if len(rq) < frg + 1:
                return None
            parts = []
            while True:
                frg, piece = rq.popleft()
                parts.append(piece)
                if frg == 0:
                    break
            data = b"".join(parts)
        if self.rcv_buf:
            self._move_to_queue()
        if fast_recover and len(rq) < rcv_wnd:
            self.probe |= ASK_TELL
        return data

    def recv_stream(self, limit: int) -> bytes:
        """Take whole messages, concatenated, while their total stays <= ``limit``.

        For stream mode, where message boundaries mean nothing; always returns at least one
        message if one is ready, even if it alone exceeds ``limit``. ``b""`` if none.
        """
        rq = self.rcv_queue
        if not rq:
            return b""
        if rq[0][0] != 0 or len(rq[0][1]) >= limit:
            return self.recv() or b""
        rcv_wnd = self.rcv_wnd
        fast_recover = len(rq) >= rcv_wnd
        parts = []
        total = 0
        while rq:
            frg, data = rq[0]
            if frg != 0 or total + len(data) > limit:
                break
            rq.popleft()
            parts.append(data)
            total += len(data)
        if self.rcv_buf:
            self._move_to_queue()
        if fast_recover and len(rq) < rcv_wnd:
            self.probe |= ASK_TELL
        return b"".join(parts)

    def _move_to_queue(self) -> None:
        rb = self.rcv_buf
        rq = self.rcv_queue
        nxt = self.rcv_nxt
        rcv_wnd = self.rcv_wnd
        while nxt in rb and len(rq) < rcv_wnd:
            rq.append(rb.pop(nxt))
            nxt += 1
        self.rcv_nxt = nxt

    # ------------------------------------------------------------------ input

    def input(self, data: bytes, now: int, regular: bool = True) -> int:
        """Process one KCP datagram (kcp-go ``Input``, §1.6). Returns 0 or kcp-go's error code.

        -1: shorter than a header, or a segment with another conv; -2: a length field beyond the
        datagram; -3: unknown cmd. Segments before the bad one stay processed (as in kcp-go).
        ``regular`` is False for FEC-recovered datagrams: they update neither the remote window
        nor RTT nor RepeatSegs. Instead of flushing, sets :attr:`flush_requested`.
        """
        end = len(data)
        if end < OVERHEAD:
            return -1
        conv = self.conv
        snd_una = prev_una = self.snd_una
        buf = self.snd_buf
        rcv_nxt = self.rcv_nxt
        rcv_wnd = self.rcv_wnd
        rcv_buf = self.rcv_buf
        rq = self.rcv_queue
        acks = self._acks
        rmt_wnd = self.rmt_wnd
        latest_ts = -1
        window_slid = False
        repeats = 0
        nsegs = 0
        ret = 0
        off = 0
        while end - off >= OVERHEAD:
            sconv, cmd, frg, wnd, ts, sn, una, ln = _unpack_from(data, off)
            if sconv != conv:
                ret = -1
                break
            off += OVERHEAD
            if end - off < ln:
                ret = -2
                break
            if cmd < CMD_PUSH or cmd > CMD_WINS:
                ret = -3
                break
            if regular:
                rmt_wnd = wnd
            # una: everything below it was received by the peer.
            d = ((una - snd_una + _HALF) & _MASK) - _HALF
            if d > 0:
                if d > len(buf):
                    d = len(buf)
                if d:
                    for _ in range(d):
                        buf.popleft()
                    snd_una += d
                    window_slid = True
                    self._trim_holes(snd_una)
            if cmd == CMD_PUSH:
                ds = ((sn - rcv_nxt + _HALF) & _MASK) - _HALF
                # diff(sn, rcv_nxt + rcv_wnd) < 0, including kcp-go's u32 wrap of that sum.
                if ds < rcv_wnd and ds - rcv_wnd >= -_HALF:
                    acks.append(rcv_nxt + ds)
                    acks.append(ts)
                    if ds == 0 and not rcv_buf and len(rq) < rcv_wnd:
                        rq.append((frg, data[off:off + ln]))   # in-order fast path
                        rcv_nxt += 1
                    elif ds >= 0:
                        s = rcv_nxt + ds
                        if s in rcv_buf:
                            repeats += 1
                        else:
                            rcv_buf[s] = (frg, data[off:off + ln])
                            while rcv_nxt in rcv_buf and len(rq) < rcv_wnd:
                                rq.append(rcv_buf.pop(rcv_nxt))
                                rcv_nxt += 1
                    else:
                        repeats += 1
                else:
                    repeats += 1
            elif cmd == CMD_ACK:
                self._on_ack(((sn - snd_una + _HALF) & _MASK) - _HALF + snd_una, ts, snd_una)
                latest_ts = ts
            elif cmd == CMD_WASK:
                self.probe |= ASK_TELL
            off += ln
            nsegs += 1
        self.snd_una = snd_una
        self.rcv_nxt = rcv_nxt
        self.rmt_wnd = rmt_wnd
        snmp = self.snmp
        if regular and repeats:
            snmp.RepeatSegs += repeats
        if len(acks) >= 4 * (self.mtu // OVERHEAD) and self.flush_requested < FLUSH_ACK_ONLY:
            # Bound the ACK list between flushes (latest kcp-go's "ACK clocking").
            self.flush_requested = FLUSH_ACK_ONLY
        if ret:
            return ret
        snmp.InSegs += nsegs
        if latest_ts >= 0 and regular:
            rtt = ((now - latest_ts + _HALF) & _MASK) - _HALF
            if rtt >= 0:
                self._update_rtt(rtt)
        if not self.nocwnd and snd_una > prev_una:
            self._grow_cwnd()
        if window_slid:
            self.flush_requested = FLUSH_FULL
        elif self.ack_nodelay and acks and self.flush_requested < FLUSH_ACK_ONLY:
            self.flush_requested = FLUSH_ACK_ONLY
        return 0

    def _trim_holes(self, snd_una: int) -> None:
        holes = self._holes
        if holes and holes[0] < snd_una:
            i = 1
            n = len(holes)
            while i < n and holes[i] < snd_una:
                i += 1
            del holes[:i]
        if self._ack_hi < snd_una - 1:
            self._ack_hi = snd_una - 1

    def _on_ack(self, sn: int, ts: int, snd_una: int) -> None:
        """parse_ack + parse_fastack for one ACK segment (sn already mapped to our numbering)."""
        if sn < snd_una or sn >= self.snd_nxt:
            return
        buf = self.snd_buf
        holes = self._holes
        ack_hi = self._ack_hi
        if buf[sn - snd_una] is not None:
            buf[sn - snd_una] = None
            if sn < ack_hi:
                # A hole got filled; it is somewhere in the (short) sorted list.
                try:
                    holes.remove(sn)
                except ValueError:
                    pass
        if sn > ack_hi:
            start = ack_hi + 1
            if start < snd_una:
                start = snd_una
            if start < sn:
                holes.extend(range(start, sn))
            self._ack_hi = sn
        # Every unacked segment below sn that was sent no later than the acked one saw a
        # duplicate ACK (kcp-go's ts test).
        for h in holes:
            if h >= sn:
                break
            rec = buf[h - snd_una]
            if ((rec[_TS] - ts + _HALF) & _MASK) - _HALF <= 0:
                rec[_FASTACK] += 1

    def _update_rtt(self, rtt: int) -> None:
        """kcp-go's RTT estimator (§1.8): shift-based, 1/32 weight for low samples."""
        if self.rx_srtt == 0:
            self.rx_srtt = rtt
            self.rx_rttvar = rtt >> 1
        else:
            delta = rtt - self.rx_srtt
            self.rx_srtt += delta >> 3
            delta = -delta if delta < 0 else delta
            if rtt < self.rx_srtt - self.rx_rttvar:
                self.rx_rttvar += (delta - self.rx_rttvar) >> 5
            else:
                self.rx_rttvar += (delta - self.rx_rttvar) >> 2
        rto = (self.rx_srtt + max(self.interval, self.rx_rttvar << 2)) & _MASK
        self.rx_rto = min(max(self.rx_minrto, rto), RTO_MAX)

    def _grow_cwnd(self) -> None:
        """Congestion window growth after una advanced (§1.10)."""
        mss = self.mss
        rmt_wnd = self.rmt_wnd
        if self.cwnd < rmt_wnd:
            if self.cwnd < self.ssthresh:
                self.cwnd += 1
                self.incr += mss
            else:
                if self.incr < mss:
                    self.incr = mss
                self.incr = (self.incr + (mss * mss) // self.incr + mss // 16) & _MASK
                if (self.cwnd + 1) * mss <= self.incr:
                    self.cwnd = (self.incr + mss - 1) // mss if mss > 0 else self.cwnd
            if self.cwnd > rmt_wnd:
                self.cwnd = rmt_wnd
                self.incr = rmt_wnd * mss

    # ------------------------------------------------------------------ output

    def flush(self, now: int, ack_only: bool = False) -> List[bytes]:
        """Build the datagrams due now (kcp-go ``flush``, §1.9) and return them.

        ``ack_only`` sends just the pending ACKs (5.6.1's ackOnly flush). A full flush also sends
        window probes, admits queued segments into the window and (re)transmits what is due.
        """
        self.flush_requested = FLUSH_NONE
        out: List[bytes] = []
        parts: List[bytes] = []
        size = 0
        mtu = self.mtu
        conv = self.conv
        wnd = self.rcv_wnd - len(self.rcv_queue)
        if wnd < 0:
            wnd = 0
        una_w = self.rcv_nxt & _MASK
        nsegs = 0
        # Phase 1: ACKs. Those already covered by una are dropped except the last (§1.9).
        acks = self._acks
        last_sn = last_ts = 0
        if acks:
            rcv_nxt = self.rcv_nxt
            last = len(acks) - 2
            for i in range(0, last + 2, 2):
                s = acks[i]
                if s >= rcv_nxt or i == last:
                    if size + OVERHEAD > mtu:
                        out.append(b"".join(parts))
                        parts = []
                        size = 0
                    last_sn = s & _MASK
                    last_ts = acks[i + 1]
                    parts.append(_pack(conv, CMD_ACK, 0, wnd, last_ts, last_sn, una_w, 0))
                    size += OVERHEAD
                    nsegs += 1
            acks.clear()
        if ack_only:
            if parts:
                out.append(b"".join(parts))
            self.snmp.OutSegs += nsegs
            return out

        # Phase 2: window probe timer while the peer advertises a zero window.
        if self.rmt_wnd == 0:
            probe_init = self.probe_init
            if self.probe_wait == 0:
                self.probe_wait = probe_init
                self.ts_probe = now + self.probe_wait
            elif now >= self.ts_probe:
                if self.probe_wait < probe_init:
                    self.probe_wait = probe_init
                self.probe_wait += self.probe_wait // 2
                if self.probe_wait > PROBE_LIMIT:
                    self.probe_wait = PROBE_LIMIT
                self.ts_probe = now + self.probe_wait
                self.probe |= ASK_SEND
        else:
            self.ts_probe = 0
            self.probe_wait = 0
        # Phase 3: probe commands (they carry the last ACK's sn/ts, as kcp-go's template does).
        probe = self.probe
        if probe:
            for flag, cmd in ((ASK_SEND, CMD_WASK), (ASK_TELL, CMD_WINS)):
                if probe & flag:
                    if size + OVERHEAD > mtu:
                        out.append(b"".join(parts))
                        parts = []
                        size = 0
                    parts.append(_pack(conv, cmd, 0, wnd, last_ts, last_sn, una_w, 0))
                    size += OVERHEAD
                    nsegs += 1
            self.probe = 0

        # Phase 4: admit queued segments into the send window.
        cwnd = min(self.snd_wnd, self.rmt_wnd)
        if not self.nocwnd and self.cwnd < cwnd:
            cwnd = self.cwnd
        buf = self.snd_buf
        snd_una = self.snd_una
        new_from = self.snd_nxt
        sq = self.snd_queue
        admit = snd_una + cwnd - new_from
        if admit > len(sq):
            admit = len(sq)
        limit = self.admit_limit
        if limit is not None and admit > limit:
            admit = limit
            self.flush_requested = FLUSH_FULL      # more is ready: flush again soon
        if admit > 0:
            popleft = sq.popleft
            append = buf.append
            for _ in range(admit):
                append(popleft())
            self.snd_nxt = new_from + admit
        else:
            admit = 0

        # Phase 5: transmission. Retransmissions (lower sns) go first, then new segments.
        resent = self.fastresend if self.fastresend > 0 else _MASK
        rx_rto = self.rx_rto
        timers = self._timers
        ts_w = now & _MASK
        fast = early = lost = 0
        retx: List[int] = []
        for h in self._holes:
            rec = buf[h - snd_una]
            fa = rec[_FASTACK]
            if fa:
                if fa >= resent:
                    fast += 1
                elif admit == 0:
                    early += 1
                else:
                    continue
                rec[_FASTACK] = 0
                rec[_RTO] = rx_rto
                rec[_RESEND] = now + rx_rto
                heappush(timers, (now + rx_rto, h, h + 1))
                retx.append(h)
        if timers and timers[0][0] <= now:
            nfast = len(retx)
            backoff = rx_rto if self.nodelay == 0 else rx_rto // 2
            while timers and timers[0][0] <= now:
                due, first, end = heappop(timers)
                if first < snd_una:
                    first = snd_una
                for s in range(first, end):
                    rec = buf[s - snd_una]
                    if rec is not None and rec[_RESEND] == due:
                        rto = (rec[_RTO] + backoff) & _MASK
                        rec[_RTO] = rto
                        rec[_FASTACK] = 0
                        rec[_RESEND] = now + rto
                        heappush(timers, (now + rto, s, s + 1))
                        retx.append(s)
                        lost += 1
            if nfast and lost:
                retx.sort()
        dead_link = self.dead_link
        for s in retx:
            rec = buf[s - snd_una]
            rec[_XMIT] += 1
            rec[_TS] = ts_w
            data = rec[_D]
            ln = len(data)
            if size + OVERHEAD + ln > mtu and parts:
                out.append(b"".join(parts))
                parts = []
                size = 0
            parts.append(_pack(conv, CMD_PUSH, rec[_FRG], wnd, ts_w, s & _MASK, una_w, ln))
            parts.append(data)
            size += OVERHEAD + ln
            if rec[_XMIT] >= dead_link:
                self.dead = True
        if admit:
            # The segment encoding is written out here and in the loop above on purpose:
            # this runs per segment, and a helper call would cost more than the encoding.
            resend_at = now + rx_rto
            s = new_from
            for i in range(new_from - snd_una, len(buf)):
                rec = buf[i]
                rec[_XMIT] = 1
                rec[_TS] = ts_w
                rec[_RTO] = rx_rto
                rec[_RESEND] = resend_at
                data = rec[_D]
                ln = len(data)
                if size + OVERHEAD + ln > mtu and parts:
                    out.append(b"".join(parts))
                    parts = []
                    size = 0
                parts.append(_pack(conv, CMD_PUSH, rec[_FRG], wnd, ts_w, s & _MASK, una_w, ln))
                parts.append(data)
                size += OVERHEAD + ln
                s += 1
            heappush(timers, (resend_at, new_from, new_from + admit))
            if dead_link <= 1:
                self.dead = True
        if parts:
            out.append(b"".join(parts))
        nsegs += len(retx) + admit
        snmp = self.snmp
        snmp.OutSegs += nsegs
        if retx:
            snmp.RetransSegs += len(retx)
            snmp.FastRetransSegs += fast
            snmp.EarlyRetransSegs += early
            snmp.LostSegs += lost

        # Phase 6: congestion control reaction.
        if not self.nocwnd:
            mss = self.mss
            if fast or early:
                ssthresh = (self.snd_nxt - self.snd_una) // 2
                self.ssthresh = ssthresh if ssthresh > THRESH_MIN else THRESH_MIN
                self.cwnd = (self.ssthresh + resent) & _MASK
                self.incr = (self.cwnd * mss) & _MASK
            if lost:
                self.ssthresh = cwnd // 2 if cwnd // 2 > THRESH_MIN else THRESH_MIN
                self.cwnd = 1
                self.incr = mss
            if self.cwnd < 1:
                self.cwnd = 1
                self.incr = mss

        # Next periodic flush: one interval, sooner if a retransmission is due earlier.
        nxt = now + self.interval
        if not buf:
            timers.clear()
        elif timers and timers[0][0] < nxt:
            nxt = timers[0][0] if timers[0][0] > now else now + 1
        if self.rmt_wnd == 0 and self.ts_probe and self.ts_probe < nxt and (sq or buf):
            nxt = self.ts_probe
        self._next_flush = nxt
        return out

    def update(self, now: int, flush_acks: bool = False) -> List[bytes]:
        """Run whatever flush is due at ``now`` and return its datagrams (maybe ``[]``).

        A full flush when one was requested, the periodic tick is due while it has work
        (:meth:`check`), or a retransmission timer expired; otherwise, with ACKs pending, an
        ACK-only flush if requested (ACK no-delay) or if ``flush_acks`` is set (the runtime
        sets it once per received batch, so ACKs never wait for the tick).
        """
        fr = self.flush_requested
        if fr == FLUSH_FULL:
            return self.flush(now)
        due = self._work_due(now)
        if due is not None and due <= now:
            return self.flush(now)
        if self._acks and (fr or flush_acks):
            return self.flush(now, ack_only=True)
        self.flush_requested = FLUSH_NONE
        return []
