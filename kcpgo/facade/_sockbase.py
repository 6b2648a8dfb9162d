"""``SocketFacade``: the connected-``SOCK_STREAM`` socket surface every kcpgo byte stream shares.

A KCP session (:class:`~kcpgo.facade.socket.KCPSocket`) and an smux stream
(:class:`~kcpgo.facade.stream.Stream`) differ only in how bytes are taken and given
(``_try_recv``, ``_try_send``), in what ``shutdown`` tells the peer and in what ``_release``
frees. Everything else a caller relies on is here, once: argument checking as
``socket.socket`` does it, the timeout and turn rules of :class:`Blocking`, ``sendall``,
``makefile`` (``socket.SocketIO``, with ``close()`` deferred until the last file object is
closed, as a socket does), the context manager and idempotent ``close`` from any thread.
Every change of state runs under the stack lock (``Runtime.lock``): the hub's thread may be
handling a datagram for the same object meanwhile.
"""
from __future__ import annotations

import errno
import io
import operator
import socket as _socket
from typing import Any, Callable, Optional, Tuple

from ._blocking import Blocking, Direction, ReadyFD, ebadf

__all__ = ["SocketFacade"]

Address = Tuple[Any, ...]
#: Send flags taken and ignored (see ``SocketFacade._send_dontwait``).
_SEND_IGNORED = getattr(_socket, "MSG_NOSIGNAL", 0) | getattr(_socket, "MSG_MORE", 0)


def byte_view(data: Any, wanted: str = "a bytes-like object is required, not '{}'"
              ) -> memoryview:
    """``data`` as a memoryview of bytes; ``TypeError`` in socket's words (``wanted``, the
    type's name in its ``{}``) if it is not bytes-like: memoryview's start "memoryview: "."""
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise TypeError(wanted.format(type(data).__name__)) from None


class SocketFacade(Blocking):
    """The shared surface; subclasses provide ``_try_recv(bufsize)``, ``_try_send(view)``,
    ``_error()`` (the latched failure to raise, or ``None``), ``_release()`` and
    ``_on_shutdown(rd, wr)``, and set the attributes below in ``__init__``."""

    type = _socket.SOCK_STREAM
    proto = 0
    #: What the object is, for messages ("KCP session", "smux stream").
    _what = "connection"
    _closed: bool
    _released: bool
    _io_refs: int
    _shut_rd: bool
    _shut_wr: bool
    _rd: Direction
    _wr: Direction
    _fd: Optional[ReadyFD]

    def _init_facade(self, timeout: Optional[float]) -> None:
        self._timeout = None
        self._closed = False        # close() was called
        self._released = False      # resources freed (after the last makefile() closed)
        self._io_refs = 0
        self.settimeout(timeout)
        self._shut_rd = False
        self._shut_wr = False
        self._rd = Direction()
        self._wr = Direction()
        self._fd = None

    # ------------------------------------------------------------------ hooks

    def _try_recv(self, bufsize: int) -> object:
        raise NotImplementedError

    def _try_send(self, view: memoryview) -> object:
        raise NotImplementedError

    def _error(self) -> Optional[BaseException]:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _channel(self) -> Any:
        """The KCP session's :class:`~kcpgo.runtime.channel.Channel` underneath."""
        raise NotImplementedError

    def _blocking_call(self, attempt: Callable[[Any], object], arg: Any, side: Direction,
                       deadline: Optional[float], nonblocking: Optional[bool] = None,
                       take_turn: bool = True) -> object:
        """:meth:`Blocking._blocking_call`, whose ``TimeoutError`` says why when no valid
        datagram ever came from the peer (``Channel.diagnosis``, docs/deviations.md D33):
        for a session and for each smux stream on it alike."""
        try:
            return Blocking._blocking_call(self, attempt, arg, side, deadline, nonblocking,
                                           take_turn)
        except TimeoutError as exc:
            hint = self._timeout_hint() if exc.errno is None else ""
            if hint:
                raise TimeoutError(f"timed out; {hint}") from None
            raise

    def _timeout_hint(self) -> str:
        """Why a call may have timed out, when the session points at a cause, else ``""``."""
        chan = self._channel()
        return "" if chan.heard else chan.diagnosis()

    def _gone(self) -> bool:
        # as socket.close() with makefile() objects open: the descriptor lives on until they close
        return self._closed and (self._released or self._io_refs <= 0)

    def _busy_poll(self, side: Direction) -> bool:
        # Only a reader: a writer waits for ACKs, which bulk traffic batches best unpolled.
        return side is self._rd and self._channel().spin_receive()

    def _interrupted(self, exc: BaseException) -> None:
        """A KeyboardInterrupt (or SystemExit) raised by a signal handler inside this
        session's state changes (a send that was splitting data into segments, a flush) may
        leave KCP's queues out of step, with nothing ever retransmitted: the session is
        aborted, so that every later call says so (``ConnectionAbortedError``) instead of
        hanging or failing silently. A TCP socket's C code cannot be interrupted there;
        interrupting the wait (the common case) changes nothing."""
        chan = self._channel()
        chan.fail(ConnectionAbortedError(
            errno.ECONNABORTED, f"{type(exc).__name__} interrupted kcpgo while it changed this "
            f"{self._what}'s state, which may be inconsistent: it was aborted; open a new one"))

    def _on_shutdown(self, rd: bool, wr: bool) -> None:
        """Called by :meth:`shutdown` after the flags were set (tell the peer, wake...)."""

    # ------------------------------------------------------------------ state checks

    def _check_usable(self) -> None:
        # As with socket.socket, a closed object whose makefile() objects are still open
        # keeps working through them (http.client reads a response after closing).
        if self._gone():
            raise ebadf()

    def _raise_error(self) -> None:
        err = self._error()
        if isinstance(err, OSError):
            raise type(err)(err.errno, err.strerror)
        raise err  # type: ignore[misc]

    def _check_writable(self) -> None:
        self._check_usable()
        if self._shut_wr:
            raise BrokenPipeError(errno.EPIPE, f"{self._what} was shut down for writing")
        if self._error() is not None:
            self._raise_error()

    # ------------------------------------------------------------------ receiving

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Receive up to ``bufsize`` bytes; block until at least one is available (the
        subclass says when ``b""`` is returned). Raises ``TimeoutError`` after the timeout,
        ``BlockingIOError`` in non-blocking mode, ``OSError(EBADF)`` if closed (also when
        closed while blocked), ``ValueError`` for a negative size. While another
        greenlet is receiving, waits for its turn. ``flags``: ``MSG_PEEK``, ``MSG_DONTWAIT``
        (see :meth:`_recv_flags`; others raise ``OSError(EOPNOTSUPP)``)."""
        if flags:
            return self._recv_flags(bufsize, flags)
        bufsize = operator.index(bufsize)   # TypeError before anything is taken, as socket.recv
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        return self._blocking_call(self._try_recv, bufsize, self._rd,
                                   self._deadline())  # type: ignore[return-value]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv` (``flags`` included), into a writable buffer; returns the number
        of bytes stored.

        ``TypeError`` for a read-only buffer, raised before anything is received (as
        ``socket.recv_into``), so no data is lost."""
        view = byte_view(buffer, "recv_into() argument 1 must be read-write bytes-like "
                                 "object, not {}")
        if view.readonly:
            raise TypeError("recv_into() argument 'buffer' must be a writable buffer")
        nbytes = operator.index(nbytes)
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes == 0 or nbytes > len(view):
            nbytes = len(view)
        data = self.recv(nbytes, flags)
        n = len(data)
        view[:n] = data
        return n

    # ------------------------------------------------------------------ sending

    def send(self, data: Any, flags: int = 0) -> int:
        """Queue some of ``data``; block while nothing fits. Returns the bytes queued. Raises
        like :meth:`recv`, and ``BrokenPipeError`` after ``shutdown(SHUT_WR)``. ``flags``:
        ``MSG_DONTWAIT``, ``MSG_NOSIGNAL``, ``MSG_MORE`` (see :meth:`_send_flags`)."""
        if flags:
            return self._send_flags(data, flags)
        return self._send(byte_view(data), self._deadline())

    def _send(self, view: memoryview, deadline: Optional[float]) -> int:
        return self._blocking_call(self._try_send, view, self._wr,
                                   deadline)  # type: ignore[return-value]

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Queue all of ``data``, blocking as needed. The timeout bounds the whole call.

        The send direction is held for the whole call: another greenlet's ``send`` or
        ``sendall`` waits for its turn instead of splicing its bytes into these. ``flags`` as
        :meth:`send` (with ``MSG_DONTWAIT``, see :meth:`_sendall_flags`).
        """
        if flags:
            return self._sendall_flags(data, flags)
        view = byte_view(data)
        deadline = self._deadline()
        side = self._wr
        lock = self._runtime.lock
        took = side.enter(deadline, self._timeout == 0.0, lock, self._runtime.thread_ident)
        try:
            with lock:
                self._check_writable()       # also for b"", as socket.sendall does
            while view:
                n = self._send(view, deadline)
                view = view[n:]
        finally:
            if took:
                with lock:
                    side.leave(took)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, how: int) -> None:
        """``SHUT_RD``: ``recv`` returns ``b""`` from now on; ``SHUT_WR``: ``send`` raises
        ``BrokenPipeError`` (and the subclass may tell the peer); ``SHUT_RDWR``: both.
        ``ValueError`` for another ``how``; ``OSError(EBADF)`` when closed."""
        with self._runtime.lock:
            self._shutdown(how)

    def _shutdown(self, how: int) -> None:
        self._check_usable()
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise ValueError(f"invalid shutdown how: {how!r}")
        rd = how in (_socket.SHUT_RD, _socket.SHUT_RDWR)
        wr = how in (_socket.SHUT_WR, _socket.SHUT_RDWR)
        if rd:
            self._shut_rd = True
            self._rd.wake()
            if self._fd is not None:
                self._fd.set(True)
        if wr:
            self._shut_wr = True
            self._wr.wake()
        self._on_shutdown(rd, wr)

    def close(self) -> None:
        """Close (idempotent; any thread). Blocked calls, in any thread, raise
        ``OSError(EBADF)``. As with ``socket.socket``, resources are released once every
        :meth:`makefile` object is closed."""
        if self._closed:
            return
        with self._runtime.lock:
            if self._closed:
                return
            self._closed = True
            self._rd.wake()
            self._wr.wake()
            if self._io_refs <= 0:
                self._release()
        self._after_close()

    def _after_close(self) -> None:
        """Called by :meth:`close` once the stack lock is released (wait for what the hub's
        thread finishes, e.g. closing a UDP socket)."""

    def _decref_socketios(self) -> None:
        with self._runtime.lock:
            if self._io_refs > 0:
                self._io_refs -= 1
            if self._closed and self._io_refs <= 0:
                self._release()

    def _release_facade(self) -> bool:
        """The shared part of ``_release``: returns False if already released; else frees
        the readiness fd and wakes every waiter for good (they raise EBADF)."""
        if self._released:
            return False
        self._released = True
        self._closed = True
        if self._fd is not None:
            self._fd.close()
            self._fd = None
        self._rd.wake_all()
        self._wr.wake_all()
        return True

    def __enter__(self) -> "SocketFacade":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ socket-like extras

    def makefile(self, mode: str = "r", buffering: Optional[int] = None, *,
                 encoding: Optional[str] = None, errors: Optional[str] = None,
                 newline: Optional[str] = None) -> Any:
        """A file object on the connection, as ``socket.socket.makefile`` returns."""
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

    # ------------------------------------------------------------------ recv and send flags

    def _try_peek(self, bufsize: int) -> object:
        """``MSG_PEEK``: what ``_try_recv(bufsize)`` would return, left in place for the next
        receive, and without changing readiness (``fileno()`` stays readable)."""
        raise NotImplementedError

    def _recv_flags(self, bufsize: int, flags: int) -> bytes:
        """:meth:`recv` with flags (recv(2)'s, as a TCP socket takes them):

        * ``MSG_PEEK``: return what the next ``recv(bufsize)`` would, and leave it there for
          it (in message mode: the next message, or its first ``bufsize`` bytes). It blocks,
          times out, returns ``b""`` at EOF and raises as :meth:`recv` does.
        * ``MSG_DONTWAIT``: this call never waits: ``BlockingIOError(EAGAIN)`` when nothing
          is ready or another caller is receiving, whatever the timeout (recv(2) says
          "non-blocking for this call"; CPython on a socket with a timeout > 0 measurably
          waits out the timeout instead and raises ``TimeoutError``).
        * Both together: a peek that never waits.

        Any other flag raises ``OSError(EOPNOTSUPP)`` rather than being ignored (Linux TCP
        ignores most and honours ``MSG_WAITALL``/``MSG_OOB``, which kcpgo does not): an
        ``OSError`` is what socket code is written to handle, and ignoring ``MSG_WAITALL``
        would return short reads to code that relies on it."""
        unknown = flags & ~(_socket.MSG_PEEK | _socket.MSG_DONTWAIT)
        if unknown:
            raise self._unsupported_flags("recv", unknown, "MSG_PEEK, MSG_DONTWAIT")
        bufsize = operator.index(bufsize)
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        attempt = self._try_peek if flags & _socket.MSG_PEEK else self._try_recv
        dontwait = bool(flags & _socket.MSG_DONTWAIT)
        return self._blocking_call(attempt, bufsize, self._rd, self._deadline(),
                                   nonblocking=dontwait or None)  # type: ignore[return-value]

    def _send_dontwait(self, flags: int) -> bool:
        """Check send flags: whether ``MSG_DONTWAIT`` is among them. ``MSG_NOSIGNAL`` (kcpgo
        never raises SIGPIPE: a broken connection is ``BrokenPipeError`` or the latched
        error) and ``MSG_MORE`` (a hint that more follows; writes go out as the window and
        ``set_write_delay`` say) are taken and ignored; others raise ``OSError(EOPNOTSUPP)``
        (``MSG_OOB``: KCP has no urgent data)."""
        unknown = flags & ~(_socket.MSG_DONTWAIT | _SEND_IGNORED)
        if unknown:
            raise self._unsupported_flags("send", unknown,
                                          "MSG_DONTWAIT, MSG_NOSIGNAL, MSG_MORE")
        return bool(flags & _socket.MSG_DONTWAIT)

    def _send_flags(self, data: Any, flags: int) -> int:
        """:meth:`send` with flags: with ``MSG_DONTWAIT`` queue what fits now and return its
        size, or raise ``BlockingIOError(EAGAIN)`` if nothing fits (or another caller is
        sending), whatever the timeout (send(2))."""
        view = byte_view(data)
        if not self._send_dontwait(flags):
            return self._send(view, self._deadline())
        return self._blocking_call(self._try_send, view, self._wr, None,
                                   nonblocking=True)  # type: ignore[return-value]

    def _sendall_flags(self, data: Any, flags: int) -> None:
        """:meth:`sendall` with flags. With ``MSG_DONTWAIT`` it queues what fits, in as many
        sends as the window takes, and raises ``BlockingIOError(EAGAIN)`` once nothing more
        fits, the rest unsent: what CPython's ``sendall`` does on a blocking TCP socket
        (measured; how much was sent is then unknown, as there)."""
        if not self._send_dontwait(flags):
            self.sendall(data)
            return
        view = byte_view(data)
        while True:                         # once at least: b"" still checks for errors
            n = self._blocking_call(self._try_send, view, self._wr, None, nonblocking=True)
            view = view[n:]  # type: ignore[index]
            if not view:
                return

    def _unsupported_flags(self, call: str, unknown: int, supported: str) -> OSError:
        return OSError(errno.EOPNOTSUPP, f"{call} flags {unknown:#x} are not supported on a "
                                         f"{self._what} (supported: {supported})")
