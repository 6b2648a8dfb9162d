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

Only until the session first hears its peer: then the option is switched off again, and an
established session behaves as before (no ICMP error reaches it, as with kcp-go). While it is
on, every ICMP error is reported, and no ICMP error may fail the session: path MTU
discovery's "packet too big" (EMSGSIZE), a firewall's "administratively prohibited"
(EACCES), a parameter problem (EPROTO)... A read that raises one of :data:`ICMP_ERRNOS` is
ICMP feedback; a send that does is, if the queue held such an error (or held it before: a
read may have drained the entry first), else it is the send's own error, as before.

The error queue must be drained: its entries hold the socket's receive memory and keep it
``POLLERR`` (always reported by epoll), which would wake the reader for ever.
"""
from __future__ import annotations

import errno
import socket as _socket
import struct
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

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
#: What Linux makes of ICMP and ICMPv6 errors (net/ipv4/icmp.c icmp_err_convert, parameter
#: problem, net/ipv6/icmp.c icmpv6_err_convert): with IP_RECVERR any of them may be reported.
ICMP_ERRNOS = frozenset(REPORTED + (errno.ENOPROTOOPT, errno.EMSGSIZE, errno.EOPNOTSUPP,
                                    errno.EHOSTDOWN, errno.ENONET, errno.EPROTO, errno.EACCES))
#: Destinations remembered per socket (a client sends to one; bounded whatever happens).
MAX_DESTINATIONS = 16
#: Errors read from the queue per drain (the rest at the next wake-up).
DRAIN_LIMIT = 64
_ANC_SIZE = 512

_WHAT = {
    errno.ECONNREFUSED: ("port unreachable", " (nothing listens on that UDP port there)"),
    errno.EHOSTUNREACH: ("host unreachable", ""),
    errno.ENETUNREACH: ("network unreachable", ""),
    errno.ENOPROTOOPT: ("protocol unreachable", ""),
    errno.EMSGSIZE: ("packet too big", " (the path's MTU is below the session's: lower the "
                                        "mtu option)"),
    errno.EHOSTDOWN: ("host unknown", ""),
    errno.EPROTO: ("parameter problem", ""),
    errno.EACCES: ("administratively prohibited", " (a firewall rejects the datagrams)"),
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


def _key(dest: Any) -> Any:
    """``dest`` without an IPv6 flowinfo (the caller's may be set; the kernel's is 0)."""
    return (dest[0], dest[1], dest[3]) if len(dest) == 4 else dest


class IcmpErrors:
    """The ICMP errors of one socket, counted per destination address and errno."""

    __slots__ = ("sock", "counts", "total", "seen")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        #: ``{destination: {errno: count}}``, at most :data:`MAX_DESTINATIONS` destinations
        #: (a destination without its IPv6 flowinfo: the kernel reports it as 0)
        self.counts: Dict[Any, Dict[int, int]] = {}
        #: Errors read in all (diagnostics, tests), and the errnos among them
        self.total = 0
        self.seen: Set[int] = set()

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
                self.seen.add(err)
                key = _key(dest)
                per = counts.get(key)
                if per is None:
                    if len(counts) >= MAX_DESTINATIONS:
                        counts.clear()
                    per = counts[key] = {}
                per[err] = per.get(err, 0) + 1
        except OSError:     # EAGAIN: the queue is empty (or the socket closed)
            pass
        self.total += n
        return n

    def feedback(self, err: Optional[int], read: bool) -> bool:
        """Whether a socket call's error ``err`` reported an ICMP error (not fatal), after
        reading the queue: any of :data:`ICMP_ERRNOS` for a read (a UDP read raises none of
        them itself), for a send only if the queue holds or held that errno (sendto's own
        EACCES, to a broadcast address say, stays the send's error)."""
        n = self.drain()
        if err not in ICMP_ERRNOS:
            return False
        return read or n > 0 or err in self.seen

    def disable(self) -> None:
        """Stop the reports (the session heard its peer): switching the option off empties
        the queue, and the pending error is cleared (``SO_ERROR``). Never raises."""
        try:
            if self.sock.family == _socket.AF_INET6:
                self.sock.setsockopt(_SOL_IPV6, IPV6_RECVERR, 0)
            self.sock.setsockopt(_SOL_IP, IP_RECVERR, 0)
        except OSError:
            pass
        try:
            self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        except OSError:
            pass

    def about(self, dest: Any) -> str:
        """What came back for datagrams sent to ``dest`` (:func:`describe`), or ``""``."""
        per = self.counts.get(_key(dest))
        if not per:
            return ""
        return ", ".join(describe(err, n) for err, n in sorted(per.items(), key=lambda kv: -kv[1]))
