"""``SocketExtras``: the rest of ``socket.socket``'s surface that legacy TCP code calls.

Mixed into :class:`~kcpgo.KCPSocket` and :class:`~kcpgo.Stream` (after
:class:`~kcpgo.facade._sockbase.SocketFacade`): ``getsockopt``/``setsockopt`` for the options
such code reads or sets on a connected TCP socket, ``sendfile`` as the standard library's
``send()`` fallback does it, and ``dup``/``detach``, which have no meaning here and say what to
use instead (issue 12 item 6).

Option values follow ``socket.setsockopt``/``getsockopt`` and Linux's ``setsockopt(2)``, as
measured on a CPython 3.11 TCP socket: ``value`` is an int (a C ``int``) or a bytes-like object
(the raw option; ``EINVAL`` if shorter than the option), or ``None`` with ``optlen`` (a NULL
buffer: ``EFAULT``); ``getsockopt`` returns an int, or with ``buflen`` (1..1024) the raw bytes
cut to ``buflen``; boolean options read back as 0 or 1; an option that is not known raises
``OSError(ENOPROTOOPT)``, and a closed object ``OSError(EBADF)``.
"""
from __future__ import annotations

import errno
import operator
import os
import socket as _socket
import stat
import sys
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from ._blocking import locked

__all__ = ["SocketExtras"]

Option = Tuple[int, int]
_INT = 4                    # sizeof(int): the size of every int option
_LINGER = 8                 # sizeof(struct linger): two ints, l_onoff and l_linger
_BOOL = (0, 1)              # a boolean option: any int is taken, it reads back as 0 or 1


def _opt(level: str, name: str) -> Optional[Option]:
    """``(level, optname)`` from the socket module, or None where the platform lacks it."""
    lv, nm = getattr(_socket, level, None), getattr(_socket, name, None)
    return None if lv is None or nm is None else (lv, nm)


#: Options that ``setsockopt`` accepts and ignores, because on a connected byte stream that
#: never binds, listens or sends keepalives of its own, ignoring them loses nothing a caller
#: relies on. Each maps to (kind, default): kind ``_BOOL``, an ``(lo, hi)`` int range (EINVAL
#: outside, as Linux), or ``_LINGER`` (a ``struct linger``); the default is what ``getsockopt``
#: reads until set, Linux's for a new TCP socket. What was set is remembered and read back.
#:
#: * ``SO_REUSEADDR``/``SO_REUSEPORT`` only change how ``bind()`` treats the address;
#: * ``SO_LINGER``: close never blocks (``close()`` sends what the window allows and drops the
#:   rest, as kcp-go; a stream's FIN follows its data); use ``KCPSocket.drain()`` to wait;
#: * ``TCP_KEEPIDLE``/``TCP_KEEPINTVL``/``TCP_KEEPCNT`` tune ``SO_KEEPALIVE`` probes (see
#:   there: none are sent by a KCP session; smux sends its own).
IGNORED: Dict[Option, Tuple[Any, Union[int, bytes]]] = {
    opt: spec for opt, spec in (
        (_opt("SOL_SOCKET", "SO_REUSEADDR"), (_BOOL, 0)),
        (_opt("SOL_SOCKET", "SO_REUSEPORT"), (_BOOL, 0)),
        (_opt("SOL_SOCKET", "SO_LINGER"), (_LINGER, bytes(_LINGER))),
        (_opt("IPPROTO_TCP", "TCP_KEEPIDLE"), ((1, 32767), 7200)),
        (_opt("IPPROTO_TCP", "TCP_KEEPINTVL"), ((1, 32767), 75)),
        (_opt("IPPROTO_TCP", "TCP_KEEPCNT"), ((1, 127), 9)),
    ) if opt is not None}

SO_ERROR = (_socket.SOL_SOCKET, _socket.SO_ERROR)
SO_TYPE = (_socket.SOL_SOCKET, _socket.SO_TYPE)
SO_DOMAIN = _opt("SOL_SOCKET", "SO_DOMAIN")
SO_RCVBUF = (_socket.SOL_SOCKET, _socket.SO_RCVBUF)
SO_SNDBUF = (_socket.SOL_SOCKET, _socket.SO_SNDBUF)
SO_KEEPALIVE = (_socket.SOL_SOCKET, _socket.SO_KEEPALIVE)
TCP_NODELAY = (_socket.IPPROTO_TCP, _socket.TCP_NODELAY)

#: errno for a latched failure that carries none (``SO_ERROR``), by exception type.
_ERRNO_OF = ((TimeoutError, errno.ETIMEDOUT), (ConnectionResetError, errno.ECONNRESET),
             (BrokenPipeError, errno.EPIPE), (ConnectionAbortedError, errno.ECONNABORTED),
             (ConnectionRefusedError, errno.ECONNREFUSED))

#: sendfile's block: one ``file.read`` per block (the stdlib's fallback reads 8 KiB; a larger
#: block means fewer trips through the wait loop).
SENDFILE_BLOCK = 65536


def error_number(err: Optional[BaseException]) -> int:
    """``SO_ERROR`` for a latched failure: its errno, else one for its type (EIO if none)."""
    if err is None:
        return 0
    if isinstance(err, OSError) and err.errno:
        return err.errno
    for cls, num in _ERRNO_OF:
        if isinstance(err, cls):
            return num
    return errno.EIO


def _enoprotoopt(what: str, hint: str = "") -> OSError:
    return OSError(errno.ENOPROTOOPT, f"{os.strerror(errno.ENOPROTOOPT)}: not on a {what}{hint}")


def raw_value(value: Any, optlen: Any, size: int) -> bytes:
    """The option bytes ``setsockopt(2)`` would get from ``socket.setsockopt``'s arguments;
    ``size``: the option's length (``EINVAL`` if shorter, as Linux)."""
    if optlen is not None:
        if value is not None:
            raise TypeError("setsockopt() takes exactly 3 arguments (4 given)")
        operator.index(optlen)
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))      # a NULL buffer
    if isinstance(value, int):
        try:
            raw = value.to_bytes(_INT, sys.byteorder, signed=True)
        except OverflowError:
            raise TypeError("a bytes-like object is required, not 'int'") from None
    else:
        try:
            raw = memoryview(value).tobytes()
        except TypeError:
            raise TypeError(f"a bytes-like object is required, not "
                            f"'{type(value).__name__}'") from None
    if len(raw) < size:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return raw[:size]


def _regular(file: Any) -> bool:
    """Whether ``file`` is a regular file (the stdlib would use ``os.sendfile`` for it)."""
    try:
        return stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation is both
        return False


def _int_bytes(n: int) -> bytes:
    return n.to_bytes(_INT, sys.byteorder, signed=True)


class SocketExtras:
    """``getsockopt``/``setsockopt``, ``sendfile``, ``dup``/``detach`` for a facade object.

    The class using it provides :class:`~kcpgo.facade._sockbase.SocketFacade`'s methods and
    the hooks below. Option values that were set are kept in ``_optvalues`` (made on first
    use)."""

    #: What ``SO_KEEPALIVE`` reads: 1 if the connection keeps itself alive on its own.
    _keepalive = 0
    _optvalues: Optional[Dict[Option, bytes]] = None

    if TYPE_CHECKING:  # pragma: no cover - provided by SocketFacade and the class using it
        _what: str
        family: int

        def _check_usable(self) -> None: ...

        def _error(self) -> Optional[BaseException]: ...

        def gettimeout(self) -> Optional[float]: ...

        def send(self, data: Any, flags: int = 0) -> int: ...

    # ------------------------------------------------------------------ hooks

    def _nodelay(self) -> int:
        """What ``TCP_NODELAY`` reads (1: writes are never held back)."""
        return 1

    def _set_nodelay(self, on: bool) -> None:
        """``setsockopt(TCP_NODELAY)``; ignored unless the class can delay writes."""

    def _udp_socket(self) -> _socket.socket:
        """The UDP socket under the connection (``SO_RCVBUF``/``SO_SNDBUF`` are read there)."""
        raise NotImplementedError

    def _pending_error(self) -> Optional[BaseException]:
        """The failure ``SO_ERROR`` reports: the latched one (``SocketFacade._error``)."""
        return self._error()

    # ------------------------------------------------------------------ options

    @locked
    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None
                   ) -> Union[int, bytes]:
        """``socket.getsockopt``: an int, or with ``buflen`` (1..1024 bytes) the raw value.

        * ``SO_ERROR``: 0, or the errno of the failure that every ``recv``/``send`` now raises
          (``ECONNRESET`` for a dead link or a reset stream, ``ETIMEDOUT`` for the idle
          timeout). Unlike Linux, reading it does not clear it: TCP reports a pending error
          once (to ``SO_ERROR`` or to the next call) and then reads as closed, while here the
          failure is latched and every later call raises it again, so ``SO_ERROR`` keeps
          saying so too (a caller that polls it never takes a dead connection for a live one).
        * ``SO_TYPE``: ``SOCK_STREAM``; ``SO_DOMAIN``: :attr:`family`.
        * ``SO_RCVBUF``/``SO_SNDBUF``: the kernel buffer of the UDP socket under the
          connection, in bytes (shared with the listener's other sessions for an accepted
          one; Linux reports twice what was set), not the KCP window.
        * ``TCP_NODELAY``: 1 unless writes are delayed (``KCPSocket.set_write_delay``); KCP's
          own "nodelay" (``set_nodelay``, the retransmission timing) is unrelated.
        * ``SO_KEEPALIVE``: 0 for a KCP session (KCP sends nothing while idle; see
          ``set_idle_timeout``), 1 for an smux stream (smux's keepalive, kcptun.md §4.6).
        * The options :data:`IGNORED` lists: what was set, else Linux's default.

        ``OSError(ENOPROTOOPT)`` for any other option, ``OSError(EBADF)`` once closed,
        ``OSError`` (no errno) for ``buflen`` outside 0..1024, as ``socket.getsockopt``."""
        self._check_usable()
        size = 0 if buflen is None else operator.index(buflen)
        if size < 0 or size > 1024:
            raise OSError("getsockopt buflen out of range")
        opt = (level, optname)
        if opt == SO_ERROR:
            raw = _int_bytes(error_number(self._pending_error()))
        elif opt == SO_TYPE:
            raw = _int_bytes(_socket.SOCK_STREAM)
        elif opt == SO_DOMAIN:
            raw = _int_bytes(self.family)
        elif opt in (SO_RCVBUF, SO_SNDBUF):
            raw = _int_bytes(self._udp_socket().getsockopt(level, optname))
        elif opt == TCP_NODELAY:
            raw = _int_bytes(self._nodelay())
        elif opt == SO_KEEPALIVE:
            raw = _int_bytes(self._keepalive)
        elif opt in IGNORED:
            stored = self._optvalues.get(opt) if self._optvalues else None
            if stored is None:
                default = IGNORED[opt][1]
                stored = default if isinstance(default, bytes) else _int_bytes(default)
            raw = stored
        else:
            raise _enoprotoopt(self._what)
        if size == 0:
            return int.from_bytes(raw[:_INT], sys.byteorder, signed=True)
        return raw[:size]

    @locked
    def setsockopt(self, level: int, optname: int, value: Any, optlen: Any = None) -> None:
        """``socket.setsockopt`` for code written against TCP; raises ``OSError(ENOPROTOOPT)``
        for options it does not take, as a socket does for unknown ones.

        * ``TCP_NODELAY``: on a KCP session, 0 turns write delay on (small writes wait for the
          next tick, ``set_write_delay``) and 1 off (the default); an smux stream's frames are
          always written at once, so it is ignored there. KCP's ``set_nodelay`` is unrelated.
        * ``SO_KEEPALIVE``: accepted and ignored (what it reads does not change, see
          :meth:`getsockopt`).
        * :data:`IGNORED`: ``SO_REUSEADDR``, ``SO_REUSEPORT``, ``SO_LINGER`` (a
          ``struct linger``: an int raises ``EINVAL``, as on Linux), ``TCP_KEEPIDLE``,
          ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``: checked, remembered, without effect.
        * ``SO_RCVBUF``/``SO_SNDBUF`` are not taken (``ENOPROTOOPT``): the UDP socket's buffer
          is shared, so use ``set_read_buffer``/``set_write_buffer`` on a client session, the
          ``Listener`` or the ``SmuxSession``.

        ``TypeError`` for a value that is neither an int nor bytes-like, ``OSError(EINVAL)``
        for one too short or out of range, ``OSError(EBADF)`` once closed."""
        self._check_usable()
        opt = (level, optname)
        if opt == TCP_NODELAY or opt == SO_KEEPALIVE:
            on = int.from_bytes(raw_value(value, optlen, _INT), sys.byteorder, signed=True)
            if opt == TCP_NODELAY:
                self._set_nodelay(bool(on))
            return
        spec = IGNORED.get(opt)
        if spec is None:
            hint = (" (use set_read_buffer/set_write_buffer)"
                    if opt in (SO_RCVBUF, SO_SNDBUF) else "")
            raise _enoprotoopt(self._what, hint)
        kind = spec[0]
        raw = raw_value(value, optlen, _LINGER if kind == _LINGER else _INT)
        if kind != _LINGER:
            n = int.from_bytes(raw, sys.byteorder, signed=True)
            if kind == _BOOL:
                raw = _int_bytes(int(n != 0))
            elif not kind[0] <= n <= kind[1]:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if self._optvalues is None:
            self._optvalues = {}
        self._optvalues[opt] = raw

    # ------------------------------------------------------------------ sendfile, dup, detach

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """``socket.socket.sendfile``: send ``file`` (opened in binary mode) from ``offset``
        until EOF, or ``count`` bytes; returns the bytes sent.

        As the standard library's ``send()`` fallback (``_sendfile_use_send``), which it uses
        for files that are not regular: ``file.seek(offset)``, then ``file.read`` blocks of
        :data:`SENDFILE_BLOCK` bytes, each given to :meth:`send` until all of it is queued.
        Where the stdlib differs between its two ways, this follows what it does for the same
        file: a regular file is read from ``offset`` (``os.sendfile``), another one with
        ``offset=0`` from its current position (the fallback skips ``seek(0)``). On return,
        and also when an exception is raised, the file is positioned at ``offset`` plus the
        bytes sent (``file.tell()`` says how many were). Each ``send`` has the object's
        timeout (``TimeoutError``). ``ValueError`` for a text file, for ``count <= 0`` and in
        non-blocking mode (as the stdlib: "non-blocking sockets are not supported");
        ``TypeError`` for a ``count`` that is not an int."""
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if self.gettimeout() == 0:
            raise ValueError("non-blocking sockets are not supported")
        if offset or _regular(file):
            file.seek(offset)
        total = 0
        send = self.send
        try:
            while True:
                size = SENDFILE_BLOCK
                if count:
                    size = min(count - total, size)
                    if size <= 0:
                        break
                data = memoryview(file.read(size))
                if not data:
                    break                       # EOF
                while data:
                    sent = send(data)
                    total += sent
                    data = data[sent:]
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    def dup(self) -> Any:
        """Not supported: ``OSError(EOPNOTSUPP)``. There is no descriptor to duplicate; share
        the object itself instead (usable from any thread, one caller per direction at a
        time), and use :meth:`fileno` for readiness."""
        raise OSError(errno.EOPNOTSUPP, f"dup() is not supported on a "
                      f"{self._what}: share the object itself between threads (it is usable "
                      f"from any thread), and use fileno() for readiness")

    def detach(self) -> int:
        """Not supported: ``OSError(EOPNOTSUPP)`` (the object stays open). There is no
        descriptor carrying the connection to hand over: keep the object and pass it on, or
        use :meth:`fileno` for readiness (it is a readiness signal, not the connection)."""
        raise OSError(errno.EOPNOTSUPP, f"detach() is not supported on a "
                      f"{self._what}: pass the object itself on (fileno() is only a "
                      f"readiness signal, not the connection)")
