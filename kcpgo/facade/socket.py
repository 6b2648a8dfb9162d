"""``KCPSocket``: a KCP session that behaves like a connected ``SOCK_STREAM`` socket.

Every blocking call follows gevent's socket pattern: try the operation; if it would block, wait
on the session's readiness event with the socket timeout; ``close()`` wakes every greenlet
blocked on the session with ``OSError(EBADF)``. Timeouts raise ``TimeoutError`` (which is
``socket.timeout``); non-blocking mode raises ``BlockingIOError``.

There is no FIN in KCP: ``recv`` never returns ``b""`` because of the peer (only after
``shutdown(SHUT_RD)``). A peer that stops acknowledging is detected after the dead-link
threshold (``ConnectionResetError``) or the optional ``idle_timeout`` (``TimeoutError``).
While no valid datagram has come from the peer, these errors and every ``TimeoutError`` say
so, with what arrived instead and the likely causes: address, key, cipher, FEC
(docs/deviations.md D33; there is no connect step to fail, KCP has no handshake, §5.1).
"""
from __future__ import annotations

import errno
import socket as _socket
import warnings
from typing import Any, Optional, Tuple

from ..runtime.channel import Channel
from ..runtime.udp import local_sockname
from ..snmp import Snmp
from ._blocking import WOULD_BLOCK, ReadyFD, locked, set_dscp, weak_call
from ._oob import OOBMixin
from ._sockbase import SocketFacade
from ._sockopts import SocketExtras

__all__ = ["KCPSocket"]

Address = Tuple[Any, ...]


class KCPSocket(SocketFacade, SocketExtras, OOBMixin):
    """A KCP session (kcp-go ``UDPSession``) with the blocking API of a connected TCP socket.

    Created by :func:`kcpgo.dial` or returned by :meth:`kcpgo.Listener.accept`; not meant to be
    constructed directly. Usable from any thread when kcpgo runs on its I/O thread (the
    default without monkey-patching), else from the thread whose hub runs it
    (:mod:`kcpgo.runtime.modes`); one caller per direction at a time (others wait for their
    turn, as :class:`~kcpgo.facade._blocking.Direction` says).
    """

    family: int
    _what = "KCP session"

    def __init__(self, channel: Channel, *, timeout: Optional[float] = None) -> None:
        self._chan = channel
        self._conn = channel.conn
        self._runtime = channel.runtime
        self.family = channel.endpoint.family
        self._init_facade(timeout)
        self._leftover = b""
        # A weak reference: the reader greenlet and the listener hold the channel, not this
        # object, so a session the application drops is collected and closed (see __del__).
        channel.on_update = weak_call(self, KCPSocket._on_update)

    # ------------------------------------------------------------------ channel events

    def _on_update(self) -> None:
        """The channel changed something (data, window, error, an OOB packet): wake whoever
        can proceed (``recv_oob`` waits on the receiving side too)."""
        failed = self._chan.error is not None
        conn = self._conn
        if conn.oob_pending and self._oob_handler is not None:
            self._deliver_oob()
        rd = self._rd
        if rd.waiters and (failed or self._leftover or conn.oob_pending or self._readable()):
            rd.wake()
        wr = self._wr
        if wr.waiters and (failed or self._conn.writable() or not self._conn.waitsnd):
            wr.wake()
        if self._fd is not None:
            self._fd.set(self._would_not_block())

    # ------------------------------------------------------------------ state checks

    def _error(self) -> Optional[BaseException]:
        return self._chan.error

    def _channel(self) -> Channel:
        return self._chan

    def _would_not_block(self) -> bool:
        return bool(self._closed or self._chan.error is not None or self._shut_rd
                    or self._leftover or self._readable())

    def _readable(self) -> bool:
        """``Connection.readable``: every readiness check goes through here. It may consume
        zero-length messages (D22) and so reopen the receive window: the window update then
        leaves on the scheduler's next turn, whoever asked (``fileno``, a waiter, ...), since
        an idle session has no timer to send it later (D35)."""
        conn = self._conn
        ready = conn.readable()
        if conn.window_update_due:
            self._chan.kick()
        return ready

    # ------------------------------------------------------------------ receiving

    def _take(self, n: int) -> Optional[bytes]:
        left = self._leftover
        if left:
            if len(left) < n and self._conn.stream:
                left = self._fill(n)        # a peek left a few bytes: add what is ready
            if len(left) <= n:
                self._leftover = b""
                if self._fd is not None:
                    self._fd.set(self._would_not_block())
                return left
            self._leftover = left[n:]
            return left[:n]
        conn = self._conn
        data = conn.recv_stream(n) if conn.stream else conn.recv()
        if data:
            self._chan.data_taken()         # a bulk batch's ACKs waited for it (D60)
            if len(data) > n:
                self._leftover = data[n:]
                data = data[:n]
        # Even a call that returns nothing may have consumed zero-length messages: the
        # descriptor follows "recv would not block" after every attempt (D22).
        if self._fd is not None:
            self._fd.set(self._would_not_block())
        if conn.window_update_due:
            self._chan.kick()               # the window reopened: tell the peer
        return data or None

    def _fill(self, n: int) -> bytes:
        """Move received data into ``_leftover`` (which :meth:`_take` returns first) until it
        holds what ``recv(n)`` returns: in message mode the next message if it was empty, in
        stream mode up to ``n`` bytes (or one longer segment). Returns it."""
        left = self._leftover
        conn = self._conn
        more = b""
        if conn.stream:
            if len(left) < n:
                more = conn.recv_stream(n - len(left))
                if more:
                    left = self._leftover = left + more
        elif not left:
            more = conn.recv()
            if more:
                left = self._leftover = bytes(more)
        if more:
            self._chan.data_taken()         # a bulk batch's ACKs waited for it (D60)
        if conn.window_update_due:
            self._chan.kick()               # the window reopened: tell the peer
        return left

    def _try_peek(self, bufsize: int) -> object:
        """``MSG_PEEK``: the data stays in ``_leftover`` for the next receive, so readiness
        holds (``_would_not_block`` counts it); otherwise as :meth:`_try_recv`."""
        self._check_usable()
        if bufsize == 0:
            return b""
        left = self._fill(bufsize)
        if self._fd is not None:
            self._fd.set(self._would_not_block())
        if left:
            return left[:bufsize]
        if self._shut_rd:
            return b""
        if self._chan.error is not None:
            self._raise_error()
        return WOULD_BLOCK

    def _try_recv(self, bufsize: int) -> object:
        self._check_usable()
        if bufsize == 0:
            return b""
        data = self._take(bufsize)
        if data is not None:
            return data
        if self._shut_rd:
            return b""
        if self._chan.error is not None:
            self._raise_error()
        return WOULD_BLOCK

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Receive up to ``bufsize`` bytes; block until at least one is available.

        In message mode at most one KCP message is returned (the rest of a longer message is
        kept for the next call): a kcpgo or kcp-go sender's message is one chunk of at most
        :attr:`mss` bytes (see :meth:`send`), a C KCP peer's may be a reassembled multi-fragment
        message. In stream mode available segments are joined. Returns ``b""``
        only after ``shutdown(SHUT_RD)`` or for ``bufsize == 0``. Raises ``TimeoutError`` after
        the timeout, ``BlockingIOError`` in non-blocking mode, ``OSError(EBADF)`` if closed
        (also when closed while blocked), ``ConnectionResetError``/``TimeoutError`` once the
        peer was declared dead. While another greenlet is receiving, waits for its turn.
        ``flags``: ``MSG_PEEK`` (in message mode it sees the next message, kept whole for the
        next call) and ``MSG_DONTWAIT`` (``SocketFacade._recv_flags``).
        """
        return SocketFacade.recv(self, bufsize, flags)

    # ------------------------------------------------------------------ sending

    def _try_send(self, view: memoryview) -> object:
        self._check_writable()
        if not view:
            return 0
        chan = self._chan
        room = chan.send_room()
        if chan.error is not None:          # what the poll took in may have ended it
            self._raise_error()
        if not room:
            return WOULD_BLOCK
        return chan.send(view[:room] if room < len(view) else view)

    def send(self, data: Any, flags: int = 0) -> int:
        """Queue some of ``data``; block while the send window is full (kcp-go Write).

        Returns how many bytes were queued: everything that fits in the free window, at least
        one segment. Raises like :meth:`recv`, and ``BrokenPipeError`` after
        ``shutdown(SHUT_WR)``.

        Message mode and large writes: as kcp-go's Write, the data is cut into chunks of at
        most :attr:`mss` bytes, each sent as one KCP message with frg 0; there is no size
        limit (no fragments, so none of ``KCP.send``'s ``max_fragments``). The peer's ``recv``
        therefore returns a send of up to mss bytes whole (given a large enough bufsize) and a
        longer one as consecutive chunks of mss bytes (the last one shorter): message
        boundaries are kept only up to mss. Stream mode packs the bytes into full segments.
        """
        return SocketFacade.send(self, data, flags)

    def _try_drain(self, _: None) -> object:
        self._check_usable()
        if self._conn.waitsnd == 0:
            return None
        if self._chan.error is not None:
            self._raise_error()
        return WOULD_BLOCK

    def drain(self, timeout: Optional[float] = None) -> None:
        """Block until everything sent so far has been acknowledged by the peer.

        kcp-go's Close drops unacknowledged data; call this first to make sure the peer has it.
        ``timeout`` (seconds, default: the socket timeout) raises ``TimeoutError``.
        """
        deadline = self._deadline(timeout, use_default=timeout is None)
        self._blocking_call(self._try_drain, None, self._wr, deadline,
                            nonblocking=timeout is None and self._timeout == 0.0,
                            take_turn=False)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, how: int) -> None:
        """Stop reading (``recv`` returns ``b""``) and/or writing (``send`` raises EPIPE).

        KCP has no FIN, so nothing is sent to the peer (smux streams have one: see
        :func:`kcpgo.dial_smux`).
        """
        SocketFacade.shutdown(self, how)

    def close(self) -> None:
        """Close the session (idempotent; never blocks). Blocked calls raise
        ``OSError(EBADF)``.

        As a closed TCP socket's send queue, what was written and not yet acknowledged goes
        on being delivered in the background while the runtime runs, for up to
        ``kcpgo.runtime.channel.LINGER`` (10 s); the session is released once the peer
        acknowledged it all, the session fails (dead link), or that time is up
        (docs/deviations.md D59; kcp-go's ``Close`` drops it). A program without
        monkey-patching waits up to 1 s more for it at exit (D48); a monkey-patched script
        about to exit calls :meth:`drain` first, which also says whether it all arrived.
        Nothing tells the peer (KCP has no FIN). As with ``socket.socket``, resources are
        released once every :meth:`makefile` object is closed. Any thread may call it; a
        client session's UDP socket is closed when the session is released (when this
        returns, if nothing was left to deliver).
        """
        SocketFacade.close(self)

    def _release(self) -> None:
        """Free everything: the readiness fd, the channel (final flush), the turns. Every
        greenlet still blocked on the session wakes and raises EBADF."""
        if self._release_facade():
            self._chan.release_when_delivered()

    def _after_close(self) -> None:
        chan = self._chan
        if not chan.passive and not chan.lingering:
            chan.endpoint.wait_closed()     # a client's own UDP socket: closed on return

    def __del__(self) -> None:
        # Like socket.socket: an unclosed session is closed when collected (with a
        # ResourceWarning), in its runtime's thread.
        try:
            if not self._released:
                if not self._chan.released:         # a live session leaked, not a backlog one
                    warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
                self._closed = True
                self._runtime.call_threadsafe(self._release)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    @property
    def closed(self) -> bool:
        """True once the session is over: :meth:`close` was called, or the listener ended it
        because the peer restarted with a new conv (calls then raise ``ConnectionResetError``
        after the data already received)."""
        return self._closed or self._chan.released

    # ------------------------------------------------------------------ socket-like extras

    @locked
    def set_idle_timeout(self, seconds: Optional[float]) -> None:
        """Declare the peer dead (``TimeoutError``) after ``seconds`` without any datagram.

        ``None`` (default) disables it; kcp-go itself never times out.
        """
        self._chan.set_idle_timeout(seconds)

    @locked
    def set_rate_limit(self, bytes_per_second: int) -> None:
        """Pace the session at ``bytes_per_second`` on the wire (headers included), a token
        bucket with a burst of 64 x 1500 bytes; 0 turns it off (kcp-go latest ``SetRateLimit``,
        docs/protocol.md §5.9; ``Options.rate_limit``). Datagrams wait for tokens in a bounded
        queue (``kcpgo.runtime.channel.pace_queue_limit``). ``ValueError`` unless an int
        >= 0. Never blocks."""
        self._chan.set_rate_limit(bytes_per_second)

    @locked
    def fileno(self) -> int:
        """A descriptor that ``select``/``poll`` report readable exactly when ``recv`` would
        not block (an eventfd kept in step with the session; created on first call).

        The runtime's thread keeps it in step, so the stdlib's ``select``/``poll``/``selectors``
        see data that arrives while they wait (in hub mode only while that hub runs: use
        gevent's, or monkey-patching). It is always writable (use ``send`` in non-blocking
        mode to learn about room). -1 once closed, as ``socket.fileno``."""
        if self._gone():
            return -1
        if self._fd is None:
            self._fd = ReadyFD(self._runtime)
            self._fd.set(self._would_not_block())
        return self._fd.rfd

    # SocketExtras hooks: getsockopt/setsockopt (TCP_NODELAY is write delay, below)

    def _nodelay(self) -> int:
        return int(not self._conn.write_delay)

    def _set_nodelay(self, on: bool) -> None:
        self.set_write_delay(not on)

    def _udp_socket(self) -> _socket.socket:
        return self._chan.endpoint.sock

    def getpeername(self) -> Address:
        self._check_open()
        return self._chan.peer

    def getsockname(self) -> Address:
        """The local address: for a session of a listener on a wildcard address, the one its
        peer sent to and replies leave from (D25), as a connected socket reports it."""
        self._check_open()
        chan = self._chan
        return local_sockname(chan.local, chan.endpoint.sock.getsockname())

    # ------------------------------------------------------------------ KCP knobs

    @property
    def conv(self) -> int:
        """The conversation id."""
        return self._conn.conv

    @property
    def rto(self) -> int:
        """Current retransmission timeout, ms."""
        return self._conn.rto

    @property
    def srtt(self) -> int:
        """Smoothed round-trip time, ms."""
        return self._conn.srtt

    @property
    def srttvar(self) -> int:
        """Round-trip time variation, ms."""
        return self._conn.rttvar

    @property
    def snmp(self) -> Snmp:
        """The counters this session adds to."""
        return self._conn.snmp

    @locked
    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """kcp-go ``SetNoDelay``: see kcptun's modes (``mode=`` on dial/listen)."""
        self._conn.set_nodelay(nodelay, interval, resend, nc)
        self._chan.flush()

    @locked
    def set_mode(self, mode: str) -> None:
        """Apply a kcptun preset: normal, fast, fast2 or fast3."""
        self._conn.set_mode(mode)

    def set_dead_link(self, transmissions: int) -> None:
        """Declare the peer dead (``ConnectionResetError``) once a segment has been sent this
        many times (kcp-go's dead_link, default 20; kcp-go only records it), or once that many
        window probes went unanswered (docs/deviations.md D47)."""
        self._conn.dead_link = transmissions

    @locked
    def set_window_size(self, sndwnd: int, rcvwnd: int) -> None:
        """Send/receive windows in segments (values <= 0 leave one unchanged; max 65535,
        ``ValueError`` above). A receive window that grew beyond what the peer was last told
        is announced at once (docs/deviations.md D35), as after ``accept()`` in kcptun."""
        conn = self._conn
        conn.set_window_size(sndwnd, rcvwnd)
        if conn.window_update_due:
            self._chan.flush()

    @locked
    def set_mtu(self, mtu: int) -> None:
        """Largest datagram on the wire in bytes, headers included (50..1500; §1.4).

        Lowering it mid-session re-cuts what is queued but not yet sent for the new size
        (docs/deviations.md D23): in message mode each queued chunk becomes chunks of at most
        the new :attr:`mss`, each one message for the peer's ``recv`` (stream mode re-packs
        the bytes); this never fails. Segments already sent keep their size and sn, so their
        retransmissions may exceed the new MTU. ``ValueError`` outside 50..1500 (or when no
        data fits after the headers), ``TypeError`` for a non-int; a call that raises changes
        nothing.
        """
        self._conn.set_mtu(mtu)

    @property
    def mss(self) -> int:
        """Data bytes per KCP segment (the MTU minus cipher, FEC and KCP headers, §1.4): in
        message mode the largest piece one :meth:`recv` returns from a kcpgo/kcp-go peer."""
        return self._conn.mss

    @locked
    def set_stream_mode(self, enable: bool) -> None:
        """Stream mode (kcptun) packs writes into full segments; message mode sends each chunk
        of at most :attr:`mss` bytes as one message (see :meth:`send`)."""
        self._conn.stream = bool(enable)

    def set_write_delay(self, enable: bool) -> None:
        """When true, small writes wait for the next tick instead of being flushed at once."""
        self._conn.write_delay = bool(enable)

    def set_ack_nodelay(self, enable: bool) -> None:
        """Flush ACKs as soon as input queues them (they are flushed per read batch anyway)."""
        self._conn.ack_nodelay = bool(enable)

    def _own_socket(self) -> _socket.socket:
        if self._chan.passive:
            raise OSError(errno.EOPNOTSUPP, "not supported on an accepted session (it shares "
                                            "the listener's socket; set it on the Listener)")
        return self._chan.endpoint.sock

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
        return f"<KCPSocket conv={self.conv:#010x} peer={self._chan.peer} {state}>"

