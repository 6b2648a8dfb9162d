"""The gevent runtime: the only place kcpgo does I/O or reads the clock.

A fixed set of greenlets drives every session of a hub (thread):

* one **scheduler** greenlet per hub (:class:`Runtime`) keeps a heap of session deadlines and
  runs each session's timer work when it falls due; a session with nothing in flight, nothing
  to acknowledge and no probe pending has no deadline and costs nothing;
* one **reader** greenlet per UDP socket (:class:`UDPEndpoint`) drains the socket until it
  would block, hands every datagram to its session (a listener's socket serves all of its
  sessions), then lets each touched session flush once for the whole batch (ACKs included).

Sessions implement the small :class:`Driven` protocol; their blocking facade lives in
``session.py``, the demultiplexing in ``listener.py``.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import logging
import socket as _stdlib_socket
import sys as _sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent
from gevent.event import Event
from gevent.monkey import get_original

log = logging.getLogger("kcpgo.runtime")

# The real (unpatched) socket class: the reader does its own readiness waiting with a gevent io
# watcher, and must not go through gevent's cooperative socket wrapper for every datagram.
_RealSocket = get_original("socket", "socket")
_real_get_ident = get_original("threading", "get_ident")
# One runtime per OS thread, even when gevent.monkey.patch_all() ran before this import (a
# patched threading.local would be per greenlet, giving every greenlet its own scheduler).
_RealThreadLocal = get_original("threading", "local")

#: §2.1 mtuLimit: kcp-go never sends more; one byte more lets us see an oversized datagram.
RECV_SIZE = 1501
#: Datagrams read per batch before the reader yields to other greenlets.
MAX_BATCH = 256
#: Target processing time of one batch, seconds (see UDPEndpoint._read_loop).
BATCH_BUDGET = 0.005
#: New segments a session puts on the wire per flush (see KCP.admit_limit): about one GSO
#: burst, so a flush costs well under a millisecond even with a cipher and FEC.
ADMIT_PER_FLUSH = 64
#: Default socket buffers (kcptun's sockbuf): loopback bursts overflow the kernel default.
DEFAULT_SOCKBUF = 4 * 1024 * 1024

_monotonic = time.monotonic

# Linux UDP segmentation offload (include/uapi/linux/udp.h). GSO sends many equal-sized
# datagrams in one sendmsg; GRO hands a socket such a burst in one recvmsg with the segment
# size in a control message. Neither changes what is on the wire: a peer without GRO (kcp-go)
# receives ordinary datagrams.
_SOL_UDP = 17
_UDP_SEGMENT = 103
_UDP_GRO = 104
#: The kernel's limits for one GSO send: 64 segments and a 64 KiB IP packet.
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_GRO_BUFSIZE = 65536
_CMSG_GRO = _stdlib_socket.CMSG_SPACE(4) if hasattr(_stdlib_socket, "CMSG_SPACE") else 0
_GSO_SIZES = {}


def _sys_platform_linux() -> bool:
    return _sys.platform.startswith("linux")


def now_ms() -> int:
    """The millisecond clock every session of this process uses (monotonic)."""
    return int(_monotonic() * 1000)


class Driven:
    """What the runtime needs from a session (implemented by ``session.KCPSocket``)."""

    _timer_at: Optional[int] = None

    def _on_timer(self, now: int) -> None:  # pragma: no cover - protocol
        """Timer work (retransmissions, periodic flush); reschedule afterwards."""
        raise NotImplementedError

    def _on_datagram(self, data: bytes, now: int) -> None:  # pragma: no cover - protocol
        raise NotImplementedError

    def _after_batch(self, now: int) -> None:  # pragma: no cover - protocol
        """Called once per reader batch that fed this session."""
        raise NotImplementedError


class Runtime:
    """Per-hub scheduler: one greenlet and one heap of (deadline_ms, seq, session)."""

    _local = _RealThreadLocal()

    @classmethod
    def current(cls) -> "Runtime":
        """The runtime of the calling thread's gevent hub (created on first use)."""
        rt = getattr(cls._local, "runtime", None)
        if rt is None:
            rt = cls._local.runtime = cls()
        return rt

    def __init__(self) -> None:
        self.hub = gevent.get_hub()
        self.thread_ident = _real_get_ident()
        self._heap: List[Tuple[int, int, Driven]] = []
        self._seq = itertools.count()
        self._wake = Event()
        self._sleep_until: Optional[int] = None
        self._greenlet: Optional[gevent.Greenlet] = None

    def check_thread(self) -> None:
        """Raise if called from a thread other than the one this runtime's hub belongs to."""
        if _real_get_ident() != self.thread_ident:
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
        return _real_get_ident() != ident and ident in _sys._current_frames()

    def call_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in this runtime's thread: now when called from it (or when that
        thread has ended), else on its hub's next loop iteration. Never waits."""
        if self.owner_runs_elsewhere():
            self.hub.loop.run_callback_threadsafe(fn, *args)
        else:
            fn(*args)

    def schedule(self, session: Driven, deadline: Optional[int]) -> None:
        """Make sure ``session._on_timer`` runs by ``deadline`` (ms).

        ``None`` (nothing to do) leaves a pending timer alone: it fires, finds nothing and
        reschedules. Cancelling and re-arming on every message (an echo or ping session goes
        idle between round trips) would push a heap entry and wake this greenlet per message.
        Only an earlier deadline pushes an entry; entries that no longer match the session's
        ``_timer_at`` are skipped when they surface, so rescheduling is O(log n) at most.
        """
        if deadline is None:
            return
        cur = session._timer_at
        if cur is not None and cur <= deadline:
            return
        session._timer_at = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), session))
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
            self._greenlet.name = "kcpgo-scheduler"
        elif self._sleep_until is None or deadline < self._sleep_until:
            self._wake.set()

    @staticmethod
    def cancel(session: Driven) -> None:
        """Drop ``session``'s pending timer (a closed or failed session)."""
        session._timer_at = None

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
            due = []
            while heap and heap[0][0] <= now:
                deadline, _, session = heapq.heappop(heap)
                if session._timer_at == deadline:    # else superseded, or cancelled
                    session._timer_at = None
                    due.append(session)
            for session in due:
                try:
                    session._on_timer(now)
                except Exception:       # a bug in one session must not stop the others
                    log.exception("kcpgo: session timer failed")
            if due:
                gevent.sleep(0)         # readers first: a session may want to run again now

    @property
    def pending_timers(self) -> int:
        """Heap entries (live and stale), for tests and diagnostics."""
        return len(self._heap)


class UDPEndpoint:
    """A UDP socket with its reader greenlet.

    ``on_batch(batch, now)`` receives a list of ``(data, address)`` read in one go; it is the
    session (client) or the listener (server) that decides where each datagram goes.
    """

    def __init__(self, sock: _stdlib_socket.socket,
                 on_batch: Optional[Callable[[list, int], None]] = None,
                 owned: bool = True, snmp: Any = None) -> None:
        self.runtime = Runtime.current()
        self.sock = sock
        self.owned = owned
        self.snmp = snmp
        self.family = sock.family
        sock.setblocking(False)
        self._sendto = sock.sendto
        self._sendmsg = getattr(sock, "sendmsg", None)
        #: Use UDP GSO for bursts (switched off for good at the first failure).
        self.gso = self._sendmsg is not None and bool(_CMSG_GRO) and _sys_platform_linux()
        self.gro = False
        if self.gso:
            try:
                sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        #: Where batches go; may be set right after construction (the reader starts later).
        self.on_batch = on_batch
        self.closed = False
        self.send_drops = 0
        #: The first socket error the reader hit; sessions report it to their callers.
        self.error: Optional[OSError] = None
        self._limit = MAX_BATCH
        self._polling = False
        self._watcher = self.runtime.hub.loop.io(sock.fileno(), 1)
        self._reader = gevent.spawn(self._read_loop)
        self._reader.name = "kcpgo-reader"

    @staticmethod
    def open(address: Tuple[Any, ...], family: int = _stdlib_socket.AF_INET,
             sockbuf: int = DEFAULT_SOCKBUF) -> _stdlib_socket.socket:
        """A new non-blocking UDP socket bound to ``address`` with large buffers."""
        sock = _RealSocket(family, _stdlib_socket.SOCK_DGRAM)
        try:
            for opt in (_stdlib_socket.SO_RCVBUF, _stdlib_socket.SO_SNDBUF):
                try:
                    sock.setsockopt(_stdlib_socket.SOL_SOCKET, opt, sockbuf)
                except OSError:  # pragma: no cover - platform limits
                    pass
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def sendto(self, data: bytes, address: Any) -> bool:
        """Send one datagram now; a full socket buffer drops it (KCP retransmits)."""
        try:
            self._sendto(data, address)
        except (BlockingIOError, InterruptedError):
            self.send_drops += 1
            return False
        except OSError as e:
            if self.closed:
                return False
            if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return False        # ICMP feedback: the peer may come back, KCP retries
            raise
        snmp = self.snmp
        if snmp is not None:
            snmp.OutPkts += 1
            snmp.OutBytes += len(data)
        return True

    def send_many(self, datagrams: List[bytes], address: Any) -> None:
        """Send a flush's datagrams in order; runs of equal-sized ones go out as one GSO call.

        A full socket buffer drops what did not fit (KCP retransmits); ICMP-reported errors are
        ignored as UDP allows.
        """
        n = len(datagrams)
        sent = 0
        nbytes = 0
        try:
            if n == 1 or not self.gso:
                sendto = self._sendto
                for d in datagrams:
                    try:
                        sendto(d, address)
                        sent += 1
                        nbytes += len(d)
                    except (BlockingIOError, InterruptedError):
                        self.send_drops += 1
            else:
                sent, nbytes = self._send_gso(datagrams, address)
        except OSError as e:
            if not self.closed and e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                                   errno.ENETUNREACH):
                raise
        snmp = self.snmp
        if snmp is not None:
            snmp.OutPkts += sent
            snmp.OutBytes += nbytes

    def _send_gso(self, datagrams: List[bytes], address: Any) -> Tuple[int, int]:
        """Group runs of equal-sized datagrams (the last of a run may be shorter, as GSO
        allows) into UDP_SEGMENT sends."""
        sendto = self._sendto
        sendmsg = self._sendmsg
        n = len(datagrams)
        sent = nbytes = 0
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            total = size
            limit = min(n, i + _GSO_MAX_SEGMENTS)
            while j < limit and len(datagrams[j]) == size and total + size <= _GSO_MAX_BYTES:
                total += size
                j += 1
            if j < limit and len(datagrams[j]) < size and total + len(datagrams[j]) <= _GSO_MAX_BYTES:
                total += len(datagrams[j])
                j += 1
            try:
                if j - i == 1:
                    sendto(datagrams[i], address)
                else:
                    cmsg = _GSO_SIZES.get(size)
                    if cmsg is None:
                        cmsg = _GSO_SIZES[size] = [(_SOL_UDP, _UDP_SEGMENT,
                                                     size.to_bytes(2, _sys.byteorder))]
                    try:
                        sendmsg((b"".join(datagrams[i:j]),), cmsg, 0, address)
                    except OSError as e:
                        if e.errno not in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT,
                                           errno.EOPNOTSUPP):
                            raise
                        # No GSO here (old kernel, odd device): plain sends from now on.
                        self.gso = False
                        for d in datagrams[i:j]:
                            sendto(d, address)
                sent += j - i
                nbytes += total
            except (BlockingIOError, InterruptedError):
                self.send_drops += j - i
            i = j
        return sent, nbytes

    def _receive(self, limit: int) -> list:
        """Read up to about ``limit`` datagrams without blocking, GRO bursts split.

        A fatal socket error is latched in :attr:`error`, reported to the owner
        (``on_batch([], -1)``) and ends the endpoint; what was read before it is returned.
        """
        batch: list = []
        append = batch.append
        try:
            if self.gro:
                recvmsg = self.sock.recvmsg
                while len(batch) < limit:
                    data, anc, _, addr = recvmsg(_GRO_BUFSIZE, _CMSG_GRO)
                    if anc and len(data) > RECV_SIZE:
                        # A GRO burst: equal segments of the announced size, the last shorter.
                        seg = int.from_bytes(anc[0][2], _sys.byteorder)
                        for off in range(0, len(data), seg):
                            append((data[off:off + seg], addr))
                    else:
                        append((data, addr))
            else:
                recvfrom = self.sock.recvfrom
                for _ in range(limit):
                    append(recvfrom(RECV_SIZE))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            if self.closed or e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                          errno.ENETUNREACH):
                return batch    # ICMP errors reported on the socket: not fatal for UDP
            self.error = e
            log.debug("kcpgo: reader stopped: %s", e)
        return batch

    def _dispatch(self, batch: list) -> float:
        """Hand a batch to the owner; returns the processing time in seconds."""
        t0 = _monotonic()
        try:
            self.on_batch(batch, int(t0 * 1000))
        except Exception:
            log.exception("kcpgo: datagram handling failed")
        return _monotonic() - t0

    def _fail(self) -> None:
        try:
            self.on_batch([], -1)       # -1: tell the owner the socket failed
        except Exception:
            log.exception("kcpgo: socket failure handling failed")

    def poll(self) -> None:
        """Process what is already waiting on the socket, from the calling greenlet.

        A sender calls this before each flush so that ACKs are handled at once even while it
        keeps the hub busy, instead of when it next blocks (late ACKs mean spurious RTOs).
        """
        if self.closed or self.error is not None or self._polling:
            return
        self._polling = True
        try:
            batch = self._receive(self._limit)
            if batch:
                self._dispatch(batch)
            if self.error is not None:
                self._fail()
        finally:
            self._polling = False

    def _read_loop(self) -> None:
        hub = self.runtime.hub
        watcher = self._watcher
        while not self.closed:
            limit = self._limit
            batch = self._receive(limit)
            full = len(batch) >= limit
            if batch:
                # Size batches to about BATCH_BUDGET of processing: ACKs are flushed once per
                # batch, so a slow cipher must not make them wait for 256 decryptions.
                cost = self._dispatch(batch)
                if cost > BATCH_BUDGET and limit > 1:
                    self._limit = limit // 2
                elif cost < BATCH_BUDGET / 4 and limit < MAX_BATCH and full:
                    self._limit = limit * 2
            if self.error is not None:
                self._fail()
                return
            if full:
                gevent.sleep(0)             # let others run; more is likely waiting
                continue
            try:
                hub.wait(watcher)
            except _Closed:
                return

    def close(self) -> None:
        """Stop the reader and (if owned) close the socket. Idempotent."""
        if self.closed:
            return
        self.closed = True
        hub = self.runtime.hub
        reader = self._reader
        if reader is not None and not reader.dead and gevent.getcurrent() is not reader:
            hub.cancel_wait(self._watcher, _Closed(), True)
        else:
            self._watcher.close()
        if self.owned:
            self.sock.close()


class _Closed(Exception):
    """Raised into the reader greenlet to stop it."""


def spawn_count() -> Dict[str, int]:
    """Live kcpgo greenlets by name (diagnostics: the count must not grow with sessions)."""
    import gc

    from greenlet import greenlet as _g
    counts: Dict[str, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, _g) and not obj.dead:
            name = getattr(obj, "name", "")
            if isinstance(name, str) and name.startswith("kcpgo-"):
                counts[name] = counts.get(name, 0) + 1
    return counts
