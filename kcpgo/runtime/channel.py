"""``Channel``: drives one sans-IO :class:`~kcpgo.sansio.Connection` on a UDP endpoint.

The counterpart of aioquic's ``QuicConnectionProtocol``: it moves datagrams between the
endpoint and the connection, arms the connection's one timer, and tells whoever sits on top
(the blocking socket today; an smux session or an asyncio adapter later) that something
changed, through one callback, ``on_update()``. No greenlet of its own: the endpoint's reader
and the runtime's scheduler run it.

Per received batch: feed every datagram, flush once (data and window updates), notify, then
send the batch's ACKs one loop turn later so that a reply written by a woken greenlet carries
them (docs/deviations.md). Per timer: the periodic flush and retransmissions, the optional
idle timeout. A dead link (a segment sent ``dead_link`` times) or a socket error is latched in
:attr:`Channel.error`; the channel then sends no more and stops its timer. Until a valid
datagram arrives (:attr:`Channel.heard`), the dead-link and idle errors end with
:meth:`Channel.diagnosis`: what arrived instead and the likely causes (docs/deviations.md D33).

Rate limit: :class:`~kcpgo.runtime.pacing.Pacing`.
"""
from __future__ import annotations

import errno
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

from ..sansio.connection import Connection
from ..sansio.ratelimit import TokenBucket
from . import busypoll
from .busypoll import ARM_SCORE, ARM_WINDOW, SCORE_MAX, SPIN_MAX
from .clock import monotonic as _monotonic
from .clock import now_ms
from .diagnosis import peer_failure, unheard
from .pacing import ACKS_UNPACED, PACE_QUEUE_MS, PACE_TICK_MS, Pacing, pace_queue_limit
from .scheduler import Timer
from .udp import UDPEndpoint

__all__ = ["Channel", "ADMIT_PER_FLUSH", "ACK_PROMPT", "LINGER", "PACE_QUEUE_MS", "PACE_TICK_MS",
           "ACKS_UNPACED", "pace_queue_limit"]

#: ACKs pending after a batch from which they are sent on the next loop turn; fewer wait up
#: to one interval for a reply to carry them (D1).
ACK_PROMPT = 4
#: Seconds a closed session keeps sending what it was given before it closed, until the peer
#: acknowledged it (:meth:`Channel.release_when_delivered`; smux sessions alike).
LINGER = 10.0
#: New segments a session puts on the wire per flush (``Connection(admit_limit=...)``): about
#: one GSO burst, so a flush costs well under a millisecond even with a cipher and FEC.
ADMIT_PER_FLUSH = 64
Address = Tuple[Any, ...]


class Channel(Pacing):
    """One KCP session on a :class:`UDPEndpoint`, driven by the endpoint's reader and a timer.

    ``peer`` is the remote address; datagrams from elsewhere are counted (``InErrs``) and
    dropped on a client channel. ``on_release(channel)`` runs once when :meth:`release` has
    sent the final flush (a client closes its endpoint there, a listener forgets the session).
    ``passive`` marks a listener's session (``PassiveOpens``; it shares the listener's socket).
    ``rate_limit``: bytes per second on the wire, 0 for none (:meth:`set_rate_limit`).
    """

    __slots__ = ("conn", "conv", "receive_payload", "endpoint", "peer", "local", "passive",
                 "runtime", "timer", "on_update", "error", "released", "_on_release",
                 "_acks_scheduled", "_acks_on_read", "_batch_at", "_updating", "_ack_at",
                 "_answers", "_idle_ms", "last_rx", "heard", "opened", "foreign",
                 "_bucket", "_paced", "_paced_bytes", "_pace_limit", "_pace_timer",
                 "pace_drops", "_rr_sent", "_rr_score", "_rr_waiting", "_linger_timer",
                 "__weakref__")

    def __init__(self, conn: Connection, endpoint: UDPEndpoint, peer: Address, *,
                 on_release: Callable[["Channel"], None], passive: bool = False,
                 idle_timeout: Optional[float] = None, rate_limit: int = 0) -> None:
        self.conn = conn
        self.conv = conn.conv
        #: A listener's datagram, already opened by its demux (``Connection.receive_payload``,
        #: bound once: this runs per datagram); :meth:`after_batch` follows once per batch.
        self.receive_payload = conn.receive_payload
        self.endpoint = endpoint
        self.peer = peer
        #: The local address to reply from (a pktinfo batch item's ``local``; set by a wildcard
        #: listener from the datagrams routed to this session, docs/deviations.md D25);
        #: ``None``: the system chooses.
        self.local: Any = None
        self.passive = passive
        self.runtime = endpoint.runtime
        self.timer = self.runtime.timer(self._on_timer)
        #: Called after every change a facade may care about (data, window, error).
        self.on_update: Callable[[], None] = _nothing
        #: The latched failure (``ConnectionResetError``, ``TimeoutError``, ``OSError``).
        self.error: Optional[BaseException] = None
        self.released = False
        self._on_release = on_release
        self._acks_scheduled = False
        #: A bulk batch's flush waits for the application's read (data_taken, D60).
        self._acks_on_read = False
        self._batch_at = 0                   # when that batch came (ms)
        self._updating = False               # on_update runs from _post_io
        #: ms by which the pending ACKs go out if no reply carries them (after_batch)
        self._ack_at: Optional[int] = None
        #: whether the application's last send came within an interval of a received batch
        #: (it answers: the ACKs of a request wait for the reply, D1)
        self._answers = False
        self._idle_ms: Optional[int] = None
        self.last_rx = self.opened = now_ms()
        #: Whether a valid datagram (it passed the crypto check and KCP took it) came from the
        #: peer; a listener's session was created by one. Until then errors say what arrived
        #: instead (:meth:`diagnosis`, docs/deviations.md D33).
        self.heard = passive
        #: Datagrams from other addresses dropped by this client channel (its share of InErrs).
        self.foreign = 0
        self.set_idle_timeout(idle_timeout)
        #: Rate limit (:meth:`set_rate_limit`): the bucket (``None``: off), the datagrams
        #: waiting for tokens and their bytes, the queue's bound in bytes, its timer.
        self._bucket: Optional[TokenBucket] = None
        self._paced: Deque[bytes] = deque()
        self._paced_bytes = 0
        self._pace_limit = 0
        self._pace_timer = self.runtime.timer(self._on_pace)
        #: Datagrams the rate limit's full queue dropped (also in ``endpoint.send_drops``).
        self.pace_drops = 0
        #: Busy-polling (kcpgo.runtime.busypoll): when the application's first send since
        #: the last reply was made (monotonic s), whether one was, and how request/response
        #: the traffic looks.
        self._rr_sent = 0.0
        self._rr_waiting = False
        self._rr_score = 0
        #: While a closed session still delivers (:meth:`release_when_delivered`): its limit.
        self._linger_timer: Optional[Timer] = None
        if rate_limit:
            self.set_rate_limit(rate_limit)
        # kcp-go's session runs its first update at creation (sess.go newUDPSession): that
        # flush raises KCP's congestion window from 0 to 1 segment (§1.9 phase 6), so the
        # application's first write leaves at once. Without it, a session with congestion
        # control on (kcp-go's default) sent its first message one interval late (100 ms).
        out = conn.flush(self.opened)
        if out:  # pragma: no cover - nothing is queued yet
            self._transmit(out)
        if self.runtime.io_thread:
            self.runtime.channels.add(self)     # (the final flush at exit, iothread.py)
        snmp = conn.snmp
        snmp.CurrEstab += 1
        if snmp.CurrEstab > snmp.MaxConn:
            snmp.MaxConn = snmp.CurrEstab
        if passive:
            snmp.PassiveOpens += 1
        else:
            snmp.ActiveOpens += 1

    # ------------------------------------------------------------------ driven by the reader

    def on_batch(self, batch: list, now: int) -> None:
        """A client endpoint's batch: only datagrams from :attr:`peer` are accepted. Until the
        first valid datagram (:attr:`heard`) each one is also checked for having passed the
        crypto check and been taken by KCP (the codec counts the failures, D33).

        Data before parity (a heard peer, FEC): a batch's FEC parity is fed after its data
        and, if the session is then readable, after the owner was told (``on_update``).
        Parity only repeats what arrived unless a data shard was lost, and a reply should
        not wait for it: the kcptun server sends a reply's last data shard and then its
        group's parity in one burst (tools/bench_rx.py). To FEC and KCP this is the
        reordering a network may do within a batch; what the parity recovers is told
        after the batch as usual. Only if the session was not readable before the batch:
        an owner that does not read (flow control) is not told twice."""
        conn = self.conn
        codec = conn.codec
        peer = self.peer
        heard = self.heard
        fed = False
        if heard and len(batch) > 1:
            fed = self._feed_batch(batch, now)
        else:
            for data, addr in batch:
                if addr != peer:
                    conn.snmp.InErrs += 1
                    self.foreign += 1
                    continue
                if heard:
                    if conn.receive_datagram(data, now):  # failed the crypto check: not the peer
                        fed = True
                    continue
                rejected = codec.input_errors
                if conn.receive_datagram(data, now):
                    fed = True
                    if codec.input_errors == rejected:
                        heard = self.heard = True
                        self._stop_icmp()
        if fed:
            last = self.last_rx
            self.after_batch(now)
            if not heard:
                self.last_rx = last     # nothing valid yet: the idle clock keeps running

    def _stop_icmp(self) -> None:
        """The peer was heard: no more ICMP reports (D57; the diagnosis needed them), so
        that the session is kcp-go's again: no ICMP error reaches it."""
        endpoint = self.endpoint
        if endpoint.icmp is not None:
            endpoint.icmp.disable()
            endpoint.icmp = None

    def _feed_batch(self, batch: list, now: int) -> bool:
        """:meth:`on_batch` for a heard peer: the batch's datagrams from the peer are opened
        at once (one cipher call, ``Connection.receive_datagrams``). With FEC, the data first,
        then the owner is told if the session became readable, then the batch's parity.
        Returns whether a datagram passed the crypto check."""
        conn = self.conn
        peer = self.peer
        wires = []
        for data, addr in batch:
            if addr != peer:
                conn.snmp.InErrs += 1
                self.foreign += 1
                continue
            wires.append(data)
        if conn.codec.fec_decoder is None:
            return conn.receive_datagrams(wires, now)
        quiet = not conn.readable()     # else the owner knows already (or does not read)
        parity: List[bytes] = []
        fed = conn.receive_datagrams(wires, now, parity)
        if parity:
            if quiet and conn.readable():
                self.on_update()        # the data first; what the parity recovers follows
                if self.released:
                    return False
            receive = self.receive_payload
            for payload in parity:
                receive(payload, now)
        return fed

    def after_batch(self, now: int) -> None:
        """The batch fed this session: flush once for all of it, notify, then send the ACKs
        on the next loop turn."""
        self.last_rx = now
        if self.released:
            return
        if self._rr_waiting and self.conn.has_queued():
            # A reply (data for the application) to our last send: how soon (busypoll.py).
            # ACKs alone are no reply: a bulk sender must not spin for them. (Not
            # conn.readable(): that consumes empty messages, D22, which only a read may do.)
            self._rr_waiting = False
            if self.endpoint.rx_at - self._rr_sent <= ARM_WINDOW:
                if self._rr_score < SCORE_MAX:
                    self._rr_score += 1
            else:
                self._rr_score = 0
        conn = self.conn
        pending = conn.pending_acks
        # A bulk batch (D60): its flush waits for the application's reads (data_taken), so
        # that its ACKs announce the window they opened, not the one the batch filled: on a
        # lossy 50 ms link ~15 % more data in flight, and no closed window after a filled
        # hole. A reader woken by _post_io (a greenlet of this hub, or the smux driver at
        # once) reads before the loop's next turn, which sends it anyway (_send_acks);
        # ack_nodelay and rate-limited sessions ACK as before.
        after_read = (pending >= ACK_PROMPT and self._bucket is None
                      and not conn.ack_nodelay)
        schedule = False
        # In a session whose application answers what it receives, pending ACKs alone are no
        # reason to flush now (below); a receiver that only reads ACKs at once (fresh RTT).
        answers = self._answers
        if not after_read and (self._bucket is None or not self._held(now)) and \
                conn.has_output(now, not answers):
            out = conn.datagrams_to_send(now, acks=False)
            if out:
                self._transmit(out)
        if pending and not self._acks_scheduled:
            if pending < ACK_PROMPT:
                # A few segments (request/response traffic): their ACKs wait up to one
                # interval for the reply to carry them, as kcp-go's ACKs wait for its tick
                # (D1); the timer (_post_io) flushes them then if nothing else did.
                if self._ack_at is None:
                    self._ack_at = now + conn.interval
            else:                   # bulk batches are ACKed at once (rate limit: before)
                self._acks_scheduled = schedule = True
                if after_read:
                    self._acks_on_read = True
                    self._batch_at = now
                else:
                    self.runtime.call_soon(self._send_acks)
        try:
            self._post_io(now)
        finally:
            if schedule and after_read and self._acks_on_read:
                # queued after the woken reader's switch: a read sends it sooner
                self.runtime.call_soon(self._send_acks)

    def data_taken(self) -> None:
        """The application, or the smux driver, took data from the receive queue (under the
        stack lock): a bulk batch's flush that waited for reads goes out (D60), its ACKs
        announcing the window the reads opened, once that window is more than half of
        rcv_wnd or one interval after the batch, whichever comes first: a reader that works
        on each message between reads does not hold the ACKs back longer."""
        if not self._acks_on_read or self.released:
            return
        now = now_ms()
        conn = self.conn
        if conn.window_nearly_closed and now - self._batch_at < conn.interval:
            return                              # more reads, or the turn's end, send them
        self._flush_batch(now)
        if not self._updating:
            self._post_io(now)

    def fail(self, exc: BaseException) -> None:
        """Latch ``exc`` (the first one wins), stop the timer and notify."""
        if self.error is None:
            self.error = exc
        self.timer.cancel()
        self.on_update()

    # ------------------------------------------------------------------ driven by the facade

    def send_room(self) -> int:
        """Bytes the window takes now (``Connection.send_room``). ACKs already waiting on the
        socket are taken in first, also when the window looks full: a fresher window and no
        spurious RTO for a sender that keeps the hub busy."""
        conn = self.conn
        if conn.in_flight:
            self.endpoint.poll()
        return conn.send_room()

    def send(self, data: Any) -> int:
        """Queue ``data`` (at most :meth:`send_room` bytes) and flush."""
        n = self.conn.send(data)
        now = now_ms()
        self._answers = now - self.last_rx <= self.conn.interval
        self.flush(now)
        # Busy-polling (busypoll.py): the application sent; is a reply due soon?
        t = _monotonic()
        if not self._rr_waiting:
            self._rr_sent = t
            self._rr_waiting = True
        if self._rr_score >= ARM_SCORE and busypoll._enabled and self.runtime.in_loop():
            self.runtime.busy.arm(t + SPIN_MAX)     # (libev's watchers: the hub's thread only)
        return n

    def flush(self, now: Optional[int] = None) -> None:
        """Send what is due now (after an API call changed the state) and re-arm the timer.
        Nothing once released: a setter called after close sends no datagram. ``now``: the
        caller's ms clock reading, if it has one."""
        if self.released:
            return
        if now is None:
            now = now_ms()
        if self._bucket is None or not self._held(now):
            out = self.conn.datagrams_to_send(now)
            if out:
                self._transmit(out)
        self._post_io(now)

    def spin_receive(self) -> bool:
        """Called (under the stack lock) by a call about to wait for this session: if the
        traffic is request/response and a reply is due (busypoll.py, docs/deviations.md D54),
        poll until something is ready for the hub (at most until :data:`SPIN_MAX` after the
        send); if it is this session's socket, read and handle the batch in the calling
        greenlet, without a switch to the hub and back. Only in the hub's own thread, when
        nothing else is ready to run there. Returns whether a batch was handled."""
        if self._rr_score < ARM_SCORE or not self._rr_waiting or not busypoll._enabled:
            return False
        runtime = self.runtime
        busy = runtime.busy
        if not runtime.in_loop() or not busy.idle():
            return False
        endpoint = self.endpoint
        if endpoint.closed:
            return False
        if not busy.wait_ready(self._rr_sent + SPIN_MAX):
            self._rr_score = max(self._rr_score - 2, 0)     # spun in vain: two replies' worth
            return False
        return endpoint.poll()      # False: something else is ready; the hub serves it

    def kick(self) -> None:
        """Flush on the scheduler's next turn (the receive window reopened, say)."""
        if self.error is None and not self.released:
            self.timer.schedule(now_ms())

    def set_idle_timeout(self, seconds: Optional[float]) -> None:
        """Fail with ``TimeoutError(ETIMEDOUT)`` after ``seconds`` without any datagram from the
        peer (``None``: never, as kcp-go). Datagrams that fail the crypto check do not count,
        nor, until the first valid one, datagrams KCP rejects (D33: the error then says so)."""
        self._idle_ms = None if seconds is None else max(1, int(seconds * 1000))
        if self._idle_ms is not None and not self.released and self.error is None:
            self.timer.schedule(self.last_rx + self._idle_ms)

    def final_flush(self) -> None:
        """One flush of what the window allows (the I/O thread's exit; :meth:`release`
        does the same)."""
        if self.released or self.error is not None or self.endpoint.closed:
            return
        try:
            out = self.conn.flush(now_ms())
            if out:
                self.endpoint.send_many(out, self.peer, self.local)
        except OSError:
            pass

    def release_when_delivered(self, seconds: Optional[float] = None) -> None:
        """:meth:`release` once the peer acknowledged everything sent, or ``seconds`` from now
        at the latest (``None``: :data:`LINGER`), as a closed TCP socket's send queue is still
        delivered (docs/deviations.md D59). At once when nothing is unacknowledged, the
        session failed (a dead link ends the wait too), its peer was never heard (nothing
        would acknowledge), or its runtime's thread is gone (nothing would drive it)."""
        if self.released:
            return
        if seconds is None:
            seconds = LINGER
        if (not self.conn.waitsnd or self.error is not None or not self.heard or seconds <= 0
                or not self.runtime.owner_alive()):
            self.release()
            return
        self.on_update = self._delivered
        self.conn.close_receiving()     # nobody reads: data sent now is not acknowledged
        self._linger_timer = self.runtime.timer(self._linger_over)
        self._linger_timer.schedule(now_ms() + int(seconds * 1000))
        self.flush()

    def _delivered(self) -> None:
        # on_update of a closed session still delivering (release_when_delivered)
        if self.error is not None or not self.conn.waitsnd:
            self.release()

    def _linger_over(self, now: int) -> None:
        self.release()

    @property
    def lingering(self) -> bool:
        """Closed by its owner, still delivering what it was given (release_when_delivered)."""
        return self._linger_timer is not None and not self.released

    def release(self) -> None:
        """Final flush (kcp-go's Close: what the window allows), stop, then ``on_release``."""
        if self.released:
            return
        self.released = True
        if self._linger_timer is not None:
            self._linger_timer.close()
        endpoint = self.endpoint
        if not endpoint.closed and self.error is None and not self.runtime.forked:
            try:
                out = self.conn.flush(now_ms())
                if self._paced:     # rate limit: what still waits goes first, unpaced
                    out = self._unpace() + out
                if out:
                    endpoint.send_many(out, self.peer, self.local)
            except OSError:
                pass
        self.conn.snmp.CurrEstab -= 1
        self.timer.close()
        self._pace_timer.close()
        self._unpace()
        self.on_update = _nothing
        self._on_release(self)

    # ------------------------------------------------------------------ internals

    def _transmit(self, out: list, acks: bool = False) -> None:
        """Send a flush's datagrams. The data is already in KCP's buffers whatever happens
        here: transient errors are drops (``UDPEndpoint.send_many``; KCP retransmits), any
        other socket error fails this session, latched for its next call, so that the call
        that queued the data never raises after queueing it (docs/deviations.md D21).
        With a rate limit, :meth:`_pace` decides what leaves now (``acks``: an ACK-only
        flush)."""
        if self.runtime.forked:
            return          # a child's copy: its datagrams would go into the parent's session
        bucket = self._bucket
        if bucket is not None:
            out = self._pace(out, bucket, acks)
            if not out:
                return
        try:
            self.endpoint.send_many(out, self.peer, self.local)
        except OSError as exc:
            self.fail(exc)

    def _flush_batch(self, now: int) -> None:
        """The flush after_batch left for the reader's read (D60): whatever the batch made
        due, its ACKs included."""
        self._acks_scheduled = self._acks_on_read = False
        out = self.conn.datagrams_to_send(now)
        if out:
            self._transmit(out)

    def _send_acks(self) -> None:
        """A bulk batch's ACKs, on the loop turn after it (D60: after the woken reader's
        turn, unless its read sent them already). With a rate limit, the ACKs alone, which
        never wait for the bucket."""
        if not self._acks_scheduled:
            return                              # data_taken sent them
        self._acks_scheduled = False
        conn = self.conn
        if self.released:
            return
        now = now_ms()
        if self._acks_on_read:
            self._flush_batch(now)
        elif not conn.pending_acks:
            return
        elif not ACKS_UNPACED and self._held(now):
            self._post_io(now)                  # they go with the held-back flush
            return
        else:
            out = conn.flush_acks(now)
            if out:
                self._transmit(out, acks=True)
        self._post_io(now)

    def _on_timer(self, now: int) -> None:
        if self.released:
            return
        idle = self._idle_ms
        if idle is not None and now - self.last_rx >= idle and self.error is None:
            self.fail(TimeoutError(errno.ETIMEDOUT,
                                   f"no datagram from the peer for {idle / 1000:g} s"
                                   + self.unheard_suffix(now, failing=True)))
        if self._ack_at is not None and now >= self._ack_at and self.conn.pending_acks:
            # No reply carried them within an interval: this session ACKs at once again
            # until its application answers again (send()).
            self._answers = False
        if self._bucket is not None and self._held(now):
            # rate limit: the flush waits for the bucket; ACKs do not (ACKS_UNPACED)
            out = self.conn.flush_acks(now) if ACKS_UNPACED else []
            if out:
                self._transmit(out, acks=True)
        else:
            out = self.conn.datagrams_to_send(now)
            if out:
                self._transmit(out)
        self._post_io(now)

    def _post_io(self, now: int) -> None:
        conn = self.conn
        if (conn.peer_restarted or conn.dead) and self.error is None:
            self.error = peer_failure(self, now)
        self._updating = True
        try:
            self.on_update()
        finally:
            self._updating = False
        if self.error is not None or self.released:
            self.timer.cancel()              # a dead (or, by on_update, closed) session rests
            return
        deadline = conn.next_deadline(now, not self._answers)
        if conn.pending_acks:
            if not self._acks_scheduled:
                # their own deadline (after_batch), else at once
                ack = self._ack_at if self._ack_at is not None else now
                if deadline is None or ack < deadline:
                    deadline = ack
        elif self._ack_at is not None:
            # They went out with a reply (or a flush): a timer armed only for them would
            # fire for nothing, once per message of a request/response session.
            if self.timer.at == self._ack_at:
                self.timer.cancel()
            self._ack_at = None
        if deadline is not None and self._bucket is not None and self._held(now):
            # rate limit: not before the bucket is out of debt (or the queue's timer, which
            # re-arms this one when the queue is empty)
            bucket = self._bucket
            gate = self._pace_timer.at if self._paced else now + bucket.delay(0, now)
            if gate is not None and deadline < gate:
                deadline = gate
        idle = self._idle_ms
        if idle is not None:
            limit = self.last_rx + idle
            if deadline is None or limit < deadline:
                deadline = limit
        if deadline is None:
            # Nothing left to do (the last ACK came): a timer armed for the data in flight
            # would only wake to find that out, once per message of a request/response
            # session (a server's sessions with one message a second each).
            if not conn.pending_acks:
                self.timer.cancel()
            return
        self.timer.schedule(deadline)

    def __repr__(self) -> str:
        return f"<kcpgo Channel conv={self.conn.conv:#010x} peer={self.peer}>"

    # ------------------------------------------------------------------ diagnosis (D33)

    def unheard_suffix(self, now: Optional[int] = None, failing: bool = False) -> str:
        """``"; " + diagnosis`` for an error message while :attr:`heard` is false, else ``""``."""
        return "" if self.heard else "; " + self.diagnosis(now, failing)

    def diagnosis(self, now: Optional[int] = None, failing: bool = False) -> str:
        """Why nothing valid may have come from the peer yet (:func:`diagnosis.unheard`,
        docs/deviations.md D33); ``""`` once a valid datagram arrived. ``failing``: for the
        error that ends the session (dead link, idle timeout), which then sends no more."""
        return "" if self.heard else unheard(self, now_ms() if now is None else now, failing)

def _nothing() -> None:
    pass
