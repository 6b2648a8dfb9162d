"""Adaptive busy-polling for request/response traffic (docs/deviations.md D54).

On a virtual machine most of a loopback or LAN round trip is wake-up latency: a process that
sleeps in ``epoll_wait`` for a reply due in 100 µs pays tens of µs to be woken, and so does
its peer (kcp-go pays it too). Instead, while a session's traffic is request/response, kcpgo
polls for a short while before it would sleep:

* a call about to wait for such a session's reply (``recv`` on the hub's thread) polls, and
  reads and handles the reply itself, without a switch to the hub and back
  (``Channel.spin_receive``);
* otherwise the hub, in its idle phase, polls before it blocks (:meth:`BusyPoll.arm`).

A session counts as request/response once the application's data sent was answered with
data within :data:`ARM_WINDOW`, :data:`ARM_SCORE` times in a row; a late answer resets the
count, and a spin that ends without the reply takes two off it (``Channel`` keeps it). So
bulk transfers (answered by ACKs alone), sessions with one message a second (a server with
thousands of them) and slow peers never spin. A spin polls
the hub's own epoll set, so *anything* the hub watches ends it, lasts at most
:data:`SPIN_MAX`, and stops for :data:`CONTENDED_PAUSE` when it finds it was descheduled (the
CPU is wanted elsewhere). ``KCPGO_BUSY_POLL=0`` or :func:`set_busy_poll` switches it off.
"""
from __future__ import annotations

import os
from select import POLLIN
from typing import Any, Optional

from ._originals import real_poll
from .clock import monotonic

__all__ = ["BusyPoll", "SPIN_MAX", "ARM_WINDOW", "ARM_SCORE", "SCORE_MAX", "HUB_LAG_MAX",
           "set_busy_poll", "busy_poll_enabled"]

#: Longest spin per reply (s after the request was sent).
SPIN_MAX = 0.0003
#: A reply with data within this many s of the request counts towards arming (measured
#: without spinning it includes the wake-ups the spin saves, hence longer than SPIN_MAX).
ARM_WINDOW = 0.001
#: Replies in time in a row before a session arms the spin.
ARM_SCORE = 3
SCORE_MAX = 8
#: A call spins only if the hub ran a loop iteration (its timers) within this many s: a
#: greenlet whose replies all come in its own spins never yields to the hub, and would starve
#: its timers (``gevent.sleep``, kcpgo's scheduler) for as long as the exchange lasts. Half
#: of the fast modes' 10 ms KCP interval; 1 ms cost a fifth of the ping's p50 (196 against
#: 164 µs, 160 unbounded: three alternating runs of ``bench ping --runs 3`` each).
HUB_LAG_MAX = 0.005
#: A spin that sees this long (s) between two of its polls was descheduled: the CPU is
#: contended (another process wants it), and spinning stops for :data:`CONTENDED_PAUSE`.
PREEMPTED = 0.0003
CONTENDED_PAUSE = 0.02

_enabled = os.environ.get("KCPGO_BUSY_POLL", "1") not in ("0", "off", "no", "false")


def set_busy_poll(enabled: bool) -> None:
    """Switch busy-polling on or off for every runtime of this process (default: on, unless
    the ``KCPGO_BUSY_POLL`` environment variable is ``0``). Off, a hub always sleeps in
    ``epoll_wait`` until a datagram arrives, as before kcpgo 0.5."""
    global _enabled
    _enabled = bool(enabled)


def busy_poll_enabled() -> bool:
    """Whether busy-polling is on (:func:`set_busy_poll`)."""
    return _enabled


class BusyPoll:
    """One hub's spin before it sleeps (module docstring).

    The spin polls the hub's own event descriptor (its epoll set), which is readable as soon
    as *any* descriptor the hub watches is: a reply on another socket, a TCP connection's
    data, another thread's wake-up end it as well as the awaited datagram, so nothing the hub
    serves waits behind a spin. Timers are not seen; a spin lasts at most :data:`SPIN_MAX`.
    :meth:`arm` from the hub's thread (or a thread holding the stack lock); the spin runs in
    the hub's idle phase.
    """

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._watcher: Any = None
        self._until = 0.0
        self._poll: Optional[Any] = None
        if loop is not None:
            try:
                fd = loop.fileno()
            except (AttributeError, OSError):  # pragma: no cover - a loop without one
                fd = None
            if fd is not None and fd >= 0:
                self._poll = real_poll()
                self._poll.register(fd, POLLIN)
        #: Spins that ended with something to do / at their deadline / descheduled
        #: (diagnostics, tests).
        self.hits = 0
        self.misses = 0
        self.preempted = 0
        #: No spinning before this time (monotonic s): a spin was preempted.
        self._pause_until = 0.0
        #: The hub's loop iteration last seen by :meth:`idle`, and when (monotonic s).
        self._iteration = -1
        self._iteration_at = 0.0

    def arm(self, until: float) -> None:
        """Spin when the hub next goes idle (nothing else to run), until ``until`` (monotonic
        seconds) at the latest. From the hub's thread only (libev watchers are not
        thread-safe)."""
        if self._poll is None:
            return
        self._until = until
        w = self._watcher
        if w is None:
            try:
                w = self._watcher = self._loop.idle()
            except AttributeError:      # pragma: no cover - a loop without idle watchers
                self._poll = None
                return
        if not w.active:
            w.start(self._spin)

    def close(self) -> None:
        w = self._watcher
        if w is not None:
            w.stop()
            w.close()
            self._watcher = None

    def _spin(self) -> None:
        self._watcher.stop()
        self.wait_ready(self._until)

    def idle(self) -> bool:
        """Whether the hub has nothing else to run now (no callback is pending) and ran its
        timers lately (a loop iteration within :data:`HUB_LAG_MAX`): a greenlet about to
        wait may spin instead of switching to the hub."""
        loop = self._loop
        if self._poll is None or getattr(loop, "_callbacks", True):
            return False
        it = getattr(loop, "iteration", None)
        now = monotonic()
        if it != self._iteration:
            self._iteration = it
            self._iteration_at = now
            return True
        return now - self._iteration_at <= HUB_LAG_MAX

    def wait_ready(self, until: float) -> bool:
        """Poll the hub's descriptors with a zero timeout until one is ready (True) or
        ``until`` (monotonic seconds) passed (False). Never switches greenlets. False at once
        while spins pause (a spin was descheduled, :data:`PREEMPTED`)."""
        poller = self._poll
        if poller is None:
            return False
        last = monotonic()
        if last < self._pause_until:
            return False
        poll = poller.poll
        try:
            while True:
                if poll(0):
                    self.hits += 1
                    return True
                now = monotonic()
                if now >= until:
                    self.misses += 1
                    return False
                if now - last > PREEMPTED:
                    self.preempted += 1
                    self._pause_until = now + CONTENDED_PAUSE
                    return False
                last = now
        except (OSError, ValueError):   # the loop was destroyed
            self._poll = None
            return False
