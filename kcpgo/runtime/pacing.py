"""A :class:`~kcpgo.runtime.channel.Channel`'s rate limit: the pacing half of a channel.

Rate limit (kcp-go latest ``SetRateLimit``, docs/protocol.md §5.9; :meth:`Channel.set_rate_limit`,
off by default): every datagram the channel sends is charged to a
:class:`~kcpgo.sansio.ratelimit.TokenBucket`. A flush goes out at once, borrowing up to one
burst; the next flush waits until the bucket is out of debt (KCP keeps the data meanwhile).
What would borrow more waits in a bounded queue (:func:`pace_queue_limit`) for a timer, in
order. ACK-only flushes never wait (:data:`ACKS_UNPACED`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Deque, Optional

from ..sansio.ratelimit import DEFAULT_BURST, TokenBucket
from .clock import now_ms

if TYPE_CHECKING:  # pragma: no cover
    from .scheduler import Timer
    from .udp import UDPEndpoint

__all__ = ["Pacing", "PACE_QUEUE_MS", "PACE_TICK_MS", "ACKS_UNPACED", "pace_queue_limit"]

#: Rate limit: the paced queue holds at most this many ms of the limit (and never less than
#: the bucket's burst), :func:`pace_queue_limit`. It only fills when one flush alone would
#: borrow more than a burst (a retransmission storm with a large window).
PACE_QUEUE_MS = 250
#: Rate limit: a paced queue is served once enough tokens for this many ms of the limit (or
#: for all it holds) are back, so that a session wakes at most about 1000 / PACE_TICK_MS times
#: a second for its queue (the rate over any longer interval is the same).
PACE_TICK_MS = 5
#: Rate limit: ACK-only flushes (a batch's ACKs, or the pending ones when a timer finds data
#: held back) go out at once whatever the bucket holds, and are charged to it (so the rate
#: over time still holds). kcp-go makes them wait with the data; measured in
#: tools/bench_ratelimit.py ``--bidir`` (docs in tests/test_ratelimit.py).
ACKS_UNPACED = True


class Pacing:
    """Mixin of :class:`~kcpgo.runtime.channel.Channel`: :meth:`set_rate_limit` and the paced
    queue. The channel owns the state (its ``__slots__``) and calls :meth:`_held` and
    :meth:`_pace` on its send path."""

    __slots__ = ()

    _bucket: Optional[TokenBucket]
    _paced: Deque[bytes]
    _paced_bytes: int
    _pace_limit: int
    _pace_timer: "Timer"
    timer: "Timer"
    pace_drops: int
    released: bool
    error: Optional[BaseException]
    endpoint: "UDPEndpoint"
    runtime: Any
    peer: Any
    local: Any

    if TYPE_CHECKING:  # pragma: no cover - Channel's
        def _transmit(self, out: list, acks: bool = False) -> None: ...

        def fail(self, exc: BaseException) -> None: ...

    def set_rate_limit(self, bytes_per_second: int) -> None:
        """Pace every datagram of this session at ``bytes_per_second`` on the wire (crypto, FEC
        and KCP headers included), with kcp-go's burst of 64 x 1500 bytes; 0 turns pacing off
        (kcp-go latest ``SetRateLimit``, docs/protocol.md §5.9). ``ValueError`` unless an int
        >= 0. kcp-go waits for a batch's tokens, then sends it; kcpgo sends a flush at once,
        borrowing up to one burst, and holds the next flush back until the debt is repaid: the
        same rate and burst, but no datagram waits after KCP stamped it (a wait there counts
        in its RTT samples and fires spurious retransmissions). What would borrow more waits
        in order, at most :func:`pace_queue_limit` bytes (the rest is dropped, counted in
        :attr:`pace_drops` and ``endpoint.send_drops``: KCP retransmits). A new rate keeps the
        tokens held; turning pacing on starts with a full bucket (one burst at once); turning
        it off sends what waits at once."""
        rate = bytes_per_second
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
            raise ValueError(f"rate limit must be an int >= 0 (bytes per second), got {rate!r}")
        now = now_ms()
        self._pace_timer.cancel()
        if not rate:
            self._bucket = None
            out = self._unpace()
            if out and not self.released and self.error is None:
                self._transmit(out)
            return
        if self._bucket is None:
            self._bucket = TokenBucket(rate, DEFAULT_BURST, now)
        else:
            self._bucket.set_rate(rate, now)
        self._pace_limit = pace_queue_limit(rate)
        if self._paced:
            self._arm_pace(now)
        if not self.released and self.error is None:
            self.timer.schedule(now)        # a held-back flush may go sooner (or later)

    @property
    def rate_limit(self) -> int:
        """The pacing rate in bytes per second, 0 when off (:meth:`set_rate_limit`)."""
        return 0 if self._bucket is None else self._bucket.rate

    @property
    def paced_bytes(self) -> int:
        """Bytes of datagrams waiting for the rate limit's tokens."""
        return self._paced_bytes

    def _held(self, now: int) -> bool:
        """Rate limit: whether flushes wait (the bucket is in debt, or datagrams queue)."""
        bucket = self._bucket
        return bucket is not None and (bool(self._paced) or bucket.available(now) < 0)

    def _pace(self, out: list, bucket: TokenBucket, acks: bool) -> list:
        """The datagrams of ``out`` that leave now (as long as the bucket stays within one
        burst of debt); the others join the paced queue, in order, as far as its bound
        allows (the rest is dropped, :meth:`set_rate_limit`)."""
        now = now_ms()
        if acks and ACKS_UNPACED:
            bucket.take(sum(map(len, out)), now)
            return out
        queue = self._paced
        n = len(out)
        i = 0
        if not queue:
            try_take = bucket.try_take
            borrow = bucket.burst
            while i < n and try_take(len(out[i]), now, borrow):
                i += 1
            if i == n:
                return out
        room = self._pace_limit - self._paced_bytes
        dropped = 0
        for j in range(i, n):
            d = out[j]
            size = len(d)
            if size <= room:
                queue.append(d)
                room -= size
            else:
                dropped += 1
        self._paced_bytes = self._pace_limit - room
        if dropped:
            self.pace_drops += dropped
            self.endpoint.send_drops += dropped
        if queue and not self._pace_timer.pending:
            self._arm_pace(now)
        return out[:i]

    def _arm_pace(self, now: int) -> None:
        """Wake when the bucket holds enough for the queue's head and ``PACE_TICK_MS`` of the
        rate (or for the whole queue if it holds less)."""
        bucket = self._bucket
        if bucket is None:  # pragma: no cover - callers check
            return
        want = bucket.rate * PACE_TICK_MS // 1000
        head = len(self._paced[0])
        if want < head:
            want = head
        if want > self._paced_bytes:
            want = self._paced_bytes
        self._pace_timer.schedule(now + bucket.delay(want, now, bucket.burst))

    def _on_pace(self, now: int) -> None:
        """The pace timer: send what the tokens allow, in order; re-arm for the rest, or
        let the held-back flush run once the queue is empty."""
        bucket = self._bucket
        if bucket is None or self.released or self.error is not None or self.runtime.forked:
            self._unpace()
            return
        queue = self._paced
        out = []
        nbytes = 0
        try_take = bucket.try_take
        borrow = bucket.burst
        while queue and try_take(len(queue[0]), now, borrow):
            d = queue.popleft()
            out.append(d)
            nbytes += len(d)
        self._paced_bytes -= nbytes
        if queue:
            self._arm_pace(now)
        else:
            self.timer.schedule(now + bucket.delay(0, now))
        if out:
            try:
                self.endpoint.send_many(out, self.peer, self.local)
            except OSError as exc:
                self.fail(exc)

    def _unpace(self) -> list:
        """Empty the paced queue; return what it held, in order."""
        out = list(self._paced)
        self._paced.clear()
        self._paced_bytes = 0
        return out


def pace_queue_limit(rate: int) -> int:
    """Bytes a rate-limited channel keeps waiting for tokens: ``PACE_QUEUE_MS`` of ``rate``
    (bytes/s), at least the bucket's burst (:data:`~kcpgo.sansio.ratelimit.DEFAULT_BURST`,
    96000 bytes). What does not fit is dropped like a lost datagram (KCP retransmits)."""
    return max(DEFAULT_BURST, rate * PACE_QUEUE_MS // 1000)
