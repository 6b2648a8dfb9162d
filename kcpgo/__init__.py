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

from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

__version__ = "0.3.0"

from .codec import crypt
from .codec.crypt import BlockCrypt, derive_key
from .options import KCPTUN_CLIENT, KCPTUN_SERVER, CryptSpec, Options
from .sansio.connection import MODES
from .sansio.demux import ACCEPT_BACKLOG
from .snmp import DEFAULT_SNMP, Snmp

if TYPE_CHECKING:  # pragma: no cover - the socket API loads gevent lazily (see __getattr__)
    import socket as _socket

    from .facade.listener import Listener
    from .facade.socket import KCPSocket

__all__ = ["dial", "listen", "serve_conn", "Options", "KCPSocket", "Listener",
           "BlockCrypt", "derive_key", "crypt", "Snmp", "DEFAULT_SNMP",
           "MODES", "KCPTUN_CLIENT", "KCPTUN_SERVER", "CryptSpec"]

#: ``(host, port)``, ``(host, port, flowinfo, scope_id)`` or kcp-go's ``"host:port"`` /
#: ``"[ipv6]:port"`` (:func:`kcpgo.address.parse_address`).
Address = Union[str, Tuple[Any, ...]]


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
           backlog: int = ACCEPT_BACKLOG, **session_options: Any) -> "Listener":
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
    Raises like :func:`dial`, and ``OSError`` if the port cannot be bound.
    """
    opts = Options.build("listen()", options, **session_options)
    from .facade.api import open_listener
    return open_listener(address, opts, backlog)


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


def __getattr__(name: str) -> Any:
    # The socket API imports gevent; load it only when it is used.
    if name == "KCPSocket":
        from .facade.socket import KCPSocket
        return KCPSocket
    if name == "Listener":
        from .facade.listener import Listener
        return Listener
    raise AttributeError(f"module 'kcpgo' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
