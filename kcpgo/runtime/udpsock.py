"""UDP sockets for kcpgo's endpoints: large buffers, dual-stack, ``SO_REUSEPORT``.

Used through ``UDPEndpoint.socket`` / ``UDPEndpoint.open`` (:mod:`kcpgo.runtime.udp`).
"""
from __future__ import annotations

import socket as _stdlib_socket
from typing import Any, Tuple

from ._originals import RealSocket

__all__ = ["DEFAULT_SOCKBUF", "udp_socket", "bound_udp_socket"]

#: Default socket buffers (kcptun's sockbuf): loopback bursts overflow the kernel default.
DEFAULT_SOCKBUF = 4 * 1024 * 1024


def udp_socket(family: int = _stdlib_socket.AF_INET, sockbuf: int = DEFAULT_SOCKBUF,
               dualstack: bool = False, reuse_port: bool = False) -> _stdlib_socket.socket:
    """A new, unbound UDP socket with ``sockbuf``-byte buffers.

    ``dualstack`` (an ``AF_INET6`` socket): ``IPV6_V6ONLY`` cleared, so that ``::`` serves
    IPv4 too (peers then appear as ``::ffff:a.b.c.d``). ``reuse_port``: ``SO_REUSEPORT`` set
    (the caller checked that the system has it), so that other such sockets may bind the same
    address; Linux then hashes each peer's address 4-tuple to one of them. Raises ``OSError``
    if the system refuses an option (buffer sizes are capped silently).
    """
    sock = RealSocket(family, _stdlib_socket.SOCK_DGRAM)
    try:
        if dualstack:
            sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 0)
        for opt in (_stdlib_socket.SO_RCVBUF, _stdlib_socket.SO_SNDBUF):
            try:
                sock.setsockopt(_stdlib_socket.SOL_SOCKET, opt, sockbuf)
            except OSError:  # pragma: no cover - platform limits
                pass
        if reuse_port:
            sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEPORT, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_udp_socket(address: Tuple[Any, ...], family: int = _stdlib_socket.AF_INET,
                     sockbuf: int = DEFAULT_SOCKBUF, dualstack: bool = False,
                     reuse_port: bool = False) -> _stdlib_socket.socket:
    """:func:`udp_socket`, bound to ``address`` (``OSError`` if it cannot be, e.g.
    ``EADDRINUSE``)."""
    sock = udp_socket(family, sockbuf, dualstack, reuse_port)
    try:
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
