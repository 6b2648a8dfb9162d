"""KCP input: one received KCP datagram into the state machine (docs/protocol.md §1.6, §1.8,
§1.10). Sans-IO; mixed into :class:`kcpgo.sansio.kcp.KCP`, whose ``__init__`` defines the state.

Per segment: the peer's window and ``una`` (which slides the send window), PUSH into the receive
buffer and queue with an ACK queued for the next flush, ACK into the duplicate-ACK bookkeeping
of the "holes" list; once per datagram: the RTT sample (kcp-go's estimator) and cwnd growth.
"""
from __future__ import annotations

from operator import index

from .kcpdefs import (ASK_TELL, FASTACK, FLUSH_ACK_ONLY, FLUSH_FULL, HALF, MASK,
                      RESTART_CONFIRM, RTO_MAX, TS, unpack_header)
from .wire import CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, OVERHEAD

__all__ = ["InputMixin"]


class InputMixin:
    """``KCP.input`` and what it drives: ACK bookkeeping, the RTT estimator, cwnd growth."""

    def input(self, data: bytes, now: int, regular: bool = True) -> int:
        """Process one KCP datagram (kcp-go ``Input``, §1.6). Returns 0 or kcp-go's error code.

        -1: shorter than a header, or a segment with another conv; -2: a length field beyond the
        datagram; -3: unknown cmd. Segments before the bad one stay processed (as in kcp-go).
        ``regular`` is False for FEC-recovered datagrams: they update neither the remote window
        nor RTT nor RepeatSegs. Instead of flushing, sets :attr:`flush_requested`. ``now`` is
        the caller's integer ms clock: anything else raises ``TypeError`` before any change
        (a float used to fail at the RTT sample, after the datagram was half processed).
        """
        if type(now) is not int:
            now = index(now)
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
        nacks = len(acks)
        rmt_wnd = self.rmt_wnd
        # D20: while the head message of the queue is incomplete, the window announced
        # (_free_window) reaches to its last fragment, possibly beyond rcv_nxt + rcv_wnd: PUSHes
        # below that sn are accepted too (at most 256 segments in queue and buffer for it).
        msg_end = rcv_nxt
        if rq and rq[0][0] >= len(rq):
            msg_end = rcv_nxt + rq[0][0] + 1 - len(rq)
        latest_ts = -1
        window_slid = False
        restarted = False
        repeats = 0
        nsegs = 0
        ret = 0
        off = 0
        while end - off >= OVERHEAD:
            sconv, cmd, frg, wnd, ts, sn, una, ln = unpack_header(data, off)
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
            d = ((una - snd_una + HALF) & MASK) - HALF
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
                ds = ((sn - rcv_nxt + HALF) & MASK) - HALF
                # diff(sn, rcv_nxt + rcv_wnd) < 0, including kcp-go's u32 wrap of that sum;
                # or an sn the announced window of an incomplete head message covers (D20).
                if (ds < rcv_wnd and ds - rcv_wnd >= -HALF) or 0 <= ds < msg_end - rcv_nxt:
                    acks.append(rcv_nxt + ds)
                    acks.append(ts)
                    # The queue holds rcv_wnd segments, more only to complete the message
                    # at its head (frg counts the fragments after it): a message of more
                    # fragments than the window must still arrive (D20).
                    if ds == 0 and not rcv_buf and (len(rq) < rcv_wnd
                                                    or (rq and rq[0][0] >= len(rq))):
                        rq.append((frg, data[off:off + ln]))   # in-order fast path
                        rcv_nxt += 1
                    elif ds >= 0:
                        s = rcv_nxt + ds
                        if s in rcv_buf:
                            repeats += 1
                        else:
                            rcv_buf[s] = (frg, data[off:off + ln])
                            while rcv_nxt in rcv_buf and (len(rq) < rcv_wnd
                                                          or (rq and rq[0][0] >= len(rq))):
                                rq.append(rcv_buf.pop(rcv_nxt))
                                rcv_nxt += 1
                    else:
                        repeats += 1
                else:
                    repeats += 1
            elif cmd == CMD_ACK:
                acked = ((sn - snd_una + HALF) & MASK) - HALF + snd_una
                if una == 0 and d < 0 and snd_una <= acked < self.snd_nxt and \
                        ((ts - self._una_moved_at + HALF) & MASK) - HALF >= 0:
                    # in flight, sent after the peer had our sn 0, acked as if it never had:
                    # its state is new (D62; a stale first-window ACK echoes an older ts)
                    restarted = True
                self._on_ack(acked, ts, snd_una)
                latest_ts = ts
            elif cmd == CMD_WASK:
                self.probe |= ASK_TELL
                self._wins_at = 0                # it asks: the answer is the update (D60)
            off += ln
            nsegs += 1
        if not prev_una & MASK and snd_una & MASK:
            self._una_moved_at = now & MASK     # the peer has our sn 0 from here on (D62)
        self.snd_una = snd_una
        self.rcv_nxt = rcv_nxt
        self.rmt_wnd = rmt_wnd
        if nsegs:
            self.probes_unanswered = 0          # the peer is alive (D47)
            if self._wins_at and len(acks) > nacks:
                self._wins_at = 0               # a PUSH: the peer sends again (D60)
        snmp = self.snmp
        if regular and repeats:
            snmp.RepeatSegs += repeats
        # [latest] "ACK clocking" (§1.6, D51): an ACK-only flush once mtu // 24 ACKs wait
        # (the list holds two ints per ACK); twice that without ack_clock.
        if len(acks) >= (self.mtu // OVERHEAD << (1 if self.ack_clock else 2)) and \
                self.flush_requested < FLUSH_ACK_ONLY:
            self.flush_requested = FLUSH_ACK_ONLY
        if ret:
            return ret
        snmp.InSegs += nsegs
        if restarted and regular and rcv_nxt:
            self._restart_evidence(now)
        elif window_slid:
            self._restart_seen = None           # the peer's una moves on: it is the same
        if latest_ts >= 0 and regular:
            rtt = ((now - latest_ts + HALF) & MASK) - HALF
            if rtt >= 0:
                self._update_rtt(rtt)
        if not self.nocwnd and snd_una > prev_una:
            self._grow_cwnd()
        if window_slid and self.snd_queue:
            # Room for queued segments. With nothing queued a flush would only send this
            # input's ACKs early, alone, instead of on the reply the application is about to
            # write (the runtime sends them one loop turn later: docs/deviations.md D1).
            self.flush_requested = FLUSH_FULL
        elif self.ack_nodelay and acks and self.flush_requested < FLUSH_ACK_ONLY:
            self.flush_requested = FLUSH_ACK_ONLY
        return 0

    def _restart_evidence(self, now: int) -> None:
        """D62: a datagram acknowledged, with una 0, a segment in flight that we sent after
        the peer had acknowledged our sn 0 (its echoed ts is not older than the moment our
        snd_una left 0), and the peer has sent us data: its KCP state is new (a restarted
        peer, or a kcp-go listener that closed the session and made a new one for the same
        address), and neither direction can deliver again. (A stale ACK of the session's
        first window also carries una 0, but echoes an older ts: a reviewer's links with
        400 ms of jitter took 8.7 % of live peers for restarted ones before that test.) A
        second such datagram at least ``RESTART_CONFIRM`` ms later, with no advance of una
        in between, sets :attr:`peer_restarted`. (A peer that never sent us
        data is left alone: its new session's data is still in sequence for us, so an smux
        peer's first frame can still name a framing mismatch, D43.)"""
        seen = self._restart_seen
        if seen is None:
            self._restart_seen = now
        elif now - seen >= RESTART_CONFIRM:
            self.peer_restarted = True

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
        # duplicate ACK (kcp-go's ts test); a locked count (FASTACK_LOCKED, -1) stays locked.
        # [latest] §1.6: a count reaching fastresend retransmits now, not at the next tick (D50)
        resend = self.fastresend if self.fastack_flush else MASK + 1
        for h in holes:
            if h >= sn:
                break
            rec = buf[h - snd_una]
            if ((rec[TS] - ts + HALF) & MASK) - HALF <= 0:
                fa = rec[FASTACK]
                if fa >= 0:
                    fa += 1
                    rec[FASTACK] = fa
                    if fa >= resend:
                        self.flush_requested = FLUSH_FULL

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
        rto = (self.rx_srtt + max(self.interval, self.rx_rttvar << 2)) & MASK
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
                self.incr = (self.incr + (mss * mss) // self.incr + mss // 16) & MASK
                if (self.cwnd + 1) * mss <= self.incr:
                    self.cwnd = (self.incr + mss - 1) // mss if mss > 0 else self.cwnd
            if self.cwnd > rmt_wnd:
                self.cwnd = rmt_wnd
                self.incr = rmt_wnd * mss
