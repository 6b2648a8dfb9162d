"""Local-address ancillary data (``IP_PKTINFO``, ``IPV6_PKTINFO``): the local address each
datagram of a wildcard-bound listener was sent to, and the control message that sends a reply
from that address (docs/deviations.md D25; used by :mod:`.udp`).
"""
from __future__ import annotations

import socket as _stdlib_socket
import sys as _sys
from typing import Any, Optional, Tuple

__all__ = ["reply_cmsg", "local_sockname", "CMSG_PKTINFO", "IP_PKTINFO", "IPPROTO_IP",
           "IPPROTO_IPV6", "IPV6_RECVPKTINFO", "IPV6_PKTINFO"]

_CMSG_SUPPORTED = hasattr(_stdlib_socket, "CMSG_SPACE")

# Local-address ancillary data (IP_PKTINFO: struct in_pktinfo {ifindex, spec_dst, addr};
# IPV6_PKTINFO: struct in6_pktinfo {addr, ifindex}). Python < 3.13 lacks IP_PKTINFO: Linux's
# value is 8. A dual-stack socket reports IPv4 datagrams as IPV6_PKTINFO with a v4-mapped
# address and accepts that form back (Linux ip_cmsg_send with allow_ipv6).
IPPROTO_IP = _stdlib_socket.IPPROTO_IP
IPPROTO_IPV6 = getattr(_stdlib_socket, "IPPROTO_IPV6", 41)
IP_PKTINFO = getattr(_stdlib_socket, "IP_PKTINFO", 8 if _sys.platform.startswith("linux")
                      else None)
IPV6_RECVPKTINFO = getattr(_stdlib_socket, "IPV6_RECVPKTINFO", None)
IPV6_PKTINFO = getattr(_stdlib_socket, "IPV6_PKTINFO", None)
CMSG_PKTINFO = _stdlib_socket.CMSG_SPACE(20) if _CMSG_SUPPORTED else 0


def reply_cmsg(level: int, kind: int, value: bytes) -> Optional[list]:
    """The control message that sends from the local address a received ``IP_PKTINFO`` /
    ``IPV6_PKTINFO`` reported (``None`` if it is neither). IPv4: ``ipi_spec_dst`` (the
    local address, also for a broadcast) with interface 0, so routing picks the interface;
    IPv6: the address, with the interface only for a link-local one (which needs it)."""
    if level == IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
        return [(IPPROTO_IP, IP_PKTINFO, bytes(4) + value[4:8] + bytes(4))]
    if level == IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 20:
        link_local = value[0] == 0xfe and value[1] & 0xc0 == 0x80
        return [(IPPROTO_IPV6, IPV6_PKTINFO, value[:16] + (value[16:20] if link_local
                                                             else bytes(4)))]
    return None


def local_sockname(local: Optional[list], sockname: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """The socket address a session replies from: the wildcard ``sockname`` of its socket
    with the host of ``local`` (a control message of :func:`reply_cmsg`; ``None``: the
    system chooses, ``sockname`` unchanged). IPv6 sockets give IPv4 peers' addresses
    v4-mapped, as the socket reports them."""
    if not local:
        return sockname
    level, _, value = local[0]
    if level == IPPROTO_IP:
        return (_stdlib_socket.inet_ntop(_stdlib_socket.AF_INET, value[4:8]),) + sockname[1:]
    host = _stdlib_socket.inet_ntop(_stdlib_socket.AF_INET6, value[:16])
    scope = int.from_bytes(value[16:20], _sys.byteorder)
    return (host, sockname[1], 0, scope)
