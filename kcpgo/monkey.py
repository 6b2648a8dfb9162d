"""Opt-in patching: chosen TCP addresses of unmodified stdlib code become KCP.

::

    import kcpgo.monkey
    kcpgo.monkey.patch(
        servers={9000: dict(crypt="aes", key="secret", mode="fast3")},
        clients={("127.0.0.1", 9000): dict(crypt="aes", key="secret", mode="fast3")})

After :func:`patch`:

* a ``socketserver.TCPServer`` (or any subclass: ``ThreadingTCPServer``, ``http.server.
  HTTPServer``, your own) constructed for a listed address serves KCP on that UDP port, exactly
  as :class:`kcpgo.server.KCPServer` does; ``ThreadingMixIn`` servers behave as
  :class:`kcpgo.server.ThreadingKCPServer`;
* ``socket.create_connection(address, timeout)`` to a listed destination returns a connected
  :class:`kcpgo.KCPSocket` (KCP has no handshake: it returns at once, even if nobody listens);
* ``connect(address)`` or ``connect_ex(address)`` (which returns 0) of a
  ``socket.socket(AF_INET or AF_INET6, SOCK_STREAM)`` to a listed destination makes that
  socket a KCP connection: still an instance of ``socket.socket`` (kcpgo's subclass of the
  class in effect, the stdlib's or gevent's), whose calls go to the :class:`kcpgo.KCPSocket`
  behind it (:func:`kcp_connection`; its extras such as ``conv`` are attributes of the socket
  too). Kept from before ``connect``: the timeout (``settimeout``, ``setblocking``, the
  default). Ignored: ``setsockopt`` options and a ``bind`` address, set on the TCP socket that
  the switch closes (the session sends from a UDP port of its own). ``fileno()`` is the KCP
  object's readiness descriptor. Then, as on a connected TCP socket, ``connect`` gives
  ``EISCONN`` and ``bind``/``listen``/``accept`` ``EINVAL``; what KCP lacks (``dup``,
  ``detach``, ``recvmsg``...) raises ``OSError(EOPNOTSUPP)``.

With ``smux=True`` (or a dict of smux settings: ``smux_version``, ``compression``,
``keepalive``, ...; :class:`kcpgo.facade.smux.SmuxConfig`) in a client entry, connections are
smux streams instead (docs/kcptun.md §5.3, as a kcptun client does): every
``create_connection`` (or socket ``connect``) to that destination opens a
:class:`kcpgo.Stream` on one shared KCP session per destination and runtime (one per process
on the I/O thread; in hub mode one per thread), with TCP's FIN, so the server reads EOF when
the client closes or half-closes. A shared session that died (keepalive timeout, protocol
error, dead link) or was closed is replaced by a new KCP session with a new conv at the next
connection (kcptun.md §11); :func:`unpatch` closes them. In a server entry, ``smux`` serves
every stream as a request, as :class:`kcpgo.server.KCPServer`.

Everything else stays TCP, untouched: unlisted destinations, UDP, unix and server sockets,
and the socket ``create_connection`` connects for a destination it did not find. Keys are
``(host, port)`` tuples or ``"host:port"`` strings (kcp-go's form, ``"[::1]:9000"`` for IPv6;
host compared as given, except that the wildcards ``""``, ``"0.0.0.0"`` and ``"::"`` are the
same) or a bare port number (an int) for any host; ports must be in 0..65535
(:func:`kcpgo.address.parse_address`). Server options are those of
:class:`~kcpgo.server.KCPServer`, client options those of :func:`kcpgo.dial`; both default to
``stream=True``. :func:`unpatch` restores every original; close KCP servers before.

With gevent: ``gevent.monkey.patch_all()`` may come before or after :func:`patch` (gevent
replaces ``socket.create_connection`` and ``socket.socket`` when it patches; :func:`patch`
subscribes to gevent's patch events and puts its own back, built on gevent's; gevent then
records kcpgo's socket class as the original). As gevent itself advises, patch as early as
possible, before other imports (``from socket import socket`` keeps the class it got).

Command line, to run an unmodified program over KCP (like ``python -m gevent.monkey``;
:mod:`kcpgo.cli.run` has the details)::

    python -m kcpgo run [--gevent] [--server [HOST:]PORT]... [--client HOST:PORT|PORT]...
                        [--crypt NAME --key PASS] [--mode fast3] [--fec 10/3]
                        [--no-stream] [--idle-timeout S] (script.py | -m module) [args...]

``python -m kcpgo.monkey ...`` is the same command. Sessions are byte streams by default, like
the TCP they replace; ``--no-stream`` selects message mode (``--stream`` states the default).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import socket as _socket
import socketserver
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

from gevent import getcurrent

from . import dial
from .address import WILDCARDS, parse_address, parse_port
from .facade.api import open_smux_client
from .facade.smux import SmuxSession
from .options import FIELDS, Options
from .runtime.scheduler import Runtime
from .sansio.wire import check_conv
from .server import KCPServer, _threading_process_request, process_request_concurrently
from .server_options import server_options, smux_config

__all__ = ["patch", "unpatch", "is_patched", "kcp_connection", "main"]

Key = Union[int, str, Tuple[str, int]]
Table = Union[Mapping[Key, Optional[Mapping[str, Any]]], Iterable[Key], None]

#: Keywords a client entry accepts: the session options, ``options`` itself, ``conv`` and
#: ``smux``.
_DIAL_OPTIONS = FIELDS | {"options", "conv", "smux"}
#: TCPServer methods that take the KCP path for a listed address (``__init__`` decides).
_SERVER_METHODS = ("server_bind", "server_activate", "server_close", "fileno", "get_request",
                   "shutdown_request", "close_request", "serve_forever", "shutdown",
                   "handle_request", "handle_error")
_MISSING = object()


class _Patch:
    def __init__(self, servers: Dict[Key, Dict[str, Any]],
                 clients: Dict[Key, Dict[str, Any]]) -> None:
        self.servers = servers
        self.clients = clients
        self.saved: list = []                  # (owner, name, previous value or _MISSING)
        self.connect_fallback: Callable[..., Any] = _socket.create_connection
        self.create_connection: Optional[Callable[..., Any]] = None
        self.subscriber: Optional[Callable[[Any], None]] = None
        #: Shared smux sessions: (OS thread ident, host, port) -> (its runtime, session).
        self.sessions: Dict[Tuple[int, Any, int], Tuple[Runtime, SmuxSession]] = {}
        #: ``socket.socket`` without kcpgo (the stdlib's or gevent's), and kcpgo's subclass.
        self.socket_base: type = _socket.socket
        self.socket_class: Optional[type] = None
        #: Greenlets in ``create_connection``'s fallback: its socket stays TCP (hosts as given).
        self.tcp_only: Set[Any] = set()

    def set(self, owner: Any, name: str, value: Any) -> None:
        self.saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
        setattr(owner, name, value)


_active: Optional[_Patch] = None


def _host(host: Any) -> Any:
    return "" if host in WILDCARDS else host


def _key(key: Any, where: str = "kcpgo.monkey key") -> Key:
    """A table key: a bare port (any host), or ``(host, port)`` with the wildcard hosts as
    ``""``. ``TypeError``/``ValueError`` naming the accepted forms otherwise."""
    if isinstance(key, int) and not isinstance(key, bool):
        return parse_port(key, where)
    if not isinstance(key, (tuple, str)):
        raise TypeError(f"{where}: {key!r} is not a port, a (host, port) tuple or a "
                        f"'host:port' string")
    addr = parse_address(key, where, passive=True)
    return (_host(addr[0]), addr[1])


def _table(spec: Table, check: Callable[[Dict[str, Any]], Dict[str, Any]]
           ) -> Dict[Key, Dict[str, Any]]:
    if spec is None:
        return {}
    items = spec.items() if isinstance(spec, Mapping) else ((k, None) for k in spec)
    out: Dict[Key, Dict[str, Any]] = {}
    for key, opts in items:
        out[_key(key)] = check(dict(opts or {}))
    return out


def _lookup(table: Dict[Key, Dict[str, Any]], address: Any) -> Optional[Dict[str, Any]]:
    if not table or not isinstance(address, tuple) or len(address) < 2:
        return None
    port = address[1]
    opts = table.get((_host(address[0]), port))
    if opts is None:
        opts = table.get(port)
    return opts


def _check_client(opts: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(opts) - _DIAL_OPTIONS
    if unknown:
        raise TypeError(f"kcpgo.monkey: unexpected client option(s) {', '.join(sorted(unknown))}"
                        f"; valid: {', '.join(sorted(_DIAL_OPTIONS))}")
    base = opts.pop("options", None)
    conv = opts.pop("conv", None)
    where = "kcpgo.monkey client"
    smux = smux_config(opts.pop("smux", None), where)
    if smux is not None:
        if opts.get("stream", True) is not True:
            raise ValueError(f"{where}: smux runs on stream-mode KCP sessions (stream=True)")
        if conv is not None:
            raise ValueError(f"{where}: conv cannot be fixed with smux: a replaced session "
                             f"needs a new conv (docs/kcptun.md §11)")
        smux.stack(client=True)              # a client must choose version and compression
    if base is None or not base.stream:
        opts.setdefault("stream", True)      # as for servers: a byte stream, like TCP
    checked: Dict[str, Any] = {"options": Options.build(where, base, **opts)}
    if smux is not None:
        checked["smux"] = smux
    if conv is not None:
        checked["conv"] = check_conv(conv)
    return checked


def _check_server(opts: Dict[str, Any]) -> Dict[str, Any]:
    server_options(dict(opts), where="kcpgo.monkey server")      # raises now if invalid
    return opts


# ---------------------------------------------------------------------- the patched callables


def _tcp_server_init(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, server_address: Any, RequestHandlerClass: Any,
                 bind_and_activate: bool = True) -> None:
        p = _active
        opts = None if p is None else _lookup(p.servers, server_address)
        if opts is None:
            original(self, server_address, RequestHandlerClass, bind_and_activate)
            return
        if isinstance(self, socketserver.ForkingMixIn):
            raise TypeError(f"kcpgo.monkey: {type(self).__name__} forks, which cannot serve "
                            f"KCP (sessions are read from this process's one UDP socket); "
                            f"use a ThreadingMixIn server for {server_address!r}")
        KCPServer.__init__(self, server_address, RequestHandlerClass, bind_and_activate,
                           **opts)
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def _dispatch(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    kcp = KCPServer.__dict__[name]

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "_kcpgo" in self.__dict__:
            return kcp(self, *args, **kwargs)
        return original(self, *args, **kwargs)
    method.__name__ = name
    method.__wrapped__ = original  # type: ignore[attr-defined]
    return method


def _threading_dispatch(self: Any, request: Any, client_address: Any) -> None:
    if "_kcpgo" in self.__dict__:
        process_request_concurrently(self, request, client_address)
    else:
        _threading_process_request(self, request, client_address)


def _make_create_connection(p: _Patch) -> Callable[..., Any]:
    def create_connection(address: Any, timeout: Any = _socket._GLOBAL_DEFAULT_TIMEOUT,
                          source_address: Any = None, **kwargs: Any) -> Any:
        opts = _lookup(p.clients, address) if _active is p else None
        if opts is None:
            p.tcp_only.add(getcurrent())       # its socket stays TCP: see _Patch.tcp_only
            try:
                return p.connect_fallback(address, timeout, source_address, **kwargs)
            finally:
                p.tcp_only.discard(getcurrent())
        if source_address is not None:
            raise ValueError(f"kcpgo.monkey: source_address is not supported for the KCP "
                             f"destination {address!r}")
        if timeout is _socket._GLOBAL_DEFAULT_TIMEOUT:
            timeout = _socket.getdefaulttimeout()
        return _open(p, address, timeout, opts)
    create_connection.__wrapped__ = p.connect_fallback  # type: ignore[attr-defined]
    return create_connection


def _open(p: _Patch, address: Any, timeout: Optional[float], opts: Dict[str, Any]) -> Any:
    """A :class:`kcpgo.KCPSocket` to a listed destination, or with ``smux`` a Stream."""
    if "smux" in opts:
        return _open_stream(p, address, timeout, opts)
    return dial(address, timeout=timeout, **opts)


def _open_stream(p: _Patch, address: Any, timeout: Optional[float],
                 opts: Dict[str, Any]) -> Any:
    """A new stream on this thread's shared smux session to ``address``; a missing, closed or
    dead session is replaced first by a new KCP session (new conv, new UDP socket), as a
    kcptun client does (docs/kcptun.md §5.3, kcptun.md §11). Never blocks: smux has no
    handshake (kcptun.md §4.5)."""
    rt = Runtime.current()
    key = (rt.thread_ident, _host(address[0]), address[1])
    entry = p.sessions.get(key)
    if entry is None or entry[0] is not rt or entry[1].closed:
        if entry is not None and entry[0] is rt:
            entry[1].close()                 # dead: release what is left of it
        for k, (owner, old) in list(p.sessions.items()):
            if owner is not rt and not owner.owner_runs_elsewhere():    # its thread ended
                if p.sessions.get(k, (None,))[0] is owner:
                    p.sessions.pop(k, None)
                    old.close()
        session = open_smux_client(address, opts["options"], None, opts["smux"], None)
        # Resolving the name may have let another greenlet of this thread get here first.
        entry = p.sessions.get(key)
        if entry is not None and entry[0] is rt and not entry[1].closed:
            session.close(0.0)              # unused: nothing to linger for
        else:
            entry = p.sessions[key] = (rt, session)
    stream = entry[1].open_stream()
    stream.settimeout(timeout)
    return stream


# ---------------------------------------------------------------------- socket.socket().connect()

class _KCPConnected:
    """A socket switched to KCP at ``connect`` (its class becomes this mix then, so sockets
    that stay TCP never pay for delegation): calls go to the KCP object in ``_kcpgo`` (see
    also :data:`_DELEGATED`); where it has none, a connected TCP socket's answers (measured
    with CPython on Linux: ``recvfrom`` gives no address, ``sendto`` ignores it...)."""

    __slots__ = ()
    _kcpgo: Any
    _closed: bool

    def recvfrom(self, bufsize: int, flags: int = 0) -> Tuple[bytes, None]:
        return self._kcpgo.recv(bufsize, flags), None

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> Tuple[int, None]:
        return self._kcpgo.recv_into(buffer, nbytes, flags), None

    def sendto(self, data: Any, flags_or_address: Any, address: Any = _MISSING) -> int:
        return self._kcpgo.send(data, 0 if address is _MISSING else flags_or_address)

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """The KCP object's, else ``socket.sendfile``'s fallback (``read`` and ``send``)."""
        impl = getattr(self._kcpgo, "sendfile", None)
        if impl is not None:
            return impl(file, offset, count)
        return super()._sendfile_use_send(file, offset, count)  # type: ignore[misc]

    @property
    def timeout(self) -> Optional[float]:
        return self._kcpgo.gettimeout()

    def close(self) -> None:
        self._closed = True
        self._kcpgo.close()

    def fileno(self) -> int:
        """The KCP object's readiness descriptor; ``-1`` after ``close``, as a socket's."""
        try:
            return self._kcpgo.fileno()
        except OSError as e:
            if self._closed and e.errno == errno.EBADF:
                return -1
            raise

    def connect(self, address: Any) -> None:
        code = self.connect_ex(address)
        raise OSError(code, os.strerror(code))

    def connect_ex(self, address: Any) -> int:
        return errno.EBADF if self._closed else errno.EISCONN

    def __getattr__(self, name: str) -> Any:
        # The KCP object's extras (conv, snmp, drain, set_mode, an smux stream's session...).
        conn = object.__getattribute__(self, "_kcpgo")
        if name.startswith("_") or not hasattr(conn, name):
            raise AttributeError(f"{type(self).__name__!r} object switched to "
                                 f"{type(conn).__name__} has no attribute {name!r}")
        return getattr(conn, name)

    def __repr__(self) -> str:
        cls, closed = type(self), " [closed]" if self._closed else ""
        return f"<{cls.__module__}.{cls.__qualname__}{closed} switched to {self._kcpgo!r}>"


#: Methods of a switched socket that call the KCP object's, and the errno of the ``OSError``
#: raised if it has none (``None``: it has); ``EINVAL`` always, as by a connected TCP socket.
_DELEGATED: Dict[str, Optional[int]] = dict(
    dict.fromkeys(("recv", "recv_into", "send", "sendall", "makefile", "_decref_socketios",
                   "settimeout", "gettimeout", "setblocking", "getblocking", "shutdown",
                   "getpeername", "getsockname", "setsockopt", "getsockopt")),
    **dict.fromkeys(("bind", "listen", "accept", "_accept"), errno.EINVAL),
    **dict.fromkeys(("dup", "detach", "recvmsg", "recvmsg_into", "sendmsg"), errno.EOPNOTSUPP))


def _delegate(name: str, missing: Optional[int]) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        impl = getattr(self._kcpgo, name, None) if missing != errno.EINVAL else None
        if impl is None and missing is not None:
            raise OSError(missing, f"{name}() on a socket switched to KCP by kcpgo.monkey: "
                                   f"{os.strerror(missing)}")
        return (impl or getattr(self._kcpgo, name))(*args, **kwargs)
    method.__name__ = method.__qualname__ = name
    return method


for _name, _errno in _DELEGATED.items():
    setattr(_KCPConnected, _name, _delegate(_name, _errno))


def _socket_class(base: type) -> type:
    """kcpgo's subclass of ``base``, to be ``socket.socket``: ``connect``/``connect_ex`` check
    the client table. Named as ``base``: ``repr`` and ``type(s).__name__`` read as before."""
    class socket(base):  # type: ignore[valid-type,misc]
        """``socket.socket`` under kcpgo.monkey: ``connect``/``connect_ex`` to a destination
        listed in ``patch(clients=...)`` make it a KCP connection."""
        __slots__ = ("_kcpgo",)
        _kcpgo_base = base

        def connect(self, address: Any) -> None:
            if not _connect_kcp(self, address):
                super().connect(address)

        def connect_ex(self, address: Any) -> int:
            try:
                if _connect_kcp(self, address):
                    return 0
            except OSError as e:
                if e.errno and not isinstance(e, _socket.gaierror):     # as connect_ex does
                    return e.errno
                raise
            return super().connect_ex(address)

    socket.__module__, socket.__qualname__ = base.__module__, base.__qualname__
    socket._kcpgo_connected = type(base.__name__, (_KCPConnected, socket), dict(  # type: ignore
        __slots__=(), __module__=base.__module__, __qualname__=base.__qualname__,
        __doc__=socket.__doc__))
    return socket


def _connect_kcp(sock: Any, address: Any) -> bool:
    """For an unconnected IPv4/IPv6 TCP ``sock`` and a listed ``address``: open the KCP
    connection (with ``sock``'s timeout), close the TCP socket, make ``sock`` delegate to it;
    True if done. Raises what opening raises (``gaierror``...), leaving ``sock`` as it was."""
    p = _active
    opts = None if p is None else _lookup(p.clients, address)
    if (opts is None or sock.family not in (_socket.AF_INET, _socket.AF_INET6)
            or sock.type != _socket.SOCK_STREAM or sock.proto not in (0, _socket.IPPROTO_TCP)
            or getcurrent() in p.tcp_only or not _unconnected(sock)):
        return False
    conn = _open(p, address, sock.gettimeout(), opts)
    try:
        sock.close()                            # the TCP socket, by its class's own close
        if sock.fileno() != -1:                 # kept open by makefile() objects: close it
            os.close(sock.detach())
    except BaseException:
        conn.close()
        raise
    sock._kcpgo = conn
    sock._closed = False
    sock.__class__ = type(sock)._kcpgo_connected
    return True


def _unconnected(sock: Any) -> bool:
    """True for an open TCP socket neither connected nor listening (others go to the real
    ``connect``, which fails as it always did: EISCONN, EBADF...)."""
    try:
        return not sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN) and \
            not sock.getpeername()
    except OSError as e:
        return e.errno == errno.ENOTCONN


def _gevent_subscriber(p: _Patch) -> Callable[[Any], None]:
    def on_event(event: Any) -> None:
        # gevent.monkey replaced socket.create_connection and socket.socket after us: keep
        # its create_connection for unlisted destinations and its class as our base.
        if (getattr(event, "module_name", None) != "socket" or _active is not p
                or not type(event).__name__.startswith("GeventDid")):
            return
        current = _socket.create_connection
        if current is not p.create_connection:
            p.connect_fallback = current
            _socket.create_connection = p.create_connection
        if _socket.socket is not p.socket_class:
            p.socket_base = _socket.socket
            p.socket_class = _socket.socket = _socket_class(p.socket_base)
    return on_event


# ---------------------------------------------------------------------- public API


def patch(servers: Table = None, clients: Table = None) -> None:
    """Serve and connect KCP, instead of TCP, for the listed addresses.

    ``servers``: ``{port or (host, port) or "host:port": KCPServer options}`` (or just a list
    of keys); a ``socketserver.TCPServer`` constructed for a matching ``server_address`` is a
    KCP server. ``clients``: the same keys with :func:`kcpgo.dial` options;
    ``socket.create_connection`` to a matching address returns a :class:`kcpgo.KCPSocket`, or
    with ``smux=True``/``smux={...}`` a :class:`kcpgo.Stream` on a shared session (module
    docstring; a client's ``smux_version`` and ``compression`` must not be ``None``), and a
    ``socket.socket``'s ``connect``/``connect_ex`` makes the socket delegate to such an object.
    Keys and options are checked now (``TypeError``/``ValueError`` naming the accepted forms;
    ports 0..65535). Calling it again replaces the previous tables.
    """
    global _active
    server_table = _table(servers, _check_server)
    client_table = _table(clients, _check_client)
    if _active is not None:
        unpatch()
    p = _Patch(server_table, client_table)
    tcp = socketserver.TCPServer
    p.set(tcp, "__init__", _tcp_server_init(tcp.__init__))
    for name in _SERVER_METHODS:
        p.set(tcp, name, _dispatch(name, getattr(tcp, name)))
    p.set(socketserver.ThreadingMixIn, "process_request", _threading_dispatch)
    p.connect_fallback = _socket.create_connection
    p.create_connection = _make_create_connection(p)
    p.set(_socket, "create_connection", p.create_connection)
    p.saved.append((_socket, "socket", _socket.socket))
    p.socket_base = getattr(_socket.socket, "_kcpgo_base", _socket.socket)
    p.socket_class = _socket.socket = _socket_class(p.socket_base)
    try:
        from gevent import events
    except ImportError:  # pragma: no cover - gevent is a dependency
        pass
    else:
        p.subscriber = _gevent_subscriber(p)
        events.subscribers.append(p.subscriber)
    _active = p


def unpatch() -> None:
    """Restore everything :func:`patch` replaced (idempotent), and close the shared smux
    sessions (their open streams then raise ``ConnectionResetError``).

    ``socket.create_connection`` and ``socket.socket`` go back to what they would be without
    kcpgo (gevent's, if gevent patched meanwhile); sockets switched to KCP stay so, others
    connect with TCP. KCP servers created while patched must be closed first.
    """
    global _active
    p = _active
    if p is None:
        return
    _active = None
    if p.subscriber is not None:
        from gevent import events
        if p.subscriber in events.subscribers:
            events.subscribers.remove(p.subscriber)
    for _, session in list(p.sessions.values()):
        # in its owner's hub, if that thread runs; what was written still goes out in the
        # background (a wait here made unpatch() take 10 s per silent destination)
        session.close(0.0)
    p.sessions.clear()
    for owner, name, old in reversed(p.saved):
        if owner is _socket and name == "create_connection":
            if _socket.create_connection is p.create_connection:
                _socket.create_connection = p.connect_fallback
        elif owner is _socket and name == "socket":
            if _socket.socket is p.socket_class:
                _socket.socket = p.socket_base
        elif old is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, old)


def kcp_connection(sock: Any) -> Optional[Any]:
    """The :class:`kcpgo.KCPSocket` (:class:`kcpgo.Stream` with ``smux``) behind a socket
    switched to KCP at ``connect``/``connect_ex``; ``None`` for any other object."""
    return sock._kcpgo if isinstance(sock, _KCPConnected) else None


def is_patched() -> bool:
    """True between :func:`patch` and :func:`unpatch`."""
    return _active is not None


# ---------------------------------------------------------------------- python -m kcpgo.monkey


def _address(text: str) -> Key:
    """A ``--server``/``--client`` value: ``PORT`` (any host), ``HOST:PORT``, ``[IPV6]:PORT``
    or ``:PORT`` (the wildcard host). ``argparse.ArgumentTypeError`` otherwise."""
    try:
        return _key(int(text) if text.isascii() and text.isdigit() else text, "address")
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m kcpgo.monkey``: the runner, which lives with the other commands as
    ``python -m kcpgo run`` (:mod:`kcpgo.cli.run`, loaded by name: the command line sits on top
    of this module, not below it). Returns the exit status; usage errors raise
    ``SystemExit(2)``."""
    runner = importlib.import_module("kcpgo.cli.run")
    return int(runner.main(argv, prog="python -m kcpgo.monkey"))


if __name__ == "__main__":
    # Run the importable module's main(), so that the program sees kcpgo.monkey as patched.
    from kcpgo.monkey import main as _main
    raise SystemExit(_main())
