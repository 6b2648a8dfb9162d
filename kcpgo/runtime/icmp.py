"""ICMP errors on a client's UDP socket, for the diagnosis of a peer never heard
(docs/deviations.md D57).

A datagram sent to a port nobody listens on comes back as ICMP "port unreachable". An
unconnected UDP socket (a kcp-go or kcpgo client's) never reports it, so a dial to the wrong
port looked like a wrong key: silence. On Linux, ``IP_RECVERR`` (``IPV6_RECVERR``) queues such
errors on the socket: the next read raises ``ECONNREFUSED`` (``EHOSTUNREACH``,
``ENETUNREACH``) once, and each error waits in the socket's error queue, readable with
``MSG_ERRQUEUE``, with the address the failed datagram was sent to (ip(7)). kcpgo reads them
there and counts them per destination; the session does not fail (the server may be starting,
and kcp-go keeps retrying too), but its timeout and dead-link errors say what came back.

The error queue must be drained: its entries hold the socket's receive memory and keep it
``POLLERR`` (always reported by epoll), which would wake the reader for ever.
"""
from __future__ import annotations

import errno
import socket as _socket
import struct
import sys
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["IcmpErrors", "REPORTED", "describe"]

# include/uapi/linux/in.h, in6.h, socket.h
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000
_SOL_IP = 0
_SOL_IPV6 = 41
#: struct sock_extended_err (linux/errqueue.h): ee_errno, ee_origin, type, code, pad, info, data
_EXTENDED_ERR = struct.Struct("=IBBBBII")
#: Errors a read raises for a queued ICMP error: not fatal to a UDP socket.
REPORTED = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
#: Destinations remembered per socket (a client sends to one; bounded whatever happens).
MAX_DESTINATIONS = 16
#: Errors read from the queue per drain (the rest at the next wake-up).
DRAIN_LIMIT = 64
_ANC_SIZE = 512

_WHAT = {
    errno.ECONNREFUSED: ("port unreachable", " (nothing listens on that UDP port there)"),
    errno.EHOSTUNREACH: ("host unreachable", ""),
    errno.ENETUNREACH: ("network unreachable", ""),
}


def describe(err: int, count: int = 1) -> str:
    """``"N ICMP <kind> error(s) came back[: what it means]"`` for ``count`` errors ``err``."""
    kind, meaning = _WHAT.get(err, (errno.errorcode.get(err, str(err)), ""))
    return f"{count} ICMP {kind} error{'s' * (count != 1)} came back{meaning}"


def _extended_errno(ancdata: List[Tuple[int, int, bytes]]) -> Optional[int]:
    """``ee_errno`` of the queue entry's ``IP_RECVERR``/``IPV6_RECVERR`` message, if any."""
    for level, kind, data in ancdata:
        if ((level, kind) in ((_SOL_IP, IP_RECVERR), (_SOL_IPV6, IPV6_RECVERR))
                and len(data) >= _EXTENDED_ERR.size):
            return _EXTENDED_ERR.unpack_from(data)[0]
    return None


class IcmpErrors:
    """The ICMP errors of one socket, counted per destination address and errno."""

    __slots__ = ("sock", "counts", "total")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        #: ``{destination: {errno: count}}``, at most :data:`MAX_DESTINATIONS` destinations
        self.counts: Dict[Any, Dict[int, int]] = {}
        #: Errors read in all (diagnostics, tests)
        self.total = 0

    @classmethod
    def enable(cls, sock: Any) -> Optional["IcmpErrors"]:
        """Ask the kernel to report ICMP errors on ``sock`` (Linux); ``None`` where it cannot
        (another system, an odd family): the diagnosis then goes without them."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            if sock.family == _socket.AF_INET6:
                sock.setsockopt(_SOL_IPV6, IPV6_RECVERR, 1)
                try:    # a dual-stack socket's IPv4 peers report through the IPv4 option
                    sock.setsockopt(_SOL_IP, IP_RECVERR, 1)
                except OSError:
                    pass
            elif sock.family == _socket.AF_INET:
                sock.setsockopt(_SOL_IP, IP_RECVERR, 1)
            else:
                return None
        except OSError:
            return None
        return cls(sock)

    def drain(self) -> int:
        """Read the error queue (at most :data:`DRAIN_LIMIT` entries) without blocking and
        count its errors; returns how many were read. Never raises."""
        recvmsg = self.sock.recvmsg
        counts = self.counts
        n = 0
        try:
            while n < DRAIN_LIMIT:
                _, anc, _, dest = recvmsg(1, _ANC_SIZE, MSG_ERRQUEUE)
                n += 1
                err = _extended_errno(anc)
                if err is None:
                    continue
                per = counts.get(dest)
                if per is None:
                    if len(counts) >= MAX_DESTINATIONS:
                        counts.clear()
                    per = counts[dest] = {}
                per[err] = per.get(err, 0) + 1
        except OSError:     # EAGAIN: the queue is empty (or the socket closed)
            pass
        self.total += n
        return n

    def about(self, dest: Any) -> str:
        """What came back for datagrams sent to ``dest`` (:func:`describe`), or ``""``."""
        per = self.counts.get(dest)
        if not per:
            return ""
        return ", ".join(describe(err, n) for err, n in sorted(per.items(), key=lambda kv: -kv[1]))
