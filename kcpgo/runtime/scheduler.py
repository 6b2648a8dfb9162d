"""The per-hub scheduler: one greenlet, one heap of deadlines, :class:`Timer` handles.

One :class:`Runtime` drives sessions per gevent hub: the I/O thread's in ``"thread"`` mode, one
per OS thread in ``"hub"`` mode (:mod:`.modes`). It knows timers and threads, not KCP: a
channel, an smux keepalive or anything else asks for a :class:`Timer` and arms it with an
absolute deadline in ms (:func:`kcpgo.runtime.clock.now_ms`). A timer that is not armed costs
nothing, so thousands of idle sessions sleep for free.

Threads: everything a runtime drives is guarded by its :attr:`Runtime.lock` (the stack lock).
Its hub's greenlets hold it while they handle a batch, a timer or a callback; an application
thread holds it while it tries an operation (a ``recv``, a ``send``), never while it waits. So
an application thread runs its own sends (no hand-over, no extra wake-up) and the hub's thread
runs everything that arrives. Arming a timer or asking for a callback from another thread goes
through the hub's thread-safe callback queue.

Also here: :meth:`Runtime.check_thread` (hub mode's ownership rule), :meth:`Runtime.call_soon`,
:meth:`Runtime.call_threadsafe`, :meth:`Runtime.run_sync` and :class:`Signal`, a flag any
thread may set and any greenlet of any thread may wait for.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import weakref
from typing import Any, Callable, List, Optional, Set, Tuple

import gevent
from gevent._hub_local import get_hub_if_exists

from . import malloc, modes
from ._originals import RealRLock, RealThreadLocal, allocate_lock, real_get_ident
from .busypoll import BusyPoll
from .clock import now_ms
from .inbox import Inbox
from .waiters import Waiter

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
        """Make sure the callback runs by ``deadline`` (ms); ``None`` changes nothing, and so
        does any deadline once :meth:`close` was called (a closed session's timer stays off
        whatever path still arms it)."""
        if deadline is None or self.callback is _disarmed:
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
    """Per-hub scheduler: one greenlet and one heap of ``(deadline_ms, seq, Timer)``, and the
    stack lock of everything it drives (module docstring)."""

    _local = RealThreadLocal()

    @classmethod
    def current(cls) -> "Runtime":
        """The runtime new sessions of the calling thread run on: the I/O thread's in
        ``"thread"`` mode (started on first use), else the calling thread's hub's (created on
        first use). The first call fixes the mode (:mod:`.modes`)."""
        if modes.fix() == "thread":
            from .iothread import runtime
            return runtime()
        rt = getattr(cls._local, "runtime", None)
        if rt is None or rt.forked:
            rt = cls._local.runtime = cls()
        return rt

    @classmethod
    def existing(cls) -> Optional["Runtime"]:
        """The runtime :meth:`current` would return if one was created, else ``None``
        (diagnostics)."""
        if modes.effective() == "thread":
            from . import iothread
            cur = iothread._current
            return None if cur is None else cur.runtime
        return getattr(cls._local, "runtime", None)

    def __init__(self, io_thread: bool = False) -> None:
        self.hub = gevent.get_hub()
        self.thread_ident = real_get_ident()
        #: Calls from other threads into the hub (not gevent's run_callback_threadsafe,
        #: whose loop ref count races with libev's: inbox.py, D58).
        self._inbox = Inbox.of(self.hub)
        #: True for the I/O thread's runtime: its objects may be used from any thread.
        self.io_thread = io_thread
        #: The stack lock (re-entrant, per OS thread; module docstring).
        self.lock = RealRLock()
        #: Set once the hub's loop ended (the I/O thread stopped: at exit, or by
        #: ``iothread.stop()``), by :meth:`mark_stopped`.
        self.stopped = False
        #: Waiters of the calls blocked on this runtime's objects (under the stack lock):
        #: :meth:`mark_stopped` wakes them.
        self.blocked: Set[Waiter] = set()
        #: The select() descriptors of this runtime's objects (facade ``ReadyFD``s):
        #: :meth:`mark_stopped` makes them readable for good.
        self.ready_fds: "weakref.WeakSet[Any]" = weakref.WeakSet()
        #: Set in a child process: this runtime and its objects belong to the parent.
        self.forked = False
        _ALL.add(self)
        #: Live channels, for the final flush at exit (:meth:`shutdown_sessions`).
        self.channels: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._heap: List[Tuple[int, int, Timer]] = []
        self._seq = itertools.count()
        #: The libev timer the scheduler greenlet sleeps on (``None``: no deadline), and
        #: whether it sleeps (in the hub, until the timer fires): :meth:`_alarm_at`.
        self._alarm: Any = None
        self._asleep = False
        #: Set by every same-thread :meth:`_push`: a deadline the sleeping scheduler may not
        #: know yet (pushed while it was deciding how long to sleep: a signal handler).
        self._dirty = False
        self._sleep_until: Optional[int] = None
        self._greenlet: Optional[gevent.Greenlet] = None
        self._kick_pending = False
        #: Spins before the hub sleeps, for request/response sessions (busypoll.py).
        self.busy = BusyPoll(self.hub.loop)
        # Whether the owning thread still lives: its thread-local mark is released when it
        # ends. (Not sys._current_frames(): it allocates while holding the interpreter's
        # thread-list lock, so a collection it triggers that runs a __del__ asking this
        # deadlocked the process, seen in a full-suite run.)
        mark = getattr(_thread_marks, "mark", None)
        if mark is None:
            mark = _thread_marks.mark = _ThreadMark()
        self._owner_mark = weakref.ref(mark)
        malloc.tune()  # batch buffers stay in the process (malloc.py, D55)

    def timer(self, callback: Callable[[int], None]) -> Timer:
        """A new, disarmed :class:`Timer` running ``callback(now_ms)`` in this runtime."""
        return Timer(self, callback)

    def in_loop(self) -> bool:
        """Whether the caller runs in this runtime's hub thread."""
        return real_get_ident() == self.thread_ident

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` under the stack lock on the hub's next loop turn (after the
        current greenlet yields); from another thread, on the hub's next iteration."""
        if real_get_ident() == self.thread_ident:
            self.hub.loop.run_callback(self._locked, callback)
        elif not self.stopped:
            self._inbox.post(self._locked, callback)

    def _locked(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            with self.lock:
                fn(*args)
        except Exception:       # a bug in one session must not stop the loop
            log.exception("kcpgo callback failed")

    def check_thread(self) -> None:
        """Hub mode: raise ``RuntimeError`` if called from a thread other than this runtime's
        (its sessions run only while that thread's hub runs). The I/O thread's objects may be
        used from any thread: nothing to check."""
        if self.io_thread or real_get_ident() == self.thread_ident:
            return
        raise RuntimeError(
            "this kcpgo object belongs to another thread's gevent hub (kcpgo runs in 'hub' "
            "mode); use it only from the thread that created it, or let kcpgo run its "
            "sessions on an I/O thread of their own (kcpgo.set_runtime('thread'), the default "
            "in programs without gevent.monkey.patch_all())")

    def can_wait(self) -> bool:
        """Whether the caller may wait for this runtime to make progress: it does not hold
        the stack lock (the hub's thread would wait for it) and is not a hub's own greenlet
        (whose loop would stop)."""
        if self.lock._is_owned():   # type: ignore[attr-defined]
            return False
        hub = get_hub_if_exists()
        return hub is None or gevent.getcurrent() is not hub

    def owner_runs_elsewhere(self) -> bool:
        """True when called from another OS thread while this runtime's thread is alive.

        Only then must hub work be handed to :meth:`call_threadsafe`; once the owning thread
        has ended nothing else can touch its objects, and the caller may clean them up
        directly.
        """
        return (real_get_ident() != self.thread_ident and not self.stopped
                and self._owner_mark() is not None)

    def owner_alive(self) -> bool:
        """Whether this runtime's thread still runs its hub (it can still drive timers)."""
        return not self.stopped and self._owner_mark() is not None

    def call_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` under the stack lock in this runtime's thread: now when called
        from it (or when that thread has ended), else on its hub's next loop iteration. Never
        waits."""
        if self.owner_runs_elsewhere():
            self._inbox.post(self._locked, fn, *args)
        else:
            with self.lock:
                fn(*args)

    def run_sync(self, fn: Callable[..., Any], *args: Any, timeout: Optional[float] = None
                 ) -> Any:
        """``fn(*args)`` run under the stack lock in this runtime's thread; its result, or its
        exception raised here. From that thread (or once it ended) it runs at once. Must not be
        called while holding the stack lock in another thread (``RuntimeError``: it would wait
        for the lock it holds). ``TimeoutError`` after ``timeout`` seconds (it may still run)."""
        if not self.owner_runs_elsewhere():
            with self.lock:
                return fn(*args)
        if self.lock._is_owned():   # type: ignore[attr-defined]
            raise RuntimeError("kcpgo internal error: run_sync() under the stack lock")
        waiter = Waiter()
        box: list = []

        def task() -> None:
            try:
                with self.lock:
                    box.append((True, fn(*args)))
            except BaseException as e:   # handed to the caller
                box.append((False, e))
            finally:
                waiter.fire()
        self._inbox.post(task)
        if not waiter.wait(timeout) and not box:
            raise TimeoutError(f"kcpgo's I/O thread did not answer in {timeout} s")
        ok, value = box[0]
        if ok:
            return value
        raise value

    def mark_stopped(self, wake: bool = True) -> None:
        """The hub's loop ended for good (the I/O thread's, iothread.py): set :attr:`stopped`
        and, with ``wake``, wake every call blocked on one of this runtime's objects; each
        then raises ``OSError(EBADF)`` (``iothread.refuse``) instead of waiting for ever.
        At interpreter exit (``wake=False``) they stay blocked, as before the stop: a later
        ``close()`` still wakes them with its EBADF, which an atexit handler that closes a
        session and joins its reader relies on (woken now, a daemon thread would park).

        Sets the flag before it reads the waiters, and a waiting call checks the flag again
        after it registered (:meth:`Blocking._blocking_call`), so no call is missed even
        when the lock could not be had: it is taken with a timeout, as a thread interrupted
        inside a kcpgo call (a signal handler calling ``iothread.stop()``) may hold it.
        With the lock, the objects' select() descriptors become readable for good too (a
        select() then returns, and the call it announced raises EBADF)."""
        locked = self.lock.acquire(True, 1.0)
        try:
            self.stopped = True
            blocked = list(self.blocked) if wake else []
            if wake and locked:     # (a close() frees descriptors under the lock)
                for fd in list(self.ready_fds):
                    fd.force_ready()
        finally:
            if locked:
                self.lock.release()
        for waiter in blocked:
            waiter.fire()

    def shutdown_sessions(self) -> None:
        """kcp-go's final flush for every live channel (the I/O thread's exit)."""
        for chan in list(self.channels):
            try:
                chan.final_flush()
            except Exception:  # pragma: no cover - teardown
                pass

    def unacked(self) -> int:
        """Segments sent and not yet acknowledged, over every live, healthy channel."""
        return sum(chan.conn.waitsnd for chan in list(self.channels)
                   if chan.error is None and not chan.released)

    def _push(self, deadline: int, timer: Timer) -> None:
        # Called under the stack lock (Timer.schedule is stack code).
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
        if real_get_ident() == self.thread_ident:
            if self._greenlet is None:
                self._start()
            else:
                self._dirty = True
                if self._asleep and (self._sleep_until is None or deadline < self._sleep_until):
                    self._sleep_until = deadline
                    self._alarm_at(deadline - now_ms())
        elif (self._greenlet is None or self._sleep_until is None
              or deadline < self._sleep_until) and not self._kick_pending and not self.stopped:
            # Another thread armed a timer the sleeping scheduler does not know of yet.
            self._kick_pending = True
            self._inbox.post(self._kick)

    def _kick(self) -> None:
        self._kick_pending = False
        if self._greenlet is None:
            self._start()
        elif self._asleep:
            self._alarm_at(0)

    def _alarm_at(self, ms: Optional[int]) -> None:
        """Wake the sleeping scheduler ``ms`` from now (``None``: only when re-armed). An
        earlier deadline restarts a libev timer, which queues no callback and switches no
        greenlet until it fires: a wake-up queued as a callback (as ``Event.set`` does) left
        the hub never idle after a send, so request/response sessions never busy-polled
        (docs/deviations.md D54)."""
        alarm = self._alarm
        if alarm is not None:
            alarm.stop()
            self._alarm = None
        if ms is not None:
            alarm = self._alarm = self.hub.loop.timer(max(ms, 0) / 1000.0)
            alarm.start(self._alarm_fired)

    def _alarm_fired(self) -> None:
        self._alarm = None
        if self._asleep:
            self._asleep = False
            self._greenlet.switch()     # type: ignore[union-attr]

    def _start(self) -> None:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "kcpgo-scheduler"

    def _run(self) -> None:
        heap = self._heap
        lock = self.lock
        hub = self.hub
        while True:
            fired: list = []
            with lock:
                self._dirty = False
                # Entries of timers cancelled or re-armed since are skipped here, not slept
                # for: a request/response session leaves two per message (its ACK timer and
                # its retransmission timer, both cancelled by the answer), and waking for
                # each of them cost a hub round trip.
                while heap and heap[0][2].at != heap[0][0]:
                    heapq.heappop(heap)
                if not heap:
                    self._sleep_until = None
                else:
                    now = now_ms()
                    due = heap[0][0]
                    if due > now:
                        self._sleep_until = due
                    else:
                        self._sleep_until = now     # running: later deadlines need no wake
                        while heap and heap[0][0] <= now:
                            deadline, _, timer = heapq.heappop(heap)
                            if timer.at == deadline:     # else superseded, or cancelled
                                timer.at = None
                                fired.append(timer)
                        for timer in fired:
                            try:
                                timer.callback(now)
                            except Exception:   # a bug in one session must not stop the others
                                log.exception("timer callback failed")
                        self._sleep_until = None
                        if not fired:
                            continue
            if fired:
                gevent.sleep(0)         # readers first: a session may want to run again now
                continue
            # Sleep in the hub until the alarm fires (_push moves it earlier, _kick to now).
            # A deadline pushed meanwhile (a signal handler: the lock is re-entrant) either
            # saw _asleep and moved the alarm, or left _dirty: then look again.
            self._asleep = True
            until = self._sleep_until
            self._alarm_at(None if until is None else until - now_ms())
            try:
                if not self._dirty:
                    hub.switch()
            finally:
                self._asleep = False
                if self._alarm is not None:     # woken otherwise (killed: GreenletExit)
                    self._alarm_at(None)
            self._sleep_until = None

    @property
    def pending_timers(self) -> int:
        """Heap entries (live and stale), for tests and diagnostics."""
        return len(self._heap)

    @property
    def live_timers(self) -> int:
        """Heap entries of timers still armed for them (a closed or re-armed timer leaves a
        stale entry until its deadline): what a leaked session would keep. Diagnostics."""
        return sum(1 for deadline, _, timer in self._heap if timer.at == deadline)


class _ThreadMark:
    """Held by a thread's (real) thread-local storage only: gone once that thread ended."""

    __slots__ = ("__weakref__",)


_thread_marks = RealThreadLocal()

#: Every runtime of this process, for the fork hook.
_ALL: "weakref.WeakSet[Runtime]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """``os.fork()``: the child inherits every runtime's state, but not its thread, and maybe
    a stack lock some other thread held at the fork. Each is marked as the parent's: a fresh
    lock, no hub work, objects that raise ``EBADF`` when used (their datagrams would go into
    the parent's sessions) and only free their descriptors on ``close()``. New sessions in the
    child get a runtime of their own."""
    for rt in list(_ALL):
        rt.lock = RealRLock()
        rt.forked = True
        rt.stopped = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Signal:
    """A flag any thread may set and any greenlet of any thread may wait for.

    Waiting is cooperative where the waiting thread runs a gevent hub (its other greenlets,
    and in hub mode its kcpgo sessions, keep running), unlike ``threading.Event.wait`` in an
    unpatched program; a thread without a hub sleeps on a real lock
    (:class:`~kcpgo.runtime.waiters.Waiter`).
    """

    def __init__(self, value: bool = False) -> None:
        self._lock = allocate_lock()
        self._flag = value
        self._waiters: List[Waiter] = []

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        with self._lock:
            self._flag = False

    def set(self) -> None:
        with self._lock:
            self._flag = True
            waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.fire()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until set (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            if self._flag:
                return True
            w = Waiter()
            self._waiters.append(w)
        try:
            return w.wait(timeout) or self._flag
        finally:
            with self._lock:
                if w in self._waiters:
                    self._waiters.remove(w)
