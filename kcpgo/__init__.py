"""kcpgo: kcp-go's reliable UDP (KCP ARQ, Reed-Solomon FEC, kcp-go ciphers) for Python.

Entry points (kcp-go semantics, Python names):

* :func:`dial` -> :class:`KCPSocket`, a session that behaves like a connected TCP socket;
* :func:`listen` / :func:`serve_conn` -> :class:`Listener` with ``accept()``.

Everything speaks kcp-go 5.6.1's wire format byte for byte; see README.md.
"""
from __future__ import annotations

import os
import socket as _socket
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

__version__ = "0.2.0"

from . import crypt
from .crypt import BlockCrypt, derive_key
from .snmp import DEFAULT_SNMP, Snmp

if TYPE_CHECKING:  # pragma: no cover - the socket API loads gevent lazily (see __getattr__)
    from .listener import Listener
    from .session import KCPSocket

__all__ = ["dial", "listen", "serve_conn", "KCPSocket", "Listener", "BlockCrypt", "derive_key",
           "crypt", "Snmp", "DEFAULT_SNMP", "MODES"]

Address = Tuple[Any, ...]
CryptSpec = Union[str, BlockCrypt, None]


def _make_crypt(spec: CryptSpec, key: Union[str, bytes, None]) -> Optional[BlockCrypt]:
    """``crypt`` is a cipher name (with ``key``: a kcptun passphrase str, or the derived key
    bytes) or a ready :class:`BlockCrypt`; ``None`` means no crypto header at all."""
    if spec is None:
        if key is not None:
            raise ValueError("key given without crypt; name a cipher, e.g. crypt='aes'")
        return None
    if isinstance(spec, str):
        if key is None:
            raise ValueError(f"crypt={spec!r} needs a key (a passphrase str or key bytes)")
        if isinstance(key, str):
            key = derive_key(key)
        return crypt.new(spec, key)
    if key is not None:
        raise ValueError("key is only used with a cipher name, not with a BlockCrypt object")
    return spec


def _session_options(mode: Optional[str], stream: bool, mtu: Optional[int],
                     window: Optional[Tuple[int, int]], ack_nodelay: bool, write_delay: bool,
                     idle_timeout: Optional[float]):
    from .connection import MODES
    if mode is not None and mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")

    def configure(s: "KCPSocket") -> None:
        if mode is not None:
            s.set_mode(mode)
        s.set_stream_mode(stream)
        if mtu is not None:
            s.set_mtu(mtu)
        if window is not None:
            s.set_window_size(*window)
        s.set_ack_nodelay(ack_nodelay)
        s.set_write_delay(write_delay)
        if idle_timeout is not None:
            s.set_idle_timeout(idle_timeout)
    return configure


def dial(address: Address, *, crypt: CryptSpec = None, key: Union[str, bytes, None] = None,
         data_shards: int = 0, parity_shards: int = 0, conv: Optional[int] = None,
         mode: Optional[str] = None, timeout: Optional[float] = None, stream: bool = False,
         mtu: Optional[int] = None, window: Optional[Tuple[int, int]] = None,
         ack_nodelay: bool = False, write_delay: bool = False,
         idle_timeout: Optional[float] = None, snmp: Optional[Snmp] = None) -> "KCPSocket":
    """Open a client session to ``address`` (kcp-go ``DialWithOptions``).

    There is no handshake: this returns at once and the peer learns of the session from its
    first datagram. ``crypt``/``key``: see :func:`_make_crypt` (kcptun names such as ``"aes"``,
    ``"salsa20"``, ``"none"``). FEC framing is sent when both shard counts are > 0. ``conv``
    defaults to a random u32. ``mode`` is a kcptun preset (normal, fast, fast2, fast3).
    ``timeout`` becomes the socket timeout. ``idle_timeout`` (seconds) declares the peer dead
    after that long without a datagram (kcp-go never does).
    """
    from .connection import Connection
    from .runtime import UDPEndpoint
    from .session import KCPSocket
    block = _make_crypt(crypt, key)
    configure = _session_options(mode, stream, mtu, window, ack_nodelay, write_delay,
                                 idle_timeout)
    host, port = address[0], address[1]
    infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_DGRAM)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, peer = infos[0]
    if conv is None:
        conv = int.from_bytes(os.urandom(4), "little")
    conn = Connection(conv, crypt=block, data_shards=data_shards, parity_shards=parity_shards,
                      snmp=snmp)
    bind = ("0.0.0.0", 0) if family == _socket.AF_INET else ("::", 0)
    sock = UDPEndpoint.open(bind, family)
    endpoint = UDPEndpoint(sock, snmp=conn.snmp)
    session = KCPSocket(conn, endpoint, peer, timeout=timeout)
    endpoint.on_batch = session._on_batch
    configure(session)
    return session


def listen(address: Address, *, crypt: CryptSpec = None, key: Union[str, bytes, None] = None,
           data_shards: int = 0, parity_shards: int = 0, backlog: int = 128,
           mode: Optional[str] = None, stream: bool = False, mtu: Optional[int] = None,
           window: Optional[Tuple[int, int]] = None, ack_nodelay: bool = False,
           write_delay: bool = False, idle_timeout: Optional[float] = None,
           snmp: Optional[Snmp] = None) -> "Listener":
    """Listen for KCP sessions on UDP ``address`` (kcp-go ``ListenWithOptions``).

    Session options (``mode``, ``stream``, ``mtu``, ``window``, ...) are applied to every new
    session before its first datagram is processed.
    """
    from .runtime import UDPEndpoint
    host = address[0] or "0.0.0.0"
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = UDPEndpoint.open((host, address[1]) + tuple(address[2:]), family)
    try:
        return _listener(sock, True, crypt, key, data_shards, parity_shards, backlog,
                         mode, stream, mtu, window, ack_nodelay, write_delay, idle_timeout, snmp)
    except BaseException:
        sock.close()
        raise


def serve_conn(udp_socket: _socket.socket, *, crypt: CryptSpec = None,
               key: Union[str, bytes, None] = None, data_shards: int = 0,
               parity_shards: int = 0, backlog: int = 128, mode: Optional[str] = None,
               stream: bool = False, mtu: Optional[int] = None,
               window: Optional[Tuple[int, int]] = None, ack_nodelay: bool = False,
               write_delay: bool = False, idle_timeout: Optional[float] = None,
               snmp: Optional[Snmp] = None) -> "Listener":
    """Serve KCP on an existing bound UDP socket (kcp-go ``ServeConn``).

    The listener works on a duplicate of the descriptor and never closes ``udp_socket``
    itself; note that the duplicate shares its non-blocking flag.
    """
    from .runtime import _RealSocket
    if udp_socket.type != _socket.SOCK_DGRAM:
        raise ValueError("serve_conn needs a UDP (SOCK_DGRAM) socket")
    sock = _RealSocket(udp_socket.family, _socket.SOCK_DGRAM, 0, os.dup(udp_socket.fileno()))
    try:
        return _listener(sock, True, crypt, key, data_shards, parity_shards, backlog,
                         mode, stream, mtu, window, ack_nodelay, write_delay, idle_timeout, snmp)
    except BaseException:
        sock.close()
        raise


def _listener(sock, owned, crypt_spec, key, data_shards, parity_shards, backlog, mode, stream,
              mtu, window, ack_nodelay, write_delay, idle_timeout, snmp) -> "Listener":
    from .listener import Listener
    block = _make_crypt(crypt_spec, key)
    configure = _session_options(mode, stream, mtu, window, ack_nodelay, write_delay,
                                 idle_timeout)
    return Listener(sock, crypt=block, data_shards=data_shards, parity_shards=parity_shards,
                    backlog=backlog, owned=owned, snmp=snmp if snmp is not None else DEFAULT_SNMP,
                    configure=configure)


def __getattr__(name: str) -> Any:
    # The runtime imports gevent; load it only when the socket API is used.
    if name == "KCPSocket":
        from .session import KCPSocket
        return KCPSocket
    if name == "Listener":
        from .listener import Listener
        return Listener
    if name == "MODES":
        from .connection import MODES
        return MODES
    raise AttributeError(f"module 'kcpgo' has no attribute {name!r}")
