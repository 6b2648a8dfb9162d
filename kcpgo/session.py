"""``KCPSocket``: a KCP session that behaves like a connected ``SOCK_STREAM`` socket.

Every blocking call follows gevent's socket pattern: try the operation; if it would block, wait
on the session's readiness event with the socket timeout; ``close()`` wakes every greenlet
blocked on the session with ``OSError(EBADF)``. Timeouts raise ``TimeoutError`` (which is
``socket.timeout``); non-blocking mode raises ``BlockingIOError``.

There is no FIN in KCP: ``recv`` never returns ``b""`` because of the peer (only after
``shutdown(SHUT_RD)``). A peer that stops acknowledging is detected after the dead-link
threshold (``ConnectionResetError``) or the optional ``idle_timeout`` (``TimeoutError``).
"""
from __future__ import annotations

import errno
import io
import os
import socket as _socket
import time
from typing import TYPE_CHECKING, Any, Optional, Tuple

from gevent.event import Event

from .connection import Connection
from .kcp import PROBE_INIT_LATEST
from .runtime import ADMIT_PER_FLUSH, UDPEndpoint, now_ms
from .snmp import Snmp

if TYPE_CHECKING:  # pragma: no cover
    from .listener import Listener

__all__ = ["KCPSocket"]

_monotonic = time.monotonic
Address = Tuple[Any, ...]


def _ebadf() -> OSError:
    return OSError(errno.EBADF, os.strerror(errno.EBADF))


class _ReadyFD:
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


class Timeouts:
    """``socket.socket``'s timeout settings, shared by :class:`KCPSocket` and the Listener."""

    _timeout: Optional[float] = None

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

    def _deadline(self) -> Optional[float]:
        """The monotonic time at which a call starting now times out (None: never)."""
        t = self._timeout
        return None if t is None else _monotonic() + t

    @staticmethod
    def _block(ev: Event, deadline: Optional[float]) -> None:
        """Wait for ``ev`` until ``deadline``; ``TimeoutError`` if it passes first."""
        remaining = None
        if deadline is not None:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
        if not ev.wait(remaining):
            raise TimeoutError("timed out")


class KCPSocket(Timeouts):
    """A KCP session (kcp-go ``UDPSession``) with the blocking API of a connected TCP socket.

    Created by :func:`kcpgo.dial` or returned by :meth:`kcpgo.Listener.accept`; not meant to be
    constructed directly. Use it only from the thread (gevent hub) that created it.
    """

    family: int
    type = _socket.SOCK_STREAM
    proto = 0

    def __init__(self, conn: Connection, endpoint: UDPEndpoint, peer: Address, *,
                 listener: Optional["Listener"] = None, timeout: Optional[float] = None,
                 idle_timeout: Optional[float] = None) -> None:
        self._conn = conn
        self._kcp = conn.kcp
        conn.kcp.admit_limit = ADMIT_PER_FLUSH
        # kcp-go latest's 500 ms before probing a zero window, not 5.6.1's 7 s: a kcp-go
        # listener runs a new session with 32-segment windows until its application accepts
        # and configures it, and then announces nothing, so a writer that filled those 32
        # slots would otherwise wait 7 s (WASK is understood by every version).
        conn.kcp.probe_init = PROBE_INIT_LATEST
        self._endpoint = endpoint
        self._runtime = endpoint.runtime
        self._peer = peer
        self._listener = listener
        self.family = endpoint.family
        self._timer_at: Optional[int] = None
        self._timeout: Optional[float] = None
        self.settimeout(timeout)
        self._idle_timeout_ms: Optional[int] = None
        self._last_rx = now_ms()
        self.set_idle_timeout(idle_timeout)
        self._closed = False        # close() was called
        self._released = False      # resources released (after the last makefile closed)
        self._io_refs = 0
        self._error: Optional[BaseException] = None
        self._shut_rd = False
        self._shut_wr = False
        self._leftover = b""
        self._read_ev = Event()
        self._write_ev = Event()
        self._readers = 0
        self._writers = 0
        self._acks_scheduled = False
        self._fd: Optional[_ReadyFD] = None
        snmp = conn.snmp
        snmp.CurrEstab += 1
        if snmp.CurrEstab > snmp.MaxConn:
            snmp.MaxConn = snmp.CurrEstab
        if listener is None:
            snmp.ActiveOpens += 1
        else:
            snmp.PassiveOpens += 1

    # ------------------------------------------------------------------ runtime hooks

    def _on_batch(self, batch: list, now: int) -> None:
        """Client sessions: the reader's batch (only datagrams from the peer are accepted)."""
        if now < 0:
            self._fail(self._endpoint.error or _ebadf())
            return
        conn = self._conn
        peer = self._peer
        fed = False
        for data, addr in batch:
            if addr != peer:
                conn.snmp.InErrs += 1
                continue
            conn.receive_datagram(data, now)
            fed = True
        if fed:
            self._last_rx = now
            self._after_batch(now)

    def _feed(self, payload: bytes, now: int) -> None:
        """Listener sessions: one payload the listener already decrypted and checked."""
        conn = self._conn
        conn.codec.feed(payload, conn.kcp, now)
        self._last_rx = now

    def _after_batch(self, now: int) -> None:
        """Flush once for the whole batch, wake whoever can proceed, then send the ACKs.

        The ACK-only flush waits for one turn of the event loop: a greenlet woken by this
        batch that answers at once (an echo, a request/response protocol) sends its reply
        with the ACKs in the same datagram, instead of an ACK datagram and then the reply
        (halving the datagrams a busy kcp-go client must process). Bulk transfers lose
        nothing: the ACKs still leave before the reader's next batch.
        """
        if self._released:
            return
        conn = self._conn
        out = conn.datagrams_to_send(now, batch_acks=False)
        if out:
            self._endpoint.send_many(out, self._peer)
        self._post_io(now)
        if conn.ack_per_batch and self._kcp._acks and not self._acks_scheduled:
            self._acks_scheduled = True
            self._runtime.hub.loop.run_callback(self._send_acks)

    def _send_acks(self) -> None:
        self._acks_scheduled = False
        if self._released or not self._kcp._acks:
            return
        now = now_ms()
        out = self._conn.flush_acks(now)
        if out:
            self._endpoint.send_many(out, self._peer)
        self._post_io(now)

    def _on_timer(self, now: int) -> None:
        if self._released:
            return
        idle = self._idle_timeout_ms
        if idle is not None and now - self._last_rx >= idle and self._error is None:
            self._fail(TimeoutError(errno.ETIMEDOUT,
                                    f"no datagram from the peer for {idle / 1000:g} s"))
        out = self._conn.datagrams_to_send(now)
        if out:
            self._endpoint.send_many(out, self._peer)
        self._post_io(now)

    def _post_io(self, now: int) -> None:
        kcp = self._kcp
        if kcp.dead and self._error is None:
            self._fail(ConnectionResetError(
                errno.ECONNRESET, f"peer stopped acknowledging (a segment was sent "
                                  f"{kcp.dead_link} times)"))
        if self._readers and (self._leftover or kcp.rcv_queue):
            self._read_ev.set()
        if self._writers and (self._conn.writable() or not kcp.wait_snd()):
            self._write_ev.set()
        if self._fd is not None:
            self._fd.set(self._would_not_block())
        if self._error is not None:
            self._runtime.cancel(self)           # a dead session retransmits no more
            return
        deadline = self._conn.next_deadline(now)
        idle = self._idle_timeout_ms
        if idle is not None:
            limit = self._last_rx + idle
            if deadline is None or limit < deadline:
                deadline = limit
        self._runtime.schedule(self, deadline)

    def _fail(self, exc: BaseException) -> None:
        """Latch an error: every blocked and later call raises it."""
        if self._error is None:
            self._error = exc
        self._read_ev.set()
        self._write_ev.set()
        if self._fd is not None:
            self._fd.set(True)

    def _flush_now(self) -> None:
        now = now_ms()
        out = self._conn.datagrams_to_send(now)
        if out:
            self._endpoint.send_many(out, self._peer)
        self._post_io(now)

    # ------------------------------------------------------------------ waiting

    def _wait(self, ev: Event, writing: bool, deadline: Optional[float],
              nonblocking: Optional[bool] = None) -> None:
        """Block until ``ev`` is set, honouring the timeout. Raises on timeout/non-blocking."""
        if nonblocking is None:
            nonblocking = self._timeout == 0.0
        if nonblocking:
            raise BlockingIOError(errno.EAGAIN, "operation would block")
        self._runtime.check_thread()
        if writing:
            self._writers += 1
        else:
            self._readers += 1
        try:
            self._block(ev, deadline)
        finally:
            if writing:
                self._writers -= 1
            else:
                self._readers -= 1

    def _check_usable(self) -> None:
        # As with socket.socket, a closed session whose makefile() objects are still open
        # keeps working through them (http.client reads a response after closing).
        if self._closed and (self._released or self._io_refs <= 0):
            raise _ebadf()

    def _raise_error(self) -> None:
        err = self._error
        if isinstance(err, OSError):
            raise type(err)(err.errno, err.strerror)
        raise err  # type: ignore[misc]

    def _would_not_block(self) -> bool:
        return bool(self._closed or self._error is not None or self._shut_rd or self._leftover
                    or self._kcp.peek_size() >= 0)

    # ------------------------------------------------------------------ receiving

    def _take(self, n: int) -> Optional[bytes]:
        left = self._leftover
        if left:
            if len(left) <= n:
                self._leftover = b""
                return left
            self._leftover = left[n:]
            return left[:n]
        conn = self._conn
        kcp = self._kcp
        if kcp.stream:
            data = conn.recv_stream(n)
            if not data:
                return None
        else:
            data = conn.recv()
            if data is None:
                return None
        if kcp.probe:
            self._runtime.schedule(self, now_ms())   # the window reopened: tell the peer
        if self._fd is not None:
            self._fd.set(self._would_not_block() or len(data) > n)
        if len(data) > n:
            self._leftover = data[n:]
            return data[:n]
        return data

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Receive up to ``bufsize`` bytes; block until at least one is available.

        In message mode at most one KCP message is returned (the rest of a longer message is
        kept for the next call); in stream mode available segments are joined. Returns ``b""``
        only after ``shutdown(SHUT_RD)`` or for ``bufsize == 0``. Raises ``TimeoutError`` after
        the timeout, ``BlockingIOError`` in non-blocking mode, ``OSError(EBADF)`` if closed
        (also when closed while blocked), ``ConnectionResetError``/``TimeoutError`` once the
        peer was declared dead.
        """
        if flags:
            raise ValueError("recv flags are not supported on a KCP session")
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        self._runtime.check_thread()
        deadline = self._deadline()
        while True:
            self._check_usable()
            if bufsize == 0:
                return b""
            data = self._take(bufsize)
            if data is not None:
                return data
            if self._shut_rd:
                return b""
            if self._error is not None:
                self._raise_error()
            self._read_ev.clear()
            self._wait(self._read_ev, False, deadline)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into a writable buffer; returns the number of bytes stored."""
        view = memoryview(buffer).cast("B")
        if nbytes <= 0 or nbytes > len(view):
            nbytes = len(view)
        data = self.recv(nbytes, flags)
        n = len(data)
        view[:n] = data
        return n

    # ------------------------------------------------------------------ sending

    def send(self, data: Any, flags: int = 0) -> int:
        """Queue some of ``data``; block while the send window is full (kcp-go Write).

        Returns how many bytes were queued: everything that fits in the free window, at least
        one segment. Raises like :meth:`recv`, and ``BrokenPipeError`` after
        ``shutdown(SHUT_WR)``.
        """
        if flags:
            raise ValueError("send flags are not supported on a KCP session")
        return self._send(data, self._deadline())

    def _send(self, data: Any, deadline: Optional[float]) -> int:
        self._runtime.check_thread()
        view = memoryview(data).cast("B")
        while True:
            self._check_usable()
            if self._shut_wr:
                raise BrokenPipeError(errno.EPIPE, "session was shut down for writing")
            if self._error is not None:
                self._raise_error()
            if not view:
                return 0
            conn = self._conn
            if self._kcp.snd_buf:
                self._endpoint.poll()       # take in ACKs first: fresher window, no false RTO
            if conn.writable():
                kcp = self._kcp
                room = (min(kcp.snd_wnd, kcp.rmt_wnd) - kcp.wait_snd()) * kcp.mss
                chunk = view[:room] if room < len(view) else view
                n = conn.send(chunk)
                self._flush_now()
                return n
            self._write_ev.clear()
            self._wait(self._write_ev, True, deadline)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Queue all of ``data``, blocking as needed. The timeout bounds the whole call."""
        if flags:
            raise ValueError("send flags are not supported on a KCP session")
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        while view:
            n = self._send(view, deadline)
            view = view[n:]

    def drain(self, timeout: Optional[float] = None) -> None:
        """Block until everything sent so far has been acknowledged by the peer.

        kcp-go's Close drops unacknowledged data; call this first to make sure the peer has it.
        ``timeout`` (seconds, default: the socket timeout) raises ``TimeoutError``.
        """
        self._runtime.check_thread()
        deadline = self._deadline() if timeout is None else _monotonic() + timeout
        while True:
            self._check_usable()
            if self._kcp.wait_snd() == 0:
                return
            if self._error is not None:
                self._raise_error()
            self._write_ev.clear()
            self._wait(self._write_ev, True, deadline,
                       nonblocking=timeout is None and self._timeout == 0.0)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, how: int) -> None:
        """Stop reading (``recv`` returns ``b""``) and/or writing (``send`` raises EPIPE).

        KCP has no FIN, so nothing is sent to the peer.
        """
        self._check_usable()
        self._runtime.check_thread()
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise ValueError(f"invalid shutdown how: {how!r}")
        if how in (_socket.SHUT_RD, _socket.SHUT_RDWR):
            self._shut_rd = True
            self._read_ev.set()
            if self._fd is not None:
                self._fd.set(True)
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            self._shut_wr = True
            self._write_ev.set()

    def close(self) -> None:
        """Close the session (idempotent). Blocked calls raise ``OSError(EBADF)``.

        Like kcp-go, one final flush sends what the window allows; unacknowledged data is then
        dropped (use :meth:`drain` first to wait for it). Nothing tells the peer. As with
        ``socket.socket``, resources are released once every :meth:`makefile` object is closed.
        Called from another OS thread, the close is handed to the owning thread's hub and
        happens when that thread next waits in kcpgo (or gevent); this call does not wait.
        """
        if self._closed:
            return
        if self._runtime.owner_runs_elsewhere():
            self._runtime.call_threadsafe(self.close)
            return
        self._closed = True
        self._read_ev.set()
        self._write_ev.set()
        if self._io_refs <= 0:
            self._release()

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._closed = True
        conn = self._conn
        if not self._endpoint.closed and self._error is None:
            try:
                out = conn.flush(now_ms())
                if out:
                    self._endpoint.send_many(out, self._peer)
            except OSError:
                pass
        conn.snmp.CurrEstab -= 1
        self._runtime.cancel(self)
        if self._fd is not None:
            self._fd.close()
            self._fd = None
        if self._listener is not None:
            self._listener._session_closed(self)
        else:
            self._endpoint.close()

    def __enter__(self) -> "KCPSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort, like socket.socket
        try:
            if not self._released:
                self._closed = True
                self._release()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ socket-like extras

    def makefile(self, mode: str = "r", buffering: Optional[int] = None, *,
                 encoding: Optional[str] = None, errors: Optional[str] = None,
                 newline: Optional[str] = None) -> Any:
        """A file object on the session, as ``socket.socket.makefile`` returns."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = _socket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        if buffering is None or buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buffer: Any = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def set_idle_timeout(self, seconds: Optional[float]) -> None:
        """Declare the peer dead (``TimeoutError``) after ``seconds`` without any datagram.

        ``None`` (default) disables it; kcp-go itself never times out.
        """
        self._idle_timeout_ms = None if seconds is None else max(1, int(seconds * 1000))
        if seconds is not None and self._timer_at is None and hasattr(self, "_closed"):
            self._runtime.schedule(self, self._last_rx + self._idle_timeout_ms)

    def fileno(self) -> int:
        """A descriptor that ``select``/``poll`` report readable exactly when ``recv`` would
        not block (an eventfd kept in step with the session; created on first call)."""
        self._check_usable()
        if self._fd is None:
            self._fd = _ReadyFD()
            self._fd.set(self._would_not_block())
        return self._fd.rfd

    def setsockopt(self, level: int, optname: int, value: Any, optlen: Any = None) -> None:
        """For code written against TCP: ``TCP_NODELAY`` turns write delay off/on (writes are
        flushed at once by default), ``SO_KEEPALIVE`` is accepted and ignored (KCP has none).
        Anything else raises ``OSError(ENOPROTOOPT)``; see the ``set_*`` methods."""
        if level == _socket.IPPROTO_TCP and optname == _socket.TCP_NODELAY:
            self.set_write_delay(not value)
        elif not (level == _socket.SOL_SOCKET and optname == _socket.SO_KEEPALIVE):
            raise OSError(errno.ENOPROTOOPT, "socket option not supported by a KCP session")

    def getsockopt(self, level: int, optname: int, buflen: Any = None) -> int:
        """``TCP_NODELAY`` (1 unless write delay is on) and ``SO_KEEPALIVE`` (0) only."""
        if level == _socket.IPPROTO_TCP and optname == _socket.TCP_NODELAY:
            return int(not self._conn.write_delay)
        if level == _socket.SOL_SOCKET and optname == _socket.SO_KEEPALIVE:
            return 0
        raise OSError(errno.ENOPROTOOPT, "socket option not supported by a KCP session")

    def getpeername(self) -> Address:
        return self._peer

    def getsockname(self) -> Address:
        return self._endpoint.sock.getsockname()

    # ------------------------------------------------------------------ KCP knobs

    @property
    def conv(self) -> int:
        """The conversation id."""
        return self._kcp.conv

    @property
    def rto(self) -> int:
        """Current retransmission timeout, ms."""
        return self._kcp.rx_rto

    @property
    def srtt(self) -> int:
        """Smoothed round-trip time, ms."""
        return self._kcp.rx_srtt

    @property
    def srttvar(self) -> int:
        """Round-trip time variation, ms."""
        return self._kcp.rx_rttvar

    @property
    def snmp(self) -> Snmp:
        """The counters this session adds to."""
        return self._conn.snmp

    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """kcp-go ``SetNoDelay``: see kcptun's modes (``mode=`` on dial/listen)."""
        self._kcp.set_nodelay(nodelay, interval, resend, nc)
        self._flush_now()

    def set_mode(self, mode: str) -> None:
        """Apply a kcptun preset: normal, fast, fast2 or fast3."""
        self._conn.set_mode(mode)

    def set_dead_link(self, transmissions: int) -> None:
        """Declare the peer dead (``ConnectionResetError``) once a segment has been sent this
        many times (kcp-go's dead_link, default 20; kcp-go only records it)."""
        if transmissions < 1:
            raise ValueError("dead link threshold must be >= 1")
        self._kcp.dead_link = transmissions

    def set_window_size(self, sndwnd: int, rcvwnd: int) -> None:
        """Send/receive windows in segments (values <= 0 leave one unchanged)."""
        self._kcp.set_wndsize(sndwnd, rcvwnd)

    def set_mtu(self, mtu: int) -> None:
        """Largest datagram on the wire, headers included (50..1500). ``ValueError`` otherwise."""
        self._conn.set_mtu(mtu)

    def set_stream_mode(self, enable: bool) -> None:
        """Stream mode (kcptun) packs writes into full segments; message mode keeps chunks."""
        self._kcp.stream = bool(enable)

    def set_write_delay(self, enable: bool) -> None:
        """When true, small writes wait for the next tick instead of being flushed at once."""
        self._conn.write_delay = bool(enable)

    def set_ack_nodelay(self, enable: bool) -> None:
        """Flush ACKs as soon as input queues them (they are flushed per read batch anyway)."""
        self._kcp.ack_nodelay = bool(enable)

    def _own_socket(self) -> _socket.socket:
        if self._listener is not None:
            raise OSError(errno.EOPNOTSUPP, "not supported on an accepted session (it shares "
                                            "the listener's socket; set it on the Listener)")
        return self._endpoint.sock

    def set_dscp(self, dscp: int) -> None:
        """Set the DSCP field of outgoing datagrams (client sessions only)."""
        set_dscp(self._own_socket(), dscp)

    def set_read_buffer(self, nbytes: int) -> None:
        """SO_RCVBUF of the session's own UDP socket (client sessions only)."""
        self._own_socket().setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, nbytes)

    def set_write_buffer(self, nbytes: int) -> None:
        """SO_SNDBUF of the session's own UDP socket (client sessions only)."""
        self._own_socket().setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, nbytes)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<KCPSocket conv={self.conv:#010x} peer={self._peer} {state}>"


def set_dscp(sock: _socket.socket, dscp: int) -> None:
    """kcp-go ``SetDSCP`` (§5.5): IPv4 TOS = dscp << 2, IPv6 traffic class = dscp (unshifted)."""
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

