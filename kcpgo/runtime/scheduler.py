"""The per-hub scheduler: one greenlet, one heap of deadlines, :class:`Timer` handles.

One :class:`Runtime` exists per OS thread (per gevent hub). It knows timers and threads, not
KCP: a channel, a future smux keepalive or anything else asks for a :class:`Timer` and arms it
with an absolute deadline in ms (:func:`kcpgo.runtime.clock.now_ms`). A timer that is not armed
costs nothing, so thousands of idle sessions sleep for free.

Also here: thread ownership (:meth:`Runtime.check_thread`, :meth:`Runtime.call_threadsafe`) and
:class:`Signal`, a flag any thread may set and any greenlet of any thread may wait for.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import sys as _sys
from typing import Any, Callable, List, Optional, Tuple

import gevent
from gevent.event import Event

from ._originals import RealThreadLocal, allocate_lock, real_get_ident
from .clock import monotonic, now_ms

__all__ = ["Runtime", "Timer", "Signal"]

log = logging.getLogger("kcpgo.runtime")


class Timer:
    """A handle on one callback of a :class:`Runtime`: ``callback(now_ms)`` runs once per arming.

    :meth:`schedule` only ever brings the deadline forward (a later one leaves the pending one
    alone: it fires, the owner finds nothing to do and re-arms); :meth:`cancel` disarms.
    """

    __slots__ = ("_runtime", "callback", "at")

    def __init__(self, runtime: "Runtime", callback: Callable[[int], None]) -> None:
        self._runtime = runtime
        self.callback = callback
        #: The armed deadline (absolute ms), or ``None``.
        self.at: Optional[int] = None

    def schedule(self, deadline: Optional[int]) -> None:
        """Make sure the callback runs by ``deadline`` (ms); ``None`` changes nothing."""
        if deadline is None:
            return
        at = self.at
        if at is not None and at <= deadline:
            return
        self.at = deadline
        self._runtime._push(deadline, self)

    def cancel(self) -> None:
        """Disarm (the heap entry is skipped when it surfaces)."""
        self.at = None

    def close(self) -> None:
        """Disarm for good and drop the callback, so that a heap entry still waiting to
        surface keeps only this small handle alive, not its owner."""
        self.at = None
        self.callback = _disarmed

    @property
    def pending(self) -> bool:
        return self.at is not None


def _disarmed(now: int) -> None:
    pass


class Runtime:
    """Per-hub scheduler: one greenlet and one heap of ``(deadline_ms, seq, Timer)``."""

    _local = RealThreadLocal()

    @classmethod
    def current(cls) -> "Runtime":
        """The runtime of the calling thread's gevent hub (created on first use)."""
        rt = getattr(cls._local, "runtime", None)
        if rt is None:
            rt = cls._local.runtime = cls()
        return rt

    @classmethod
    def existing(cls) -> Optional["Runtime"]:
        """The calling thread's runtime if one was created, else ``None`` (diagnostics)."""
        return getattr(cls._local, "runtime", None)

    def __init__(self) -> None:
        self.hub = gevent.get_hub()
        self.thread_ident = real_get_ident()
        self._heap: List[Tuple[int, int, Timer]] = []
        self._seq = itertools.count()
        self._wake = Event()
        self._sleep_until: Optional[int] = None
        self._greenlet: Optional[gevent.Greenlet] = None

    def timer(self, callback: Callable[[int], None]) -> Timer:
        """A new, disarmed :class:`Timer` running ``callback(now_ms)`` in this runtime."""
        return Timer(self, callback)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the hub's next loop turn (after the current greenlet yields)."""
        self.hub.loop.run_callback(callback)

    def check_thread(self) -> None:
        """Raise ``RuntimeError`` if called from a thread other than this runtime's."""
        if real_get_ident() != self.thread_ident:
            raise RuntimeError(
                "this kcpgo object belongs to another thread's gevent hub; use it only from "
                "the thread that created it (or run your threads as greenlets with "
                "gevent.monkey.patch_all())")

    def owner_runs_elsewhere(self) -> bool:
        """True when called from another OS thread while this runtime's thread is alive.

        Only then must work be handed to :meth:`call_threadsafe`; once the owning thread has
        ended nothing else can touch its objects, and the caller may clean them up directly.
        """
        ident = self.thread_ident
        return real_get_ident() != ident and ident in _sys._current_frames()

    def owner_alive(self) -> bool:
        """Whether this runtime's thread is still running (its hub can still drive timers)."""
        return self.thread_ident in _sys._current_frames()

    def call_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in this runtime's thread: now when called from it (or when that
        thread has ended), else on its hub's next loop iteration. Never waits."""
        if self.owner_runs_elsewhere():
            self.hub.loop.run_callback_threadsafe(fn, *args)
        else:
            fn(*args)

    def _push(self, deadline: int, timer: Timer) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
            self._greenlet.name = "kcpgo-scheduler"
        elif self._sleep_until is None or deadline < self._sleep_until:
            self._wake.set()

    def _run(self) -> None:
        heap = self._heap
        wake = self._wake
        while True:
            if not heap:
                self._sleep_until = None
                wake.clear()
                wake.wait()
                continue
            now = now_ms()
            due = heap[0][0]
            if due > now:
                self._sleep_until = due
                wake.clear()
                wake.wait((due - now) / 1000.0)
                self._sleep_until = None
                continue
            fired = []
            while heap and heap[0][0] <= now:
                deadline, _, timer = heapq.heappop(heap)
                if timer.at == deadline:         # else superseded, or cancelled
                    timer.at = None
                    fired.append(timer)
            for timer in fired:
                try:
                    timer.callback(now)
                except Exception:       # a bug in one session must not stop the others
                    log.exception("timer callback failed")
            if fired:
                gevent.sleep(0)         # readers first: a session may want to run again now

    @property
    def pending_timers(self) -> int:
        """Heap entries (live and stale), for tests and diagnostics."""
        return len(self._heap)

    @property
    def live_timers(self) -> int:
        """Heap entries of timers still armed for them (a closed or re-armed timer leaves a
        stale entry until its deadline): what a leaked session would keep. Diagnostics."""
        return sum(1 for deadline, _, timer in self._heap if timer.at == deadline)


class Signal:
    """A flag any thread may set and any greenlet of any thread may wait for.

    Waiting is cooperative: the waiting thread's hub keeps running (and with it that thread's
    kcpgo sessions), unlike ``threading.Event.wait`` in an unpatched program.
    """

    def __init__(self, value: bool = False) -> None:
        self._lock = allocate_lock()
        self._flag = value
        self._waiters: List[Tuple[Any, Event]] = []

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        with self._lock:
            self._flag = False

    def set(self) -> None:
        with self._lock:
            self._flag = True
            waiters, self._waiters = self._waiters, []
        me = real_get_ident()
        for hub, ev in waiters:
            if hub.thread_ident == me:
                ev.set()
            elif hub.loop is not None:
                hub.loop.run_callback_threadsafe(ev.set)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until set (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            if self._flag:
                return True
            entry = (gevent.get_hub(), Event())
            self._waiters.append(entry)
        deadline = None if timeout is None else monotonic() + timeout
        try:
            while True:
                # The timer keeps this hub's loop alive: the setter's wake-up from another
                # thread arrives through an unreferenced watcher (gevent would see nothing to
                # wait for and raise LoopExit).
                step = 1.0 if deadline is None else min(1.0, deadline - monotonic())
                if entry[1].wait(max(step, 0.0)) or self._flag:
                    return True
                if deadline is not None and monotonic() >= deadline:
                    return False
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
