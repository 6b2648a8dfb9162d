"""Blocking smux sessions: ``SmuxSession`` (one KCP session, many streams) and ``SmuxListener``.

docs/kcptun.md §2, §4: kcptun runs smux (optionally over snappy framing) inside each KCP
session, so that every TCP connection becomes a stream with SYN and FIN. Here the sans-IO
:class:`~kcpgo.sansio.smux_stack.SmuxStack` is driven by a
:class:`~kcpgo.runtime.smux_driver.SmuxDriver` on a KCP channel, and streams are
:class:`~kcpgo.facade.stream.Stream` objects with TCP's semantics.

* :class:`SmuxSession` (``kcpgo.dial_smux``): ``open_stream()``, ``accept_stream()``,
  ``close()``; a listener's sessions are ``Stream.session``.
* :class:`SmuxListener` (``kcpgo.listen_smux``): ``accept()`` returns ``(Stream, address)``
  for the streams of every session. A KCP session becomes an smux session at its first
  datagram (as kcptun's server accepts every session at once). Sessions that have not opened
  a stream yet stay in the KCP listener's backlog, so its half-open cap and eviction bound
  them (docs: ``kcpgo.Listener``); the first stream takes a session out of it.
"""
from __future__ import annotations

import errno
import socket as _socket
import warnings
from collections import deque
from typing import Any, Deque, Optional, Set, Tuple

from ..address import format_address
from ..runtime.channel import Channel
from ..runtime.smux_driver import ACCEPT_LIMIT, LINGER, SmuxDriver
from ..runtime.udp import local_sockname
from ..runtime.waiters import Waiter
from ..sansio.smux_stack import SmuxStack
from ..snmp import Snmp
from ._blocking import (WOULD_BLOCK, Blocking, Direction, ReadyFD, check_timeout, ebadf,
                        locked, set_dscp, weak_call)
from .listener import Listener
from .stream import Stream

__all__ = ["SmuxSession", "SmuxListener", "SmuxConfig"]

Address = Tuple[Any, ...]


class SmuxConfig:
    """Validated smux settings shared by dial_smux, listen_smux, KCPServer and monkey.

    ``smux_version`` 1 or 2 (``None``: follow the peer; accepting side only);
    ``compression`` snappy framing (``None``: follow the peer; accepting side only);
    ``keepalive`` seconds between NOPs (``None``: none); ``keepalive_timeout`` seconds
    without any frame before the session is declared dead (default ``max(30, 3 ×
    keepalive)``: kcptun's fixed 30 s for its intervals, kcptun.md §4.6);
    ``max_receive_buffer`` the session bucket and ``max_stream_buffer`` the v2 stream window,
    bytes (kcptun ``--smuxbuf``/``--streambuf``; smux's defaults 4 MiB / 64 KiB);
    ``max_frame_size`` PSH payload cut, bytes; ``accept_limit`` peer-opened streams waiting
    to be accepted per session (at the limit the session stops reading until one is
    accepted, as smux does; docs/deviations.md D41). ``ValueError``/``TypeError``
    for bad values, naming them.
    """

    __slots__ = ("smux_version", "compression", "keepalive", "keepalive_timeout",
                 "max_receive_buffer", "max_stream_buffer", "max_frame_size", "accept_limit")

    def __init__(self, smux_version: Optional[int] = 1, compression: Optional[bool] = False,
                 keepalive: Optional[float] = 10, keepalive_timeout: Optional[float] = None,
                 max_receive_buffer: int = 4194304, max_stream_buffer: int = 65536,
                 max_frame_size: int = 32768, accept_limit: int = ACCEPT_LIMIT) -> None:
        if smux_version not in (None, 1, 2) or isinstance(smux_version, bool):
            raise ValueError(f"smux_version={smux_version!r}: must be 1 or 2 (None: follow "
                             f"the peer, accepting side only)")
        if compression is not None and not isinstance(compression, bool):
            raise TypeError(f"compression={compression!r}: must be True, False or None")
        if keepalive is not None and not keepalive > 0:
            raise ValueError(f"keepalive={keepalive!r}: seconds > 0, or None")
        if keepalive_timeout is None and keepalive is not None:
            keepalive_timeout = max(30.0, 3 * keepalive)
        if accept_limit < 1:
            raise ValueError("accept_limit must be >= 1")
        self.smux_version = smux_version
        self.compression = compression
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.max_receive_buffer = max_receive_buffer
        self.max_stream_buffer = max_stream_buffer
        self.max_frame_size = max_frame_size
        self.accept_limit = accept_limit
        self.stack(client=False)                # every remaining check, now

    @classmethod
    def build(cls, value: Any, where: str) -> "SmuxConfig":
        """``True`` (defaults), a dict of the keyword arguments, or a SmuxConfig."""
        if isinstance(value, SmuxConfig):
            return value
        if value is True:
            return cls()
        if isinstance(value, dict):
            try:
                return cls(**value)
            except TypeError as e:
                raise TypeError(f"{where}: smux={value!r}: {e} (valid: "
                                f"{', '.join(cls.__slots__)})") from None
        raise TypeError(f"{where}: smux must be True, a dict of smux settings or a SmuxConfig, "
                        f"got {value!r}")

    def stack(self, client: bool, now: int = 0) -> SmuxStack:
        """A new sans-IO stack with these settings (ms for the sans-IO keepalive)."""
        ms = _ms
        return SmuxStack(self.smux_version, self.compression, client=client, now=now,
                         max_frame_size=self.max_frame_size,
                         max_receive_buffer=self.max_receive_buffer,
                         max_stream_buffer=self.max_stream_buffer,
                         keepalive_interval=ms(self.keepalive),
                         keepalive_timeout=ms(self.keepalive_timeout))

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"SmuxConfig({items})"


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else max(1, int(seconds * 1000))


class SmuxSession(Blocking):
    """One smux session over one KCP session (smux ``Session``; docs/kcptun.md §4).

    From :func:`kcpgo.dial_smux` (client role: opens streams 3, 5, ...) or
    ``Stream.session`` of an accepted stream (server role: never opens streams towards a
    kcptun client, kcptun.md §4.4). Its timeout (``settimeout``) applies to
    :meth:`accept_stream`; ``stream_timeout`` is each new stream's initial timeout.
    """

    def __init__(self, driver: SmuxDriver, *, stream_timeout: Optional[float] = None) -> None:
        self._driver = driver
        self._runtime = driver.runtime
        chan = driver.chan
        self._chan = chan
        self.family = chan.endpoint.family
        self.stream_timeout = check_timeout(stream_timeout)
        self._accepting = Direction()
        self._streams = 0
        self._closed = False
        #: Close once the last stream is closed (a closed listener's sessions).
        self.close_when_idle = False
        self._fd: Optional[ReadyFD] = None
        # Weak, as a channel's on_update: the timers hold the driver, not this object, so a
        # session the application drops is collected and closed (see __del__).
        driver.on_session = weak_call(self, SmuxSession._on_session)

    def _on_session(self) -> None:
        self._accepting.wake()
        if self._fd is not None:
            self._fd.set(bool(self._driver.accept_queue) or self._driver.error is not None)

    # ------------------------------------------------------------------ streams

    def open_stream(self) -> Stream:
        """Open a stream (SYN, kcptun.md §4.5; the peer learns of it with the first frame,
        there is no handshake to wait for). ``ConnectionResetError`` naming the cause on a
        dead session; ``OSError(EBADF)`` after :meth:`close`; ``SmuxStreamError`` in the
        server role."""
        with self._runtime.lock:
            self._check()
            buf = self._driver.open()
            self._streams += 1
            return Stream(self, buf, timeout=self.stream_timeout)

    def _try_accept(self, _: None) -> object:
        self._check()
        buf = self._driver.accept()
        if buf is None:
            return WOULD_BLOCK
        return self._accepted(buf)

    def _accepted(self, buf: Any) -> Stream:
        """A stream taken from the accept queue (here or by the listener): its facade; the
        descriptor follows whether another one waits."""
        self._streams += 1
        if self._fd is not None:
            self._fd.set(bool(self._driver.accept_queue))
        return Stream(self, buf, timeout=self.stream_timeout)

    def accept_stream(self) -> Stream:
        """Wait for a stream the peer opened. Honours :meth:`settimeout` (``TimeoutError``;
        ``BlockingIOError`` when non-blocking); ``OSError(EBADF)`` once closed (also while
        waiting), ``ConnectionResetError`` when the session dies."""
        return self._blocking_call(self._try_accept, None, self._accepting, self._deadline(),
                                   take_turn=False)  # type: ignore[return-value]

    def _check(self) -> None:
        if self._closed:
            raise ebadf()
        err = self._driver.error
        if err is not None:
            raise ConnectionResetError(err.errno, err.strerror)

    def _stream_released(self) -> None:
        self._streams -= 1
        if self._streams <= 0 and self.close_when_idle:
            self.close(0.0)

    # ------------------------------------------------------------------ lifecycle

    def close(self, linger: Optional[float] = 0.0) -> None:
        """Close the session (idempotent). What was written (data, FINs of closed streams)
        goes on being delivered in the background, while the runtime's hub runs, for up to
        ``kcpgo.runtime.smux_driver.LINGER`` (10 s), as a TCP stack delivers a closed
        socket's data; in a program without monkey-patching the exit waits up to 1 s more
        for it (docs/deviations.md D48). ``linger`` > 0: also wait, at most that many
        seconds, until the peer acknowledged it all, for a program (a monkey-patched one)
        about to exit. The wait ends early if the KCP session fails (dead link); there is
        none while nothing was ever heard from the peer (a wrong address or key: nothing
        would acknowledge).

        Calls on the session's streams raise ``ConnectionResetError("smux session closed
        locally")`` from now on; waiting ``accept_stream`` calls raise ``OSError(EBADF)``.
        Streams still open are closed with a FIN after what they wrote (their unread bytes
        are dropped), so the peer's reads end with EOF at once; smux sends no FIN here, and
        its peer waits for the keepalive timeout (docs/deviations.md D61). Any thread may
        call it; called from within kcpgo (a callback) it does not wait.
        """
        if self._closed:
            return
        runtime = self._runtime
        waiter: Optional[Waiter] = None
        # Asked before taking the lock: under it, can_wait() always says no (the caller
        # holds the lock), and close() never lingered (a reviewer's script: 0.0 s with data
        # unacknowledged).
        may_wait = runtime.can_wait()
        with runtime.lock:
            if self._closed:
                return
            self._closed = True
            wait = 0.0 if linger is None else max(0.0, float(linger))
            driver = self._driver
            # Linger only while the runtime's hub runs on; when its thread has ended (hub
            # mode), nothing would drive it: finish now.
            alive = runtime.owner_alive()
            # A peer never heard (gone, a wrong key or port) acknowledges nothing: no wait.
            if wait and alive and may_wait and self._chan.heard:
                waiter = Waiter(runtime.thread_ident)
                driver.on_finish = waiter.fire
            driver.close(LINGER if alive else 0.0)
            if driver.closed:
                waiter = None
            self._accepting.wake_all()
            if self._fd is not None:
                self._fd.close()
                self._fd = None
        if waiter is not None:
            waiter.wait(wait)

    def __del__(self) -> None:
        # Like socket.socket: an unclosed session is closed when collected (its streams hold
        # it, so none is open), with a ResourceWarning unless it had died already.
        try:
            if not self._closed:
                if self._driver.error is None:
                    warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
                self._closed = True
                self._runtime.call_threadsafe(self._driver.close,
                                              LINGER if self._runtime.owner_alive() else 0.0)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    @property
    def closed(self) -> bool:
        """True once closed locally or dead (see :attr:`error`)."""
        return self._closed or self._driver.error is not None

    @property
    def lingering(self) -> bool:
        """True while a locally closed session still delivers what was written (its FINs
        included) in the background (:meth:`close`)."""
        return self._closed and not self._driver.closed

    @property
    def error(self) -> Optional[BaseException]:
        """Why the session died (a ``ConnectionResetError`` naming it), or ``None``."""
        return None if self._closed and _local(self._driver.error) else self._driver.error

    def __enter__(self) -> "SmuxSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @locked
    def fileno(self) -> int:
        """A descriptor readable exactly when :meth:`accept_stream` would not block (a stream
        waits, or the session died: it then raises). -1 once closed, as ``socket.fileno``."""
        if self._closed:
            return -1
        if self._fd is None:
            self._fd = ReadyFD(self._runtime)
            self._fd.set(bool(self._driver.accept_queue) or self._driver.error is not None)
        return self._fd.rfd

    # ------------------------------------------------------------------ KCP knobs

    @locked
    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """kcp-go ``SetNoDelay`` on the KCP session (kcptun's ``--nodelay --interval --resend
        --nc``; ``mode=`` presets at dial/listen)."""
        self._chan.conn.set_nodelay(nodelay, interval, resend, nc)
        self._chan.flush()

    @locked
    def set_rate_limit(self, bytes_per_second: int) -> None:
        """Pace the KCP session under this smux session (all its streams together) at
        ``bytes_per_second`` on the wire (headers included), a token bucket with a burst of
        64 x 1500 bytes; 0 turns it off (kcp-go latest ``SetRateLimit``, docs/protocol.md
        §5.9; ``Options.rate_limit``). Datagrams wait for tokens in a bounded queue
        (``kcpgo.runtime.channel.pace_queue_limit``). ``ValueError`` unless an int >= 0.
        Never blocks."""
        self._chan.set_rate_limit(bytes_per_second)

    def set_dscp(self, dscp: int) -> None:
        """DSCP of this session's datagrams (client sessions; a listener's are set on
        ``SmuxListener.listener``). ``ValueError`` outside 0..63."""
        set_dscp(self._own_socket(), dscp)

    def set_read_buffer(self, nbytes: int) -> None:
        """SO_RCVBUF of the session's own UDP socket (client sessions only)."""
        self._own_socket().setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, nbytes)

    def set_write_buffer(self, nbytes: int) -> None:
        """SO_SNDBUF of the session's own UDP socket (client sessions only)."""
        self._own_socket().setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, nbytes)

    def _own_socket(self) -> _socket.socket:
        if self._chan.passive:
            raise OSError(errno.EOPNOTSUPP, "not supported on a listener's session (it shares "
                                            "the listener's socket; set it on the listener)")
        return self._chan.endpoint.sock

    @property
    def heard(self) -> bool:
        """Whether a valid datagram came from the peer (docs/deviations.md D33)."""
        return self._chan.heard

    def diagnosis(self) -> str:
        """While nothing valid came from the peer: why, with what arrived instead (D33);
        ``""`` once it was heard."""
        return self._chan.diagnosis()

    # ------------------------------------------------------------------ introspection

    @property
    def streams(self) -> int:
        """Streams of this session not yet closed locally."""
        return self._streams

    @property
    def refused(self) -> int:
        """Peer-opened streams refused (FIN at once) because nobody accepts any more (the
        listener was closed; docs/deviations.md D41)."""
        return self._driver.refused

    @property
    def framing(self) -> str:
        """kcptun's flags for this session's framing (``"--smuxver 1"``, ``"... --nocomp"``;
        ``"auto"`` until a listener's session heard its peer)."""
        return self._driver.stack.describe()

    @property
    def conv(self) -> int:
        """The KCP conversation id."""
        return self._chan.conv

    @property
    def snmp(self) -> Snmp:
        """The counters the KCP session adds to."""
        return self._chan.conn.snmp

    def getpeername(self) -> Address:
        self._check_open()
        return self._chan.peer

    def getsockname(self) -> Address:
        self._check_open()
        return self._sockname()

    def _sockname(self) -> Address:
        # (also for a stream still open on a closed session: its addresses stay readable)
        chan = self._chan
        return local_sockname(chan.local, chan.endpoint.sock.getsockname())

    @property
    def peer_text(self) -> str:
        return format_address(self._chan.peer)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._streams} streams"
        return (f"<kcpgo.SmuxSession {self.framing} peer={self.peer_text} "
                f"conv={self.conv:#010x} {state}>")


def _local(err: Optional[BaseException]) -> bool:
    return err is not None and "closed locally" in str(err)


class SmuxListener(Blocking):
    """Accepts smux streams from every KCP session of a listener (kcptun's server loop).

    Create with :func:`kcpgo.listen_smux`. Its timeout (``settimeout``) applies to
    :meth:`accept`. ``stream_timeout`` is each accepted stream's initial timeout.
    """

    def __init__(self, listener: Listener, config: SmuxConfig, *,
                 stream_timeout: Optional[float] = None) -> None:
        self._listener = listener
        self._runtime = listener._runtime
        self.config = config
        self.stream_timeout = check_timeout(stream_timeout)
        self._ready: Deque[SmuxSession] = deque()
        self._sessions: Set[SmuxSession] = set()
        self._accepting = Direction()
        self._closed = False
        self._fd: Optional[ReadyFD] = None
        listener.adopt = self._adopt

    def _adopt(self, chan: Channel) -> SmuxSession:
        """The KCP listener made a session: run smux on it at once."""
        from ..runtime.clock import now_ms
        cfg = self.config
        driver = SmuxDriver(chan, cfg.stack(client=False, now=now_ms()),
                            accept_limit=cfg.accept_limit)
        session = SmuxSession(driver, stream_timeout=self.stream_timeout)

        def on_session() -> None:
            session._on_session()
            self._on_session(session)
        driver.on_session = on_session
        return session

    def _on_session(self, session: SmuxSession) -> None:
        driver = session._driver
        if driver.error is not None:
            self._sessions.discard(session)
            return
        if session not in self._sessions:
            self._sessions.add(session)
            self._listener.claim(session._chan)     # no longer half-open
        if driver.accept_queue:
            self._ready.append(session)
            self._accepting.wake()
            if self._fd is not None:
                self._fd.set(True)

    def _try_accept(self, _: None) -> object:
        if self._closed:
            raise ebadf()
        ready = self._ready
        while ready:
            session = ready[0]
            buf = session._driver.accept()
            if buf is None:
                ready.popleft()
                continue
            stream = session._accepted(buf)
            if self._fd is not None:
                self._fd.set(self._would_not_block())
            return stream, session.getpeername()
        if self._fd is not None:
            self._fd.set(self._would_not_block())
        err = self._listener._error
        if err is not None:
            raise OSError(err.errno, err.strerror)
        return WOULD_BLOCK

    def _would_not_block(self) -> bool:
        return self._listener._error is not None or any(
            s._driver.accept_queue for s in self._ready)

    @locked
    def fileno(self) -> int:
        """A descriptor that ``select``/``poll`` report readable exactly when :meth:`accept`
        would not block (an eventfd, created on first call, as :meth:`kcpgo.KCPSocket.fileno`).
        -1 once closed, as ``socket.fileno``."""
        if self._closed:
            return -1
        if self._fd is None:
            self._fd = ReadyFD(self._runtime)
            self._fd.set(self._would_not_block())
        return self._fd.rfd

    def accept(self) -> Tuple[Stream, Address]:
        """Wait for the next stream of any session; returns ``(stream, peer_address)``.

        Honours :meth:`settimeout` (``TimeoutError``; ``BlockingIOError`` when non-blocking);
        ``OSError(EBADF)`` once closed, also while waiting."""
        return self._blocking_call(self._try_accept, None, self._accepting, self._deadline(),
                                   take_turn=False)  # type: ignore[return-value]

    def close(self) -> None:
        """Stop accepting (idempotent). Streams already accepted keep working; sessions keep
        running while they have streams; the UDP socket closes after the last session.
        Waiting ``accept`` calls raise ``OSError(EBADF)``."""
        with self._runtime.lock:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._accepting.wake_all()
        if self._fd is not None:
            self._fd.close()
            self._fd = None
        self._listener.close()
        for session in list(self._sessions):
            session._driver.refuse_new()         # nobody accepts them now: FIN at once
            session.close_when_idle = True
            if not session._streams:
                session.close(0.0)              # (it lingers in the background)
        self._ready.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "SmuxListener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def getsockname(self) -> Address:
        self._check_open()
        return self._listener.getsockname()

    @property
    def family(self) -> int:
        return self._listener.family

    @property
    def listener(self) -> Listener:
        """The KCP listener underneath (counters, DSCP, socket buffers)."""
        return self._listener

    @property
    def sessions(self) -> int:
        """smux sessions that have opened at least one stream and are alive."""
        return len(self._sessions)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""     # (getsockname() raises then)
        return (f"<kcpgo.SmuxListener {format_address(self._listener._address)}{state} "
                f"sessions={len(self._sessions)}>")

