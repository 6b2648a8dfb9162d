"""``Listener``: kcp-go's server side on one UDP socket (PROTOCOL.md §5.2).

One reader greenlet serves every session of the listener. Datagrams are demultiplexed by the
remote address, as kcp-go 5.6.1 does, not by conv:

* a datagram that passes the crypto check and carries a conv creates a session for a new
  address (while the accept backlog has room); FEC parity alone cannot create one;
* from a known address, a different conv is taken as a restarted peer only if the segment's sn
  is 0: the old session is closed and a new one replaces it; otherwise the datagram is dropped;
* a closed session is forgotten, so a late datagram from its address creates a new one (kcp-go
  behaves the same; kcp sessions have no teardown handshake).

Flood protection (nothing here is in kcp-go, whose rules above stay as they are):

* **Half-open cap**: sessions created but not yet accepted are at most ``backlog`` (default
  128, kcp-go's acceptBacklog); while the backlog is full, datagrams that would create a
  session are dropped. Without a cipher any datagram with a conv creates a session, so a flood
  from spoofed addresses fills the backlog, but the session table, its memory and its timers
  stay bounded by ``backlog`` plus what the application accepted. With a cipher, datagrams
  that fail the CRC/AEAD check never create a session.
* **Eviction of failed half-open sessions**: when the backlog is full, waiting sessions that
  have already failed (``idle_timeout`` expired, or the dead-link limit) are closed to make
  room (counted in :attr:`Listener.evicted`). This happens only if the application asked for
  an ``idle_timeout`` (``listen(idle_timeout=...)``): kcp-go never times sessions out.
* **Idle reaping of accepted sessions** is the application's choice: with ``idle_timeout`` a
  session that hears nothing for that long fails its blocked and later calls with
  ``TimeoutError``; the application closes it, which removes it from the table. Flood sessions
  that send one datagram and go silent are therefore reaped after ``idle_timeout``; the live
  session count under a flood is about (accept rate) x ``idle_timeout`` + ``backlog``.

Closing the listener stops accepting; sessions already accepted keep working (the socket stays
open until the last of them is closed), like accepted TCP connections outlive their listening
socket. Sessions still waiting in the backlog are closed.
"""
from __future__ import annotations

import errno
import socket as _socket
import struct
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from gevent.event import Event

from .connection import Connection
from .fec import FEC_HEADER_SIZE_PLUS2, TYPE_DATA, TYPE_PARITY
from .kcp import OVERHEAD
from .packet import PacketCodec
from .runtime import UDPEndpoint
from .session import KCPSocket, Timeouts, _ebadf, _ReadyFD, set_dscp
from .snmp import Snmp

__all__ = ["Listener", "ACCEPT_BACKLOG"]

#: §2.1 acceptBacklog.
ACCEPT_BACKLOG = 128
#: §1.1 IKCP_SN_OFFSET: where sn sits inside a segment header.
_SN_OFFSET = 12
_unpack_u32 = struct.Struct("<I").unpack_from   # conv, read in place (no slice per datagram)

Address = Tuple[Any, ...]


class Listener(Timeouts):
    """Accepts KCP sessions on a UDP socket. Create with :func:`kcpgo.listen` or
    :func:`kcpgo.serve_conn`. Its timeout (``settimeout`` etc.) applies to :meth:`accept`."""

    def __init__(self, sock: _socket.socket, *, crypt: Any, data_shards: int,
                 parity_shards: int, backlog: int, owned: bool, snmp: Snmp,
                 configure: Callable[[KCPSocket], None]) -> None:
        if backlog < 1:
            raise ValueError("backlog must be >= 1")
        self._crypt = crypt
        self._opener = PacketCodec(crypt, snmp=snmp)
        self._data_shards = data_shards
        self._parity_shards = parity_shards
        self._backlog = backlog
        self._configure = configure
        self.snmp = snmp
        self._sessions: Dict[Address, KCPSocket] = {}
        self._queue: Deque[KCPSocket] = deque()
        #: Waiting sessions closed to make room in a full backlog (see the module docstring).
        self.evicted = 0
        self._accept_ev = Event()
        self._waiters = 0
        self._timeout: Optional[float] = None
        self._closed = False
        self._error: Optional[OSError] = None
        self._fd: Optional[_ReadyFD] = None
        self._endpoint = UDPEndpoint(sock, self._on_batch, owned=owned, snmp=snmp)
        self._runtime = self._endpoint.runtime
        self._address = sock.getsockname()

    # ------------------------------------------------------------------ demultiplexing

    def _on_batch(self, batch: list, now: int) -> None:
        if now < 0:
            self._fail(self._endpoint.error or _ebadf())
            return
        open_ = self._opener.open
        sessions = self._sessions
        touched: Dict[KCPSocket, None] = {}
        for data, addr in batch:
            payload = open_(data)
            if payload is None:
                continue
            flag = payload[4] | (payload[5] << 8)
            if flag == TYPE_DATA:
                has_conv = len(payload) >= FEC_HEADER_SIZE_PLUS2 + OVERHEAD
                off = FEC_HEADER_SIZE_PLUS2
            else:
                has_conv = flag != TYPE_PARITY
                off = 0
            s = sessions.get(addr)
            if s is not None:
                if not has_conv or _unpack_u32(payload, off)[0] == s.conv:
                    s._feed(payload, now)
                    touched[s] = None
                    continue
                if payload[off + _SN_OFFSET:off + _SN_OFFSET + 4] != b"\0\0\0\0":
                    continue
                touched.pop(s, None)
                s.close()                    # the peer restarted with a new conv
            if not has_conv or self._closed:
                continue
            if len(self._queue) >= self._backlog and not self._evict_failed():
                continue                     # backlog full: no session, datagram lost (§5.2)
            s = self._create(_unpack_u32(payload, off)[0], addr)
            s._feed(payload, now)
            touched[s] = None
        for s in touched:
            s._after_batch(now)
        if self._queue:
            if self._waiters:
                self._accept_ev.set()
            if self._fd is not None:
                self._fd.set(True)

    def _evict_failed(self) -> bool:
        """Backlog full: close the waiting sessions that already failed (idle timeout, dead
        link) to make room. Returns whether there is room now."""
        queue = self._queue
        if any(s._error is not None for s in queue):
            keep = deque()
            for s in queue:
                if s._error is not None:
                    self.evicted += 1
                    s.close()
                else:
                    keep.append(s)
            self._queue = keep
        return len(self._queue) < self._backlog

    def _create(self, conv: int, addr: Address) -> KCPSocket:
        conn = Connection(conv, crypt=self._crypt, data_shards=self._data_shards,
                          parity_shards=self._parity_shards, snmp=self.snmp)
        s = KCPSocket(conn, self._endpoint, addr, listener=self)
        self._configure(s)
        self._sessions[addr] = s
        self._queue.append(s)
        return s

    def _session_closed(self, s: KCPSocket) -> None:
        if self._sessions.get(s._peer) is s:
            del self._sessions[s._peer]
        if self._closed and not self._sessions:
            self._endpoint.close()

    def _fail(self, err: OSError) -> None:
        self._error = err
        self._accept_ev.set()
        for s in list(self._sessions.values()):
            s._fail(err)
        if self._fd is not None:
            self._fd.set(True)

    # ------------------------------------------------------------------ public API

    def accept(self) -> Tuple[KCPSocket, Address]:
        """Wait for the next session; returns ``(session, peer_address)``.

        Honours :meth:`settimeout` (``TimeoutError``; ``BlockingIOError`` when non-blocking).
        Raises ``OSError(EBADF)`` once the listener is closed, also if closed while waiting.
        """
        deadline = self._deadline()
        while True:
            if self._closed:
                raise _ebadf()
            if self._queue:
                s = self._queue.popleft()
                if self._fd is not None:
                    self._fd.set(bool(self._queue))
                return s, s.getpeername()
            if self._error is not None:
                raise OSError(self._error.errno, self._error.strerror)
            if self._timeout == 0.0:
                raise BlockingIOError(errno.EAGAIN, "no session to accept")
            self._runtime.check_thread()
            self._accept_ev.clear()
            self._waiters += 1
            try:
                self._block(self._accept_ev, deadline)
            finally:
                self._waiters -= 1

    def close(self) -> None:
        """Stop accepting (idempotent). Waiting ``accept`` calls raise ``OSError(EBADF)``.

        Sessions waiting in the backlog are closed; accepted sessions keep working, and the UDP
        socket is closed after the last of them (unless it was passed to ``serve_conn``).
        """
        if self._closed:
            return
        self._closed = True
        self._accept_ev.set()
        while self._queue:
            self._queue.popleft().close()
        if self._fd is not None:
            self._fd.close()
            self._fd = None
        if not self._sessions:
            self._endpoint.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def fileno(self) -> int:
        """A descriptor that ``select``/``poll`` report readable exactly when ``accept`` would
        not block."""
        if self._closed:
            raise _ebadf()
        if self._fd is None:
            self._fd = _ReadyFD()
            self._fd.set(bool(self._queue) or self._error is not None)
        return self._fd.rfd

    def getsockname(self) -> Address:
        return self._address

    def set_dscp(self, dscp: int) -> None:
        """DSCP of every datagram the listener's sessions send (§5.5)."""
        set_dscp(self._endpoint.sock, dscp)

    def set_read_buffer(self, nbytes: int) -> None:
        self._endpoint.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, nbytes)

    def set_write_buffer(self, nbytes: int) -> None:
        self._endpoint.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, nbytes)

    @property
    def session_count(self) -> int:
        """Live sessions (accepted or waiting in the backlog)."""
        return len(self._sessions)

    @property
    def pending_count(self) -> int:
        """Sessions created but not yet accepted (at most ``backlog``)."""
        return len(self._queue)

    def __repr__(self) -> str:
        return f"<kcpgo.Listener {self._address} sessions={len(self._sessions)}>"
