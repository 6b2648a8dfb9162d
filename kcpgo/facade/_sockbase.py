"""``SocketFacade``: the connected-``SOCK_STREAM`` socket surface every kcpgo byte stream shares.

A KCP session (:class:`~kcpgo.facade.socket.KCPSocket`) and an smux stream
(:class:`~kcpgo.facade.stream.Stream`) differ only in how bytes are taken and given
(``_try_recv``, ``_try_send``), in what ``shutdown`` tells the peer and in what ``_release``
frees. Everything else a caller relies on is here, once: argument checking as
``socket.socket`` does it, the timeout and turn rules of :class:`Blocking`, ``sendall``,
``makefile`` (``socket.SocketIO``, with ``close()`` deferred until the last file object is
closed, as a socket does), the context manager and idempotent ``close`` from any thread.
"""
from __future__ import annotations

import errno
import io
import operator
import socket as _socket
from typing import Any, Optional, Tuple

from ._blocking import Blocking, Direction, ReadyFD, ebadf

__all__ = ["SocketFacade"]

Address = Tuple[Any, ...]


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
        self.settimeout(timeout)
        self._closed = False        # close() was called
        self._released = False      # resources freed (after the last makefile() closed)
        self._io_refs = 0
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

    def _on_shutdown(self, rd: bool, wr: bool) -> None:
        """Called by :meth:`shutdown` after the flags were set (tell the peer, wake...)."""

    # ------------------------------------------------------------------ state checks

    def _check_usable(self) -> None:
        # As with socket.socket, a closed object whose makefile() objects are still open
        # keeps working through them (http.client reads a response after closing).
        if self._closed and (self._released or self._io_refs <= 0):
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
        closed while blocked), ``ValueError`` for flags or a negative size. While another
        greenlet is receiving, waits for its turn."""
        if flags:
            raise ValueError(f"recv flags are not supported on a {self._what}")
        bufsize = operator.index(bufsize)   # TypeError before anything is taken, as socket.recv
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        self._runtime.check_thread()
        return self._blocking_call(self._try_recv, bufsize, self._rd,
                                   self._deadline())  # type: ignore[return-value]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into a writable buffer; returns the number of bytes stored.

        ``TypeError`` for a read-only buffer, raised before anything is received (as
        ``socket.recv_into``), so no data is lost."""
        view = memoryview(buffer).cast("B")
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
        like :meth:`recv`, and ``BrokenPipeError`` after ``shutdown(SHUT_WR)``."""
        if flags:
            raise ValueError(f"send flags are not supported on a {self._what}")
        return self._send(memoryview(data).cast("B"), self._deadline())

    def _send(self, view: memoryview, deadline: Optional[float]) -> int:
        self._runtime.check_thread()
        return self._blocking_call(self._try_send, view, self._wr,
                                   deadline)  # type: ignore[return-value]

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Queue all of ``data``, blocking as needed. The timeout bounds the whole call.

        The send direction is held for the whole call: another greenlet's ``send`` or
        ``sendall`` waits for its turn instead of splicing its bytes into these.
        """
        if flags:
            raise ValueError(f"send flags are not supported on a {self._what}")
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        self._runtime.check_thread()
        side = self._wr
        took = side.enter(deadline, self._timeout == 0.0)
        try:
            self._check_writable()           # also for b"", as socket.sendall does
            while view:
                n = self._send(view, deadline)
                view = view[n:]
        finally:
            side.leave(took)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, how: int) -> None:
        """``SHUT_RD``: ``recv`` returns ``b""`` from now on; ``SHUT_WR``: ``send`` raises
        ``BrokenPipeError`` (and the subclass may tell the peer); ``SHUT_RDWR``: both.
        ``ValueError`` for another ``how``; ``OSError(EBADF)`` when closed."""
        self._check_usable()
        self._runtime.check_thread()
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
        """Close (idempotent). Blocked calls raise ``OSError(EBADF)``. As with
        ``socket.socket``, resources are released once every :meth:`makefile` object is
        closed. Called from another OS thread, the close is handed to the owning thread's hub
        and happens when that thread next waits in kcpgo (or gevent); this call does not
        wait."""
        if self._closed:
            return
        if self._runtime.owner_runs_elsewhere():
            self._runtime.call_threadsafe(self.close)
            return
        self._closed = True
        self._rd.wake()
        self._wr.wake()
        if self._io_refs <= 0:
            self._release()

    def _decref_socketios(self) -> None:
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
