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
from operator import index
from typing import Deque, List, Optional

from ..snmp import DEFAULT_SNMP, Snmp
from .kcp_input import InputMixin
from .kcp_output import OutputMixin
from .kcpdefs import (ASK_TELL, DEADLINK, FASTACK, FLUSH_FULL, FLUSH_NONE, FRG, INTERVAL,
                      MAX_FRAGMENTS, MAX_MSG_FRAGMENTS, MAX_WINDOW, MSG, MTU_DEF, PROBE_INIT,
                      RTO_DEF, RTO_MIN, RTO_NDL, THRESH_INIT, WND_RCV, WND_SND, D)
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
        self.snd_queue: Deque[list] = deque()
        #: Whether the head of snd_queue continues a message whose first fragments were
        #: admitted to snd_buf (set by flush; :meth:`set_mtu` must not re-cut those).
        self._sq_split = False
        self._max_frg = MAX_MSG_FRAGMENTS
        self.set_mtu(mtu)
        # Send side; sn values are unbounded ints, masked on the wire.
        self.snd_una = 0
        self.snd_nxt = 0
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
        #: The receive window (segments) our last emitted datagram announced; the peer sizes
        #: its sends by it. MAX_WINDOW until the first datagram, which will carry the window
        #: anyway (so configuring a fresh session sends no extra WINS).
        self.wnd_sent = MAX_WINDOW
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
        #: Window probes (WASK) sent since the last datagram from the peer: they count toward
        #: ``dead_link`` like transmissions (docs/deviations.md D47).
        self.probes_unanswered = 0
        #: Recovery of a lost window update (docs/deviations.md D60; off by default, as in
        #: kcp-go; the sockets turn it on). Sender: while the peer's window is closed, one
        #: WASK goes out after rx_rto, before the ``probe_init`` schedule. Receiver: a WINS
        #: that reopened a window the peer was told is 0 is repeated (rx_rto, then twice the
        #: wait each time, at most ``WINS_RETRIES`` times) until a PUSH or WASK shows the
        #: peer heard.
        self.window_recovery = False
        #: D62: the peer's KCP state was found new (it acknowledges segments in flight with
        #: una 0 after it had acknowledged earlier ones): a restarted peer. Nothing here acts
        #: on it; the runtime fails the session.
        self.peer_restarted = False
        self._restart_seen: Optional[int] = None
        #: ms (u32) at which our snd_una first left 0: later segments reached a peer that
        #: had our sn 0 (D62). Far in the future until then.
        self._una_moved_at = 0x7FFFFFFF
        self._early_probe_until = 0      # the regular probe's time while the early one waits
        self._wins_at = 0                # when the window update is repeated (0: never)
        self._wins_wait = 0
        self._wins_tries = 0
        #: What ``input``/``recv`` asked for (kcp-go flushes inside Input; a driver flushes
        #: once per batch instead): FLUSH_NONE, FLUSH_ACK_ONLY or FLUSH_FULL.
        self.flush_requested = FLUSH_NONE
        self.ack_nodelay = False
        #: [latest] §1.9 phase 5: a fast/early-retransmitted segment waits for its RTO before
        #: another fast/early retransmission (kcp-go latest). Off by default: 5.6.1's rule
        #: (fastack back to 0) measured faster, as with the lock a lost fast retransmission
        #: waits for its RTO (D50; ``Options.fast_retransmit_once``).
        self.fastack_lock = False
        #: [latest] §1.6: ``input`` requests a full flush as soon as a duplicate-ACK count
        #: reaches ``fastresend``, instead of leaving the retransmission to the next tick
        #: (default on: measured faster, D50).
        self.fastack_flush = True
        #: [latest] §1.6 "ACK clocking": ``input`` requests an ACK-only flush once
        #: ``mtu // 24`` ACKs (segments) are pending (True, the default; D51). False: at twice
        #: that, kcpgo's earlier bound on the ACK list of a long batch (5.6.1 has none).
        self.ack_clock = True
        #: At most this many new segments enter the window per flush (None: all that fit,
        #: as in kcp-go). A driver that encodes slowly sets it so that a flush's timestamps
        #: stay close to the real transmission time; the rest is flushed on the next turn.
        self.admit_limit: Optional[int] = None
        self._next_flush: Optional[int] = None   # absolute ms of the next periodic flush

    # ------------------------------------------------------------------ configuration

    def set_mtu(self, mtu: int) -> None:
        """Set the largest KCP datagram size in bytes (kcp-go ``SetMtu``, docs/protocol.md §1.4).

        When the mss shrinks, segments still in snd_queue (not yet sent) that no longer fit
        are re-cut for the new mss (docs/deviations.md D23): stream mode re-packs the bytes
        into full segments; a chunk queued by :meth:`write` (each a message of its own, frg 0)
        is cut into frg-0 pieces, which never fails; a message queued by message-mode
        :meth:`send` is re-fragmented whole (frg counting down to 0 again). Segments already
        in snd_buf keep their sn and size (their retransmissions still exceed the new MTU),
        and so do the queued remaining fragments of a message whose first fragments were sent
        (the receiver counts on their number).

        Raises (changing nothing) ``TypeError`` if ``mtu`` is not an int, ``ValueError`` if
        it cannot hold a header and one data byte (25..1500), or if a message queued by
        :meth:`send` would need more than :attr:`max_fragments` fragments at the new mss.
        """
        mtu = index(mtu)
        if not OVERHEAD < mtu <= MTU_LIMIT:
            raise ValueError(f"KCP mtu must be in {OVERHEAD + 1}..{MTU_LIMIT}, got {mtu!r}")
        mss = mtu - OVERHEAD
        recut = self._recut_queue(mss) if mss < self.mss else None   # may raise: no change yet
        if recut is not None:
            sq = self.snd_queue
            sq.clear()
            sq.extend(recut)
        self.mtu = mtu
        self.mss = mss

    def _recut_queue(self, mss: int) -> Optional[List[list]]:
        """snd_queue's records cut for ``mss``, or ``None`` if every one already fits (D23).

        Pure: ``ValueError`` (nothing changed) if a message queued by message-mode
        :meth:`send` (records marked ``MSG``) would need more fragments than the limit;
        :meth:`write` chunks become frg-0 pieces. A leading continuation of a message already
        partly in snd_buf, and a trailing run without a frg-0 segment (never produced by
        send/write), stay as they are.
        """
        sq = self.snd_queue
        for rec in sq:
            if len(rec[D]) > mss:
                break
        else:
            return None
        recs = list(sq)
        n = len(recs)
        out: List[list] = []
        i = 0
        if self._sq_split:
            while i < n:
                rec = recs[i]
                out.append(rec)
                i += 1
                if rec[FRG] == 0:
                    break
        stream = self.stream
        limit = min(self._max_frg, MAX_FRAGMENTS)
        pending: List[bytes] = []          # stream mode: consecutive chunks to re-pack

        def repack() -> None:
            data = b"".join(pending)
            pending.clear()
            out.extend([data[o:o + mss], 0, 0, 0, 0, 0, 0, 0] for o in range(0, len(data), mss))

        while i < n:
            rec = recs[i]
            if not rec[MSG]:
                # A chunk queued by write() or a stream-mode send (frg 0): a message of its
                # own, so it is cut into frg-0 pieces, never into fragments (no limit).
                i += 1
                if stream:
                    pending.append(rec[D])
                    continue
                data = rec[D]
                if len(data) > mss:
                    out.extend([data[o:o + mss], 0, 0, 0, 0, 0, 0, 0]
                               for o in range(0, len(data), mss))
                else:
                    out.append(rec)
                continue
            j = i                          # a message-mode send: up to its frg-0 fragment
            while j < n and recs[j][FRG] != 0:
                j += 1
            if j == n:                     # no frg 0 closes it: not ours to re-number
                if pending:
                    repack()
                out.extend(recs[i:])
                break
            msg = recs[i:j + 1]
            i = j + 1
            if pending:
                repack()
            if all(len(r[D]) <= mss for r in msg):
                out.extend(msg)
                continue
            data = b"".join(r[D] for r in msg)
            count = (len(data) + mss - 1) // mss
            if count > limit:
                raise ValueError(
                    f"cannot lower the mss to {mss}: a queued message of {len(data)} bytes "
                    f"would need {count} fragments; the limit is {limit} (max_fragments, "
                    f"docs/deviations.md D20/D23)")
            out.extend([data[k * mss:(k + 1) * mss], count - k - 1, 0, 0, 0, 0, 0, 1]
                       for k in range(count))
        if pending:
            repack()
        return out

    @property
    def max_fragments(self) -> int:
        """Largest fragment count of a message-mode :meth:`send` (1..255; default 32).

        A message is delivered only when all its fragments fit the receiver's receive queue,
        i.e. count <= the peer's rcv_wnd (skywind3000/kcp#140), and the sender cannot know
        that window: the default is kcp-go's default rcv_wnd (32), so a peer that keeps or
        raises its default always completes the message. Raise it (up to the 255 the u8 frg
        field allows) only when the peer's rcv_wnd is known to be at least as large
        (docs/deviations.md D20). ``ValueError`` outside 1..255.
        """
        return self._max_frg

    @max_fragments.setter
    def max_fragments(self, count: int) -> None:
        count = index(count)
        if not 1 <= count <= MAX_FRAGMENTS:
            raise ValueError(f"max_fragments must be in 1..{MAX_FRAGMENTS}, got {count}")
        self._max_frg = count

    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """kcp-go ``NoDelay``: each argument applies only if >= 0; interval clamps to 10..5000 ms.

        ``TypeError`` (changing nothing) if an argument is not an int (§1.11).
        """
        nodelay, interval, resend, nc = index(nodelay), index(interval), index(resend), index(nc)
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
        """kcp-go ``WndSize``: positive values apply (no minimum); rcv window must fit u16.

        Growing the receive window after the peer was told a small one announces it at once
        (a WINS at the next flush, :meth:`_announce_window`; docs/deviations.md D35): kcp-go
        waits for the peer's probe, 7 s for a 5.6.1 sender that filled the old window.
        ``TypeError`` for a non-int, ``ValueError`` above 65535; a call that raises changes
        nothing (D21).
        """
        sndwnd, rcvwnd = index(sndwnd), index(rcvwnd)
        if rcvwnd > MAX_WINDOW or sndwnd > MAX_WINDOW:
            raise ValueError(f"window sizes must be <= {MAX_WINDOW} (the wnd field is u16)")
        if sndwnd > 0:
            self.snd_wnd = sndwnd
        if rcvwnd > 0:
            self.rcv_wnd = rcvwnd
            if self.rcv_buf:
                self._move_to_queue()        # segments held back by the old window
            self._announce_window()

    def _free_window(self) -> int:
        """The receive window to announce now, in segments (the wnd field of every segment).

        rcv_wnd minus the queued segments; when that is <= 0 but the message at the head of
        the queue is incomplete (more fragments than rcv_wnd, D20's receive side), the number
        of its fragments still missing, so the sender keeps sending them (0 otherwise).
        :meth:`flush` calls it once per flush; :meth:`input` accepts up to the same window.
        """
        rq = self.rcv_queue
        wnd = self.rcv_wnd - len(rq)
        if wnd <= 0:
            wnd = rq[0][0] + 1 - len(rq) if rq and rq[0][0] >= len(rq) else 0
        return wnd

    def _announce_window(self) -> None:
        """Request a window update (WINS, flushed at once) when the window we can announce now
        (:meth:`_free_window`) has opened enough beyond the one the peer last heard
        (``wnd_sent``), docs/deviations.md D35:

        * Linux's rule for TCP window updates (``__tcp_cleanup_rbuf``): the announced window
          was at most half the receive window and the new one is at least twice it;
        * receiver silly-window avoidance (RFC 1122 section 4.2.3.3, do not advertise small
          increases): the increase is at least ``max(1, rcv_wnd // 8)`` segments, unless the
          head message is incomplete (no read can open more until data arrives, so any
          increase is announced).

        It includes C KCP's "fast recover" (a full queue that drained). Without it a peer told
        "0" sits out its probe timer (7 s for kcp-go 5.6.1); a slow reader sends one WINS per
        ``rcv_wnd // 8`` messages read at most, not one per read."""
        sent = self.wnd_sent
        rcv_wnd = self.rcv_wnd
        if sent * 2 <= rcv_wnd:
            now_wnd = self._free_window()
            step = rcv_wnd >> 3
            if step < 1:
                step = 1
            elif now_wnd - sent < step:
                rq = self.rcv_queue
                if rq and rq[0][0] >= len(rq):
                    step = 1                 # head incomplete: reads cannot open more
            if now_wnd - sent >= step and now_wnd >= sent * 2:
                self.probe |= ASK_TELL
                self.flush_requested = FLUSH_FULL

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
        """Size in bytes of the next complete message (0 for a zero-length one), or -1 if none
        (kcp-go ``PeekSize``, docs/protocol.md §1.7).

        As kcp-go, a message is complete when at least head-frg + 1 segments are queued; it
        also needs a segment with frg 0 to end it (a peer that numbers fragments wrongly could
        otherwise make :meth:`recv` run off the queue): -1 until one arrives.
        """
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
                return total
        return -1

    def check(self, now: int, acks: bool = True) -> Optional[int]:
        """Absolute ms at which :meth:`flush` has work to do next, or ``None`` if nothing.
        ``acks=False`` leaves pending ACKs out, for a driver that schedules them itself.

        kcp-go flushes every ``interval`` while a session is active. A flush has work only if
        something is queued, ACKs or probes are pending, or a segment collected duplicate ACKs;
        otherwise the only future work is a retransmission, a window update's repeat (D60) or,
        while the peer advertises a zero window, the window probe, so the deadline is the
        earliest of those. Skipping the
        empty flushes in between changes nothing on the wire and lets thousands of sessions
        with a message in flight sleep (kcp-go spends most of its CPU on those ticks).
        """
        if self.flush_requested:
            return now
        return self._work_due(now, acks)

    def _work_due(self, now: int, acks: bool = True) -> Optional[int]:
        if self._tick_needed(acks):
            nxt = self._next_flush
            return now if nxt is None else nxt
        due = self._earliest_timer()
        wins_at = self._wins_at
        if wins_at and (due is None or wins_at < due):
            due = wins_at
        if self.rmt_wnd == 0:
            # kcp-go probes a closed window even with nothing queued (a blocked writer
            # queues nothing here); until the first flush has set the probe timer, flush now.
            probe = self.ts_probe if self.probe_wait else now
            if due is None or probe < due:
                due = probe
        return due

    def _tick_needed(self, acks: bool = True) -> bool:
        """Whether the periodic flush would do more than retransmit or probe on a timer
        (``acks=False``: not counting pending ACKs)."""
        if (acks and self._acks) or self.probe or self.snd_queue:
            return True
        buf = self.snd_buf
        if not buf:
            return False
        snd_una = self.snd_una
        for h in self._holes:
            if buf[h - snd_una][FASTACK] > 0:     # FASTACK_LOCKED (-1) waits for the RTO
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

    def send(self, data: bytes) -> int:
        """Queue one message (kcp-go ``KCP.Send``, docs/protocol.md §1.5); returns its length.

        Message mode cuts it into ``ceil(len / mss)`` fragments, frg counting down to 0, and
        refuses more than :attr:`max_fragments` (default 32, the receive window every kcp-go
        peer has by default: a message larger than the receiver's window is never delivered,
        skywind3000/kcp#140; docs/deviations.md D20). Stream mode tops up the last queued
        segment, then appends <= mss segments with frg 0, with no limit: a stream segment is
        a message of its own, so nothing can wedge (kcp-go refuses > 255; D21).

        Raises ``ValueError`` for an empty buffer or too many fragments, ``TypeError`` for an
        object without the buffer protocol; a call that raises queues nothing (kcp-go
        returns -2 after topping up the tail in stream mode; D21).
        """
        if type(data) is not bytes:
            data = bytes(memoryview(data))
        n = len(data)
        if not n:
            raise ValueError("cannot send an empty message (kcp-go Send returns -1)")
        if self.stream:
            return self.write(data)         # frg-0 segments, topping up the tail: no limit
        mss = self.mss
        sq = self.snd_queue
        count = (n + mss - 1) // mss
        limit = self._max_frg
        if count > limit:
            raise ValueError(
                f"a message of {n} bytes needs {count} fragments of at most {mss} bytes (mss); "
                f"the limit is {limit} fragments ({limit * mss} bytes): a message must fit the "
                f"receiver's window (max_fragments, docs/deviations.md D20)")
        for i in range(count):
            sq.append([data[i * mss:(i + 1) * mss], count - i - 1, 0, 0, 0, 0, 0, 1])
        return n

    def write(self, data: bytes) -> int:
        """Queue a byte buffer the way kcp-go's session ``Write`` does (§1.5, §5.4).

        The buffer is cut into <= mss chunks with one :meth:`send` each, so every segment has
        frg 0 and there is no fragment limit. In stream mode that packs bytes contiguously
        (the first chunk tops up the queued tail). Returns the number of bytes queued (all of
        them); ``TypeError``, queueing nothing, for an object without the buffer protocol.
        """
        if type(data) is not bytes:
            data = bytes(memoryview(data))
        n = len(data)
        if n == 0:
            return 0
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
            append([data[o:o + mss], 0, 0, 0, 0, 0, 0, 0])
        return n

    def recv(self) -> Optional[bytes]:
        """Take the next complete message, or ``None`` (kcp-go ``Recv``).

        In stream mode every segment is a message. A read that reopens a window the peer was
        told is (nearly) closed requests a WINS update at once (:meth:`_announce_window`).
        Fragments that no frg-0 segment ends (a peer that numbers them wrongly) are not a
        message: ``None``, and they stay queued (:meth:`peek_size`, D24).
        """
        rq = self.rcv_queue
        if not rq:
            return None
        frg, data = rq[0]
        if frg == 0:
            rq.popleft()
        else:
            if len(rq) < frg + 1 or self.peek_size() < 0:
                return None                  # incomplete, or no frg 0 ends it (D24)
            parts = []
            while True:
                frg, piece = rq.popleft()
                parts.append(piece)
                if frg == 0:
                    break
            data = b"".join(parts)
        if self.rcv_buf:
            self._move_to_queue()
        if self.wnd_sent * 2 <= self.rcv_wnd:
            self._announce_window()
        return data

    def recv_stream(self, limit: int) -> bytes:
        """Take whole messages, concatenated, while their total stays <= ``limit``.

        For stream mode, where message boundaries mean nothing; always returns at least one
        message if one is ready, even if it alone exceeds ``limit``. ``b""`` if none
        (including misnumbered fragments without a frg-0 end, as :meth:`recv`).
        """
        rq = self.rcv_queue
        if not rq:
            return b""
        if rq[0][0] != 0 or len(rq[0][1]) >= limit:
            return self.recv() or b""
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
        if self.wnd_sent * 2 <= self.rcv_wnd:
            self._announce_window()
        return b"".join(parts)

    def _move_to_queue(self) -> None:
        rb = self.rcv_buf
        rq = self.rcv_queue
        nxt = self.rcv_nxt
        rcv_wnd = self.rcv_wnd
        # (rq may be empty with a window of 0: Connection.close_receiving)
        while nxt in rb and (len(rq) < rcv_wnd or (rq and rq[0][0] >= len(rq))):
            rq.append(rb.pop(nxt))
            nxt += 1
        self.rcv_nxt = nxt
