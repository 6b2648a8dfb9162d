"""``socketserver`` servers over KCP: :class:`KCPServer` and :class:`ThreadingKCPServer`.

Unmodified ``socketserver`` request handlers (``BaseRequestHandler``, ``StreamRequestHandler``)
run over KCP: ``self.request`` is a :class:`~kcpgo.KCPSocket`, ``rfile``/``wfile`` are
its ``makefile()`` objects. ``serve_forever``, ``shutdown``, ``handle_request``, ``timeout`` /
``handle_timeout`` and ``server_close`` keep their documented meaning.

Where sessions run (:mod:`kcpgo.runtime.modes`)
    * ``"thread"`` (unpatched programs, the default there): the I/O thread runs every session,
      so the server is a plain socketserver: the KCP listener starts in the constructor, its
      ``fileno()`` is readable when ``accept`` would not block (so socketserver's own selector
      loop works too), any thread may serve, and :class:`ThreadingKCPServer` runs each request
      in a real thread (the stdlib ``ThreadingMixIn``): a handler may block anywhere
      (``time.sleep``, a database call) without stalling the others.
    * ``"hub"`` under ``gevent.monkey.patch_all()``: threads are greenlets;
      :class:`ThreadingKCPServer` is the stdlib ``ThreadingMixIn`` unchanged.
    * ``"hub"`` forced on an unpatched program (``KCPGO_RUNTIME=hub``): sessions are driven by
      the hub of the thread that serves first, which starts the KCP listener (the UDP port is
      bound in the constructor, so errors show there); serving from another thread while it
      lives raises ``RuntimeError``. A handler cannot run in its own OS thread, so
      :class:`ThreadingKCPServer` runs each request in a greenlet of the serving thread: one
      that blocks its OS thread outside kcpgo stalls the server for that long. When
      ``serve_forever`` returns after ``shutdown()``, it has let the running handlers finish
      (``daemon_threads``: it stopped them) and closed the listener; a later
      ``serve_forever`` or ``handle_request`` starts a new listener on the same port.

    Waits (``serve_forever``, ``handle_request``, ``shutdown()`` and ``server_close()`` waiting
    for the loop) are cooperative where the waiting thread runs a gevent hub, so its greenlets
    keep running. ``shutdown()`` and ``server_close()`` may be called from any thread.

KCP has no FIN: a client that exits sends nothing, so a handler waiting in ``rfile.readline()`` for
it ends only through ``idle_timeout`` (seconds without any datagram from the client; the read raises
``TimeoutError(ETIMEDOUT)``, which :meth:`KCPServer.handle_error` logs instead of printing a
traceback). Servers default to :data:`DEFAULT_IDLE_TIMEOUT`; ``idle_timeout=None`` turns it off.

With ``smux=`` every smux stream is a request (docs/kcptun.md §5.4), a :class:`~kcpgo.Stream` with
TCP's FIN: a handler reading to EOF ends when its client closes or half-closes the stream; a
vanished client's streams fail at the smux keepalive timeout (kcptun.md §4.6), logged at INFO.
"""
from __future__ import annotations

import errno
import logging
import os
import socket as _socket
import socketserver
import sys
import threading
from typing import Any, List, Optional, Tuple, Union

import gevent
import gevent.pool
import gevent.select
from gevent._hub_local import get_hub_if_exists
from gevent.monkey import is_module_patched

from .address import bind_plan
from .facade.api import udp_socket, wrap_listener
from .facade.smux import SmuxConfig, SmuxListener, SmuxSession
from .facade.socket import KCPSocket
from .facade.stream import Stream
from .runtime import iothread
from .runtime._originals import real_get_ident, real_select, real_sleep
from .runtime.clock import monotonic
from .runtime.scheduler import Runtime, Signal
from .server_options import (DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT, ServerOptions,
                             server_options)
from .server_workers import STOP_TIMEOUT, WorkerPool, worker_main

__all__ = ["KCPServer", "ThreadingKCPServer", "DEFAULT_IDLE_TIMEOUT", "DEFAULT_DRAIN_TIMEOUT"]

log = logging.getLogger("kcpgo.server")

#: Seconds between checks while closing sessions wait for their last frames' ACKs.
_DRAIN_POLL = 0.01
#: Requests serve_forever takes per wake-up while more are waiting (5,000 sessions dialling).
_ACCEPT_BURST = 64
#: The stdlib's (kcpgo.monkey may later replace the attribute with a dispatcher).
_threading_process_request = socketserver.ThreadingMixIn.process_request

def threads_are_greenlets() -> bool:
    """True when ``gevent.monkey`` patched ``threading`` (threads are greenlets of one hub)."""
    return is_module_patched("threading")


def _greenlet_handlers(st: "_KCPState") -> bool:
    """Whether ``ThreadingKCPServer`` runs handlers as greenlets of the serving thread: only
    unpatched in hub mode, where sessions cannot leave that thread's hub. With the I/O thread
    they are real threads, and under monkey-patching threads are greenlets anyway."""
    rt = st.runtime
    return not threads_are_greenlets() and not (rt is not None and rt.io_thread)


def _has_hub() -> bool:
    return threads_are_greenlets() or get_hub_if_exists() is not None


def _pause(seconds: float) -> None:
    """Sleep cooperatively where the thread runs a hub, else really."""
    if _has_hub():
        gevent.sleep(seconds)
    else:
        real_sleep(seconds)


class _KCPState:
    """What a server needs besides socketserver's own attributes (``server._kcpgo``)."""

    def __init__(self, options: ServerOptions) -> None:
        self.drain_timeout: Optional[float] = options.drain_timeout
        self.options = options
        self.listener: Any = None
        self.runtime: Optional[Runtime] = None      # the listener's (the serving thread's)
        self.owner_name = ""
        self.handlers: Optional[gevent.pool.Group] = None
        self.shutdown_request = False
        self.loop: Any = None                       # the greenlet inside serve_forever
        self.stopped = Signal(True)                # no serve_forever loop is running
        self.idle = Signal(True)                   # ... and none is finishing its handlers
        self.closed = False
        self.waiters = 0                            # greenlets inside _wait (serving thread)
        self.no_waiters = Signal(True)
        self.rfd, self.wfd = os.pipe()              # wakes the loop (from any thread)
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self.pipe_open = True
        self.workers: Optional[WorkerPool] = None   # workers > 1: the other processes
        self.index = 0                              # this process's worker number
        self.dualstack = False

    def wake(self) -> None:
        if self.pipe_open:
            try:
                os.write(self.wfd, b"!")
            except OSError:                         # full (already woken) or just closed
                pass

    def drain_wake(self) -> None:
        try:
            while os.read(self.rfd, 512):
                pass
        except OSError:
            pass

    def close_pipe(self) -> None:
        if self.pipe_open:
            self.pipe_open = False
            os.close(self.rfd)
            os.close(self.wfd)


class KCPServer(socketserver.TCPServer):
    """A ``socketserver.TCPServer`` whose connections are KCP sessions on one UDP port.

    ``KCPServer(server_address, RequestHandlerClass, bind_and_activate=True, **options)``:
    ``options`` are those of :func:`kcpgo.listen` (``crypt``, ``key``, ``mode``,
    ``data_shards``, ``parity_shards``, ``window``, ``mtu``, ``backlog``, ...), with
    ``stream=True`` and ``idle_timeout=`` :attr:`idle_timeout` by default, plus
    ``drain_timeout``. ``server_address`` is validated as :func:`kcpgo.listen`'s (a tuple or
    ``"host:port"``). ``("", port)`` binds IPv4's wildcard, as ``TCPServer`` does (so
    addresses stay ``(host, port)``); ``"::"``, ``":port"`` or a class whose
    ``address_family`` is ``AF_INET6`` serve IPv4 and IPv6 where the system allows, and IPv4
    clients then appear as ``("::ffff:a.b.c.d", port, 0, 0)``. Bad options
    or addresses raise ``TypeError``/``ValueError`` here; a port in use raises ``OSError``
    here. Requests are handled one at a time in the serving thread (see
    :class:`ThreadingKCPServer`).

    ``smux=True`` (``dial_smux``'s ``smux_version=1, compression=False``) or ``smux=dict(
    smux_version=..., compression=..., keepalive=..., ...)`` (``None`` version/compression:
    follow each client, as :func:`kcpgo.listen_smux`) serves every smux stream as a request, a
    :class:`~kcpgo.Stream` (``b""`` at the client's FIN, docs/kcptun.md §4.5); its
    ``client_address`` is the session's UDP peer.

    ``workers=N`` (Linux; default 1): :meth:`serve_forever` forks N - 1 more processes that
    serve the same address, each on its own ``SO_REUSEPORT`` socket with its own sessions
    (:mod:`kcpgo.server_workers`; port 0 picks one port for all); :attr:`worker_index` is 0
    here. :meth:`shutdown` and :meth:`server_close` stop and reap them (SIGTERM; SIGKILL after
    :attr:`worker_stop_timeout`). ``ValueError`` for ``workers`` > 1 elsewhere than on Linux.
    """

    #: Default ``idle_timeout`` of the sessions (seconds; ``None``: never).
    idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT
    #: Default time ``shutdown_request`` lets the peer acknowledge the handler's last writes.
    drain_timeout: Optional[float] = DEFAULT_DRAIN_TIMEOUT
    #: Seconds a stopping worker process gets after SIGTERM before SIGKILL (``workers=``).
    worker_stop_timeout: float = STOP_TIMEOUT
    _kcpgo: _KCPState

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if issubclass(cls, socketserver.ForkingMixIn):
            raise TypeError("ForkingMixIn cannot serve KCP: every session is read from the "
                            "one UDP socket of this process; use ThreadingKCPServer")
        if cls.process_request is _threading_process_request:
            # ThreadingMixIn composed by hand: same handler placement as ThreadingKCPServer
            cls.process_request = process_request_concurrently  # type: ignore[assignment]

    def __init__(self, server_address: Union[str, Tuple[Any, ...]], RequestHandlerClass: Any,
                 bind_and_activate: bool = True, **options: Any) -> None:
        socketserver.BaseServer.__init__(self, server_address, RequestHandlerClass)
        opts = server_options(options, idle_timeout=getattr(self, "idle_timeout",
                                                            DEFAULT_IDLE_TIMEOUT),
                              drain_timeout=getattr(self, "drain_timeout",
                                                    DEFAULT_DRAIN_TIMEOUT),
                              where=type(self).__name__)
        if (isinstance(server_address, tuple) and len(server_address) == 2
                and server_address[0] == "" and self.address_family == _socket.AF_INET):
            # socketserver's ("", port) with its default AF_INET: IPv4 only, as TCPServer
            # binds it, so server_address and client_address stay (host, port) pairs that
            # legacy code unpacks. "::" (or a class with address_family AF_INET6) is the
            # dual-stack wildcard of kcpgo.listen.
            server_address = ("0.0.0.0", server_address[1])
        family, self.server_address, dualstack = bind_plan(server_address, type(self).__name__)
        st = self._kcpgo = _KCPState(opts)
        if family == _socket.AF_INET6:
            self.address_family = _socket.AF_INET6
        st.dualstack = dualstack and self.address_family == _socket.AF_INET6
        if opts.workers > 1:
            st.workers = WorkerPool(opts.workers, getattr(self, "worker_stop_timeout",
                                                          STOP_TIMEOUT))
        #: The bound UDP socket (``getsockname``, ``setsockopt``, ``gettimeout`` work on it).
        self.socket = udp_socket(self.address_family, st.dualstack, opts.workers > 1,
                                 where=type(self).__name__)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    # ------------------------------------------------------------------ binding

    def server_bind(self) -> None:
        """Bind the UDP socket (``allow_reuse_address``/``allow_reuse_port`` honoured)."""
        if self.allow_reuse_address and hasattr(_socket, "SO_REUSEADDR"):
            self.socket.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if getattr(self, "allow_reuse_port", False) and hasattr(_socket, "SO_REUSEPORT"):
            self.socket.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """With the I/O thread (``"thread"`` mode, :mod:`kcpgo.runtime.modes`): start the KCP
        listener, so that :meth:`fileno` is its readiness from now on. In hub mode, nothing:
        datagrams wait in the UDP socket until a thread serves."""
        if Runtime.current().io_thread:
            _listener(self)

    def fileno(self) -> int:
        """The listener's descriptor (readable when ``accept`` would not block) once a thread
        serves; the UDP socket's before that."""
        ln = self._kcpgo.listener
        if ln is not None and not ln.closed:
            return ln.fileno()
        return self.socket.fileno()

    @property
    def worker_index(self) -> int:
        """This process's worker number: 0 in the process that made the server, 1..N-1 in
        the processes ``workers=N`` forked."""
        return self._kcpgo.index

    @property
    def worker_pids(self) -> List[int]:
        """The other workers' process ids while :meth:`serve_forever` runs them (they have
        bound their sockets by then); else, and in a worker, ``[]``."""
        pool = self._kcpgo.workers
        return sorted(pool.pids) if pool is not None and pool.ready else []

    def get_request(self) -> Tuple[Union[KCPSocket, Stream], Any]:
        """``listener.accept()``: the next session (with ``smux``: the next stream of any
        session) and its peer's UDP address."""
        return _listener(self).accept()

    # ------------------------------------------------------------------ serving

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handle requests until :meth:`shutdown`; ``poll_interval`` paces ``service_actions``.

        Waits cooperatively where the thread runs a gevent hub. In hub mode without
        monkey-patching, returns only after the requests still running have finished (see the
        module docstring). With ``workers=N`` it first forks the other workers (``OSError`` if
        it cannot), and stops them before it returns.
        """
        st = self._kcpgo
        if st.loop is not None:
            raise RuntimeError("serve_forever() is already running")
        pool = st.workers
        if pool is not None and not pool.running:
            pool.start(lambda index: worker_main(self, index, poll_interval), _pause)
        _listener(self)
        st.stopped.clear()
        st.idle.clear()
        st.loop = gevent.getcurrent()
        finished = False
        try:
            while not st.shutdown_request:
                ready = _wait(self, poll_interval)
                if st.shutdown_request:
                    break
                n = 0
                while ready and n < _ACCEPT_BURST and not st.shutdown_request:
                    self._handle_request_noblock()      # then the others already waiting:
                    ready, n = _ready_now(st), n + 1    # a wait each is a hub turn each
                self.service_actions()
                if pool is not None:
                    pool.poll()
            finished = True
        finally:
            st.shutdown_request = False
            st.loop = None
            try:
                if pool is not None:
                    pool.stop(_pause)
            finally:
                st.stopped.set()
            try:
                if finished and _greenlet_handlers(st):
                    _wind_down(self)
            finally:
                if st.closed:           # server_close() was called from inside the loop
                    _close_listener(st)
                    st.close_pipe()
                st.idle.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has stopped accepting.

        Callable from any thread or greenlet; the wait is cooperative. Called from the serving
        greenlet itself (a non-threading handler, ``service_actions``) it only asks the loop to
        stop after the current request, instead of deadlocking as socketserver would.
        """
        st = self._kcpgo
        st.shutdown_request = True
        st.wake()
        if gevent.getcurrent() is not st.loop:
            st.stopped.wait()

    def handle_request(self) -> None:
        """Handle one request, waiting at most ``timeout`` (then :meth:`handle_timeout`).

        ``timeout`` is the smaller of :attr:`timeout` and the UDP socket's timeout, as in
        socketserver. Waits cooperatively.
        """
        timeout = self.socket.gettimeout()
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            if _wait(self, remaining):
                return self._handle_request_noblock()
            if deadline is not None and monotonic() >= deadline:
                return self.handle_timeout()

    # ------------------------------------------------------------------ requests

    def shutdown_request(self, request: Any) -> None:
        """Let the peer acknowledge what the handler wrote (at most ``drain_timeout``), then
        ``shutdown(SHUT_WR)`` and close, as socketserver does. A stream (FIN: kcptun.md §4.5)
        waits only if its session closes with it (the last one, after server_close)."""
        drain = getattr(request, "drain", None)
        timeout = self._kcpgo.drain_timeout
        if drain is not None and timeout:
            try:
                drain(timeout)
            except OSError:
                pass
        try:
            request.shutdown(_socket.SHUT_WR)
        except OSError:
            pass
        if isinstance(request, Stream) and timeout:
            session = request.session
            if session.close_when_idle and session.streams == 1:
                _drain_sessions([session], timeout)
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went silent past ``idle_timeout`` (KCP's only "disconnect"), whose
        KCP session died of the dead-link limit (it vanished while the handler's data was in
        flight: KCP has no FIN, so that is the other way a client's exit shows), or whose smux
        session died (keepalive timeout, protocol error: docs/kcptun.md §4.6, 4.9) is logged
        to ``kcpgo.server`` at INFO; anything else prints a traceback as socketserver does."""
        exc = sys.exc_info()[1]
        if isinstance(exc, TimeoutError) and exc.errno == errno.ETIMEDOUT:
            log.info("kcpgo: %s sent nothing for idle_timeout; request ended (%s)",
                     client_address, exc)
            return
        if isinstance(exc, ConnectionResetError) and isinstance(request, KCPSocket) \
                and request._chan.error is not None:
            log.info("kcpgo: %s stopped acknowledging; request ended (%s)",
                     client_address, exc)
            return
        if (isinstance(exc, ConnectionResetError) and isinstance(request, Stream)
                and request.session.error is not None):
            log.info("kcpgo: the smux session of %s ended; request ended (%s)",
                     client_address, exc)
            return
        socketserver.BaseServer.handle_error(self, request, client_address)

    # ------------------------------------------------------------------ closing

    def server_close(self) -> None:
        """Stop accepting and release the UDP port. Callable from any thread; idempotent.

        A loop still in :meth:`serve_forever` is stopped first. As with ``ThreadingMixIn``'s
        ``block_on_close``, waits (cooperatively) for running handlers unless
        ``daemon_threads``. Sessions already accepted keep working until their handler closes
        them. Worker processes (``workers=``) are stopped and reaped first.
        """
        st = self._kcpgo
        if st.closed:
            return
        me = gevent.getcurrent()
        inside = me is st.loop or (st.handlers is not None and me in st.handlers)
        if st.loop is not None:
            st.shutdown_request = True
            st.wake()
        if not inside:
            wait_handlers = (getattr(self, "block_on_close", True)
                             and not getattr(self, "daemon_threads", False))
            (st.idle if wait_handlers else st.stopped).wait()
            if st.workers is not None:
                st.workers.stop(_pause)
        st.closed = True
        self.socket.close()             # the listener works on a duplicate descriptor
        if st.loop is not None:
            return                      # called from inside the loop: it closes the rest
        if st.waiters:                  # handle_request() waiting elsewhere: it raises EBADF
            st.wake()
            st.no_waiters.wait(1.0)
        rt = st.runtime
        handlers = st.handlers
        if handlers and not inside and rt is not None and rt.thread_ident == real_get_ident():
            # handle_request() left handler greenlets in this thread: finish them like above
            if getattr(self, "daemon_threads", False):
                handlers.kill(block=True, timeout=(st.drain_timeout or 0) + 1)
            elif getattr(self, "block_on_close", True):
                handlers.join()
        _close_listener(st)
        st.close_pipe()
        if not inside and getattr(self, "block_on_close", True) and _has_hub():
            _join_handler_threads(self)


def _join_handler_threads(server: Any) -> None:
    """Wait cooperatively for ``ThreadingMixIn``'s handler threads (real ones, on the I/O
    thread's runtime), so that the stdlib's ``server_close``, which joins them next, finds them
    done: a blocking ``Thread.join`` would stop this thread's hub and the greenlets a handler
    may be waiting for."""
    me = threading.current_thread()
    threads = getattr(server, "_threads", None)
    for t in list(threads) if isinstance(threads, list) else ():   # (else _NoThreads)
        while t is not me and t.is_alive():
            _pause(_DRAIN_POLL)


class ThreadingKCPServer(socketserver.ThreadingMixIn, KCPServer):
    """:class:`KCPServer` with a concurrent handler per request (``ThreadingMixIn``).

    Each request gets a thread: a real one on the I/O thread's runtime, a greenlet under
    ``gevent.monkey.patch_all()``, and in hub mode without monkey-patching a greenlet of the
    serving thread (see the module docstring). ``daemon_threads`` and ``block_on_close`` keep
    their meaning.
    """

    def process_request(self, request: Any, client_address: Any) -> None:
        process_request_concurrently(self, request, client_address)


def process_request_concurrently(server: Any, request: Any, client_address: Any) -> None:
    """``ThreadingMixIn.process_request`` for KCP servers: the stdlib's thread, except in hub
    mode without monkey-patching, where it is a greenlet of the serving thread."""
    st = server._kcpgo
    if not _greenlet_handlers(st):
        _threading_process_request(server, request, client_address)
        return
    if st.handlers is None:
        st.handlers = gevent.pool.Group()
    g = gevent.spawn(server.process_request_thread, request, client_address)
    g.name = f"KCP request {client_address}"
    st.handlers.add(g)


# ---------------------------------------------------------------------- helpers
# Plain functions, not methods: kcpgo.monkey runs them on TCPServer instances too.


def _listener(self: Any) -> Any:
    """The KCP listener, started in the calling thread on first use."""
    st = self._kcpgo
    if st.closed:
        raise OSError(errno.EBADF, "server is closed")
    ln = st.listener
    if ln is not None:
        rt = st.runtime
        if rt.stopped and not rt.forked:    # its I/O thread was stopped: no accept would work
            iothread.refuse()               # (EBADF; its readable fd made serve_forever spin)
        if rt.io_thread or rt.thread_ident == real_get_ident():
            return ln
        if rt.owner_runs_elsewhere():
            raise RuntimeError(
                f"this server's KCP sessions belong to thread {st.owner_name!r}, which "
                f"served it first; serve it from that thread only (server_close() and "
                f"shutdown() work from any thread), or run threads as greenlets with "
                f"gevent.monkey.patch_all()")
        _close_listener(st)         # its thread has ended; nothing else can run it
    runtime = Runtime.current()
    if st.runtime is not runtime:
        st.handlers = None          # greenlets of another thread's hub (finished or orphaned)
    opts = st.options
    ln = wrap_listener(self.socket, opts.session, opts.backlog)
    st.listener = ln if opts.smux is None else _SmuxRequests(ln, opts.smux)
    st.runtime = runtime
    st.owner_name = threading.current_thread().name
    return st.listener


def _wait(self: Any, timeout: Optional[float]) -> bool:
    """Wait cooperatively until a session can be accepted (True), the timeout passes or
    someone wakes the loop (False)."""
    st = self._kcpgo
    lfd = _listener(self).fileno()
    st.waiters += 1
    st.no_waiters.clear()
    # Cooperative where the thread runs a hub; else the real select (the I/O thread keeps
    # the listener's descriptor in step meanwhile).
    select = gevent.select.select if _has_hub() else real_select
    try:
        ready, _, _ = select([lfd, st.rfd], [], [], timeout)
    finally:
        st.waiters -= 1
        if not st.waiters:
            st.no_waiters.set()
    if st.rfd in ready:
        st.drain_wake()
    return lfd in ready


def _ready_now(st: _KCPState) -> bool:
    """Whether the listener has a request waiting now (its descriptor is readable)."""
    ln = st.listener
    return ln is not None and not ln.closed and bool(real_select([ln.fileno()], [], [], 0)[0])


def _wind_down(self: Any) -> None:
    """End of serve_forever in an unpatched program: finish (daemon_threads: stop) the
    handler greenlets, then close the listener, all in the thread that owns them."""
    st = self._kcpgo
    handlers = st.handlers
    if handlers:
        if getattr(self, "daemon_threads", False):
            handlers.kill(block=True, timeout=(st.drain_timeout or 0) + 1)
        else:
            handlers.join()
    _close_listener(st)


def _close_listener(st: _KCPState) -> None:
    """Close the listener in its owning thread (handed over if that thread runs elsewhere).
    An smux listener's sessions without streams close with it; in the owning thread they first
    get ``drain_timeout`` to have their frames acknowledged (closing drops the rest)."""
    ln, st.listener = st.listener, None
    if ln is None:
        return
    rt = st.runtime
    if not rt.io_thread and rt.owner_runs_elsewhere():
        rt.call_threadsafe(ln.close)
        return
    if isinstance(ln, _SmuxRequests) and st.drain_timeout and \
            (rt.io_thread or rt.thread_ident == real_get_ident()):
        _drain_sessions([s for s in ln._sessions if not s.streams], st.drain_timeout)
    ln.close()


def _drain_sessions(sessions: List[SmuxSession], timeout: float) -> None:
    """Wait cooperatively, at most ``timeout`` s, until no frame of ``sessions`` waits for
    KCP's window or an ACK (polled). A closed session sends the rest on its thread's hub, which
    is gone if that thread (serving, model (c)) or the program ends right after."""
    deadline = monotonic() + timeout
    while monotonic() < deadline and any(
            not s.closed and (s._driver.unsent or s._driver.conn.waitsnd) for s in sessions):
        _pause(_DRAIN_POLL)


class _SmuxRequests(SmuxListener):
    """The smux listener of a server (docs/kcptun.md §5.4): non-blocking, since
    ``get_request`` runs after the loop saw :meth:`fileno` readable, and a stream that
    vanished meanwhile raises ``BlockingIOError``, which socketserver skips."""

    def __init__(self, listener: Any, config: SmuxConfig) -> None:
        super().__init__(listener, config)
        self.settimeout(0.0)
