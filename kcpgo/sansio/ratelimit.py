"""A token bucket in bytes per second: kcp-go latest's ``SetRateLimit`` pacer, without a clock.

kcp-go latest (``sess.go`` ``SetRateLimit``, v5.6.35+; docs/protocol.md §5.9) paces each
session's transmit batches with ``golang.org/x/time/rate``: ``NewLimiter(bytesPerSecond,
64 * 1500)``, then ``WaitN(len(batch))`` before each batch, counting wire bytes (crypto, FEC and
KCP headers included). The bucket starts full and holds at most ``burst`` bytes; it refills at
``rate`` bytes per second. This module is that bucket as a pure object (h11/aioquic style):
every call takes ``now``, the caller's integer millisecond clock, and nothing here reads time.

``borrow`` lets a caller take tokens it does not hold yet, down to ``-borrow``: x/time/rate's
reservations, whose ``WaitN`` then sleeps until the debt is repaid. The runtime's
:class:`kcpgo.runtime.channel.Channel` uses it the other way round (send a flush at once,
then hold the next one back until the bucket is out of debt) so that no datagram waits after
KCP has stamped it; it queues only what would go deeper than one burst.

Arithmetic is exact: tokens are kept in milli-bytes (bytes x 1000), so a refill of ``dt`` ms
adds exactly ``dt * rate`` of them and :meth:`TokenBucket.delay` is never off by a rounding.
"""
from __future__ import annotations

__all__ = ["TokenBucket", "DEFAULT_BURST"]

#: kcp-go's burst: ``maxBatchSize * mtuLimit`` = 64 datagrams x 1500 bytes (sess.go
#: ``SetRateLimit``; the largest batch its tx goroutine hands to ``WaitN``).
DEFAULT_BURST = 64 * 1500


def _count(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return value


class TokenBucket:
    """``rate`` bytes per second (int > 0), at most ``burst`` bytes at once (int > 0; default
    :data:`DEFAULT_BURST`), full at ``now`` (ms). ``ValueError`` for other values.

    * :meth:`try_take` ``(nbytes, now, borrow=0)``: take ``nbytes`` if the bucket holds them,
      or all but ``borrow`` of them (a request above ``burst`` counts as ``burst``: it needs a
      full bucket and leaves it in debt), else take nothing;
    * :meth:`take` ``(nbytes, now)``: take them anyway, into debt if need be (a debt is repaid
      by the refill before anything else fits);
    * :meth:`delay` ``(nbytes, now, borrow=0)``: ms until that :meth:`try_take` succeeds;
    * :meth:`available` ``(now)``: whole bytes held (negative while in debt);
    * :meth:`set_rate` ``(rate, now)``: change the rate; the tokens held stay.

    ``now`` must not go backwards (a smaller value refills nothing). Over any interval of
    ``T`` ms the bytes taken are at most ``burst + rate * T / 1000`` plus the debt left at its
    end (at most ``borrow`` plus what :meth:`take` added), which later takes repay.
    """

    __slots__ = ("rate", "burst", "_milli", "_last")

    def __init__(self, rate: int, burst: int = DEFAULT_BURST, now: int = 0) -> None:
        #: Refill in bytes per second.
        self.rate = _count("rate", rate, 1)
        #: Capacity in bytes.
        self.burst = _count("burst", burst, 1)
        self._milli = burst * 1000          # tokens held, in milli-bytes
        self._last = now                    # ms of the last refill

    def _refill(self, now: int) -> int:
        dt = now - self._last
        if dt > 0:
            self._last = now
            cap = self.burst * 1000
            milli = self._milli + dt * self.rate
            self._milli = cap if milli > cap else milli
        return self._milli

    def available(self, now: int) -> int:
        """Whole bytes the bucket holds at ``now`` (at most ``burst``; negative in debt)."""
        return self._refill(now) // 1000

    def try_take(self, nbytes: int, now: int, borrow: int = 0) -> bool:
        """Take ``nbytes`` and return True if the bucket holds ``min(nbytes, burst) - borrow``
        bytes (``borrow`` >= 0: how deep into debt the take may go); otherwise return False
        and take nothing."""
        need = (nbytes if nbytes < self.burst else self.burst) - borrow
        if self._refill(now) < need * 1000:
            return False
        self._milli -= nbytes * 1000
        return True

    def take(self, nbytes: int, now: int) -> None:
        """Take ``nbytes`` whatever the bucket holds (it may go into debt)."""
        self._milli = self._refill(now) - nbytes * 1000

    def delay(self, nbytes: int, now: int, borrow: int = 0) -> int:
        """Milliseconds from ``now`` until :meth:`try_take` of ``nbytes`` (with the same
        ``borrow``) succeeds, 0 if it would now. ``delay(0, now)``: until the bucket is out of
        debt."""
        need = ((nbytes if nbytes < self.burst else self.burst) - borrow) * 1000
        short = need - self._refill(now)
        if short <= 0:
            return 0
        return -(-short // self.rate)       # ceil: enough after exactly this many ms

    def set_rate(self, rate: int, now: int) -> None:
        """Refill at the old rate up to ``now``, then refill at ``rate`` bytes per second
        (int > 0, ``ValueError`` otherwise; nothing changes then)."""
        rate = _count("rate", rate, 1)
        self._refill(now)
        self.rate = rate

    def __repr__(self) -> str:
        return (f"<TokenBucket rate={self.rate} B/s burst={self.burst} B "
                f"held={self._milli / 1000:.0f} B>")
