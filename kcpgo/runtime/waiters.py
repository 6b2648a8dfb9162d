"""``Waiter``: one blocked call's wake-up, fired from any thread, waited for cooperatively.

kcpgo's stack runs on one gevent hub (the I/O thread's, or the application thread's in hub
mode, :mod:`kcpgo.runtime.modes`) and application calls block in any thread. A call that would
block registers a :class:`Waiter` under the stack lock and waits for it outside; whoever makes
progress possible fires it, under the same lock, so no wake-up is lost between the check and
the wait. How the waiting thread sleeps depends on what it runs:

* a thread with a gevent hub (a plain program that spawns greenlets, or any thread of a
  monkey-patched one) waits in its hub, so its other greenlets keep running: on a gevent
  ``Event``, or in the stack's own thread on gevent's one-shot hub waiter (switched to
  directly); a wake-up from another thread reaches that hub through its inbox (an async
  watcher and a queue: :mod:`kcpgo.runtime.inbox`);
* a thread without a hub (ordinary blocking code) waits on a real lock, as a thread blocked in
  ``socket.recv`` sleeps in the kernel.
"""
from __future__ import annotations

from typing import Any, Optional

from gevent import getcurrent
from gevent._hub_local import get_hub_if_exists
from gevent._waiter import Waiter as HubWaiter
from gevent.event import Event

from ._originals import allocate_lock, real_get_ident
from .clock import monotonic
from .inbox import Inbox

__all__ = ["Waiter"]

#: A hub waiting for another thread's wake-up keeps its loop alive with a timer of at most this
#: many seconds (the wake-up's async watcher is not referenced: without a timer gevent would
#: find nothing to wait for and raise ``LoopExit``).
_KEEPALIVE_STEP = 1.0


class Waiter:
    """A one-shot wake-up for the calling thread (or greenlet).

    ``loop_ident``: the thread that runs the stack (whose code calls :meth:`fire`); a waiter in
    that very thread needs no keep-alive timer. :meth:`fire` may be called from any thread,
    any number of times; :meth:`wait` from the creating greenlet only.
    """

    __slots__ = ("_event", "_hub", "_inbox", "_lock", "_local", "_switch", "fired")

    def __init__(self, loop_ident: Optional[int] = None) -> None:
        self.fired = False
        self._switch: Any = None
        hub = get_hub_if_exists()
        me = real_get_ident()
        if hub is not None and hub.loop is not None and getcurrent() is not hub:
            self._hub: Any = hub
            self._inbox: Optional[Inbox] = Inbox.of(hub)
            self._lock: Any = None
            self._local = loop_ident == me
            # In the stack's own thread (hub mode, a monkey-patched program) the waiting
            # greenlet is switched to directly, as gevent's sockets are (a hub Waiter): about
            # 1 µs less per wake-up than an Event, whose set() runs its links.
            self._event: Optional[Event] = None if self._local else Event()
        else:
            self._hub = None
            self._inbox = None
            self._event = None
            self._lock = allocate_lock()
            self._lock.acquire()
            self._local = False

    def fire(self) -> None:
        """Wake the waiter (idempotent; any thread)."""
        if self.fired:
            return
        self.fired = True
        lock = self._lock
        if lock is not None:
            lock.release()
            return
        hub = self._hub
        if hub.thread_ident == real_get_ident():
            if self._event is not None:
                self._event.set()
            elif self._switch is not None:      # it waits: switch to it on the next turn
                hub.loop.run_callback(self._switch, True)
        elif self._event is not None:
            self._inbox.post(self._event.set)   # type: ignore[union-attr]
        else:
            self._inbox.post(self._wake)        # type: ignore[union-attr]

    def _wake(self) -> None:
        # (in the hub's thread: a local waiter fired from another thread)
        if self._switch is not None:
            self._switch(True)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until fired (True) or ``timeout`` seconds passed (False)."""
        lock = self._lock
        if lock is not None:
            return lock.acquire(True, -1 if timeout is None else max(timeout, 0.0))
        event = self._event
        if event is None:
            return self._wait_local(timeout)
        if timeout is None:
            while not event.wait(_KEEPALIVE_STEP):
                pass
            return True
        deadline = monotonic() + timeout
        while True:
            left = deadline - monotonic()
            if event.wait(min(max(left, 0.0), _KEEPALIVE_STEP)):
                return True
            if left <= _KEEPALIVE_STEP:
                return self.fired

    def _wait_local(self, timeout: Optional[float]) -> bool:
        if self.fired:
            return True
        waiter = HubWaiter(self._hub)
        self._switch = waiter.switch
        timer = None
        if timeout is not None:
            timer = self._hub.loop.timer(max(timeout, 0.0))
            timer.start(waiter.switch, False)
        try:
            return waiter.get() or self.fired     # (a timeout racing a wake-up: fired)
        finally:
            self._switch = None
            if timer is not None:
                timer.close()
