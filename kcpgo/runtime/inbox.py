"""``Inbox``: calls from other OS threads into a gevent hub (docs/deviations.md D58).

gevent's ``loop.run_callback_threadsafe`` (26.9, libev) counts the queued callback as an
active watcher of the target loop with a bare increment done in the calling thread, under the
GIL only. The target thread runs libev without the GIL and decrements the same count when a
one-shot timer expires. When the two collide, the increment can be lost: the count then
stays one low for good, and a later wait that leaves exactly that many watchers active makes
the loop end at once (``LoopExit``, ``ref=0`` or ``-1``, no handles). kcpgo's I/O thread woke
greenlets of the application's threads this way thousands of times a second, so a
monkey-patched program with a busy timer in the main thread could lose its hub.

An inbox is instead one *unreferenced* async watcher per hub and a queue: another thread
appends ``(fn, args)`` and calls ``send()`` (``ev_async_send``: libev's thread-safe wake-up,
which changes no count); the hub's thread runs the queue in order. Unreferenced, like the
watcher behind gevent's own call: a pending call does not keep an otherwise idle loop running
(the caller keeps it alive: the I/O thread's keep-alive watcher, a waiter's timer).
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Deque, Tuple

from ._originals import allocate_lock, real_get_ident

__all__ = ["Inbox"]

log = logging.getLogger("kcpgo")

_made = allocate_lock()


class Inbox:
    """A hub's queue of calls posted from other threads; :meth:`of` gives a hub's one."""

    __slots__ = ("_queue", "_watcher")

    def __init__(self, hub: Any) -> None:
        self._queue: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = deque()
        self._watcher = hub.loop.async_(ref=False)
        self._watcher.start(self._drain)

    @classmethod
    def of(cls, hub: Any) -> "Inbox":
        """The inbox of ``hub``, made on first use. The first call must come from the hub's
        own thread (libev starts a watcher only there): a runtime makes its hub's inbox when
        it is created, a waiter its waiting thread's. ``RuntimeError`` otherwise."""
        inbox = getattr(hub, "_kcpgo_inbox", None)
        if inbox is None:
            if hub.thread_ident != real_get_ident():
                raise RuntimeError("kcpgo internal error: an inbox made outside its hub's thread")
            with _made:
                inbox = getattr(hub, "_kcpgo_inbox", None)
                if inbox is None:
                    inbox = hub._kcpgo_inbox = cls(hub)
        return inbox

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the hub's thread on its next loop iteration (any thread;
        never waits). Dropped when the hub's loop is gone (nothing there to run it)."""
        self._queue.append((fn, args))
        try:
            self._watcher.send()
        except ValueError:          # "operation on destroyed loop": its thread ended
            pass

    def _drain(self) -> None:
        queue = self._queue
        pop = queue.popleft
        try:
            while queue:
                fn, args = pop()
                try:
                    fn(*args)
                except Exception:   # one failing call must not drop the others
                    log.exception("kcpgo cross-thread call failed")
        finally:
            if queue:               # left by a BaseException (KeyboardInterrupt): next turn
                self._watcher.send()
