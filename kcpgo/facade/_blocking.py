"""What every blocking kcpgo object shares: timeouts, the one wait loop, readiness fds.

The wait loop (:meth:`Blocking._blocking_call`) has gevent's socket shape: try the operation;
if it would block, wait on one event with the call's deadline; try again. So ``recv``, ``send``,
``sendall``, ``drain`` and ``accept`` have identical semantics:

* timeout ``None``: block; ``0``: ``BlockingIOError(EAGAIN)``; ``t``: ``TimeoutError`` once the
  whole call has taken ``t`` seconds (CPython's deadline semantics, not gevent's per-wait);
* ``close()`` from another greenlet or thread wakes every waiter; the operation then raises
  ``EBADF``;
* one caller per direction at a time (:class:`Direction`): a second greenlet or thread that
  receives (or sends) while another is inside a receive (or ``sendall``) on the same object
  waits for its turn, within its own timeout, so bytes are never interleaved with the other's.

Each try runs under the stack lock (:attr:`kcpgo.runtime.scheduler.Runtime.lock`), each wait
outside it, on a :class:`~kcpgo.runtime.waiters.Waiter` registered under the lock, so a wake-up
from the hub's thread cannot fall between the try and the wait.
"""
from __future__ import annotations

import errno
import functools
import os
import socket as _socket
import weakref
from collections import deque
from typing import Any, Callable, Deque, Optional, TypeVar

import gevent

from ..runtime import iothread
from ..runtime.clock import monotonic
from ..runtime.scheduler import Runtime
from ..runtime.waiters import Waiter

__all__ = ["Blocking", "Direction", "ReadyFD", "ebadf", "set_dscp", "check_timeout",
           "WOULD_BLOCK", "weak_call", "locked"]

T = TypeVar("T")
#: What an operation tried by :meth:`Blocking._blocking_call` returns when it would block.
WOULD_BLOCK: object = object()


def weak_call(obj: object, method: Callable[[Any], None]) -> Callable[[], None]:
    """``method(obj)`` as a callback that does not keep ``obj`` alive: lower layers (a
    channel's ``on_update``, a driver's ``on_session``) hold it, so that an object the
    application drops is still collected (and closed by its ``__del__``), as a socket is."""
    ref = weakref.ref(obj)

    def call() -> None:
        o = ref()
        if o is not None:
            method(o)
    return call


def locked(method: Callable[..., T]) -> Callable[..., T]:
    """Run a facade method under its object's stack lock (``self._runtime.lock``): for the
    setters and queries that change or read several fields of the state the hub's thread
    changes meanwhile."""
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> T:
        with self._runtime.lock:
            return method(self, *args, **kwargs)
    return call


def ebadf() -> OSError:
    return OSError(errno.EBADF, os.strerror(errno.EBADF))


class Direction:
    """The receiving or the sending side of an object: its waiters, and a turn.

    One caller (a greenlet of some thread) at a time holds the direction for a whole call
    (``sendall`` included); others queue for their turn, in arrival order, within their own
    deadline. So two callers never splice their bytes into each other's ``sendall``, nor split
    one ``recv``'s data. Everything here runs under the stack lock
    (:attr:`kcpgo.runtime.scheduler.Runtime.lock`) except :meth:`enter`'s wait.
    """

    __slots__ = ("_waiters", "owner", "queue", "closed")

    def __init__(self) -> None:
        #: Calls blocked until the object may proceed (:class:`~kcpgo.runtime.waiters.Waiter`).
        self._waiters: Optional[list] = None    # created on first wait
        self.owner: Optional[object] = None     # the greenlet inside a call, if any
        #: Callers waiting for their turn (created on first contention: most never contend).
        self.queue: Optional[Deque[Waiter]] = None
        #: Set by :meth:`wake_all`: the object is gone, waits return at once.
        self.closed = False

    @property
    def waiters(self) -> int:
        """Calls blocked on this direction."""
        return len(self._waiters) if self._waiters else 0

    def add_waiter(self, loop_ident: Optional[int]) -> Waiter:
        """A new waiter for the calling greenlet, woken by the next :meth:`wake`."""
        w = Waiter(loop_ident)
        if self.closed:
            w.fire()
        elif self._waiters is None:
            self._waiters = [w]
        else:
            self._waiters.append(w)
        return w

    def discard(self, w: Waiter) -> None:
        waiters = self._waiters
        if waiters and w in waiters:
            waiters.remove(w)

    def enter(self, deadline: Optional[float], nonblocking: bool, lock: Any,
              loop_ident: Optional[int] = None) -> bool:
        """Take the direction for the current greenlet, waiting for the holder to finish.

        Returns whether this call took it (False: the caller already held it, e.g. ``sendall``
        calling ``send``). Raises ``BlockingIOError`` when ``nonblocking`` and busy,
        ``TimeoutError`` when ``deadline`` passes first. Called without ``lock`` (the stack
        lock), which it takes."""
        me = gevent.getcurrent()
        nested = lock._is_owned()
        with lock:
            # No local keeps the owner: another thread's greenlet referenced from this frame
            # after that thread ended was freed twice when the frame was cleared (greenlet's
            # clean-up of a dead thread's main greenlet; SIGSEGV, 4 in 100 runs of a test).
            if self.owner is None:
                self.owner = me
                return True
            if self.owner is me:
                return False
            if nonblocking:
                raise BlockingIOError(errno.EAGAIN, "another caller is using this direction")
            if nested:                          # (see Blocking._blocking_call)
                raise RuntimeError(_NESTED_WAIT)
            if self.queue is None:
                self.queue = deque()
        turn: Optional[Waiter] = None
        try:
            while True:
                with lock:
                    if turn is not None and turn in self.queue:
                        self.queue.remove(turn)
                    if self.owner is None or self.closed:
                        self.owner = me
                        turn = None
                        return True
                    turn = Waiter(loop_ident)
                    self.queue.append(turn)
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0 or not turn.wait(remaining):
                    raise TimeoutError("timed out")
        finally:
            if turn is not None:
                with lock:
                    if turn in self.queue:
                        self.queue.remove(turn)
                    if self.owner is None and self.queue:
                        self.queue[0].fire()    # we left without our turn: pass it on

    def leave(self, took: bool) -> None:
        """Give the direction up (under the stack lock) and wake the next in line."""
        if took:
            self.owner = None
            queue = self.queue
            if queue:
                queue[0].fire()

    def wake(self) -> None:
        """Wake every blocked call (under the stack lock; any thread): each tries again."""
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for w in waiters:
                w.fire()

    def wake_all(self) -> None:
        """Wake every waiter for good (close, release): later waits return at once, and the
        calls raise EBADF."""
        self.closed = True
        self.wake()
        if self.queue:
            for w in self.queue:
                w.fire()


#: The largest timeout CPython's sockets take: its clock counts int64 nanoseconds.
_MAX_TIMEOUT = (2 ** 63 - 1) / 1e9


_NESTED_WAIT = ("a blocking kcpgo call cannot wait here: this thread is already inside a "
                "kcpgo call (a signal handler or a callback interrupted it), and the session "
                "cannot make progress until that call returns; use a timeout of 0 here, or "
                "defer the call (e.g. set a flag in the handler and act on it afterwards). "
                "Under gevent, another greenlet of this thread may be inside kcpgo and have "
                "switched greenlets there (a kcpgo bug: please report it)")


def check_timeout(value: Optional[float]) -> Optional[float]:
    """A socket timeout as ``socket.settimeout`` takes it (the errors measured on CPython
    3.11): ``None`` or seconds >= 0, returned as a float. ``TypeError`` for a string or
    another non-number, ``ValueError`` for NaN or a negative value, ``OverflowError`` for
    infinity or more than ~292 years."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
    value = float(value)
    if value != value:
        raise ValueError("Invalid value NaN (not a number)")
    if value < 0:
        raise ValueError("Timeout value out of range")
    if value > _MAX_TIMEOUT:
        raise OverflowError("timeout value is too large")
    return value


class Blocking:
    """``socket.socket``'s timeout settings plus the shared wait loop."""

    _timeout: Optional[float] = None
    _runtime: Runtime

    def settimeout(self, value: Optional[float]) -> None:
        """``None``: block forever; ``0``: non-blocking; ``t > 0``: raise after t seconds.
        ``OSError(EBADF)`` once closed, as a socket's."""
        value = check_timeout(value)
        self._check_open()
        self._timeout = value

    def _gone(self) -> bool:
        """Closed as a socket whose descriptor is closed: settimeout, setblocking,
        getpeername and getsockname raise ``OSError(EBADF)``, as they do on a socket."""
        return bool(getattr(self, "_closed", False))

    def _check_open(self) -> None:
        if self._gone():
            raise ebadf()

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def _busy_poll(self, side: "Direction") -> bool:
        """Before a call waits on ``side``: process a reply that is about to arrive without
        leaving the calling greenlet (``Channel.spin_receive``, docs/deviations.md D54).
        Returns whether something was received (the call then tries again). Runs under the
        stack lock."""
        return False

    def _interrupted(self, exc: BaseException) -> None:
        """``exc`` (KeyboardInterrupt, SystemExit: not an ``Exception``) escaped an attempt:
        the object's state may be half changed. Subclasses with protocol state abort it."""

    def _deadline(self, timeout: Optional[float] = None, use_default: bool = True
                  ) -> Optional[float]:
        """The monotonic time at which a call starting now times out (``None``: never)."""
        t = self._timeout if use_default else timeout
        return None if t is None else monotonic() + t

    def _attempt(self, attempt: Callable[[T], object], arg: T, nonblocking: bool) -> object:
        """One ``attempt(arg)`` under the stack lock: its result, ``WOULD_BLOCK`` to wait
        (``BlockingIOError`` instead in non-blocking mode). A ``KeyboardInterrupt`` or other
        ``BaseException`` inside it aborts the session first (:meth:`_interrupted`)."""
        try:
            result = attempt(arg)
        except Exception:
            raise
        except BaseException as exc:    # KeyboardInterrupt, SystemExit...
            self._interrupted(exc)
            raise
        if result is WOULD_BLOCK and nonblocking:
            raise BlockingIOError(errno.EAGAIN, "operation would block")
        return result

    def _blocking_call(self, attempt: Callable[[T], object], arg: T, side: Direction,
                       deadline: Optional[float], nonblocking: Optional[bool] = None,
                       take_turn: bool = True) -> object:
        """Run ``attempt(arg)`` under the stack lock until it returns something other than
        :data:`WOULD_BLOCK`, waiting (without the lock) for ``side`` to be woken in between;
        ``attempt`` raises for closed or failed objects. With ``take_turn`` the call holds
        ``side`` throughout (see :class:`Direction`). ``nonblocking`` defaults to "timeout is
        0". A runtime that stops meanwhile (the I/O thread's, ``Runtime.mark_stopped``) wakes
        the call, which raises ``OSError(EBADF)`` (``iothread.refuse``)."""
        if nonblocking is None:
            nonblocking = self._timeout == 0.0
        runtime = self._runtime
        if runtime.forked:
            raise OSError(errno.EBADF, "this kcpgo object belongs to the parent process (it "
                                       "was inherited across fork()): open a new one here")
        if runtime.stopped:     # nothing would ever wake this call (iothread.py, D56)
            iothread.refuse()
        lock = runtime.lock
        if take_turn and side.owner is None and not side.queue:
            # Fast path, the common case: nobody holds or awaits this direction, so a call
            # that does not wait needs no turn (the attempt runs whole under the lock).
            with lock:
                if side.owner is None and not side.queue:
                    result = self._attempt(attempt, arg, nonblocking)
                    if result is not WOULD_BLOCK:
                        return result
        loop = runtime.thread_ident
        # Held already by this thread: a signal handler (or a callback) interrupted a kcpgo
        # call, whose changes the hub's thread must not see half done. Waiting here would
        # block the hub's thread, which needs the lock to make progress, until the timeout.
        nested = lock._is_owned()
        took = side.enter(deadline, nonblocking, lock, loop) if take_turn else False
        waiter: Optional[Waiter] = None
        spin = not nonblocking      # at most one busy-poll per call (_busy_poll)
        blocked = runtime.blocked
        try:
            while True:
                with lock:
                    if waiter is not None:
                        side.discard(waiter)
                        blocked.discard(waiter)
                        waiter = None
                    result = self._attempt(attempt, arg, nonblocking)
                    if result is not WOULD_BLOCK:
                        return result
                    runtime.check_thread()
                    if nested:
                        raise RuntimeError(_NESTED_WAIT)
                    if runtime.stopped:         # woken by Runtime.mark_stopped: refuse below
                        break
                    if spin:
                        spin = False
                        if self._busy_poll(side):
                            continue
                    waiter = side.add_waiter(loop)
                    blocked.add(waiter)
                    if runtime.stopped:         # set by a mark_stopped that had no lock
                        waiter.fire()
                remaining = None
                if deadline is not None:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        raise TimeoutError("timed out")
                if not waiter.wait(remaining):
                    raise TimeoutError("timed out")
        finally:
            if took or waiter is not None:
                with lock:
                    if waiter is not None:
                        side.discard(waiter)
                        blocked.discard(waiter)
                    side.leave(took)
        # The runtime stopped while this call waited: nothing will ever serve it (after the
        # finally above, so that a queued caller gets the turn and is refused in its turn).
        iothread.refuse()


class ReadyFD:
    """An eventfd (or pipe) kept readable exactly while a condition holds, for select().

    Registered with ``runtime`` (``Runtime.ready_fds``): once the runtime stopped, it is
    readable for good (:meth:`force_ready`), as the call it announces raises EBADF at once."""

    def __init__(self, runtime: Runtime) -> None:
        if hasattr(os, "eventfd"):
            self.rfd = self.wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            self.rfd, self.wfd = os.pipe()
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)
        self.signalled = False
        self.forced = False
        self.closed = False
        with runtime.lock:          # (mark_stopped reads the set under it)
            runtime.ready_fds.add(self)
            if runtime.stopped:
                self.force_ready()

    def force_ready(self) -> None:
        """Readable from now on, whatever :meth:`set` is told (``Runtime.mark_stopped``)."""
        if not self.closed:
            self.set(True)
            self.forced = True

    def set(self, ready: bool) -> None:
        if ready == self.signalled or self.forced:
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
        self.closed = True
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
