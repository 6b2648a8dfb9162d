"""The KCP ARQ state machine, as kcp-go 5.6.1 runs it (docs/protocol.md §1). Sans-IO.

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

from collections import deque
from heapq import heappop
from typing import Deque, List, Optional

from ..snmp import DEFAULT_SNMP, Snmp
from .kcp_input import InputMixin
from .kcp_output import OutputMixin
from .kcpdefs import (ASK_TELL, DEADLINK, FASTACK, FLUSH_NONE, INTERVAL, MAX_FRAGMENTS,
                      MAX_WINDOW, MTU_DEF, PROBE_INIT, RTO_DEF, RTO_MIN, RTO_NDL, THRESH_INIT,
                      WND_RCV, WND_SND, D)
from .wire import MTU_LIMIT, OVERHEAD, check_conv

__all__ = ["KCP"]

class KCP(InputMixin, OutputMixin):
    """One KCP conversation endpoint (kcp-go 5.6.1 semantics).

    ``mtu`` is the largest KCP datagram this object emits; the packet pipeline passes the session
    MTU minus its own FEC/crypto header bytes, which gives kcp-go's on-wire limit (§1.4).
    """

    def __init__(self, conv: int, *, mtu: int = MTU_DEF, snmp: Optional[Snmp] = None) -> None:
        self.conv = check_conv(conv)
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
        if not OVERHEAD < mtu <= MTU_LIMIT:
            raise ValueError(f"KCP mtu must be in {OVERHEAD + 1}..{MTU_LIMIT}, got {mtu!r}")
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

    @property
    def waitsnd(self) -> int:
        """:meth:`wait_snd` as a property: segments queued or in flight."""
        return len(self.snd_buf) + len(self.snd_queue)

    @property
    def pending_acks(self) -> int:
        """ACKs queued for the next flush (segments)."""
        return len(self._acks) >> 1

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
            if buf[h - snd_una][FASTACK]:
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
            room = mss - len(tail[D])
            if room > 0:
                tail[D] += data[:room]
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
            room = mss - len(tail[D])
            if room > 0:
                tail[D] += data[:room]
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
