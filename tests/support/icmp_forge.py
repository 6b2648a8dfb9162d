"""Forged ICMP errors about a UDP flow, as a router or the peer's host would send them
(tests/test_icmp.py). Needs a raw socket (root or CAP_NET_RAW): :func:`can_forge`."""
from __future__ import annotations

import socket
import struct


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def can_forge(family: int) -> bool:
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        socket.socket(family, socket.SOCK_RAW, proto).close()
        return True
    except OSError:
        return False


def forge(family: int, src: tuple, dst: tuple, icmp_type: int, code: int) -> None:
    """Send to ``dst``'s host an ICMP(v6) error of ``icmp_type``/``code`` quoting a UDP
    datagram ``src`` -> ``dst`` (both ``(host, port)``): the kernel hands it to the UDP socket
    bound to ``src``. Kinds that change routing state (fragmentation needed, packet too big)
    are best avoided: they leave a path MTU behind on the loopback."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + 24, 0) + bytes(24)
    if family == socket.AF_INET:
        a, b = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, a, b)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        packet = struct.pack("!BBHI", icmp_type, code, 0, 0) + ip + udp
        packet = packet[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
        proto = socket.IPPROTO_ICMP
    else:       # the kernel computes an ICMPv6 raw socket's checksum
        a, b = (socket.inet_pton(socket.AF_INET6, h) for h in (src[0], dst[0]))
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, a, b)
        packet = struct.pack("!BBHI", icmp_type, code, 0, 0) + ip + udp
        proto = socket.IPPROTO_ICMPV6
    with socket.socket(family, socket.SOCK_RAW, proto) as raw:
        raw.sendto(packet, (dst[0], 0))
