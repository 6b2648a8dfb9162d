"""The sending half of :class:`kcpgo.runtime.udp.UDPEndpoint`: a flush's datagrams in order,
runs of equal-sized ones in one ``sendmsg`` with UDP GSO on Linux, drops counted (KCP
retransmits), the local address a listener's session replies from (docs/deviations.md D25).

A GSO send that fails for a path MTU below its datagrams (``EMSGSIZE``: GSO segments cannot
be fragmented, single datagrams can) sends that run one datagram at a time: a link with a
smaller MTU than the session's (a VPN, PPPoE, an ICMP "fragmentation needed" cached for the
route) slows down instead of losing every flush, as it did before (a new user's finding).
"""
from __future__ import annotations

import errno
import sys as _sys
from typing import Any, List, Optional, Tuple

from .icmp import IcmpErrors

__all__ = ["DatagramSender"]

# Linux UDP segmentation offload (include/uapi/linux/udp.h), as in udp.py.
_SOL_UDP = 17
_UDP_SEGMENT = 103
#: The kernel's limits for one GSO send: 64 segments and a 64 KiB IP packet.
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000

_GSO_SIZES = {}
#: sendmsg errors that mean "no GSO here" (old kernel, odd device).
_NO_GSO = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)

#: Send errors that lose this flush's datagrams like a lossy link (KCP retransmits them):
#: ICMP errors reported on a later send (which is not sent), a full buffer or memory
#: (ENOBUFS, ENOMEM), a firewall rule (EPERM), a datagram above the path MTU (EMSGSIZE).
#: Anything else (EBADF, ENOTSOCK...) is raised to the session, which fails with it.
_TRANSIENT_SEND_ERRORS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                          errno.ENOBUFS, errno.ENOMEM, errno.EPERM, errno.EMSGSIZE)
#: sendmsg errors that may mean "not from this local address" (it was removed: Linux says
#: EINVAL or ENETUNREACH): the datagram is sent again without it.
_LOCAL_ERRORS = (errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.ENOPROTOOPT,
                 errno.EOPNOTSUPP)


class DatagramSender:
    """Mixed into ``UDPEndpoint``, whose ``__init__`` sets what these methods use."""

    _sendto: Any
    _sendmsg: Any
    gso: bool
    closed: bool
    snmp: Any
    send_drops: int
    last_send_error: Optional[OSError]
    icmp: Optional[IcmpErrors]

    def sendto(self, data: bytes, address: Any, local: Any = None) -> bool:
        """Send one datagram now (from ``local``, see :meth:`send_many`); a full socket buffer
        drops it (KCP retransmits)."""
        try:
            self._send_one(data, address, local)
        except (BlockingIOError, InterruptedError):
            self.send_drops += 1
            return False
        except OSError as e:
            if self.closed:
                return False
            if not self._transient(e):
                raise
            self._dropped(e, 1)         # like a lost datagram: KCP retries
            return False
        snmp = self.snmp
        if snmp is not None:
            snmp.OutPkts += 1
            snmp.OutBytes += len(data)
        return True

    def send_many(self, datagrams: List[bytes], address: Any, local: Any = None) -> None:
        """Send a flush's datagrams in order; runs of equal-sized ones go out as one GSO call.

        ``local``: the local address to send from, as a pktinfo batch item gave it (``None``:
        the system chooses). A full socket buffer drops what did not fit, and the errors of
        ``_TRANSIENT_SEND_ERRORS`` (ICMP feedback, ENOBUFS, EPERM, EMSGSIZE...) drop the rest
        of the flush, counted in :attr:`send_drops` (KCP retransmits); others raise ``OSError``.
        """
        n = len(datagrams)
        sent = 0
        nbytes = 0
        try:
            if local is not None and (n == 1 or not self.gso):
                send_one = self._send_one
                for d in datagrams:
                    try:
                        send_one(d, address, local)
                        sent += 1
                        nbytes += len(d)
                    except (BlockingIOError, InterruptedError):
                        self.send_drops += 1
            elif n == 1 or not self.gso:
                sendto = self._sendto
                for d in datagrams:
                    try:
                        sendto(d, address)
                        sent += 1
                        nbytes += len(d)
                    except (BlockingIOError, InterruptedError):
                        self.send_drops += 1
            else:
                sent, nbytes = self._send_gso(datagrams, address, local)
        except OSError as e:
            if not self.closed:
                if not self._transient(e):
                    raise
                self._dropped(e, n - sent)
        snmp = self.snmp
        if snmp is not None:
            snmp.OutPkts += sent
            snmp.OutBytes += nbytes

    def _transient(self, e: OSError) -> bool:
        """Whether a send's error is a drop (``_TRANSIENT_SEND_ERRORS``, or an ICMP error the
        send reported while ICMP reports are on, D57) rather than the session's failure."""
        return self._icmp_reported(e) or e.errno in _TRANSIENT_SEND_ERRORS

    def _icmp_reported(self, e: OSError) -> bool:
        """Whether a send's error reported an ICMP error while ICMP reports are on (D57).
        ``icmp`` is read once: another thread's poll() may drop it (Channel._stop_icmp)."""
        icmp = self.icmp
        return icmp is not None and icmp.feedback(e.errno, read=False)

    def _dropped(self, e: OSError, count: int) -> None:
        self.send_drops += count        # a transient send error: KCP retransmits
        self.last_send_error = e

    def _send_one(self, data: bytes, address: Any, local: Any) -> None:
        """One datagram, from ``local`` if given; if that address is refused (removed from the
        host, say), from the one the system chooses."""
        if local is None:
            self._sendto(data, address)
            return
        try:
            self._sendmsg((data,), local, 0, address)      # type: ignore[misc]
        except OSError as e:
            if e.errno not in _LOCAL_ERRORS:
                raise
            self._sendto(data, address)

    def _send_gso(self, datagrams: List[bytes], address: Any,
                  local: Any = None) -> Tuple[int, int]:
        """Group runs of equal-sized datagrams (the last of a run may be shorter, as GSO
        allows) into UDP_SEGMENT sends (with ``local``'s control message, if given).

        Returns ``(datagrams sent, bytes sent)``. Drops are counted here: a full buffer drops
        the run, an error of ``_TRANSIENT_SEND_ERRORS`` everything from the failed send on
        (what went out before it still counts as sent); other errors are raised."""
        sendto = self._sendto
        sendmsg = self._sendmsg
        n = len(datagrams)
        sent = nbytes = 0
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            total = size
            limit = min(n, i + _GSO_MAX_SEGMENTS)
            while j < limit and len(datagrams[j]) == size and total + size <= _GSO_MAX_BYTES:
                total += size
                j += 1
            if j < limit and len(datagrams[j]) < size and \
                    total + len(datagrams[j]) <= _GSO_MAX_BYTES:
                total += len(datagrams[j])
                j += 1
            try:
                if j - i == 1:
                    if local is None:
                        sendto(datagrams[i], address)
                    else:
                        self._send_one(datagrams[i], address, local)
                else:
                    cmsg = _GSO_SIZES.get(size)
                    if cmsg is None:
                        cmsg = _GSO_SIZES[size] = [(_SOL_UDP, _UDP_SEGMENT,
                                                     size.to_bytes(2, _sys.byteorder))]
                    try:
                        sendmsg((b"".join(datagrams[i:j]),), cmsg if local is None else
                                cmsg + local, 0, address)
                    except OSError as e:
                        gso_sent = False
                        if e.errno == errno.EMSGSIZE or self._icmp_reported(e):
                            # Not GSO's fault: a path MTU below the run's datagrams (a VPN, an
                            # ICMP "fragmentation needed"; GSO segments cannot be fragmented,
                            # single datagrams can) or an ICMP error the send reported (D57):
                            # this run one by one, GSO stays on.
                            pass
                        elif e.errno not in _NO_GSO and (local is None or
                                                         e.errno not in _LOCAL_ERRORS):
                            raise
                        elif local is not None and self._gso_without_local(
                                datagrams[i:j], cmsg, address):
                            gso_sent = True
                        else:
                            # No GSO here (old kernel, odd device): plain sends from now on.
                            self.gso = False
                        if not gso_sent:
                            for d in datagrams[i:j]:
                                self._send_one(d, address, local)
                                sent += 1
                                nbytes += len(d)
                                i += 1
                            continue
                sent += j - i
                nbytes += total
            except (BlockingIOError, InterruptedError):
                self.send_drops += j - i
            except OSError as e:
                if not self._transient(e):
                    raise
                self._dropped(e, n - i)             # this send and the rest of the flush
                break
            i = j
        return sent, nbytes

    def _gso_without_local(self, run: List[bytes], cmsg: list, address: Any) -> bool:
        """A GSO send with a local address failed: try it once without the address (the
        address may be gone, GSO fine). True if that worked."""
        try:
            self._sendmsg((b"".join(run),), cmsg, 0, address)     # type: ignore[misc]
        except OSError as e:
            if e.errno in _NO_GSO:
                return False
            raise
        return True
