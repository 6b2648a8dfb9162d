"""UDP datagrams written to a capture file, as tcpdump would record them: what ``python -m
kcpgo netem --pcap`` saves and :func:`kcpgo.cli.dissect.read_capture` reads back.

Each datagram becomes one Ethernet/IPv4/UDP frame (link type Ethernet, zero MAC addresses)
with the given source and destination addresses and ports. The headers are packed here with
``struct`` (about 1 µs a datagram; building them as dpkt packet objects takes about 40 µs, too
much for the relay's thread); the IPv4 header checksum is computed and the UDP checksum is 0,
which RFC 768 defines as "not computed". dpkt (the ``cli`` extra, imported on first use)
writes the pcap or pcapng file.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import IO, Any, Iterable, Optional, Tuple, Union

from ..runtime._originals import allocate_lock

__all__ = ["PcapWriter", "udp_frame", "write_capture", "import_dpkt"]

Address = Tuple[str, int]

#: Ethernet II header: destination and source MAC (zero: unknown, as on loopback) and
#: EtherType 0x0800 (IPv4).
_ETHERNET = b"\x00" * 12 + b"\x08\x00"
#: IPv4 header (RFC 791) without options: version 4 and IHL 5, DSCP, total length, id,
#: flags (DF) and fragment offset, TTL 64, protocol 17 (UDP), checksum, source, destination.
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
#: UDP header (RFC 768): source port, destination port, length, checksum.
_UDP = struct.Struct("!HHHH")
_HEADERS = _IPV4.size + _UDP.size


def import_dpkt() -> Any:
    """The dpkt module; ``ImportError`` saying what to install if it is missing."""
    try:
        import dpkt
    except ImportError:
        raise ImportError("writing captures needs dpkt: pip install 'kcpgo[cli]' "
                          "(or pip install dpkt)") from None
    return dpkt


def _ipv4(host: str) -> bytes:
    try:
        return socket.inet_aton(host)
    except OSError:
        raise ValueError(f"{host!r} is not an IPv4 address (captures are IPv4 only)") from None


def udp_frame(src: Address, dst: Address, data: bytes) -> bytes:
    """The Ethernet frame that carries ``data`` from ``src`` to ``dst`` (IPv4 ``(host,
    port)`` pairs); ``ValueError`` for another address or a datagram too long for IPv4."""
    total = _HEADERS + len(data)
    if total > 0xFFFF:
        raise ValueError(f"a {len(data)}-byte datagram does not fit an IPv4 packet")
    ip = _IPV4.pack(0x45, 0, total, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, _ipv4(src[0]),
                    _ipv4(dst[0]))
    words = sum(struct.unpack("!10H", ip))
    words = (words & 0xFFFF) + (words >> 16)
    words = (words & 0xFFFF) + (words >> 16)
    ip = ip[:10] + struct.pack("!H", ~words & 0xFFFF) + ip[12:]
    return b"".join((_ETHERNET, ip, _UDP.pack(src[1], dst[1], _UDP.size + len(data), 0), data))


class PcapWriter:
    """A capture file being written: :meth:`write` one datagram at a time, from any thread,
    then :meth:`close`. ``target``: a path (created or truncated) or a binary file open for
    writing (closed by :meth:`close` too). ``ng``: pcapng instead of pcap. ``ImportError``
    without dpkt, ``OSError`` if the file cannot be created.

    The first ``OSError`` while writing (a full disk) is kept in :attr:`error` and ends the
    writing instead of propagating: the writer may be called from a relay's thread, which
    must keep forwarding. Data reaches the file at least every ``flush_every`` seconds of
    traffic and when closed."""

    def __init__(self, target: Union[str, "os.PathLike[str]", IO[bytes]], ng: bool = False,
                 flush_every: float = 1.0) -> None:
        dpkt = import_dpkt()
        self._fh: IO[bytes] = (open(target, "wb") if isinstance(target, (str, os.PathLike))
                                else target)
        try:
            cls = dpkt.pcapng.Writer if ng else dpkt.pcap.Writer
            self._writer = cls(self._fh, linktype=dpkt.pcap.DLT_EN10MB)
        except BaseException:
            self._fh.close()
            raise
        self._lock = allocate_lock()        # a real lock: the relay's thread is an OS thread
        self.flush_every = flush_every
        self._flushed = time.monotonic()
        self.count = 0
        self.error: Optional[OSError] = None
        self.closed = False

    def write(self, src: Address, dst: Address, data: bytes,
              when: Optional[float] = None) -> None:
        """Append one datagram, stamped ``when`` (seconds since the epoch; default: now).
        Does nothing once closed or after a write error; ``ValueError`` for a non-IPv4
        address."""
        frame = udp_frame(src, dst, data)
        stamp = time.time() if when is None else when
        with self._lock:
            if self.closed or self.error is not None:
                return
            try:
                self._writer.writepkt(frame, ts=stamp)
                self.count += 1
                now = time.monotonic()
                if now - self._flushed >= self.flush_every:
                    self._fh.flush()
                    self._flushed = now
            except OSError as e:
                self.error = e

    def close(self) -> None:
        """Flush and close the file (idempotent); ``OSError`` if the last flush fails and no
        earlier error was kept."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._fh.close()
            except OSError as e:
                if self.error is None:
                    self.error = e
                    raise

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_capture(target: Union[str, "os.PathLike[str]", IO[bytes]],
                  datagrams: Iterable[Tuple[float, Address, Address, bytes]],
                  ng: bool = False) -> int:
    """Write ``(time, source, destination, payload)`` datagrams (what
    :func:`~kcpgo.cli.dissect.read_capture` yields) to a pcap or pcapng file; returns how
    many. Errors as :class:`PcapWriter`, and its kept write error is raised here."""
    with PcapWriter(target, ng=ng) as w:
        for when, src, dst, data in datagrams:
            w.write(src, dst, data, when)
    if w.error is not None:
        raise w.error
    return w.count
