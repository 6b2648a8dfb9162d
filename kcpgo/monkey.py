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
  :class:`kcpgo.KCPSocket` (KCP has no handshake: it returns at once, even if nobody listens).

With ``smux=True`` (or a dict of smux settings: ``smux_version``, ``compression``,
``keepalive``, ...; :class:`kcpgo.facade.smux.SmuxConfig`) in a client entry, connections are
smux streams instead (docs/kcptun.md §5.3, as a kcptun client does): every
``create_connection`` to that destination opens a :class:`kcpgo.Stream` on one shared KCP
session per destination and thread (a session belongs to its thread's gevent hub), with TCP's
FIN, so the server reads EOF when the client closes or half-closes. A shared session that died
(keepalive timeout, protocol error, dead link) or was closed is replaced by a new KCP session
with a new conv at the next connection (kcptun.md §11); :func:`unpatch` closes them. In a
server entry, ``smux`` serves every stream as a request, as :class:`kcpgo.server.KCPServer`.

Everything else stays TCP, untouched. Keys are ``(host, port)`` tuples or ``"host:port"``
strings (kcp-go's form, ``"[::1]:9000"`` for IPv6; host compared as given, except that the
wildcards ``""``, ``"0.0.0.0"`` and ``"::"`` are the same) or a bare port number (an int) for
any host; ports must be in 0..65535 (:func:`kcpgo.address.parse_address`). Server options are
those of :class:`~kcpgo.server.KCPServer`, client options those of :func:`kcpgo.dial`; both
default to ``stream=True``. :func:`unpatch` restores every original; close KCP servers before.

With gevent: ``gevent.monkey.patch_all()`` may come before or after :func:`patch` (gevent
replaces ``socket.create_connection`` when it patches; :func:`patch` subscribes to gevent's
patch events and puts its own back, delegating unlisted destinations to gevent's). As gevent
itself advises, patch as early as possible, before other imports.

Command line, to run an unmodified program over KCP (like ``python -m gevent.monkey``)::

    python -m kcpgo.monkey [--gevent] [--server [HOST:]PORT]... [--client HOST:PORT|PORT]...
                           [--crypt NAME --key PASS] [--mode fast3] [--fec 10/3]
                           [--no-stream] [--idle-timeout S] script.py [args...]

Sessions are byte streams by default, like the TCP they replace; ``--no-stream`` selects
message mode (``--stream`` states the default).
"""
from __future__ import annotations

import argparse
import os
import runpy
import socket as _socket
import socketserver
import sys
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

from . import dial
from .address import WILDCARDS, parse_address, parse_port
from .facade.api import open_smux_client
from .facade.smux import SmuxSession
from .options import FIELDS, Options, add_arguments, from_arguments
from .runtime.scheduler import Runtime
from .sansio.wire import check_conv
from .server import KCPServer, _threading_process_request, process_request_concurrently, \
    server_options, smux_config

__all__ = ["patch", "unpatch", "is_patched", "main"]

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
            return p.connect_fallback(address, timeout, source_address, **kwargs)
        if source_address is not None:
            raise ValueError(f"kcpgo.monkey: source_address is not supported for the KCP "
                             f"destination {address!r}")
        if timeout is _socket._GLOBAL_DEFAULT_TIMEOUT:
            timeout = _socket.getdefaulttimeout()
        if "smux" in opts:
            return _open_stream(p, address, timeout, opts)
        return dial(address, timeout=timeout, **opts)
    create_connection.__wrapped__ = p.connect_fallback  # type: ignore[attr-defined]
    return create_connection


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
            session.close()
        else:
            entry = p.sessions[key] = (rt, session)
    stream = entry[1].open_stream()
    stream.settimeout(timeout)
    return stream


def _gevent_subscriber(p: _Patch) -> Callable[[Any], None]:
    def on_event(event: Any) -> None:
        # gevent.monkey replaced socket.create_connection after us: keep its version as the
        # fallback for unlisted destinations and put ours back in front.
        if getattr(event, "module_name", None) != "socket" or _active is not p:
            return
        current = _socket.create_connection
        if current is not p.create_connection and type(event).__name__.startswith("GeventDid"):
            p.connect_fallback = current
            _socket.create_connection = p.create_connection
    return on_event


# ---------------------------------------------------------------------- public API


def patch(servers: Table = None, clients: Table = None) -> None:
    """Serve and connect KCP, instead of TCP, for the listed addresses.

    ``servers``: ``{port or (host, port) or "host:port": KCPServer options}`` (or just a list
    of keys); a ``socketserver.TCPServer`` constructed for a matching ``server_address`` is a
    KCP server. ``clients``: the same keys with :func:`kcpgo.dial` options;
    ``socket.create_connection`` to a matching address returns a :class:`kcpgo.KCPSocket`, or
    with ``smux=True``/``smux={...}`` a :class:`kcpgo.Stream` on a shared session (module
    docstring; a client's ``smux_version`` and ``compression`` must not be ``None``).
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

    ``socket.create_connection`` goes back to what it would be without kcpgo (gevent's, if
    gevent patched meanwhile). KCP servers created while patched must be closed first.
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
        session.close()                     # in its owner's hub, if that thread runs
    p.sessions.clear()
    for owner, name, old in reversed(p.saved):
        if owner is _socket and name == "create_connection":
            if _socket.create_connection is p.create_connection:
                _socket.create_connection = p.connect_fallback
        elif old is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, old)


def is_patched() -> bool:
    return _active is not None


# ---------------------------------------------------------------------- python -m kcpgo.monkey


def _address(text: str) -> Key:
    """A ``--server``/``--client`` value: ``PORT`` (any host), ``HOST:PORT``, ``[IPV6]:PORT``
    or ``:PORT`` (the wildcard host). ``argparse.ArgumentTypeError`` otherwise."""
    try:
        return _key(int(text) if text.isascii() and text.isdigit() else text, "address")
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Optional[list] = None) -> None:
    """``python -m kcpgo.monkey``: patch, then run a script as ``__main__``."""
    ap = argparse.ArgumentParser(
        prog="python -m kcpgo.monkey",
        description="Run an unmodified Python program with the listed TCP servers and "
                    "socket.create_connection() destinations switched to KCP.")
    ap.add_argument("--gevent", action="store_true",
                    help="call gevent.monkey.patch_all() first")
    ap.add_argument("--server", action="append", default=[], type=_address,
                    metavar="[HOST:]PORT", help="PORT, HOST:PORT or [IPV6]:PORT (repeatable)")
    ap.add_argument("--client", action="append", default=[], type=_address,
                    metavar="[HOST:]PORT", help="PORT, HOST:PORT or [IPV6]:PORT (repeatable)")
    add_arguments(ap)
    # Stream mode is the default here (a byte stream, like the TCP it replaces), so --stream
    # alone would change nothing: --no-stream selects message mode.
    ap.add_argument("--no-stream", dest="stream", action="store_false", default=None,
                    help="message mode (the default here is stream mode, like TCP; --stream "
                         "says so explicitly)")
    ap.add_argument("script")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args(argv)
    if ns.gevent:
        from gevent import monkey as gmonkey
        gmonkey.patch_all()
    try:
        opts = from_arguments(ns)
    except ValueError as e:
        ap.error(str(e))
    patch(servers={a: dict(opts) for a in ns.server},
          clients={a: dict(opts) for a in ns.client})
    sys.argv = [ns.script] + ns.args
    sys.path[0] = os.path.dirname(os.path.abspath(ns.script))    # as `python script.py` does
    runpy.run_path(ns.script, run_name="__main__")


if __name__ == "__main__":
    # Run the importable module's main(), so that the program sees kcpgo.monkey as patched.
    from kcpgo.monkey import main as _main
    _main()
