"""The I/O thread of ``"thread"`` mode (:mod:`.modes`): one daemon OS thread per process whose
gevent hub runs every session's reader and the scheduler greenlet.

Started on first use by :func:`runtime`. At interpreter exit (:func:`at_exit`, an atexit
handler registered by ``import kcpgo``: it runs after the handlers a program registered after
that import, which may still use their sessions, e.g. for a goodbye) sessions still open get
kcp-go's final flush and up to :data:`LINGER_AT_EXIT` for their data to be acknowledged;
then the thread leaves its hub and parks, blocked without the GIL until the process ends.

Why it parks (docs/deviations.md D56): CPython 3.11-3.13 end a daemon thread that wakes
during finalization with ``pthread_exit``, whose unwinding through the hub greenlet's frames
crashed the process (SIGSEGV in greenlet's ``g_initialstub``, seen in 1-2 % of exits under
load). The parked thread is back in its main greenlet, the hub switched out, and never takes
the GIL again. After that (:func:`refuse`): a call from the thread that ran the exit hook (an
atexit handler registered before ``import kcpgo``) raises ``OSError(EBADF)``, on an existing
session or a new one; any other thread is a daemon thread at exit and parks as well, quietly.
After :func:`stop` (tests, embedders) a new session starts a new I/O thread, and a call on one
of the stopped thread's sessions raises ``OSError(EBADF)``, a call blocked at that moment
too (``Runtime.mark_stopped`` wakes it; at exit a blocked call stays blocked, as before,
until a ``close()`` wakes it with EBADF).

A process that forks gets a new I/O thread in the child on first use there (the parent's
thread does not exist in the child; the parent's objects refuse to work there,
:mod:`.scheduler`).
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Any, NoReturn, Optional

import gevent

from ._originals import allocate_lock, real_get_ident, real_sleep, start_new_thread
from .clock import monotonic
from .scheduler import Runtime

__all__ = ["runtime", "stop", "at_exit", "refuse", "THREAD_NAME"]

log = logging.getLogger("kcpgo.runtime")

THREAD_NAME = "kcpgo-io"
#: Seconds :func:`stop` waits for the thread to end at exit.
STOP_TIMEOUT = 2.0
#: Seconds the exit waits, at most, for what open sessions sent to be acknowledged: a script
#: that sends and exits without closing delivers its data as over TCP, whose kernel goes on
#: sending after the process ended (kcp-go drops it). A dead peer delays the exit this long.
LINGER_AT_EXIT = 1.0

_start_lock = allocate_lock()
_current: Optional["_IOThread"] = None
#: The thread that ran :func:`at_exit`, once it did (interpreter exit: no I/O thread after).
_exited_in: Optional[int] = None


class _IOThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.runtime: Optional[Runtime] = None
        self.error: Optional[BaseException] = None
        self._keepalive: Any = None
        self._park = False                  # at exit: stay blocked once the loop ended
        self._ended = allocate_lock()
        self._ended.acquire()
        ready = allocate_lock()
        ready.acquire()
        start_new_thread(self._main, (ready,))
        ready.acquire()
        if self.error is not None:
            raise RuntimeError(f"kcpgo could not start its I/O thread: {self.error!r}")

    def _main(self, ready: Any) -> None:
        try:
            try:
                import threading
                threading.current_thread().name = THREAD_NAME    # (a dummy entry: for logs)
            except Exception:  # pragma: no cover
                pass
            try:
                hub = gevent.get_hub()
                self.runtime = Runtime(io_thread=True)
                # A referenced watcher keeps the loop running while nothing else is active;
                # stop() fires it (async watchers may be sent from any thread).
                self._keepalive = hub.loop.async_()
            except BaseException as e:  # pragma: no cover - gevent cannot start a hub here
                self.error = e
                return
            finally:
                ready.release()
            try:
                hub.wait(self._keepalive)
            except BaseException:  # pragma: no cover - interpreter teardown
                pass
            # stop(): blocked calls wake up and raise EBADF; at exit they stay blocked
            self.runtime.mark_stopped(wake=not self._park)
        finally:
            self._ended.release()
        if self._park:
            # Back in this thread's main greenlet (the hub greenlet is switched out, its
            # frames off the stack): block without the GIL until the process ends.
            _park_forever()

    def linger(self, timeout: float = STOP_TIMEOUT) -> None:
        """Flush every session once and wait up to :data:`LINGER_AT_EXIT` for their data to
        be acknowledged (the thread keeps running)."""
        rt = self.runtime
        if rt is None or rt.stopped:
            return
        deadline = monotonic() + LINGER_AT_EXIT
        try:
            rt.run_sync(rt.shutdown_sessions, timeout=timeout)
            while rt.run_sync(rt.unacked, timeout=timeout) and monotonic() < deadline:
                real_sleep(0.01)
        except Exception:  # pragma: no cover - teardown: nothing more can be done
            log.debug("final flush at exit failed", exc_info=True)

    def stop(self, timeout: float = STOP_TIMEOUT, park: bool = False) -> bool:
        """:meth:`linger`, then end the loop and wait for that (True if it ended). ``park``:
        the thread then blocks for good instead of ending (interpreter exit)."""
        rt = self.runtime
        if rt is None or rt.stopped:
            return True
        self.linger(timeout)
        self._park = park
        self._keepalive.send()
        return self._ended.acquire(True, timeout)


def runtime() -> Runtime:
    """The I/O thread's runtime, starting the thread on first use (also in a forked child)."""
    global _current
    if _serving(_current):
        return _current.runtime             # type: ignore[union-attr]
    if _exited_in is not None:
        refuse()                    # interpreter exit: no new I/O thread (module docstring)
    with _start_lock:
        if not _serving(_current):
            _current = _IOThread()
        assert _current is not None and _current.runtime is not None
        return _current.runtime


def _serving(cur: Optional[_IOThread]) -> bool:
    """Whether ``cur`` is this process's I/O thread and still serves (not stopped)."""
    return cur is not None and cur.pid == os.getpid() and cur.runtime is not None \
        and not cur.runtime.stopped


def _park_forever() -> NoReturn:
    """Block without the GIL until the process ends."""
    never = allocate_lock()
    never.acquire()
    while True:
        never.acquire()


def refuse() -> NoReturn:
    """A kcpgo call that no I/O thread will ever serve (its runtime stopped, or the
    interpreter is exiting): ``OSError(EBADF)``, except in a thread other than the one that
    ran :func:`at_exit`, a daemon thread at interpreter exit, which parks for good instead
    (raising there would only print a traceback while the process ends; the I/O thread
    parks the same way). Called without the stack lock."""
    if _exited_in is not None and real_get_ident() != _exited_in:
        _park_forever()
    raise OSError(errno.EBADF, "kcpgo's I/O thread has stopped (interpreter exit, or "
                               "kcpgo.runtime.iothread.stop()): this object no longer works")


def at_exit() -> None:
    """Interpreter exit (``import kcpgo`` registers it with atexit): final flush, linger,
    then the thread parks for good (module docstring). An atexit handler registered before
    ``import kcpgo`` runs after this: its kcpgo calls raise ``OSError(EBADF)`` (:func:`refuse`)."""
    global _exited_in
    _exited_in = real_get_ident()
    cur = _current
    if cur is not None and cur.pid == os.getpid():
        cur.stop(park=True)


def stop() -> None:
    """Stop this process's I/O thread, if it runs: final flush, linger, end of its loop
    (sessions then stop working; for tests and embedders that must end the thread)."""
    cur = _current
    if cur is not None and cur.pid == os.getpid():
        cur.stop()
