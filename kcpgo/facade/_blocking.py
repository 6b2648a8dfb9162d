"""What every blocking kcpgo object shares: timeouts, the one wait loop, readiness fds.

The wait loop (:meth:`Blocking._blocking_call`) has gevent's socket shape: try the operation;
if it would block, wait on one event with the call's deadline; try again. So ``recv``, ``send``,
``sendall``, ``drain`` and ``accept`` have identical semantics:

* timeout ``None``: block; ``0``: ``BlockingIOError(EAGAIN)``; ``t``: ``TimeoutError`` once the
  whole call has taken ``t`` seconds (CPython's deadline semantics, not gevent's per-wait);
* ``close()`` from another greenlet sets the events; the operation then raises ``EBADF``;
* one greenlet per direction (:class:`Direction`): a second greenlet that tries to receive
  (or send) while another is inside a receive (or ``sendall``) on the same object gets
  :class:`ConcurrentUseError` at once instead of bytes interleaved with the other's.
"""
from __future__ import annotations

import errno
import os
import socket as _socket
from typing import Callable, Optional, TypeVar

import gevent
from gevent.event import Event

from ..runtime.clock import monotonic
from ..runtime.scheduler import Runtime

__all__ = ["Blocking", "Direction", "ConcurrentUseError", "ReadyFD", "ebadf", "set_dscp",
           "WOULD_BLOCK"]

T = TypeVar("T")
#: What an operation tried by :meth:`Blocking._blocking_call` returns when it would block.
WOULD_BLOCK: object = object()


def ebadf() -> OSError:
    return OSError(errno.EBADF, os.strerror(errno.EBADF))


class ConcurrentUseError(RuntimeError):
    """Two greenlets used one direction of one kcpgo object at the same time (gevent's socket
    raises ``ConcurrentObjectUseError`` in the same case). Give each direction one owner, or
    serialise the callers with a lock."""


class Direction:
    """The receiving or the sending side of an object: an event to wait on, one owner."""

    __slots__ = ("verb", "event", "owner", "waiters")

    def __init__(self, verb: str) -> None:
        self.verb = verb                        # "receive" or "send", for the error message
        self.event = Event()
        self.owner: Optional[object] = None     # the greenlet inside a call, if any
        self.waiters = 0                        # greenlets blocked on the event

    def enter(self) -> bool:
        """Claim the direction for the current greenlet; returns whether this call claimed it
        (False: it already held it, e.g. ``sendall`` calling ``send``)."""
        me = gevent.getcurrent()
        owner = self.owner
        if owner is None:
            self.owner = me
            return True
        if owner is me:
            return False
        raise ConcurrentUseError(
            f"another greenlet is already in a {self.verb} call on this kcpgo object; one "
            f"greenlet at a time may {self.verb} on it (serialise the callers with a lock)")

    def leave(self, claimed: bool) -> None:
        if claimed:
            self.owner = None

    def wake(self) -> None:
        if self.waiters:
            self.event.set()


class Blocking:
    """``socket.socket``'s timeout settings plus the shared wait loop."""

    _timeout: Optional[float] = None
    _runtime: Runtime

    def settimeout(self, value: Optional[float]) -> None:
        """``None``: block forever; ``0``: non-blocking; ``t > 0``: raise after t seconds."""
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def _deadline(self, timeout: Optional[float] = None, use_default: bool = True
                  ) -> Optional[float]:
        """The monotonic time at which a call starting now times out (``None``: never)."""
        t = self._timeout if use_default else timeout
        return None if t is None else monotonic() + t

    def _blocking_call(self, attempt: Callable[[], object], side: Direction,
                       deadline: Optional[float], nonblocking: Optional[bool] = None) -> object:
        """Run ``attempt()`` until it returns something other than :data:`WOULD_BLOCK`,
        waiting on ``side``'s event in between. ``attempt`` raises for closed/failed objects.
        ``nonblocking`` defaults to "timeout is 0"."""
        while True:
            result = attempt()
            if result is not WOULD_BLOCK:
                return result
            if nonblocking if nonblocking is not None else self._timeout == 0.0:
                raise BlockingIOError(errno.EAGAIN, "operation would block")
            self._runtime.check_thread()
            ev = side.event
            ev.clear()
            side.waiters += 1
            try:
                remaining = None
                if deadline is not None:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        raise TimeoutError("timed out")
                if not ev.wait(remaining):
                    raise TimeoutError("timed out")
            finally:
                side.waiters -= 1


class ReadyFD:
    """An eventfd (or pipe) kept readable exactly while a condition holds, for select()."""

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.rfd = self.wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            self.rfd, self.wfd = os.pipe()
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)
        self.signalled = False

    def set(self, ready: bool) -> None:
        if ready == self.signalled:
            return
        self.signalled = ready
        if ready:
            os.write(self.wfd, (1).to_bytes(8, "little"))
        else:
            try:
                os.read(self.rfd, 8)
            except BlockingIOError:  # pragma: no cover - already drained
                pass

    def close(self) -> None:
        os.close(self.rfd)
        if self.wfd != self.rfd:
            os.close(self.wfd)


def set_dscp(sock: _socket.socket, dscp: int) -> None:
    """kcp-go ``SetDSCP`` (docs/protocol.md §5.5): IPv4 TOS = dscp << 2, IPv6 traffic class =
    dscp (unshifted). ``ValueError`` outside 0..63; ``OSError(EOPNOTSUPP)`` if neither applies."""
    if not 0 <= dscp <= 63:
        raise ValueError("dscp must be in 0..63")
    ok = False
    for level, opt, value in ((_socket.IPPROTO_IP, _socket.IP_TOS, dscp << 2),
                              (_socket.IPPROTO_IPV6, getattr(_socket, "IPV6_TCLASS", 67), dscp)):
        try:
            sock.setsockopt(level, opt, value)
            ok = True
        except OSError:
            pass
    if not ok:
        raise OSError(errno.EOPNOTSUPP, "cannot set DSCP on this socket")
