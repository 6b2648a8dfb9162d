"""kcpgo: kcp-go's reliable UDP (KCP ARQ, Reed-Solomon FEC, kcp-go ciphers) for Python.

Entry points (kcp-go semantics, Python names):

* :func:`dial` -> :class:`KCPSocket`, a session that behaves like a connected TCP socket;
* :func:`listen` / :func:`serve_conn` -> :class:`Listener` with ``accept()``;
* :class:`Options`: the session options all of them take (validated once);
* :mod:`kcpgo.sansio`: the protocol without I/O, for your own event loop.

Everything speaks kcp-go 5.6.1's wire format byte for byte (docs/protocol.md). The socket API
loads gevent on first use; ``import kcpgo`` alone does not.
"""
from __future__ import annotations

import atexit as _atexit
import sys as _sys
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

__version__ = "0.4.0"

from .codec import crypt
from .codec.crypt import BlockCrypt, derive_key
from .options import KCPTUN_CLIENT, KCPTUN_SERVER, CryptSpec, Options
from .sansio.connection import MODES
from .sansio.demux import ACCEPT_BACKLOG
from .snmp import DEFAULT_SNMP, Snmp

if TYPE_CHECKING:  # pragma: no cover - the socket API loads gevent lazily (see __getattr__)
    import socket as _socket

    from .facade.listener import Listener
    from .facade.smux import SmuxListener, SmuxSession
    from .facade.socket import KCPSocket
    from .facade.stream import Stream

__all__ = ["dial", "listen", "serve_conn", "dial_smux", "listen_smux", "set_runtime",
           "get_runtime", "set_busy_poll", "set_malloc_tuning", "Options", "KCPSocket",
           "Listener", "SmuxSession", "SmuxListener", "Stream",
           "BlockCrypt", "derive_key", "crypt", "Snmp", "DEFAULT_SNMP",
           "MODES", "KCPTUN_CLIENT", "KCPTUN_SERVER", "CryptSpec"]

#: ``(host, port)``, ``(host, port, flowinfo, scope_id)`` or kcp-go's ``"host:port"`` /
#: ``"[ipv6]:port"`` (:func:`kcpgo.address.parse_address`).
Address = Union[str, Tuple[Any, ...]]


def _exit_hook() -> None:
    """At interpreter exit, after the atexit handlers registered after ``import kcpgo`` (a
    program's goodbye messages): the I/O thread's final flush and linger, then it parks for
    good (kcpgo.runtime.iothread.at_exit, docs/deviations.md D56). Registered at import so
    that it runs after them; a program that never used the I/O thread has nothing to do."""
    iothread = _sys.modules.get("kcpgo.runtime.iothread")
    if iothread is not None:
        iothread.at_exit()


_atexit.register(_exit_hook)


def set_runtime(mode: str) -> None:
    """Choose where sessions run (docs: README "Threads and gevent"):

    * ``"thread"``: on an I/O thread of their own (one per process), whatever the application's
      threads do; every object may be used from any thread, and ``fileno()`` works with the
      stdlib's ``select``/``poll``/``selectors``;
    * ``"hub"``: on the gevent hub of the thread that created them, while that hub runs (the
      right choice under ``gevent.monkey.patch_all()``, where every thread is a greenlet);
    * ``"auto"`` (default, or the environment variable ``KCPGO_RUNTIME``): ``"hub"`` if
      ``gevent.monkey`` has patched ``threading`` when the first session opens, else
      ``"thread"``.

    Call it before the first session, listener or server: later, a different choice raises
    ``RuntimeError``. ``ValueError`` for another name. (:mod:`kcpgo.runtime.modes`)
    """
    from .runtime.modes import set_runtime as _set_runtime
    _set_runtime(mode)


def get_runtime() -> str:
    """Where sessions run: ``"thread"`` or ``"hub"`` (see :func:`set_runtime`)."""
    from .runtime.modes import get_runtime as _get_runtime
    return _get_runtime()


def set_busy_poll(enabled: bool) -> None:
    """Switch busy-polling on (the default) or off for the whole process.

    On, a session whose traffic is request/response (its data was answered with data within
    1 ms, three times in a row) polls up to 300 µs for its next reply instead of sleeping:
    it costs that much CPU per reply at most and saves two wake-ups per round trip (ping p50
    ~400 -> ~160 µs on loopback). Bulk transfers and slow sessions never spin. The
    ``KCPGO_BUSY_POLL=0`` environment variable switches it off at import. See
    docs/deviations.md D54."""
    from .runtime.busypoll import set_busy_poll as _set_busy_poll
    _set_busy_poll(enabled)


def set_malloc_tuning(enabled: bool) -> None:
    """Allow (the default) or forbid kcpgo to raise glibc's malloc trim and mmap thresholds
    (to 16 MiB and 4 MiB) when its first runtime starts, so that the buffers of each batch of
    datagrams are not returned to the kernel and faulted in again (aes + FEC sink ~+30 %).
    The process then keeps up to 16 MiB of free heap. Skipped off glibc, when the process set
    ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_`` or a ``glibc.malloc`` tunable,
    and with ``KCPGO_MALLOC_TUNING=0``. ``False`` after the tuning puts glibc's 128 KiB
    defaults back.
    See docs/deviations.md D55."""
    from .runtime.malloc import set_malloc_tuning as _set_malloc_tuning
    _set_malloc_tuning(enabled)


def dial(address: Address, options: Optional[Options] = None, *, conv: Optional[int] = None,
         timeout: Optional[float] = None, **session_options: Any) -> "KCPSocket":
    """Open a client session to ``address`` (kcp-go ``DialWithOptions``).

    ``address``: ``(host, port)`` (``(host, port, flowinfo, scope_id)`` for IPv6) or kcp-go's
    string form ``"host:port"`` / ``"[::1]:9000"``; the port must be in 1..65535.
    ``session_options`` are :class:`Options` fields (``crypt``, ``key``, ``data_shards``,
    ``parity_shards``, ``mode``, ``stream``, ``mtu``, ``window``, ``ack_nodelay``,
    ``write_delay``, ``idle_timeout``, ``snmp``); they override ``options``. ``conv`` defaults
    to a random u32. ``timeout`` (seconds) becomes the socket timeout.

    There is no handshake: this returns at once and the peer learns of the session from its
    first datagram. Raises ``TypeError`` for an unknown option or an address of the wrong type,
    ``ValueError`` for a bad value (a malformed address, a port out of range, no host),
    ``OSError`` if the address cannot be resolved.
    """
    opts = Options.build("dial()", options, **session_options)
    from .facade.api import open_client
    return open_client(address, opts, conv, timeout)


def listen(address: Address, options: Optional[Options] = None, *,
           backlog: int = ACCEPT_BACKLOG, reuse_port: bool = False,
           **session_options: Any) -> "Listener":
    """Listen for KCP sessions on UDP ``address`` (kcp-go ``ListenWithOptions``).

    ``address`` as for :func:`dial`, with port 0 (a free port) and an empty host allowed:
    ``("", port)``, ``("::", port)`` and ``":port"`` listen on every address of **both**
    families where the system allows it (an IPv6 socket with ``IPV6_V6ONLY=0``, as
    ``socket.create_server(..., dualstack_ipv6=True)`` and kcp-go's ``":port"``); IPv4 peers
    then appear as ``("::ffff:a.b.c.d", port, 0, 0)`` in ``accept()``/``getpeername()``, as
    with a dual-stack Python socket. ``"0.0.0.0"`` is IPv4 only. On a wildcard address each
    session replies from the local address its peer sent to (docs/deviations.md D25, D26).
    ``session_options`` as for :func:`dial`; they apply to every new session before its first
    datagram is processed. ``backlog``: sessions created but not yet accepted (default 128).

    ``reuse_port=True`` sets ``SO_REUSEPORT`` before binding, so that several listeners (in
    several processes, each with ``reuse_port=True`` and the same user) can own one UDP port.
    Linux then hashes each datagram's source and destination addresses and ports to one of
    them, so every datagram of a client reaches the same listener, which is what KCP's
    address-keyed sessions need, as long as the set of listeners does not change (adding or
    closing one moves some clients to another listener, where they are new sessions). Each
    listener has its own sessions; nothing is shared. Other systems' ``SO_REUSEPORT`` does not
    balance UDP this way (the BSDs and macOS give everything to one socket).
    :class:`kcpgo.server.KCPServer`'s ``workers=`` uses it.

    Never blocks (no handshake). Raises like :func:`dial`, ``OSError`` if the port cannot be
    bound (``EADDRINUSE``: taken, by a socket without ``reuse_port`` or another user's), and
    ``ValueError`` for ``reuse_port=True`` where the system has no ``SO_REUSEPORT``.
    """
    opts = Options.build("listen()", options, **session_options)
    from .facade.api import open_listener
    return open_listener(address, opts, backlog, reuse_port=bool(reuse_port))


def serve_conn(udp_socket: _socket.socket, options: Optional[Options] = None, *,
               backlog: int = ACCEPT_BACKLOG, **session_options: Any) -> "Listener":
    """Serve KCP on an existing bound UDP socket (kcp-go ``ServeConn``).

    The listener works on a duplicate of the descriptor and never closes ``udp_socket``
    itself; note that the duplicate shares its non-blocking flag. Options as :func:`listen`.
    ``TypeError`` if ``udp_socket`` is not a socket, ``ValueError`` if it is not ``SOCK_DGRAM``.
    """
    opts = Options.build("serve_conn()", options, **session_options)
    from .facade.api import wrap_listener
    return wrap_listener(udp_socket, opts, backlog)


#: :class:`~kcpgo.facade.smux.SmuxConfig` keywords that ``dial_smux``/``listen_smux`` take
#: besides the session options.
_SMUX_KEYS = ("keepalive_timeout", "max_receive_buffer", "max_stream_buffer", "max_frame_size",
              "accept_limit")


def _smux_split(where: str, smux: dict, session_options: dict) -> Any:
    from .facade.smux import SmuxConfig
    for key in _SMUX_KEYS:
        if key in session_options:
            smux[key] = session_options.pop(key)
    if session_options.get("stream", True) is not True:
        raise ValueError(f"{where}: smux runs on a stream-mode KCP session (stream=True)")
    session_options["stream"] = True
    return SmuxConfig.build(smux, where)


def dial_smux(address: Address, options: Optional[Options] = None, *, smux_version: int = 1,
              compression: bool = False, keepalive: Optional[float] = 10,
              timeout: Optional[float] = None, conv: Optional[int] = None,
              **session_options: Any) -> "SmuxSession":
    """Open an smux client session over a new KCP session to ``address`` (what a kcptun
    client runs per ``--conn``; docs/kcptun.md §2, §4, §5.3).

    ``smux_version`` 1 or 2 and ``compression`` (snappy framing) must match the server's:
    kcptun's defaults are ``smux_version=1, compression=True`` (20210922) and ``2, True``
    (newest); ``--nocomp`` is ``compression=False``. ``keepalive``: seconds between NOPs
    (kcptun ``--keepalive``; the session dies after ``max(30, 3 × keepalive)`` s without a
    frame, or ``keepalive_timeout=``). ``timeout`` (seconds) is each new stream's initial
    socket timeout. Also ``max_receive_buffer``, ``max_stream_buffer`` (kcptun
    ``--smuxbuf``/``--streambuf``, bytes), ``max_frame_size``, ``accept_limit``. Everything
    else are :class:`Options` fields as for :func:`dial` (the session is always in stream
    mode; kcptun's settings are :data:`KCPTUN_CLIENT`). Returns at once (no handshake); raises
    like :func:`dial`, and ``ValueError``/``TypeError`` for bad smux settings.
    """
    smux = _smux_split("dial_smux()", dict(smux_version=smux_version, compression=compression,
                                           keepalive=keepalive), session_options)
    opts = Options.build("dial_smux()", options, **session_options)
    from .facade.api import open_smux_client
    return open_smux_client(address, opts, conv, smux, timeout)


def listen_smux(address: Address, options: Optional[Options] = None, *,
                smux_version: Optional[int] = 1, compression: Optional[bool] = False,
                keepalive: Optional[float] = 10, timeout: Optional[float] = None,
                backlog: int = ACCEPT_BACKLOG, reuse_port: bool = False,
                **session_options: Any) -> "SmuxListener":
    """Listen for smux streams over KCP on UDP ``address`` (a kcptun server's side;
    docs/kcptun.md §5.4). ``accept()`` returns ``(Stream, peer_address)`` for the streams of
    every session.

    ``smux_version``/``compression`` as for :func:`dial_smux`; ``None`` follows each client's
    first bytes (kcptun.md §3.3; beyond kcptun), so one server serves kcptun 20210922 and
    newest clients with or without ``--nocomp``. A client whose framing differs from a fixed
    setting is logged on ``kcpgo.smux`` with both sides' kcptun flags. ``timeout``: each
    accepted stream's initial socket timeout. ``backlog``: KCP sessions that have not opened
    a stream yet. ``reuse_port``: several listeners on one UDP port, as for :func:`listen`
    (the kernel keeps each client's KCP session, and so its smux streams, on one of them).
    Other keywords as :func:`dial_smux` and :func:`listen`.
    """
    smux = _smux_split("listen_smux()", dict(smux_version=smux_version,
                                             compression=compression, keepalive=keepalive),
                       session_options)
    opts = Options.build("listen_smux()", options, **session_options)
    from .facade.api import open_smux_listener
    return open_smux_listener(address, opts, smux, backlog, timeout,
                              reuse_port=bool(reuse_port))


def __getattr__(name: str) -> Any:
    # The socket API imports gevent; load it only when it is used.
    if name == "KCPSocket":
        from .facade.socket import KCPSocket
        return KCPSocket
    if name == "Listener":
        from .facade.listener import Listener
        return Listener
    if name in ("SmuxSession", "SmuxListener"):
        from .facade import smux
        return getattr(smux, name)
    if name == "Stream":
        from .facade.stream import Stream
        return Stream
    raise AttributeError(f"module 'kcpgo' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
