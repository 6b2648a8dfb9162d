"""``UDPEndpoint``: one UDP socket and its reader greenlet (the only place kcpgo reads UDP).

The reader drains the socket until it would block and hands the whole batch to its owner
(``on_batch(batch, now_ms)``): a client channel, or a listener that demultiplexes it. Batches
are sized to about :data:`BATCH_BUDGET` of processing. A fatal socket error ends the reader and
is reported once through ``on_error(exc)``. Sends go out in order; on Linux, runs of
equal-sized datagrams leave in one ``sendmsg`` with UDP GSO, and the reader accepts GRO bursts.
Neither changes what is on the wire.

A listener's socket bound to a wildcard address (``0.0.0.0``, ``::``) reads the local address
each datagram was sent to (``IP_PKTINFO`` / ``IPV6_RECVPKTINFO``) and its sessions reply from
that address (docs/deviations.md D25): a client that dialed 127.0.0.2 or a server's second
address gets its answers from the address it dialed, which kcp-go latest's clients (and
kcpgo's) require. Where the platform lacks this, replies leave from the address the system
chooses, as before.
"""
from __future__ import annotations

import logging
import socket as _stdlib_socket
import sys as _sys
from typing import Any, Callable, Dict, Optional, Tuple

import gevent

from ..sansio.wire import MTU_LIMIT
from ._originals import real_get_ident
from .clock import monotonic as _monotonic
from .icmp import REPORTED as _ICMP_REPORTED
from .icmp import IcmpErrors
from .pktinfo import (CMSG_PKTINFO, IP_PKTINFO, IPPROTO_IP, IPPROTO_IPV6,
                      IPV6_RECVPKTINFO, local_sockname, reply_cmsg)
from .scheduler import Runtime
from .udp_send import DatagramSender
from .udpsock import DEFAULT_SOCKBUF, bound_udp_socket, udp_socket
from .waiters import Waiter

__all__ = ["UDPEndpoint", "spawn_count", "local_sockname", "DEFAULT_SOCKBUF", "RECV_SIZE"]

log = logging.getLogger("kcpgo.runtime")

#: §2.1 mtuLimit: kcp-go never sends more; one byte more lets us see an oversized datagram.
RECV_SIZE = MTU_LIMIT + 1
#: Datagrams read per batch before the reader yields to other greenlets.
MAX_BATCH = 256
#: Target processing time of one batch, seconds (see UDPEndpoint._read_loop).
BATCH_BUDGET = 0.005

# Linux UDP segmentation offload (include/uapi/linux/udp.h). GSO sends many equal-sized
# datagrams in one sendmsg; GRO hands a socket such a burst in one recvmsg with the segment
# size in a control message. Neither changes what is on the wire: a peer without GRO (kcp-go)
# receives ordinary datagrams.
_SOL_UDP = 17
_UDP_GRO = 104
_GRO_BUFSIZE = 65536
_CMSG_GRO = _stdlib_socket.CMSG_SPACE(4) if hasattr(_stdlib_socket, "CMSG_SPACE") else 0
#: Distinct local addresses remembered as ready control messages (cleared when full).
_LOCAL_CACHE_MAX = 256


def _sys_platform_linux() -> bool:
    return _sys.platform.startswith("linux")


class UDPEndpoint(DatagramSender):
    """A UDP socket with its reader greenlet.

    ``on_batch(batch, now)`` receives a list of ``(data, address)`` read in one go; it is the
    client channel or the listener that decides where each datagram goes. ``on_error(exc)`` is
    called once if the socket fails (the reader has stopped; :attr:`error` holds ``exc``).
    Both may be set right after construction: the reader starts on the next loop turn.

    ``pktinfo=True`` (a listener's socket): if the socket is bound to a wildcard address and
    the platform reports local addresses, :attr:`pktinfo` is True and the batch's items are
    ``(data, address, local)``: ``local`` is where that datagram was sent to, as the ``local``
    argument of :meth:`send_many` (a reply from there; ``None`` if the kernel did not say).
    It is per datagram, so the owner can take it only from datagrams it accepts (a spoofed
    datagram that fails the crypto check must not choose where replies leave from, D25);
    nothing is kept per source, so memory stays bounded whatever the sources.
    """

    def __init__(self, sock: _stdlib_socket.socket,
                 on_batch: Optional[Callable[[list, int], None]] = None,
                 owned: bool = True, snmp: Any = None,
                 on_error: Optional[Callable[[OSError], None]] = None,
                 pktinfo: bool = False, icmp: bool = False) -> None:
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
        #: Local addresses are read and replies sent from them (see the class docstring).
        self.pktinfo = False
        self._local_cache: Dict[Tuple[int, int, bytes], Any] = {}
        if pktinfo and self._sendmsg is not None and CMSG_PKTINFO:
            self._enable_pktinfo()
        self.on_batch = on_batch
        self.on_error = on_error
        #: ``icmp=True`` (a client's socket, Linux): the ICMP errors that came back, per
        #: destination (:mod:`.icmp`, D57); else ``None``.
        self.icmp: Optional[IcmpErrors] = IcmpErrors.enable(sock) if icmp else None
        self.closed = False
        #: When the latest batch was read (monotonic seconds; busy-polling's reply clock).
        self.rx_at = 0.0
        self.send_drops = 0
        #: The last send error taken as a drop (``_TRANSIENT_SEND_ERRORS``), for diagnostics.
        self.last_send_error: Optional[OSError] = None
        #: The first socket error the reader hit; sessions report it to their callers.
        self.error: Optional[OSError] = None
        self._limit = MAX_BATCH
        self._polling = False
        self._watcher: Any = None
        self._reader: Optional[gevent.Greenlet] = None
        # The watcher and the reader belong to the runtime's hub: made there (at once when
        # called from its thread, else on its next loop iteration: see wait_started).
        self._started: Optional[Waiter] = None
        self._stopped: Optional[Tuple[int, Waiter]] = None
        if self.runtime.owner_runs_elsewhere():
            self._started = Waiter()
        self.runtime.call_threadsafe(self._start)

    def _start(self) -> None:
        try:
            if self.closed:
                if self.owned:
                    self.sock.close()
                return
            self._watcher = self.runtime.hub.loop.io(self.sock.fileno(), 1)
            self._reader = gevent.spawn(self._read_loop)
            self._reader.name = "kcpgo-reader"
        finally:
            if self._started is not None:
                self._started.fire()

    def wait_started(self) -> None:
        """Wait until the reader runs (made in another thread than the runtime's, it starts
        on the hub's next iteration): a listener returned to the application reads at once.
        Returns at once when the caller holds the stack lock (the start waits for it)."""
        started = self._started
        if started is not None and self.runtime.can_wait():
            started.wait(5.0)
            self._started = None

    def _enable_pktinfo(self) -> None:
        """Ask for each datagram's local address, if the socket is bound to a wildcard one
        (a socket bound to one address replies from it anyway)."""
        try:
            host = self.sock.getsockname()[0]
        except OSError:
            return
        try:
            if self.family == _stdlib_socket.AF_INET6 and host == "::" and IPV6_RECVPKTINFO:
                self.sock.setsockopt(IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            elif self.family == _stdlib_socket.AF_INET and host == "0.0.0.0" and IP_PKTINFO:
                self.sock.setsockopt(IPPROTO_IP, IP_PKTINFO, 1)
            else:
                return
        except OSError as e:  # pragma: no cover - platform without it: the system chooses
            log.debug("no local-address ancillary data (%s): replies leave from the address "
                      "the system chooses", e)
            return
        self.pktinfo = True
        self._receive = self._receive_pktinfo       # type: ignore[method-assign]

    @staticmethod
    def socket(family: int = _stdlib_socket.AF_INET, sockbuf: int = DEFAULT_SOCKBUF,
               dualstack: bool = False, reuse_port: bool = False) -> _stdlib_socket.socket:
        """:func:`kcpgo.runtime.udpsock.udp_socket`: a new, unbound UDP socket."""
        return udp_socket(family, sockbuf, dualstack, reuse_port)

    @staticmethod
    def open(address: Tuple[Any, ...], family: int = _stdlib_socket.AF_INET,
             sockbuf: int = DEFAULT_SOCKBUF, dualstack: bool = False,
             reuse_port: bool = False) -> _stdlib_socket.socket:
        """:func:`kcpgo.runtime.udpsock.bound_udp_socket`: one bound to ``address``."""
        return bound_udp_socket(address, family, sockbuf, dualstack, reuse_port)

    def _receive(self, limit: int) -> list:
        """Read up to about ``limit`` datagrams without blocking, GRO bursts split.

        A fatal socket error is latched in :attr:`error`, reported to the owner
        (``on_error``) and ends the reader; what was read before it is returned.
        """
        batch: list = []
        append = batch.append
        try:
            if self.gro:
                recvmsg = self.sock.recvmsg
                while len(batch) < limit:
                    data, anc, _, addr = recvmsg(_GRO_BUFSIZE, _CMSG_GRO)
                    if anc:
                        # A GRO burst: equal segments of the announced size, the last shorter.
                        # Its total can be below one datagram's limit (1400 + 45 bytes), so
                        # the segment size decides, never the length.
                        seg = int.from_bytes(anc[0][2], _sys.byteorder)
                        if 0 < seg < len(data):
                            for off in range(0, len(data), seg):
                                append((data[off:off + seg], addr))
                            continue
                    append((data, addr))
            else:
                recvfrom = self.sock.recvfrom
                for _ in range(limit):
                    append(recvfrom(RECV_SIZE))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._receive_error(e)
        return batch

    def _receive_pktinfo(self, limit: int) -> list:
        """:meth:`_receive` whose items are ``(data, address, local)``: each datagram with the
        local address it was sent to (see the class docstring)."""
        batch: list = []
        append = batch.append
        cache = self._local_cache
        recvmsg = self.sock.recvmsg
        bufsize = _GRO_BUFSIZE if self.gro else RECV_SIZE
        ancsize = CMSG_PKTINFO + _CMSG_GRO
        try:
            while len(batch) < limit:
                data, anc, _, addr = recvmsg(bufsize, ancsize)
                if not anc:
                    append((data, addr, None))
                    continue
                # The kernel puts the GRO message first and the local address last.
                raw = anc[-1]
                local = cache.get(raw)
                if local is None and raw[0] != _SOL_UDP:    # (a GRO message alone: no address)
                    if len(cache) >= _LOCAL_CACHE_MAX:
                        cache.clear()
                    local = cache[raw] = reply_cmsg(*raw)
                if anc[0][0] == _SOL_UDP:
                    # A GRO burst (see _receive: the segment size decides).
                    seg = int.from_bytes(anc[0][2], _sys.byteorder)
                    if 0 < seg < len(data):
                        for off in range(0, len(data), seg):
                            append((data[off:off + seg], addr, local))
                        continue
                append((data, addr, local))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._receive_error(e)
        return batch

    def _receive_error(self, e: OSError) -> None:
        icmp = self.icmp    # (its feedback() reads the error queue: first)
        if (icmp is not None and icmp.feedback(e.errno, read=True)) or self.closed or \
                e.errno in _ICMP_REPORTED:
            return      # ICMP errors reported on the socket: not fatal for UDP (D57)
        self.error = e
        log.debug("reader stopped: %s", e)

    def _dispatch(self, batch: list) -> float:
        """Hand a batch to the owner, under the stack lock; returns the processing time in
        seconds."""
        with self.runtime.lock:
            t0 = self.rx_at = _monotonic()
            try:
                self.on_batch(batch, int(t0 * 1000))
            except Exception:
                log.exception("datagram handling failed")
            return _monotonic() - t0

    def _fail(self) -> None:
        on_error = self.on_error
        if on_error is None or self.error is None:
            return
        try:
            with self.runtime.lock:
                on_error(self.error)
        except Exception:
            log.exception("socket failure handling failed")

    def poll(self) -> bool:
        """Process what is already waiting on the socket, from the calling greenlet (under the
        stack lock, which the caller holds: it is about to flush). Returns whether a batch was
        read.

        A sender calls this before each flush so that ACKs are handled at once even while it
        keeps the hub busy, instead of when it next blocks (late ACKs mean spurious RTOs).
        """
        if self.closed or self.error is not None or self._polling:
            return False
        self._polling = True
        try:
            batch = self._receive(self._limit)
            if batch:
                self._dispatch(batch)
            if self.error is not None:
                self._fail()
        finally:
            self._polling = False
        return bool(batch)

    def _read_loop(self) -> None:
        hub = self.runtime.hub
        watcher = self._watcher
        runtime = self.runtime
        while not self.closed and not runtime.forked:
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
            else:
                # Woken for nothing: maybe POLLERR, errors left in the queue (D57). Read once:
                # an application thread's poll() may hear the peer and drop it meanwhile.
                icmp = self.icmp
                if icmp is not None:
                    icmp.drain()
            if self.error is not None:
                self._fail()
                return
            if full:
                gevent.sleep(0)             # let others run; more is likely waiting
                continue
            if self.closed:
                # Closed by what this batch did (an smux linger that ended, say): the watcher
                # is closed too, and waiting on it would restart it on a descriptor that is
                # gone, or already another socket's (libev then aborts the process).
                return
            try:
                hub.wait(watcher)
            except _Closed:
                return

    def close(self) -> None:
        """Stop the reader and (if owned) close the socket. Idempotent. From another thread than
        the runtime's, the socket is closed on the hub's next loop iteration (nothing is read
        from it meanwhile: the owner's callbacks are dropped at once)."""
        if self.closed:
            return
        self.closed = True
        # Drop the owner's callbacks: a closed session is then freed at once, not by the
        # cycle collector (the endpoint and its channel refer to each other).
        self.on_batch = _ignore_batch
        self.on_error = None
        if self.runtime.forked:
            # A child process's copy (the parent's reader and hub do not run here): only
            # this process's descriptor is closed; the parent's socket stays open.
            if self.owned:
                self.sock.close()
            return
        if self._watcher is not None:
            # (else _start has yet to run, and closes the socket instead of starting)
            if self.runtime.owner_runs_elsewhere():
                self._stopped = (real_get_ident(), Waiter())
            self.runtime.call_threadsafe(self._stop)

    def _stop(self) -> None:
        """The hub's part of :meth:`close`, in its thread: end the reader, close the socket.

        The watcher is closed before the descriptor (gevent's own sockets keep that order):
        libev aborts the process when a watcher it still knows outlives its descriptor and the
        number is reused meanwhile ("I/O watcher with invalid fd found in epoll_ctl")."""
        reader = self._reader
        if reader is not None and not reader.dead and gevent.getcurrent() is not reader:
            # The reader waits on the watcher: throw _Closed into it, close the watcher, then
            # the socket (at once if it does not wait now).
            self.runtime.hub.cancel_waits_close_and_then([self._watcher], _Closed,
                                                         self._close_socket)
        else:
            self._watcher.close()
            self._close_socket()

    def _close_socket(self) -> None:
        try:
            if self.owned:
                self.sock.close()
        finally:
            if self._stopped is not None:
                self._stopped[1].fire()

    def wait_closed(self) -> None:
        """After :meth:`close` from another thread than the runtime's: wait (at most 5 s)
        until the socket is closed, so that a ``close()`` returns with its descriptor gone, as
        a socket's does. Returns at once where waiting is not possible (see
        :meth:`~kcpgo.runtime.scheduler.Runtime.can_wait`) or when another thread closed it."""
        stopped = self._stopped
        if stopped is not None and stopped[0] == real_get_ident() and self.runtime.can_wait():
            stopped[1].wait(5.0)


def _ignore_batch(batch: list, now: int) -> None:
    pass


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
