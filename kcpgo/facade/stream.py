"""``Stream``: one smux stream with the blocking API and the semantics of a TCP socket.

docs/kcptun.md §4.5: a stream opens with SYN and ends with FIN each way. So, unlike a bare KCP
session (:class:`~kcpgo.facade.socket.KCPSocket`), a stream has TCP's end-of-stream rules:

* ``recv`` returns ``b""`` once the peer's FIN arrived and its data was read (EOF);
* ``shutdown(SHUT_WR)`` sends FIN and keeps reading: the peer reads EOF and can still reply
  (a half-close; a kcptun peer closes the whole stream at its FIN instead, kcptun.md §5.3);
* ``close()`` sends FIN unless sent, forgets the stream and drops unread bytes;
* the session's death (smux keepalive timeout, protocol error, the KCP link's dead-link or
  idle limit) fails every stream with ``ConnectionResetError`` naming the cause, after the
  bytes already received;
* ``close()`` wakes every greenlet blocked on the stream with ``OSError(EBADF)``.

Many streams share one KCP session; smux v2's per-stream windows (kcptun.md §4.8) keep one slow
reader from stalling the others (v1 has only the session's 4 MiB bucket, kcptun.md §4.7).
"""
from __future__ import annotations

import errno
import socket as _socket
import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from ..runtime.smux_driver import SmuxDriver, StreamBuffer
from ._blocking import WOULD_BLOCK, ReadyFD, locked, weak_call
from ._sockbase import SocketFacade
from ._sockopts import SocketExtras

if TYPE_CHECKING:  # pragma: no cover
    from .smux import SmuxSession

__all__ = ["Stream"]

#: Bytes offered to a :meth:`Stream.set_receiver` sink per call at most (joined frames).
_SINK_BATCH = 65536

Address = Tuple[Any, ...]


class Stream(SocketFacade, SocketExtras):
    """An smux stream (smux ``Stream``) with the blocking API of a connected TCP socket.

    Returned by :meth:`kcpgo.SmuxSession.open_stream` / ``accept_stream`` and
    :meth:`kcpgo.SmuxListener.accept`; not meant to be constructed directly. Same threading
    rules as :class:`~kcpgo.KCPSocket` (any thread on the I/O thread's runtime; one caller per
    direction at a time). ``recv`` returns ``b""`` at EOF (the peer's FIN), as TCP does.
    """

    _what = "smux stream"
    _keepalive = 1              # SO_KEEPALIVE: smux's NOPs keep the session alive (§4.6)

    def __init__(self, session: "SmuxSession", buf: StreamBuffer, *,
                 timeout: Optional[float] = None) -> None:
        self._session = session
        self._driver: SmuxDriver = session._driver
        self._buf = buf
        self._runtime = self._driver.runtime
        self.family = session.family
        self._init_facade(timeout)
        #: :meth:`set_receiver`'s sink, and whether it is being fed (no re-entry).
        self._sink: Optional[Callable[[bytes], int]] = None
        self._feeding = False
        buf.on_update = weak_call(self, Stream._on_update)

    @property
    def sid(self) -> int:
        """The smux stream id (client-opened: 3, 5, ...; kcptun.md §4.4)."""
        return self._buf.sid

    @property
    def session(self) -> "SmuxSession":
        """The smux session (one KCP session) this stream belongs to."""
        return self._session

    def _channel(self) -> Any:
        return self._driver.chan

    def _timeout_hint(self) -> str:
        # the KCP session answers, yet not one smux byte came: a framing mismatch, likely
        driver = self._driver
        if driver.chan.heard and driver.stack.first_byte is None:
            return driver.silent_peer_hint()
        return SocketFacade._timeout_hint(self)

    # ------------------------------------------------------------------ driver events

    def _on_update(self) -> None:
        """The driver changed something for this stream (data, FIN, window, death)."""
        if self._sink is not None and self._buf.size:
            self._feed_sink()
        rd = self._rd
        if rd.waiters and self._recv_would_not_block():
            rd.wake()
        wr = self._wr
        if wr.waiters:
            wr.wake()               # room, window or death: the sender re-checks
        if self._fd is not None:
            self._fd.set(self._recv_would_not_block())

    def _recv_would_not_block(self) -> bool:
        buf = self._buf
        return bool(self._closed or buf.size or buf.eof or self._shut_rd
                    or self._driver.error is not None)

    def _error(self) -> Optional[BaseException]:
        return self._driver.error

    def set_receiver(self, sink: Optional[Callable[[bytes], int]]) -> bool:
        """Hand received bytes straight to ``sink(data) -> bytes taken`` as they arrive,
        from the hub's reader (under the stack lock), instead of waking a greenlet blocked in
        :meth:`recv`: a relay's reply then leaves in the same loop turn as the datagram that
        brought it. ``sink`` must not block or switch greenlets; what it does not take (it
        returns 0 for "not now", e.g. a full socket) stays buffered for :meth:`recv`, in
        order, and wakes a blocked receiver as usual; EOF and errors are left to ``recv``.
        Only in ``"hub"`` runtime mode, where the reader runs in the caller's thread: returns
        whether the sink was installed (False in ``"thread"`` mode). ``None`` removes it."""
        if sink is not None and self._runtime.io_thread:
            return False
        self._sink = sink
        return sink is not None

    def _feed_sink(self) -> None:
        """:meth:`set_receiver`: offer the buffered bytes to the sink, oldest first."""
        if self._feeding or self._closed or self._shut_rd:
            return
        sink = self._sink
        buf = self._buf
        chunks = buf.chunks
        self._feeding = True
        try:
            while buf.size and sink is not None:
                data = chunks[0] if len(chunks) == 1 else _peek(buf, _SINK_BATCH)
                n = sink(data)
                if not n:
                    break
                self._driver.take(buf, n)
                if n < len(data):
                    break
        finally:
            self._feeding = False

    # ------------------------------------------------------------------ receiving

    def _try_recv(self, bufsize: int) -> object:
        self._check_usable()
        if bufsize == 0:
            return b""
        buf = self._buf
        if self._shut_rd:
            return b""
        if buf.size:
            # No sink feeding meanwhile: taking may send a window update, whose flush reads
            # the socket first; bytes arriving then must not overtake ``data``, which the
            # caller (a set_receiver relay's copier) has yet to write.
            feeding, self._feeding = self._feeding, True
            try:
                data = self._driver.take(buf, bufsize)
            finally:
                self._feeding = feeding
            if self._fd is not None:
                self._fd.set(self._recv_would_not_block())
            return data
        if buf.eof:
            return b""
        if self._driver.error is not None:
            self._raise_error()
        return WOULD_BLOCK

    def _try_peek(self, bufsize: int) -> object:
        """``MSG_PEEK``: the first ``bufsize`` received bytes, left in the buffer (so neither
        readiness nor the smux window changes); otherwise as :meth:`_try_recv`."""
        self._check_usable()
        if bufsize == 0 or self._shut_rd:
            return b""
        buf = self._buf
        if buf.size:
            return _peek(buf, bufsize)
        if buf.eof:
            return b""
        if self._driver.error is not None:
            self._raise_error()
        return WOULD_BLOCK

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Receive up to ``bufsize`` bytes; block until at least one is available.

        Returns ``b""`` at EOF: once the peer sent FIN (closed or half-closed its side) and
        every byte before it was read; also after ``shutdown(SHUT_RD)`` and for ``bufsize ==
        0``. Raises ``TimeoutError`` after the timeout, ``BlockingIOError`` in non-blocking
        mode, ``OSError(EBADF)`` if closed (also when closed while blocked), and
        ``ConnectionResetError`` naming the cause once the session died (after the bytes
        received before). Reading returns smux bucket tokens and, in v2, window (kcptun.md
        §4.7, 4.8); a ``MSG_PEEK`` leaves both as they are. ``flags``: ``MSG_PEEK``,
        ``MSG_DONTWAIT`` (``SocketFacade._recv_flags``).
        """
        return SocketFacade.recv(self, bufsize, flags)

    # ------------------------------------------------------------------ sending

    def _check_writable(self) -> None:
        SocketFacade._check_writable(self)
        if self._buf.reset:
            raise ConnectionResetError(errno.ECONNRESET, "the peer closed this stream: what is "
                                       "sent on it is discarded (docs/deviations.md D46)")

    def _try_send(self, view: memoryview) -> object:
        self._check_writable()
        if not view:
            return 0
        driver, buf = self._driver, self._buf
        room = driver.send_room(buf.sid)
        if not room:
            driver.want_room(buf)
            return WOULD_BLOCK
        return driver.send(buf.sid, view[:room] if room < len(view) else view)

    def send(self, data: Any, flags: int = 0) -> int:
        """Queue some of ``data`` as PSH frames (≤ 32768 bytes each, kcptun.md §4.3); block
        while nothing fits: KCP's send window is full and about 64 KiB of frames already wait
        (``kcpgo.runtime.smux_driver.OUT_LIMIT``), or, in v2, the peer's stream window is
        closed (kcptun.md §4.8). Returns the bytes queued. Raises like :meth:`recv` (no EOF:
        a stream the peer finished may still be written to), ``BrokenPipeError`` after
        ``shutdown(SHUT_WR)``, and ``ConnectionResetError`` once a kcpgo peer that closed the
        stream signalled that it discards what arrives (docs/deviations.md D46; like TCP's
        RST). A kcptun peer sends no such signal: in v2 a write to a stream it closed then
        waits for window that never comes, so bound it with a timeout."""
        return SocketFacade.send(self, data, flags)

    # ------------------------------------------------------------------ lifecycle

    def _on_shutdown(self, rd: bool, wr: bool) -> None:
        if rd:
            self._driver.discard(self._buf)            # bytes now and later: read and dropped
        if wr:
            self._driver.shutdown(self._buf.sid)       # FIN after what was sent

    def shutdown(self, how: int) -> None:
        """``SHUT_WR`` sends FIN after the bytes already sent; the peer's ``recv`` then returns
        ``b""`` and it may still reply, which :meth:`recv` keeps returning (a half-close).
        ``SHUT_RD`` sends nothing; ``recv`` returns ``b""`` from then on, and bytes buffered
        or arriving later are dropped as if read (they would otherwise hold the session's
        bucket, and so every stream of the session, kcptun.md §4.7). ``SHUT_RDWR``: both."""
        SocketFacade.shutdown(self, how)

    def close(self) -> None:
        """Close the stream (idempotent): FIN unless already sent, then the stream is
        forgotten; bytes not yet read are dropped, bytes already sent still go out (the
        session keeps running). Blocked calls raise ``OSError(EBADF)``; resources are
        released once every :meth:`makefile` object is closed. Any thread may call it."""
        SocketFacade.close(self)

    def _release(self) -> None:
        if self._release_facade():
            self._driver.close_stream(self._buf.sid)
            self._buf.on_update = _nothing
            self._sink = None
            self._session._stream_released()

    def __del__(self) -> None:
        # Like socket.socket: an unclosed stream is closed when collected, with a
        # ResourceWarning unless its session already died.
        try:
            if not self._released:
                if self._driver.error is None:
                    warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
                self._closed = True
                self._runtime.call_threadsafe(self._release)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the session died."""
        return self._closed or self._driver.error is not None

    # ------------------------------------------------------------------ socket-like extras

    @locked
    def fileno(self) -> int:
        """A descriptor that ``select``/``poll`` report readable exactly when ``recv`` would
        not block (data, EOF, an error; an eventfd kept in step, created on first call), as
        :meth:`kcpgo.KCPSocket.fileno`; it is always writable. -1 once closed, as
        ``socket.fileno``."""
        if self._gone():
            return -1
        if self._fd is None:
            self._fd = ReadyFD(self._runtime)
            self._fd.set(self._recv_would_not_block())
        return self._fd.rfd

    # SocketExtras hooks: getsockopt/setsockopt (TCP_NODELAY reads 1: frames go out at once)

    def _udp_socket(self) -> _socket.socket:
        return self._driver.chan.endpoint.sock

    def _pending_error(self) -> Optional[BaseException]:
        """The session's death, else ECONNRESET once the peer signalled that it discards
        what is sent on this stream (what :meth:`send` then raises, D46; TCP's RST)."""
        if self._driver.error is not None:
            return self._driver.error
        if self._buf.reset:
            return ConnectionResetError(errno.ECONNRESET, "the peer closed this stream")
        return None

    def getpeername(self) -> Address:
        """The KCP peer's UDP address (every stream of a session has the same)."""
        self._check_open()
        return self._session._chan.peer

    def getsockname(self) -> Address:
        """The local UDP address of the session."""
        self._check_open()
        return self._session._sockname()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<kcpgo.Stream sid={self.sid} peer={self._session.peer_text} {state}>"



def _nothing() -> None:
    pass


def _peek(buf: StreamBuffer, n: int) -> bytes:
    """Up to ``n`` bytes from the head of ``buf`` without taking them (``SmuxDriver.take``
    takes them); called under the stack lock, as the driver's appends are."""
    chunks = buf.chunks
    parts = []
    size = i = 0
    while size < n and i < len(chunks):
        piece = chunks[i][:n - size]
        parts.append(piece)
        size += len(piece)
        i += 1
    return b"".join(parts)
