"""KCP output: ``flush`` builds the datagrams due now (docs/protocol.md §1.9, §1.10, §1.11).
Sans-IO; mixed into :class:`kcpgo.sansio.kcp.KCP`, whose ``__init__`` defines the state.

Phases of one flush: ACKs (kcp-go's filter), the window-probe timer and probe commands,
admission of queued segments into the send window, then transmission (fast / early / RTO
retransmissions first, then new segments), the congestion reaction and the next flush time.
"""
from __future__ import annotations

from heapq import heappop, heappush
from itertools import chain
from operator import index
from typing import List

from .kcpdefs import (ASK_SEND, ASK_TELL, D, FASTACK, FASTACK_LOCKED, FLUSH_FULL, FLUSH_NONE,
                      FRG, MASK, PROBE_LIMIT, RESEND, RTO, THRESH_MIN, TS, WINS_RETRIES, XMIT,
                      pack_header)
from .wire import CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, OVERHEAD

__all__ = ["OutputMixin"]


class OutputMixin:
    """``KCP.flush`` and ``KCP.update``: everything that puts segments on the wire."""

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
        wnd = self._free_window()
        una_w = self.rcv_nxt & MASK
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
                    last_sn = s & MASK
                    last_ts = acks[i + 1]
                    parts.append(pack_header(conv, CMD_ACK, 0, wnd, last_ts, last_sn, una_w, 0))
                    size += OVERHEAD
                    nsegs += 1
            acks.clear()
        if ack_only:
            if parts:
                out.append(b"".join(parts))
                self.wnd_sent = wnd
            self.snmp.OutSegs += nsegs
            return out

        # Phase 2: window probe timer while the peer advertises a zero window.
        if self.rmt_wnd == 0 or self.probe_wait:
            self._probe_timer(now)
        # Phase 3: probe commands (they carry the last ACK's sn/ts, as kcp-go's template does).
        if self._wins_at and now >= self._wins_at:
            self._repeat_window_update(now, wnd)
        probe = self.probe
        if probe:
            if probe & ASK_TELL and self.window_recovery and wnd and self.wnd_sent == 0 \
                    and not self._wins_at:
                # this WINS reopens a window the peer was told is closed: a sender with
                # nothing in flight waits for it, so repeat it until the peer shows it heard
                # (D60; a window told small but open reopens with the ACKs of what it sends)
                self._wins_tries = 0
                self._wins_wait = self.rx_rto if self.rx_rto > self.interval else self.interval
                self._wins_at = now + self._wins_wait
            for flag, cmd in ((ASK_SEND, CMD_WASK), (ASK_TELL, CMD_WINS)):
                if probe & flag:
                    if size + OVERHEAD > mtu:
                        out.append(b"".join(parts))
                        parts = []
                        size = 0
                    parts.append(pack_header(conv, cmd, 0, wnd, last_ts, last_sn, una_w, 0))
                    size += OVERHEAD
                    nsegs += 1
            self.probe = 0

        # Phase 4: admit queued segments into the send window. (ts_w first: a non-int now
        # raises TypeError here, before segments are admitted that would then have no timer.)
        ts_w = now & MASK
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
            # Once per flush: does the queue's head continue a message now partly sent?
            self._sq_split = buf[-1][FRG] != 0
        else:
            admit = 0

        # Phase 5: transmission. Retransmissions (lower sns) go first, then new segments.
        resent = self.fastresend if self.fastresend > 0 else MASK
        rx_rto = self.rx_rto
        timers = self._timers
        fast = early = lost = 0
        retx: List[int] = []
        # [latest] a resent segment's fastack locks until its RTO (D50); 5.6.1 resets it to 0
        relock = FASTACK_LOCKED if self.fastack_lock else 0
        for h in self._holes:
            rec = buf[h - snd_una]
            fa = rec[FASTACK]
            if fa > 0:
                if fa >= resent:
                    fast += 1
                elif admit == 0:
                    early += 1
                else:
                    continue
                rec[FASTACK] = relock
                rec[RTO] = rx_rto
                rec[RESEND] = now + rx_rto
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
                    if rec is not None and rec[RESEND] == due:
                        rto = (rec[RTO] + backoff) & MASK
                        rec[RTO] = rto
                        rec[FASTACK] = 0
                        rec[RESEND] = now + rto
                        heappush(timers, (now + rto, s, s + 1))
                        retx.append(s)
                        lost += 1
            if nfast and lost:
                retx.sort()
        # One encoding loop for both kinds: measured within 3 % of two specialised loops on
        # an all-retransmission flush and equal on new data; a helper call per segment would
        # cost about 20 % (tools/bench_core.py, tools/bench_kcp.py).
        dead_link = self.dead_link
        resend_at = now + rx_rto
        new_end = new_from + admit
        for s in (chain(retx, range(new_from, new_end)) if retx else range(new_from, new_end)):
            rec = buf[s - snd_una]
            if s < new_from:                      # retransmission (sorted, lower sns first)
                rec[XMIT] += 1
                if rec[XMIT] >= dead_link:
                    self.dead = True
            else:                                 # first transmission
                rec[XMIT] = 1
                rec[RTO] = rx_rto
                rec[RESEND] = resend_at
            rec[TS] = ts_w
            data = rec[D]
            ln = len(data)
            if size + OVERHEAD + ln > mtu and parts:
                out.append(b"".join(parts))
                parts = []
                size = 0
            parts.append(pack_header(conv, CMD_PUSH, rec[FRG], wnd, ts_w, s & MASK, una_w, ln))
            parts.append(data)
            size += OVERHEAD + ln
        if admit:
            heappush(timers, (resend_at, new_from, new_end))
            if dead_link <= 1:
                self.dead = True
        if parts:
            out.append(b"".join(parts))
        if out:
            self.wnd_sent = wnd                   # every segment carries it
        nsegs += len(retx) + admit
        snmp = self.snmp
        snmp.OutSegs += nsegs
        # [latest] gauges (kcpgo.snmp), stored as kcp-go latest's flush does (segments)
        snmp.RingBufferSndQueue = len(self.snd_queue)
        snmp.RingBufferRcvQueue = len(self.rcv_queue)
        snmp.RingBufferSndBuffer = len(buf)
        if retx:
            snmp.RetransSegs += len(retx)
            snmp.FastRetransSegs += fast
            snmp.EarlyRetransSegs += early
            snmp.LostSegs += lost

        # Phase 6: congestion control reaction; then the next periodic flush.
        if not self.nocwnd and (fast or early or lost or self.cwnd < 1):
            self._react_to_loss(cwnd, resent, fast + early, lost)
        self._next_flush = self._next_flush_at(now)
        return out

    def _repeat_window_update(self, now: int, wnd: int) -> None:
        """D60, receiver: the WINS that reopened a closed window may have been lost, and no
        PUSH or WASK came since: send it again, while the window is still open, at most
        ``WINS_RETRIES`` times, each wait twice the last."""
        if wnd and self._wins_tries < WINS_RETRIES:
            self._wins_tries += 1
            self.probe |= ASK_TELL
            self._wins_wait *= 2
            self._wins_at = now + self._wins_wait
        else:
            self._wins_at = 0

    def _probe_timer(self, now: int) -> None:
        """§1.9: while the peer's window is closed, ask for it (WASK) on a backed-off timer.
        With ``window_recovery`` (D60) one WASK goes out after rx_rto first (a lost WINS costs
        about an RTO, not ``probe_init``); it does not count toward the dead link (D47)."""
        if self.rmt_wnd == 0:
            probe_init = self.probe_init
            if self.probe_wait == 0:
                self.probe_wait = probe_init
                self.ts_probe = now + self.probe_wait
                if self.window_recovery and self.rx_rto < probe_init:
                    self._early_probe_until = self.ts_probe
                    self.ts_probe = now + self.rx_rto
            elif self._early_probe_until and now >= self.ts_probe:
                self.ts_probe = self._early_probe_until
                self._early_probe_until = 0
                self.probe |= ASK_SEND
            elif now >= self.ts_probe:
                if self.probe_wait < probe_init:
                    self.probe_wait = probe_init
                self.probe_wait += self.probe_wait // 2
                if self.probe_wait > PROBE_LIMIT:
                    self.probe_wait = PROBE_LIMIT
                self.ts_probe = now + self.probe_wait
                self.probe |= ASK_SEND
                # A live peer answers every WASK (with WINS; any input resets the count):
                # unanswered probes are a dead peer's sign, as retransmissions are (D47).
                self.probes_unanswered += 1
                if self.probes_unanswered >= self.dead_link:
                    self.dead = True
        else:
            self.ts_probe = 0
            self.probe_wait = 0
            self._early_probe_until = 0

    def _react_to_loss(self, cwnd: int, resent: int, fast_or_early: int, lost: int) -> None:
        """§1.10: shrink cwnd after fast/early retransmissions (halve) or an RTO (to 1).
        ``cwnd`` is the window this flush admitted with; ``resent`` the fast-resend trigger."""
        mss = self.mss
        if fast_or_early:
            ssthresh = (self.snd_nxt - self.snd_una) // 2
            self.ssthresh = ssthresh if ssthresh > THRESH_MIN else THRESH_MIN
            self.cwnd = (self.ssthresh + resent) & MASK
            self.incr = (self.cwnd * mss) & MASK
        if lost:
            self.ssthresh = cwnd // 2 if cwnd // 2 > THRESH_MIN else THRESH_MIN
            self.cwnd = 1
            self.incr = mss
        if self.cwnd < 1:
            self.cwnd = 1
            self.incr = mss

    def _next_flush_at(self, now: int) -> int:
        """One interval from now, sooner if a retransmission or the window probe is due."""
        nxt = now + self.interval
        timers = self._timers
        if not self.snd_buf:
            timers.clear()
        elif timers and timers[0][0] < nxt:
            nxt = timers[0][0] if timers[0][0] > now else now + 1
        if self.rmt_wnd == 0 and self.ts_probe and self.ts_probe < nxt and \
                (self.snd_queue or self.snd_buf):
            nxt = self.ts_probe
        return nxt

    def update(self, now: int, flush_acks: bool = False) -> List[bytes]:
        """Run whatever flush is due at ``now`` and return its datagrams (maybe ``[]``).

        A full flush when one was requested, the periodic tick is due while it has work
        (:meth:`check`), or a retransmission timer expired; otherwise, with ACKs pending, an
        ACK-only flush if requested (ACK no-delay) or if ``flush_acks`` is set (the runtime
        sets it once per received batch, so ACKs never wait for the tick). ``now`` must be an
        int (ms): anything else raises ``TypeError`` before any change.
        """
        if type(now) is not int:
            now = index(now)
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
