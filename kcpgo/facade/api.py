"""How sessions are opened on the runtime (:mod:`kcpgo.runtime.modes`): the bodies of :func:`kcpgo.dial`,
:func:`kcpgo.listen` and :func:`kcpgo.serve_conn`, from validated :class:`~kcpgo.Options`."""
from __future__ import annotations

import os
import socket as _socket
import sys
from functools import partial
from typing import Any, Optional, Tuple

from ..address import bind_plan, parse_address
from ..options import Options
from ..runtime._originals import RealSocket
from ..runtime.channel import ADMIT_PER_FLUSH, Channel
from ..runtime.scheduler import Runtime
from ..runtime.udp import DEFAULT_SOCKBUF, UDPEndpoint
from ..sansio.demux import ACCEPT_BACKLOG
from ..sansio.kcpdefs import PROBE_INIT_LATEST
from ..sansio.wire import check_conv
from ._blocking import check_timeout
from .listener import Listener
from .socket import KCPSocket

__all__ = ["open_client", "open_listener", "wrap_listener", "open_smux_client",
           "open_smux_listener", "udp_socket", "check_reuse_port"]

Address = Tuple[Any, ...]


#: The runtime's policy for every connection it drives. Probe a closed window after kcp-go
#: latest's 500 ms, not 5.6.1's 7 s: a kcp-go listener runs a new session with 32-segment
#: windows until its application accepts and configures it, and then announces nothing, so a
#: writer that filled those 32 slots would otherwise wait 7 s (WASK is understood by every
#: version; docs/deviations.md D4).
_POLICY = dict(admit_limit=ADMIT_PER_FLUSH, probe_init=PROBE_INIT_LATEST, window_recovery=True)


#: Unspecified (wildcard) addresses a client may be given, and where the system sends them.
_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def open_client(address: Address, opts: Options, conv: Optional[int],
                timeout: Optional[float]) -> KCPSocket:
    """A client session to ``address`` (a tuple or ``"host:port"``, :mod:`kcpgo.address`) on a
    new UDP socket of its own. Everything is checked before the socket is opened; a failure
    after that closes it again."""
    timeout = check_timeout(timeout)
    chan = client_channel(address, opts, conv, "dial()")
    chan.endpoint.wait_started()
    return KCPSocket(chan, timeout=timeout)


def client_channel(address: Address, opts: Options, conv: Optional[int],
                   where: str) -> Channel:
    """The channel of a new client session (see :func:`open_client`)."""
    addr = parse_address(address, where)
    conv = check_conv(conv) if conv is not None else int.from_bytes(os.urandom(4), "little")
    host, port = addr[0], addr[1]
    try:
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_DGRAM)
    except _socket.gaierror as e:
        raise _socket.gaierror(e.errno, f"{e.strerror}: {host!r}") from None
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, peer = infos[0]
    if peer[0] in _UNSPECIFIED:
        # Linux sends to "any address" as to the loopback (as connect() does), and replies
        # then come from the loopback address: name that one, or the strict source check
        # (D13) drops them. dial(listener.getsockname()) on a wildcard listener works.
        peer = (_UNSPECIFIED[peer[0]],) + tuple(peer[1:])
    if len(addr) == 4 and family == _socket.AF_INET6:
        peer = peer[:2] + addr[2:]                  # the caller's flowinfo and scope_id
    conn = opts.connection(conv, **_POLICY)
    bind = ("0.0.0.0", 0) if family == _socket.AF_INET else ("::", 0)
    sock = UDPEndpoint.open(bind, family)
    # Under the stack lock: the runtime's thread may start the reader before we are done.
    with Runtime.current().lock:
        try:
            endpoint = UDPEndpoint(sock, snmp=conn.snmp, icmp=True)
        except BaseException:
            sock.close()
            raise
        try:
            chan = Channel(conn, endpoint, peer, on_release=lambda _: endpoint.close(),
                           idle_timeout=opts.idle_timeout, rate_limit=opts.rate_limit)
        except BaseException:
            endpoint.close()
            raise
        endpoint.on_batch = chan.on_batch
        endpoint.on_error = chan.fail
        return chan


def check_reuse_port(where: str) -> None:
    """``ValueError`` naming ``where`` if this system has no ``SO_REUSEPORT`` (as
    ``socket.create_server(reuse_port=True)`` raises there)."""
    if not hasattr(_socket, "SO_REUSEPORT"):
        raise ValueError(f"{where}: reuse_port=True needs SO_REUSEPORT, which this system "
                         f"({sys.platform}) does not have")


def udp_socket(family: int, dualstack: bool = False, reuse_port: bool = False,
               sockbuf: int = DEFAULT_SOCKBUF, where: str = "listen()") -> _socket.socket:
    """A new, unbound UDP socket for a listener (``UDPEndpoint.socket``: large buffers;
    ``dualstack``; ``reuse_port``: ``SO_REUSEPORT``). ``ValueError`` naming ``where`` where
    ``SO_REUSEPORT`` does not exist, ``OSError`` if the system refuses it."""
    if reuse_port:
        check_reuse_port(where)
    return UDPEndpoint.socket(family, sockbuf, dualstack, reuse_port)


def _bound(address: Address, where: str, reuse_port: bool) -> _socket.socket:
    """A UDP socket bound to ``address`` for a listener (``bind_plan``)."""
    family, sockaddr, dualstack = bind_plan(address, where)
    if reuse_port:
        check_reuse_port(where)
    return UDPEndpoint.open(sockaddr, family, dualstack=dualstack, reuse_port=reuse_port)


def open_listener(address: Address, opts: Options, backlog: int = ACCEPT_BACKLOG,
                  reuse_port: bool = False) -> Listener:
    """A listener on a new UDP socket bound to ``address`` (a tuple or ``"host:port"``;
    ``""``/``"::"`` are dual-stack where the system allows, :func:`kcpgo.address.bind_plan`);
    ``reuse_port``: with ``SO_REUSEPORT`` (:func:`udp_socket`)."""
    sock = _bound(address, "listen()", reuse_port)
    return _listener(sock, opts, backlog)


def wrap_listener(udp_socket: _socket.socket, opts: Options,
                  backlog: int = ACCEPT_BACKLOG) -> Listener:
    """A listener on a duplicate of an existing bound UDP socket (never closes the original)."""
    if not all(hasattr(udp_socket, a) for a in ("fileno", "family", "type")):
        raise TypeError(f"serve_conn needs a bound UDP socket (socket.socket(AF_INET or "
                        f"AF_INET6, SOCK_DGRAM)), got {type(udp_socket).__name__}")
    if udp_socket.type != _socket.SOCK_DGRAM:
        raise ValueError("serve_conn needs a UDP (SOCK_DGRAM) socket")
    name = udp_socket.getsockname()
    if isinstance(name, tuple) and name[1] == 0:
        # An unbound socket would get an ephemeral port at the first send: no client knows it.
        raise ValueError(f"serve_conn needs a bound UDP socket (call bind((host, port)) "
                         f"first), got an unbound one: {udp_socket!r}")
    sock = RealSocket(udp_socket.family, _socket.SOCK_DGRAM, 0, os.dup(udp_socket.fileno()))
    return _listener(sock, opts, backlog)


def _listener(sock: _socket.socket, opts: Options, backlog: int) -> Listener:
    try:
        with Runtime.current().lock:     # (see client_channel)
            listener = Listener(sock, crypt=opts.block, backlog=backlog, owned=True,
                            snmp=opts.counters, idle_timeout=opts.idle_timeout,
                            rate_limit=opts.rate_limit,
                            new_connection=partial(opts.connection, **_POLICY))
    except BaseException:
        sock.close()
        raise
    listener._endpoint.wait_started()
    return listener


def open_smux_client(address: Address, opts: Options, conv: Optional[int], config: Any,
                     timeout: Optional[float]) -> Any:
    """An smux client session (``kcpgo.dial_smux``) on a new stream-mode KCP client session."""
    from ..runtime.clock import now_ms
    from ..runtime.smux_driver import SmuxDriver
    from .smux import SmuxSession
    timeout = check_timeout(timeout)
    stack = config.stack(client=True, now=now_ms())
    chan = client_channel(address, opts, conv, "dial_smux()")
    with chan.runtime.lock:
        try:
            driver = SmuxDriver(chan, stack, accept_limit=config.accept_limit)
        except BaseException:
            chan.release()
            raise
        session = SmuxSession(driver, stream_timeout=timeout)
    chan.endpoint.wait_started()
    return session


def open_smux_listener(address: Address, opts: Options, config: Any, backlog: int,
                       timeout: Optional[float], reuse_port: bool = False) -> Any:
    """An smux listener (``kcpgo.listen_smux``) on a new KCP listener (``reuse_port`` as
    :func:`open_listener`)."""
    from .smux import SmuxListener
    sock = _bound(address, "listen_smux()", reuse_port)
    with Runtime.current().lock:     # (see client_channel: before any datagram is read)
        listener = _listener(sock, opts, backlog)
        try:
            smux = SmuxListener(listener, config, stream_timeout=timeout)
        except BaseException:
            listener.close()
            raise
    listener._endpoint.wait_started()
    return smux
